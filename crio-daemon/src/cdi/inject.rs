//! Applying CDI edits to a container's OCI spec, in order: environment (a later value of a
//! variable replaces the earlier), device nodes with the cgroup rule that allows them, mounts
//! (replacing one at the same path), hooks and supplementary groups.
//!
//! The edits are made on the spec's JSON form, where every field CDI touches has one obvious
//! place, and read back.

use std::path::Path;

use serde_json::{Value, json};

use super::{CdiError, ContainerEdits, DeviceNode, Hook, Mount};

/// OCI hook lists CDI may add to. `poststart` is not among them: this runtime starts
/// containers through their exec fifo, not `runc start`, which is what runs those hooks.
const HOOKS: [&str; 5] = ["prestart", "createRuntime", "createContainer", "startContainer", "poststop"];

/// Applies `edits` (as `Registry::resolve` lists them) to `spec` (blocking: device nodes are
/// read from the host).
pub fn inject(spec: &mut oci_spec::runtime::Spec, edits: &[(String, ContainerEdits)]) -> Result<(), CdiError> {
    let mut v = serde_json::to_value(&*spec).map_err(|e| edit_err("", e))?;
    for (name, e) in edits {
        for kv in &e.env {
            env(&mut v, kv).map_err(|why| CdiError::Edit { name: name.clone(), why })?;
        }
        for d in &e.device_nodes {
            device(&mut v, d).map_err(|why| CdiError::Edit { name: name.clone(), why })?;
        }
        for m in &e.mounts {
            mount(&mut v, m).map_err(|why| CdiError::Edit { name: name.clone(), why })?;
        }
        for h in &e.hooks {
            hook(&mut v, h).map_err(|why| CdiError::Edit { name: name.clone(), why })?;
        }
        for gid in &e.additional_gids {
            let gids = list(&mut v, &["process", "user", "additionalGids"]);
            if !gids.contains(&json!(gid)) {
                gids.push(json!(gid));
            }
        }
    }
    *spec = serde_json::from_value(v).map_err(|e| edit_err("", e))?;
    Ok(())
}

fn edit_err(name: &str, e: serde_json::Error) -> CdiError {
    CdiError::Edit { name: name.into(), why: format!("the edited OCI spec does not parse: {e}") }
}

/// The array at `path` in `v`, made (with its parents) if missing.
fn list<'a>(v: &'a mut Value, path: &[&str]) -> &'a mut Vec<Value> {
    let mut at = v;
    for (i, key) in path.iter().enumerate() {
        if !at.is_object() {
            *at = json!({});
        }
        let last = i == path.len() - 1;
        let slot = at.as_object_mut().expect("made an object").entry(*key).or_insert_with(|| if last { json!([]) } else { json!({}) });
        if last && !slot.is_array() {
            *slot = json!([]);
        }
        at = slot;
    }
    at.as_array_mut().expect("made an array")
}

fn env(v: &mut Value, kv: &str) -> Result<(), String> {
    let (key, _) = kv.split_once('=').ok_or_else(|| format!("env {kv:?} is not KEY=VALUE"))?;
    let envs = list(v, &["process", "env"]);
    envs.retain(|e| e.as_str().and_then(|s| s.split_once('=')).is_none_or(|(k, _)| k != key));
    envs.push(json!(kv));
    Ok(())
}

fn device(v: &mut Value, d: &DeviceNode) -> Result<(), String> {
    if !d.path.starts_with('/') {
        return Err(format!("deviceNodes: path {:?} is not absolute", d.path));
    }
    let host = if d.host_path.is_empty() { &d.path } else { &d.host_path };
    let (kind, major, minor) = match (d.kind.as_str(), d.major, d.minor) {
        (k @ ("c" | "u" | "b"), Some(major), Some(minor)) => (k.to_string(), major, minor),
        ("p", _, _) => ("p".to_string(), 0, 0),
        _ => host_node(Path::new(host))?,
    };
    let mut node = json!({"path": d.path, "type": kind, "major": major, "minor": minor});
    for (key, value) in [("fileMode", d.file_mode), ("uid", d.uid), ("gid", d.gid)] {
        if let Some(x) = value {
            node[key] = json!(x);
        }
    }
    let devices = list(v, &["linux", "devices"]);
    devices.retain(|n| n["path"] != json!(d.path));
    devices.push(node);
    let access = if d.permissions.is_empty() { "rwm" } else { &d.permissions };
    if !access.chars().all(|c| "rwm".contains(c)) {
        return Err(format!("deviceNodes: permissions {access:?} are not a subset of rwm"));
    }
    let rule_kind = if kind == "u" { "c" } else { &kind };
    if rule_kind != "p" {
        let rules = list(v, &["linux", "resources", "devices"]);
        rules.push(json!({"allow": true, "type": rule_kind, "major": major, "minor": minor, "access": access}));
    }
    Ok(())
}

