//! CRI-O compatible configuration: `crio.conf` plus `crio.conf.d/` drop-ins, with CRI-O's table and
//! key names, embedded defaults so the daemon starts with no file at all, and command-line
//! overrides applied last. Loading and validation live in `load`; this file holds the schema.

mod duration;
mod load;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use duration::{GoDuration, ParseDurationError};
pub use load::{ConfigError, LoadOptions, Loaded, Overrides, load};

/// Default location of the main file, as CRI-O has it.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/crio/crio.conf";
/// Default drop-in directory, applied in lexical order after the main file.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/crio/crio.conf.d";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub crio: Crio,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Crio {
    /// Image and layer store. Not CRI-O's containers/storage path: our store has its own format
    /// and must never be mixed with a podman or CRI-O store on the same node.
    pub root: PathBuf,
    /// Volatile state (mount points, sockets) that does not survive a reboot.
    pub runroot: PathBuf,
    /// Pod and container state that survives daemon restarts.
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub api: Api,
    pub runtime: Runtime,
    pub image: Image,
    pub network: Network,
    pub metrics: Metrics,
    pub ebpf: Ebpf,
}

impl Default for Crio {
    fn default() -> Self {
        Self {
            root: "/var/lib/crio/storage".into(),
            runroot: "/run/crio/storage".into(),
            state_dir: "/var/lib/crio/state".into(),
            log_dir: "/var/log/crio/pods".into(),
            api: Api::default(),
            runtime: Runtime::default(),
            image: Image::default(),
            network: Network::default(),
            metrics: Metrics::default(),
            ebpf: Ebpf::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Api {
    pub listen: PathBuf,
    pub stream_address: String,
    pub stream_port: String,
    /// A streaming session with no traffic either way for this long is closed; empty is
    /// the kubelet's default, 4h.
    pub stream_idle_timeout: String,
    pub stream_enable_tls: bool,
    pub stream_tls_cert: PathBuf,
    pub stream_tls_key: PathBuf,
    /// CA bundle that client certificates must chain to; empty accepts any client.
    pub stream_tls_ca: PathBuf,
    pub grpc_max_send_msg_size: usize,
    pub grpc_max_recv_msg_size: usize,
}

/// CRI-O's limit for both directions: large ListContainers answers on dense nodes need it.
pub const DEFAULT_GRPC_MSG_SIZE: usize = 80 * 1024 * 1024;

impl Default for Api {
    fn default() -> Self {
        Self {
            listen: "/var/run/crio/crio.sock".into(),
            stream_address: "127.0.0.1".into(),
            stream_port: "0".into(),
            stream_idle_timeout: String::new(),
            stream_enable_tls: false,
            stream_tls_cert: PathBuf::new(),
            stream_tls_key: PathBuf::new(),
            stream_tls_ca: PathBuf::new(),
            grpc_max_send_msg_size: DEFAULT_GRPC_MSG_SIZE,
            grpc_max_recv_msg_size: DEFAULT_GRPC_MSG_SIZE,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Runtime {
    pub default_runtime: String,
    pub cgroup_manager: String,
    pub log_level: String,
    /// Bytes after which a container log is truncated and continues; -1 is no cap (CRI-O's).
    pub log_size_max: i64,
    pub runtimes: BTreeMap<String, RuntimeHandler>,
    /// CPUs (a list like `0-1,8`) containers asking for `cpu-shared.crio.io/<name>` also
    /// get, beside their exclusive ones; empty is none (CRI-O's `shared_cpuset`).
    pub shared_cpuset: String,
    /// The irqbalance configuration whose ban list follows the CPUs taken off IRQs (CRI-O's
    /// `irqbalance_config_file`); empty is none. Left alone when the file does not exist.
    pub irqbalance_config_file: PathBuf,
    /// The kubelet's CPU manager checkpoint: CPUs the runtime chooses (`numa-cpus.crio.io`)
    /// are never ones it gave out; when it cannot be read, such requests are refused (ours).
    pub kubelet_cpu_manager_state: PathBuf,
    /// The kubelet's `reservedSystemCPUs`, which the runtime never chooses either (ours).
    pub kubelet_reserved_cpus: String,
    /// The AppArmor profile RuntimeDefault means, where the host has AppArmor (CRI-O's key);
    /// it must be loaded on the host.
    pub apparmor_profile: String,
    /// A container that asks for no seccomp profile at all gets RuntimeDefault (true) or runs
    /// unconfined (false). CRI-O's key; false is containerd's behaviour and the CRI validation
    /// suite's expectation. Kubelets since 1.27 always send a profile.
    pub seccomp_use_default_when_empty: bool,
    /// Where CDI device specs are read, later directories overriding earlier ones (CRI-O's
    /// key and defaults).
    pub cdi_spec_dirs: Vec<PathBuf>,
}

impl Runtime {
    /// The handler a pod runs with: the one it asked for, else the default.
    pub fn handler_name<'a>(&'a self, requested: &'a str) -> &'a str {
        if requested.is_empty() { &self.default_runtime } else { requested }
    }
}

impl Default for Runtime {
    fn default() -> Self {
        let mut runtimes = BTreeMap::new();
        runtimes.insert(
            "runc".to_string(),
            RuntimeHandler { runtime_path: "/usr/sbin/runc".into(), runtime_root: "/run/runc".into(), ..Default::default() },
        );
        runtimes.insert(
            "crun".to_string(),
            RuntimeHandler { runtime_path: "/usr/bin/crun".into(), runtime_root: "/run/crun".into(), ..Default::default() },
        );
        Self {
            // runc, not CRI-O's crun: crun 1.8 refuses hybrid cgroup hosts, runc runs everywhere.
            default_runtime: "runc".into(),
            cgroup_manager: "cgroupfs".into(),
            log_level: "info".into(),
            log_size_max: -1,
            runtimes,
            shared_cpuset: String::new(),
            irqbalance_config_file: "/etc/sysconfig/irqbalance".into(),
            kubelet_cpu_manager_state: "/var/lib/kubelet/cpu_manager_state".into(),
            kubelet_reserved_cpus: String::new(),
            apparmor_profile: "crio-default".into(),
            seccomp_use_default_when_empty: false,
            cdi_spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RuntimeHandler {
    pub runtime_path: PathBuf,
    pub runtime_type: String,
    pub runtime_root: PathBuf,
    pub allowed_annotations: Vec<String>,
    /// `"first"`: processes exec'd into containers of this handler (probes included) run on
    /// one CPU, the first of the container's shared CPUs if it has some, else the first of
    /// its own, never on the rest of an isolated set; empty: no pinning (CRI-O's).
    pub exec_cpu_affinity: String,
    /// How long one call of the runtime (`create`, `delete`, `kill`, `exec`) may take before it
    /// is killed and its RPC fails with DeadlineExceeded (ours; the kubelet gives up at 2m).
    pub runtime_timeout: GoDuration,
}

impl Default for RuntimeHandler {
    fn default() -> Self {
        Self {
            runtime_path: PathBuf::new(),
            runtime_type: "oci".into(),
            runtime_root: PathBuf::new(),
            allowed_annotations: Vec::new(),
            exec_cpu_affinity: String::new(),
            runtime_timeout: GoDuration(crate::oci::DEFAULT_TIMEOUT),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Image {
    pub default_transport: String,
    pub global_auth_file: PathBuf,
    pub pause_image: String,
    pub pinned_images: Vec<String>,
    pub signature_policy: PathBuf,
    pub insecure_registries: Vec<String>,
    /// `0s` disables the timeout, as in CRI-O.
    pub pull_progress_timeout: GoDuration,
    /// registries.conf v2; its `.d` directory sits beside it unless set.
    pub registries_conf: PathBuf,
    pub registries_conf_dir: PathBuf,
    /// Per-registry TLS material, `<dir>/<host[:port]>/ca.crt`, as containers/image reads it.
    pub registries_certs_dir: PathBuf,
    /// Layers downloaded at once for one pull.
    pub max_parallel_downloads: usize,
    /// Caps on what one layer, and one image's layers together, may unpack to (uncompressed
    /// bytes, tar entries): a decompression bomb stops there and leaves nothing (ours).
    pub max_layer_bytes: u64,
    pub max_layer_entries: u64,
    pub max_image_bytes: u64,
    pub max_image_entries: u64,
}

impl Default for Image {
    fn default() -> Self {
        Self {
            default_transport: "docker://".into(),
            global_auth_file: PathBuf::new(),
            pause_image: "registry.k8s.io/pause:3.10".into(),
            pinned_images: Vec::new(),
            signature_policy: PathBuf::new(),
            insecure_registries: Vec::new(),
            pull_progress_timeout: GoDuration::ZERO,
            registries_conf: "/etc/containers/registries.conf".into(),
            registries_conf_dir: "/etc/containers/registries.conf.d".into(),
            registries_certs_dir: "/etc/containers/certs.d".into(),
            max_parallel_downloads: 3,
            max_layer_bytes: 64 << 30,
            max_layer_entries: 2_000_000,
            max_image_bytes: 128 << 30,
            max_image_entries: 4_000_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Network {
    pub cni_default_network: String,
    pub network_dir: PathBuf,
    pub plugin_dirs: Vec<PathBuf>,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            cni_default_network: String::new(),
            network_dir: "/etc/cni/net.d".into(),
            // Debian's containernetworking-plugins install to /usr/lib/cni.
            plugin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Metrics {
    pub enable_metrics: bool,
    pub metrics_host: String,
    pub metrics_port: u16,
    pub metrics_socket: PathBuf,
}

impl Default for Metrics {
    fn default() -> Self {
        Self { enable_metrics: false, metrics_host: "127.0.0.1".into(), metrics_port: 9090, metrics_socket: PathBuf::new() }
    }
}

/// `[crio.ebpf]` (ours; CRI-O has no such table): kernel tracing of containers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Ebpf {
    /// Load the programs; without them OOM kills are read from cgroup files.
    pub enable: bool,
    /// Where the BPF filesystem is (mounted there at start if it is not).
    pub bpffs: PathBuf,
    /// Where the maps are pinned, inside `bpffs`, for bpftool and other tools.
    pub pin_dir: PathBuf,
    /// Trace scheduling: each container's wait for a CPU, intruders on CPUs its hooks
    /// isolated, CFS throttling. Its programs run on every context switch of the node.
    pub sched_tracing: bool,
    /// The kernel's run-time statistics of the programs (`ebpf_program_run_seconds_total`,
    /// `ebpf_program_runs_total`): two clock reads per program run, on every context switch
    /// with scheduling tracing. Off, those series stay at zero (unless another tool turned
    /// the kernel's statistics on).
    pub program_stats: bool,
}

impl Default for Ebpf {
    fn default() -> Self {
        Self { enable: true, bpffs: "/sys/fs/bpf".into(), pin_dir: "/sys/fs/bpf/crio".into(), sched_tracing: true, program_stats: true }
    }
}
