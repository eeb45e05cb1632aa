//! What an exec'd process becomes, decided once per container from its OCI spec: the same
//! user, capabilities, rlimits, no_new_privs, seccomp filter, environment and working
//! directory the runtime gives the container's own processes.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

use super::{ExecError, FILTER_FILE, PROFILE_FILE};

/// One resource limit (`RLIMIT_*` by its name in the spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub resource: String,
    pub soft: u64,
    pub hard: u64,
}

/// Capability sets as kernel bit masks (bit n is capability number n).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecProfile {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub cwd: PathBuf,
    pub env: Vec<String>,
    pub caps: CapSets,
    pub no_new_privileges: bool,
    pub rlimits: Vec<Limit>,
    pub oom_score_adj: Option<i32>,
    /// `seccomp(2)` filter flags; `None` when the container has no filter. The program
    /// itself is in the bundle's `seccomp.bpf`.
    pub seccomp_flags: Option<u32>,
    /// CPUs exec'd processes are pinned to; empty: those the helper inherits.
    #[serde(default)]
    pub cpu_affinity: Vec<usize>,
}

/// The kernel's number of a capability named as the spec names it (`CAP_NET_RAW`).
fn cap_bit(name: &str) -> Option<u32> {
    let short = name.strip_prefix("CAP_").unwrap_or(name);
    crate::capabilities::NAMES.iter().position(|n| n.eq_ignore_ascii_case(short)).map(|i| i as u32)
}

fn mask<T: serde::Serialize>(set: Option<&std::collections::HashSet<T>>) -> u64 {
    set.into_iter()
        .flatten()
        .filter_map(|c| serde_json::to_value(c).ok().and_then(|v| v.as_str().and_then(cap_bit)))
        .fold(0, |m, bit| m | (1 << bit))
}

fn filter_flag(name: &str) -> u32 {
    match name {
        "SECCOMP_FILTER_FLAG_LOG" => 2,
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => 4,
        // TSYNC concerns other threads; an exec'd process has none when it loads the filter.
        _ => 0,
    }
}

impl ExecProfile {
    /// The profile for `spec`, or why the helper cannot stand in for the runtime there.
    pub fn from_spec(spec: &Spec) -> Result<ExecProfile, String> {
        let process = spec.process().as_ref().ok_or("the spec has no process")?;
        let linux = spec.linux().as_ref().ok_or("the spec has no linux section")?;
        if process.apparmor_profile().as_ref().is_some_and(|p| !p.is_empty()) {
            return Err("AppArmor profiles are applied by the runtime".into());
        }
        if process.selinux_label().as_ref().is_some_and(|l| !l.is_empty()) {
            return Err("SELinux labels are applied by the runtime".into());
        }
        let namespaces = linux.namespaces().clone().unwrap_or_default();
        if namespaces.iter().any(|n| n.typ() == LinuxNamespaceType::User) {
            return Err("user namespaces are entered by the runtime".into());
        }
        let user = process.user();
        let caps = process.capabilities().as_ref().map_or_else(CapSets::default, |c| CapSets {
            bounding: mask(c.bounding().as_ref()),
            effective: mask(c.effective().as_ref()),
            permitted: mask(c.permitted().as_ref()),
            inheritable: mask(c.inheritable().as_ref()),
            ambient: mask(c.ambient().as_ref()),
        });
        let rlimits = process
            .rlimits()
            .iter()
            .flatten()
            .map(|r| Limit {
                resource: serde_json::to_value(r.typ()).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
                soft: r.soft(),
                hard: r.hard(),
            })
            .collect();
        let seccomp_flags = linux.seccomp().as_ref().map(|s| {
            s.flags()
                .iter()
                .flatten()
                .map(|f| filter_flag(&serde_json::to_value(f).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()))
                .fold(0, |a, b| a | b)
        });
        Ok(ExecProfile {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            cwd: process.cwd().clone(),
            env: process.env().clone().unwrap_or_default(),
            caps,
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
            rlimits,
            oom_score_adj: process.oom_score_adj(),
            seccomp_flags,
            cpu_affinity: Vec::new(),
        })
    }

    /// The profile saved in `bundle` and its seccomp program, if the container has a filter.
    pub fn load(bundle: &Path) -> std::io::Result<(ExecProfile, Option<Vec<u8>>)> {
        let bytes = std::fs::read(bundle.join(PROFILE_FILE))?;
        // Compact JSON has no raw newline: the first one ends the profile.
        let (json, program) = match bytes.iter().position(|b| *b == b'\n') {
            Some(end) => (&bytes[..end], Some(bytes[end + 1..].to_vec())),
            None => (&bytes[..], None),
        };
        let profile: ExecProfile = serde_json::from_slice(json).map_err(std::io::Error::other)?;
        let program = match (profile.seccomp_flags, program) {
            (None, _) => None,
            (Some(_), Some(p)) => Some(p),
            (Some(_), None) => Some(std::fs::read(bundle.join(FILTER_FILE))?),
        };
        Ok((profile, program))
    }
}

