//! The Container Device Interface: vendors describe devices in spec files (JSON or YAML) under
//! the CDI spec directories (`[crio.runtime] cdi_spec_dirs`, CRI-O's key; `/etc/cdi` then
//! `/var/run/cdi`), each device named `vendor.com/class=name` with the edits a container needs
//! to use it (device nodes, environment, mounts, hooks, groups). A container asks for devices
//! by those names (`ContainerConfig.CDI_devices`); the edits of each, and of its spec, are
//! applied to the OCI spec (`inject`).
//!
//! The directories are read at each request that names a device, so a spec a device plugin
//! has just written is seen; a spec file that cannot be read or parsed is skipped with a
//! warning (as the CDI registry does), and a later directory overrides an earlier one.

mod inject;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use inject::inject;

/// Spec files larger than this are not read: they are written by device plugins, not users.
const MAX_SPEC_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    #[error("{name:?} is not a qualified CDI device name (vendor.com/class=name)")]
    BadName { name: String },
    #[error("no CDI spec directory exists ({dirs})")]
    NoSpecDirs { dirs: String },
    #[error("CDI device {name} is in no spec under {dirs}")]
    Unresolved { name: String, dirs: String },
    #[error("CDI device {name} is defined twice in {dir} ({first} and {second})")]
    Conflict { name: String, dir: PathBuf, first: PathBuf, second: PathBuf },
    #[error("CDI device {name}: {why}")]
    Edit { name: String, why: String },
}

/// The edits a spec or a device makes (CDI's `containerEdits`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerEdits {
    pub env: Vec<String>,
    pub device_nodes: Vec<DeviceNode>,
    pub mounts: Vec<Mount>,
    pub hooks: Vec<Hook>,
    #[serde(rename = "additionalGIDs")]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct DeviceNode {
    /// In the container.
    pub path: String,
    /// On the host (empty: `path`).
    pub host_path: String,
    /// "c", "b", "u" or "p"; empty: from the host node.
    #[serde(rename = "type")]
    pub kind: String,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub file_mode: Option<u32>,
    /// The cgroup access ("rwm" when empty).
    pub permissions: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    pub options: Vec<String>,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub timeout: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SpecDevice {
    name: String,
    container_edits: ContainerEdits,
}

/// One spec file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SpecFile {
    kind: String,
    devices: Vec<SpecDevice>,
    container_edits: ContainerEdits,
}

/// Where a device was found: its edits and its spec's.
#[derive(Debug, Clone)]
struct Found {
    file: PathBuf,
    device: ContainerEdits,
    spec: ContainerEdits,
}

/// Every device of the spec directories, by qualified name.
pub struct Registry {
    devices: BTreeMap<String, Found>,
    dirs: String,
}

/// `vendor.com/class=name`: a vendor (a domain-like name), a class and a device name.
pub fn check_name(name: &str) -> Result<(), CdiError> {
    let bad = || CdiError::BadName { name: name.into() };
    let (kind, device) = name.split_once('=').ok_or_else(bad)?;
    let (vendor, class) = kind.split_once('/').ok_or_else(bad)?;
    let ok = |s: &str, extra: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    if ok(vendor, ".-_") && ok(class, "-_") && ok(device, ".-_:") { Ok(()) } else { Err(bad()) }
}

impl Registry {
    /// Reads every spec under `dirs` (blocking: call off the runtime threads).
    pub fn load(dirs: &[PathBuf]) -> Result<Registry, CdiError> {
        let list = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
        let present: Vec<&PathBuf> = dirs.iter().filter(|d| d.is_dir()).collect();
        if present.is_empty() {
            return Err(CdiError::NoSpecDirs { dirs: if list.is_empty() { "none configured".into() } else { list } });
        }
        let mut devices = BTreeMap::new();
        // Later directories take precedence over earlier ones; within one, a name is unique.
        for dir in present {
            let mut here: BTreeMap<String, Found> = BTreeMap::new();
            for (file, spec) in spec_files(dir) {
                for d in spec.devices {
                    let name = format!("{}={}", spec.kind, d.name);
                    if let Some(first) = here.get(&name) {
                        return Err(CdiError::Conflict { name, dir: dir.clone(), first: first.file.clone(), second: file });
                    }
                    here.insert(name, Found { file: file.clone(), device: d.container_edits, spec: spec.container_edits.clone() });
                }
            }
            devices.extend(here);
        }
        Ok(Registry { devices, dirs: list })
    }