/// Type, major and minor of the device node at `path` on the host.
fn host_node(path: &Path) -> Result<(String, i64, i64), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path).map_err(|e| format!("deviceNodes: reading {}: {e}", path.display()))?;
    let kind = match meta.file_type() {
        t if t.is_char_device() => "c",
        t if t.is_block_device() => "b",
        t if t.is_fifo() => "p",
        _ => return Err(format!("deviceNodes: {} is not a device node", path.display())),
    };
    let rdev = meta.rdev();
    Ok((kind.into(), i64::from(rustix::fs::major(rdev)), i64::from(rustix::fs::minor(rdev))))
}

fn mount(v: &mut Value, m: &Mount) -> Result<(), String> {
    if !m.container_path.starts_with('/') {
        return Err(format!("mounts: containerPath {:?} is not absolute", m.container_path));
    }
    let kind = if m.kind.is_empty() { "bind" } else { &m.kind };
    let mut options = m.options.clone();
    if kind == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
        options.push("rbind".into());
    }
    let mounts = list(v, &["mounts"]);
    mounts.retain(|x| x["destination"] != json!(m.container_path));
    mounts.push(json!({"destination": m.container_path, "type": kind, "source": m.host_path, "options": options}));
    Ok(())
}

fn hook(v: &mut Value, h: &Hook) -> Result<(), String> {
    if !HOOKS.contains(&h.hook_name.as_str()) {
        return Err(format!("hooks: {:?} is not a hook this runtime runs (it runs {})", h.hook_name, HOOKS.join(", ")));
    }
    if !h.path.starts_with('/') {
        return Err(format!("hooks: path {:?} is not absolute", h.path));
    }
    let mut entry = json!({"path": h.path});
    if !h.args.is_empty() {
        entry["args"] = json!(h.args);
    }
    if !h.env.is_empty() {
        entry["env"] = json!(h.env);
    }
    if let Some(t) = h.timeout {
        entry["timeout"] = json!(t);
    }
    list(v, &["hooks", &h.hook_name]).push(entry);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> oci_spec::runtime::Spec {
        serde_json::from_value(json!({
            "ociVersion": "1.0.2",
            "process": {"cwd": "/", "args": ["sh"], "env": ["PATH=/bin", "A=1"], "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/data", "type": "tmpfs", "source": "tmpfs"}],
            "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}}
        }))
        .unwrap()
    }

    #[test]
    fn edits_land_where_the_runtime_reads_them() {
        let edits = ContainerEdits {
            env: vec!["A=2".into(), "B=3".into()],
            device_nodes: vec![DeviceNode { path: "/dev/cdi-null".into(), host_path: "/dev/null".into(), ..Default::default() }],
            mounts: vec![Mount {
                host_path: "/etc/hostname".into(),
                container_path: "/data".into(),
                options: vec!["ro".into()],
                ..Default::default()
            }],
            hooks: vec![Hook { hook_name: "createRuntime".into(), path: "/bin/true".into(), ..Default::default() }],
            additional_gids: vec![44, 44],
        };
        let mut spec = base();
        inject(&mut spec, &[("vendor.com/dev=x".into(), edits)]).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["process"]["env"], json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(v["linux"]["devices"][0], json!({"path": "/dev/cdi-null", "type": "c", "major": 1, "minor": 3}));
        assert_eq!(v["linux"]["resources"]["devices"][1], json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}));
        let mounts = v["mounts"].as_array().unwrap();
        assert_eq!(mounts.len(), 1, "the tmpfs at /data was replaced: {mounts:?}");
        assert_eq!(mounts[0]["options"], json!(["ro", "rbind"]));
        assert_eq!(v["hooks"]["createRuntime"][0]["path"], "/bin/true");
        assert_eq!(v["process"]["user"]["additionalGids"], json!([44]));
    }

    #[test]
    fn what_cannot_be_applied_is_refused_by_name() {
        let bad = [
            ContainerEdits { env: vec!["NOEQUALS".into()], ..Default::default() },
            ContainerEdits {
                hooks: vec![Hook { hook_name: "poststart".into(), path: "/bin/true".into(), ..Default::default() }],
                ..Default::default()
            },
            ContainerEdits {
                device_nodes: vec![DeviceNode { path: "/dev/x".into(), host_path: "/etc/hostname".into(), ..Default::default() }],
                ..Default::default()
            },
            ContainerEdits { mounts: vec![Mount { container_path: "relative".into(), ..Default::default() }], ..Default::default() },
        ];
        for edits in bad {
            let mut spec = base();
            let err = inject(&mut spec, &[("vendor.com/dev=x".into(), edits.clone())]).unwrap_err();
            assert!(err.to_string().starts_with("CDI device vendor.com/dev=x: "), "{err}");
        }
    }
}