/// Writes `profile` and `filter` into `bundle`'s one profile file. No fsync: after a crash a
/// missing or torn profile only sends that container's execs back through the runtime.
pub fn save(bundle: &Path, profile: &ExecProfile, filter: Option<&[u8]>) -> Result<(), ExecError> {
    let mut bytes = serde_json::to_vec(profile).expect("profiles serialize");
    if let Some(f) = filter {
        bytes.push(b'\n');
        bytes.extend_from_slice(f);
    }
    let path = bundle.join(PROFILE_FILE);
    let tmp = bundle.join(format!(".{PROFILE_FILE}.tmp"));
    // The profile carries the container's environment: readable by root alone.
    crate::secret_files::write_private(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| ExecError::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> Spec {
        let mut v = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {
                "user": {"uid": 1000, "gid": 1000, "additionalGids": [5, 6]},
                "cwd": "/work", "args": ["sleep"], "env": ["PATH=/bin", "A=b"],
                "noNewPrivileges": true, "oomScoreAdj": 100,
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}],
                "capabilities": {"bounding": ["CAP_CHOWN", "CAP_NET_RAW"], "effective": ["CAP_NET_RAW"],
                                 "permitted": ["CAP_NET_RAW"], "ambient": ["CAP_NET_RAW"]}
            },
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}],
                      "seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}}
        });
        json_merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn json_merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    json_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn the_profile_carries_what_the_runtime_would_apply() {
        let p = ExecProfile::from_spec(&spec(serde_json::json!({}))).unwrap();
        assert_eq!((p.uid, p.gid, p.additional_gids.as_slice()), (1000, 1000, &[5, 6][..]));
        assert_eq!(p.cwd, PathBuf::from("/work"));
        assert_eq!(p.env, ["PATH=/bin", "A=b"]);
        assert_eq!(p.caps.bounding, (1 << 0) | (1 << 13));
        assert_eq!((p.caps.effective, p.caps.ambient, p.caps.inheritable), (1 << 13, 1 << 13, 0));
        assert!(p.no_new_privileges);
        assert_eq!(p.oom_score_adj, Some(100));
        assert_eq!(p.rlimits, [Limit { resource: "RLIMIT_NOFILE".into(), soft: 1024, hard: 4096 }]);
        assert_eq!(p.seccomp_flags, Some(4));
    }

    #[test]
    fn what_only_the_runtime_does_is_left_to_it() {
        let apparmor = spec(serde_json::json!({"process": {"apparmorProfile": "runtime/default"}}));
        assert!(ExecProfile::from_spec(&apparmor).unwrap_err().contains("AppArmor"));
        let userns = spec(serde_json::json!({"linux": {"namespaces": [{"type": "user"}]}}));
        assert!(ExecProfile::from_spec(&userns).unwrap_err().contains("user namespaces"));
    }

    #[test]
    fn saved_profiles_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = ExecProfile { seccomp_flags: Some(0), ..ExecProfile::from_spec(&spec(serde_json::json!({}))).unwrap() };
        // A program is bytes of any value, newlines included.
        let program = [b'\n', 2, 3, b'\n', 5, 6, 7, 0];
        save(dir.path(), &p, Some(&program)).unwrap();
        assert_eq!(ExecProfile::load(dir.path()).unwrap(), (p.clone(), Some(program.to_vec())));
        assert!(!dir.path().join(FILTER_FILE).exists(), "one file per container");
        let unfiltered = ExecProfile { seccomp_flags: None, ..p };
        save(dir.path(), &unfiltered, None).unwrap();
        assert_eq!(ExecProfile::load(dir.path()).unwrap(), (unfiltered, None));
    }

    #[test]
    fn profiles_of_earlier_versions_read_their_filter_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = ExecProfile { seccomp_flags: Some(0), ..ExecProfile::from_spec(&spec(serde_json::json!({}))).unwrap() };
        std::fs::write(dir.path().join(PROFILE_FILE), serde_json::to_vec(&p).unwrap()).unwrap();
        std::fs::write(dir.path().join(FILTER_FILE), [1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(ExecProfile::load(dir.path()).unwrap(), (p, Some(vec![1, 2, 3, 4, 5, 6, 7, 8])));
    }
}