    /// The edits `names` need, each spec's once, in request order.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<(String, ContainerEdits)>, CdiError> {
        let mut out = Vec::new();
        let mut specs_done: Vec<&Path> = Vec::new();
        for name in names {
            check_name(name)?;
            let found = self.devices.get(name).ok_or_else(|| CdiError::Unresolved { name: name.clone(), dirs: self.dirs.clone() })?;
            if !specs_done.contains(&found.file.as_path()) {
                specs_done.push(&found.file);
                out.push((name.clone(), found.spec.clone()));
            }
            out.push((name.clone(), found.device.clone()));
        }
        Ok(out)
    }
}

/// The parsed spec files of `dir`, in name order; unreadable or invalid ones are warned about.
fn spec_files(dir: &Path) -> Vec<(PathBuf, SpecFile)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        match read_spec(&path) {
            Ok(spec) => out.push((path, spec)),
            Err(why) => tracing::warn!(spec = %path.display(), why, "CDI spec skipped"),
        }
    }
    out
}

fn read_spec(path: &Path) -> Result<SpecFile, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > MAX_SPEC_BYTES {
        return Err(format!("not a regular file of at most {MAX_SPEC_BYTES} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    // YAML is a superset of JSON: one parser for both.
    let spec: SpecFile = serde_norway::from_str(&text).map_err(|e| e.to_string())?;
    let (vendor, class) = spec.kind.split_once('/').ok_or_else(|| format!("kind {:?} is not vendor.com/class", spec.kind))?;
    if vendor.is_empty() || class.is_empty() {
        return Err(format!("kind {:?} is not vendor.com/class", spec.kind));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::write(dir.join(file), text).unwrap();
    }

    #[test]
    fn names_are_qualified() {
        assert!(check_name("vendor.com/gpu=0").is_ok());
        assert!(check_name("nvidia.com/gpu=all").is_ok());
        for bad in ["gpu0", "vendor.com/gpu", "/gpu=0", "vendor.com/=0", "vendor.com/gpu=", "v/c=a b", "v/c/d=0"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specs_resolve_with_their_own_edits_once_and_later_dirs_win() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(
            a.path(),
            "vendor.yaml",
            "cdiVersion: 0.6.0\nkind: vendor.com/dev\ncontainerEdits:\n  env: [SPEC=1]\ndevices:\n- name: one\n  containerEdits:\n    env: [ONE=1]\n    deviceNodes:\n    - path: /dev/one\n      hostPath: /dev/null\n- name: two\n  containerEdits:\n    env: [TWO=a]\n",
        );
        write(
            b.path(),
            "override.json",
            r#"{"cdiVersion":"0.6.0","kind":"vendor.com/dev","devices":[{"name":"two","containerEdits":{"env":["TWO=b"]}}]}"#,
        );
        write(b.path(), "broken.yaml", "kind: [nonsense");
        write(b.path(), "ignored.txt", "not a spec");
        let r = Registry::load(&[a.path().into(), b.path().into()]).unwrap();
        let edits = r.resolve(&["vendor.com/dev=one".into(), "vendor.com/dev=two".into()]).unwrap();
        let envs: Vec<&str> = edits.iter().flat_map(|(_, e)| e.env.iter().map(String::as_str)).collect();
        // The spec-level edits of a.yaml once, then one's; two comes from the later directory,
        // whose spec has no edits of its own.
        assert_eq!(envs, ["SPEC=1", "ONE=1", "TWO=b"]);
        assert_eq!(edits[1].1.device_nodes[0].host_path, "/dev/null");
        let err = r.resolve(&["vendor.com/dev=three".into()]).unwrap_err();
        assert!(matches!(err, CdiError::Unresolved { .. }), "{err}");
        assert!(matches!(r.resolve(&["three".into()]).unwrap_err(), CdiError::BadName { .. }));
    }

    #[test]
    fn one_name_twice_in_a_directory_is_a_conflict_and_no_directory_is_said() {
        let a = tempfile::tempdir().unwrap();
        let spec = r#"{"kind":"vendor.com/dev","devices":[{"name":"x","containerEdits":{}}]}"#;
        write(a.path(), "1.json", spec);
        write(a.path(), "2.json", spec);
        assert!(matches!(Registry::load(&[a.path().into()]), Err(CdiError::Conflict { .. })));
        assert!(matches!(Registry::load(&["/nonexistent/cdi".into()]), Err(CdiError::NoSpecDirs { .. })));
    }
}
