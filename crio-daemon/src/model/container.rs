//! Containers as the daemon records them: the validated CreateContainer request, its state,
//! and what was made or changed for it (cgroup, hooks, placement); and their events.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A bind mount from the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MountSpec {
    pub container_path: PathBuf,
    pub host_path: PathBuf,
    pub readonly: bool,
    /// "private", "rslave" or "rshared".
    pub propagation: String,
    /// Asked for SELinux relabelling (done where the host has SELinux); reported back as asked.
    #[serde(default)]
    pub selinux_relabel: bool,
    /// Read-only all the way down: submounts too (the runtime's "rro").
    #[serde(default)]
    pub recursive_readonly: bool,
    /// An image volume: the image (id or reference) whose root filesystem is mounted,
    /// read-only, instead of `host_path`; empty for a host path.
    #[serde(default)]
    pub image: String,
    /// The directory or file of the image mounted, relative to its root; empty for the root.
    #[serde(default)]
    pub image_sub_path: String,
}

/// A host device made available in the container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceSpec {
    pub container_path: PathBuf,
    pub host_path: PathBuf,
    /// Cgroup access: some of "rwm".
    pub permissions: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_shares: u64,
    pub cpu_quota: i64,
    pub cpu_period: u64,
    pub memory_limit: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub oom_score_adj: i64,
    #[serde(default)]
    pub memory_swap_limit: i64,
    /// (page size like "2MB", bytes)
    #[serde(default)]
    pub hugepages: Vec<(String, u64)>,
    /// cgroup v2 files and values.
    #[serde(default)]
    pub unified: BTreeMap<String, String>,
}

impl Resources {
    /// A pod's cgroup limits: its containers' (`resources`) plus the runtime's `overhead`.
    /// Shares and memory add up; a quota adds up when both have one (no quota is unlimited);
    /// CPU and memory node sets and v2 files come from `resources`. `None` when neither is given.
    pub fn pod_total(resources: Option<&Resources>, overhead: Option<&Resources>) -> Option<Resources> {
        let (r, o) = match (resources, overhead) {
            (None, None) => return None,
            (Some(r), None) => return Some(r.clone()),
            (None, Some(o)) => return Some(o.clone()),
            (Some(r), Some(o)) => (r, o),
        };
        let add = |a: i64, b: i64| if a > 0 && b > 0 { a.saturating_add(b) } else { a };
        Some(Resources {
            cpu_shares: r.cpu_shares.saturating_add(o.cpu_shares),
            cpu_quota: add(r.cpu_quota, o.cpu_quota),
            cpu_period: r.cpu_period.max(o.cpu_period),
            memory_limit: add(r.memory_limit, o.memory_limit),
            memory_swap_limit: add(r.memory_swap_limit, o.memory_swap_limit),
            ..r.clone()
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Security {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: String,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub no_new_privs: bool,
    pub supplemental_groups: Vec<i64>,
    #[serde(default)]
    pub seccomp: crate::seccomp::Profile,
    /// Paths hidden from the container (the kubelet's list); empty is the runtime's default.
    #[serde(default)]
    pub masked_paths: Vec<String>,
    /// Paths made read-only in the container; empty is the runtime's default.
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    #[serde(default)]
    pub apparmor: crate::container::lsm::AppArmorRequest,
    #[serde(default)]
    pub selinux: crate::container::lsm::SeLinuxOptions,
}

/// A CreateContainer request, validated and protocol-free.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<MountSpec>,
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Relative to the pod's log directory.
    pub log_path: String,
    pub tty: bool,
    pub stdin: bool,
    /// Stdin closes when the first attacher leaves.
    #[serde(default)]
    pub stdin_once: bool,
    /// The signal StopContainer sends first, as requested (0: the image's, else SIGTERM).
    #[serde(default)]
    pub stop_signal: i32,
    pub security: Security,
    pub resources: Resources,
    #[serde(default)]
    pub pid_mode: PidMode,
    /// CDI devices by qualified name (`vendor.com/class=name`), applied from the node's specs.
    #[serde(default)]
    pub cdi_devices: Vec<String>,
}

/// Which PID namespace a container's processes live in (CRI's NamespaceMode for pid).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PidMode {
    /// The pod's shared one when it has one (shareProcessNamespace), else its own.
    Pod,
    /// Its own.
    #[default]
    Container,
    /// The node's.
    Node,
    /// That of another container of the same pod (ephemeral debug containers).
    Target(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub full_name: String,
    pub pod_id: String,
    pub spec: ContainerSpec,
    pub image_id: String,
    /// What the image is known by (its first repo digest, else its id).
    pub image_ref: String,
    pub state: ContainerState,
    pub created_at_nanos: i64,
    pub started_at_nanos: i64,
    pub finished_at_nanos: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// Absolute; empty when the pod has no log directory.
    pub log_path: PathBuf,
    pub bundle: PathBuf,
    pub pid: i32,
    pub stop_signal: i32,
    /// The OCI spec's cgroupsPath, where stats and OOM kills are read.
    #[serde(default)]
    pub cgroup_path: String,
    /// Its default-hierarchy cgroup's id, as tracked by the kernel programs (0: not tracked).
    #[serde(default)]
    pub cgroup_id: u64,
    /// What the high-performance hooks changed, to put back when the container ends.
    #[serde(default)]
    pub hooks: Vec<crio_hooks::files::Change>,
    /// Where it runs when more than the kubelet's request decided it (NUMA placement, the
    /// shared CPU pool).
    #[serde(default)]
    pub placement: Option<crio_hooks::placement::Placement>,
    /// The CPUs its hooks isolated (load balancing off or IRQs steered away), as a list;
    /// empty for most. What else runs there while it lives is counted as an intrusion.
    #[serde(default)]
    pub isolated_cpus: String,
    /// The runtime handler it was created with (its pod's); `None` in records from before it
    /// was kept, which use their pod's.
    #[serde(default)]
    pub runtime_handler: Option<String>,
    /// The ids its process runs with (from the image's passwd and group files and the
    /// request), as ContainerStatus reports them; `None` in records from before it was kept.
    #[serde(default)]
    pub user: Option<RunUser>,
}

/// The user a container's process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunUser {
    pub uid: u32,
    pub gid: u32,
    pub supplemental_groups: Vec<u32>,
}

impl Container {
    /// `<state_dir>/exits/<id>.json`: all exit records in one directory, so one inotify watch
    /// sees every exit (the bundle is `<state_dir>/containers/<id>`).
    pub fn exit_file(&self) -> PathBuf {
        let state_dir = self.bundle.parent().and_then(|p| p.parent()).unwrap_or(&self.bundle);
        state_dir.join("exits").join(format!("{}.json", self.id))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub container_id: String,
    pub pod_id: String,
    pub kind: EventKind,
    pub at_nanos: i64,
}
