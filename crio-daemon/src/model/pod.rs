//! Pods as the daemon records them: the validated RunPodSandbox request, and what was made
//! for it (namespaces, cgroup, monitor, addresses). The rules a pod spec must meet live here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::network::cni::PortMapping;

/// DNS settings from the pod spec.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// A RunPodSandbox request, validated and protocol-free.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub hostname: String,
    pub log_directory: PathBuf,
    pub dns: Dns,
    pub port_mappings: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// One PID namespace for all the pod's containers (shareProcessNamespace), held by a
    /// process of the pod's monitor.
    #[serde(default)]
    pub share_pid: bool,
    pub cgroup_parent: String,
    /// Pod-level limits, applied when the daemon makes the pod cgroup itself.
    #[serde(default)]
    pub resources: Option<super::Resources>,
    pub runtime_handler: String,
    /// Namespaced sysctls, applied in every container's (shared) namespaces.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
}

/// Bytes of the pod's shared /dev/shm, CRI-O's default.
pub const SHM_SIZE: u64 = 64 * 1024 * 1024;

/// Whether `key` lives in a namespace the pod owns: IPC ones need the pod's IPC namespace,
/// network ones its network namespace. Anything else would change the node.
pub fn check_sysctl(key: &str, host_network: bool, host_ipc: bool) -> Result<(), String> {
    let ipc = key.starts_with("kernel.shm") || key.starts_with("kernel.msg") || key == "kernel.sem" || key.starts_with("fs.mqueue.");
    let net = key.starts_with("net.");
    match (ipc, net) {
        (true, _) if host_ipc => Err(format!("sysctl {key} is not allowed with hostIPC")),
        (_, true) if host_network => Err(format!("sysctl {key} is not allowed with hostNetwork")),
        (false, false) => Err(format!("sysctl {key} is not namespaced; it would change the node")),
        _ => Ok(()),
    }
}

/// Bytes a hostname may have (the kernel's `HOST_NAME_MAX`: `sethostname` refuses more).
pub const HOSTNAME_MAX: usize = 64;

/// Whether `name` can be a pod's hostname: what `sethostname` takes and resolvers accept,
/// dot-separated RFC 1123 labels (a FQDN when the kubelet sets `setHostnameAsFQDN`).
pub fn check_hostname(name: &str) -> Result<(), String> {
    if name.len() > HOSTNAME_MAX {
        return Err(format!("{name:?} is {} bytes; a hostname has at most {HOSTNAME_MAX}", name.len()));
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-') && !l.ends_with('-')
    };
    if !name.split('.').all(label_ok) {
        return Err(format!("{name:?} is not a valid hostname (dot-separated labels of letters, digits and inner '-')"));
    }
    Ok(())
}

/// The hostname a pod gets: the one it asked for, else the node's (as containerd does: a
/// pod's name may be longer than a hostname can be).
pub fn pod_hostname(spec: &PodSpec) -> String {
    if spec.hostname.is_empty() { rustix::system::uname().nodename().to_string_lossy().into_owned() } else { spec.hostname.clone() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodSandbox {
    pub id: String,
    /// The unique name it holds: `k8s_<name>_<namespace>_<uid>_<attempt>`.
    pub full_name: String,
    pub spec: PodSpec,
    pub state: PodState,
    pub created_at_nanos: i64,
    pub ips: Vec<String>,
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    /// The pinned shared PID namespace, with the pid of its PID 1 (a child of the monitor).
    #[serde(default)]
    pub pidns: Option<PathBuf>,
    #[serde(default)]
    pub pid_holder: i32,
    /// The pod cgroup (its containers' parent): `cgroup_parent`, or one of ours under /crio.
    #[serde(default)]
    pub cgroup: String,
    /// Whether the daemon made the pod cgroup (and so removes it with the pod).
    #[serde(default)]
    pub cgroup_created: bool,
    /// Its default-hierarchy cgroup's id, as tracked by the kernel programs (0: not tracked).
    #[serde(default)]
    pub cgroup_id: u64,
    /// Persistent files: resolv.conf, hosts, hostname.
    pub dir: PathBuf,
    /// Volatile: namespace pins, the monitor's socket.
    pub run_dir: PathBuf,
    pub monitor_pid: u32,
}

impl PodSandbox {
    /// The parent of the pod's container cgroups.
    pub fn cgroup(&self) -> &str {
        if self.cgroup.is_empty() { &self.spec.cgroup_parent } else { &self.cgroup }
    }

    pub fn monitor_socket(&self) -> PathBuf {
        self.run_dir.join("monitor.sock")
    }

    /// The pod's shared /dev/shm (a tmpfs), when it has its own IPC namespace.
    pub fn shm(&self) -> Option<PathBuf> {
        (!self.spec.host_ipc).then(|| self.run_dir.join("shm"))
    }
}

pub fn full_name(spec: &PodSpec) -> String {
    format!("k8s_{}_{}_{}_{}", spec.name, spec.namespace, spec.uid, spec.attempt)
}

pub fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctls_must_be_namespaced_and_owned() {
        assert!(check_sysctl("net.ipv4.ip_local_port_range", false, false).is_ok());
        assert!(check_sysctl("kernel.shm_rmid_forced", false, false).is_ok());
        assert!(check_sysctl("net.ipv4.tcp_syncookies", true, false).unwrap_err().contains("hostNetwork"));
        assert!(check_sysctl("kernel.msgmax", false, true).unwrap_err().contains("hostIPC"));
        assert!(check_sysctl("vm.swappiness", false, false).unwrap_err().contains("not namespaced"));
    }

    #[test]
    fn hostnames_are_checked_as_the_kernel_and_resolvers_take_them() {
        for ok in ["web-0", "a", "node.example.com", &"a".repeat(63), &format!("{}.{}", "a".repeat(31), "b".repeat(32))] {
            assert!(check_hostname(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "-web", "web-", "a..b", "under_score", "sp ace", "ünï", &"a".repeat(64), &"a.".repeat(33)] {
            assert!(check_hostname(bad).is_err(), "{bad:?}");
        }
        assert!(check_hostname(&"a".repeat(65)).unwrap_err().contains("at most 64"));
    }

    #[test]
    fn a_pod_without_a_hostname_gets_the_nodes() {
        let spec = PodSpec { name: "a-pod-name-far-longer-than-any-hostname-may-be-0123456789abcdef-0123".into(), ..Default::default() };
        assert_eq!(pod_hostname(&spec), rustix::system::uname().nodename().to_string_lossy());
        let named = PodSpec { hostname: "web-0".into(), ..spec };
        assert_eq!(pod_hostname(&named), "web-0");
    }
}
