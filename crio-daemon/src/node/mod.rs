//! The node's resources that pods and containers are made of: the cgroup hierarchies (and a
//! hybrid host's unified one), the OCI runtimes by handler, the CNI network, the host's kernel
//! paths, and the helper binaries. Read-mostly, set up once at start; the pod and container
//! services ask it where things go and which runtime runs them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cgroups::{Cgroups, Unified, systemd};
use crate::config::Config;
use crate::model::PodSandbox;
use crate::network::cni::{self, Attachment, Cni, NetworkConfig};
use crate::oci::OciRuntime;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("runtime handler {handler:?} is not configured (configured: {configured:?})")]
    UnknownHandler { handler: String, configured: Vec<String> },
    #[error(
        "runtime handler {handler:?} has runtime_type {runtime_type:?}: this runtime runs only \"oci\" handlers (VM and pod runtimes are not implemented)"
    )]
    UnsupportedRuntimeType { handler: String, runtime_type: String },
}

/// Where the node's kernel interfaces are: parameters, so the same code can run on a temp tree.
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub cgroup_root: PathBuf,
    pub proc: PathBuf,
    pub sys: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self { cgroup_root: "/sys/fs/cgroup".into(), proc: "/proc".into(), sys: "/sys".into() }
    }
}

pub struct Node {
    config: Arc<Config>,
    cgroups: Cgroups,
    /// The v2 hierarchy of a hybrid host, where each container also gets a cgroup.
    unified: Option<Unified>,
    /// cgroup_manager = "systemd": pod cgroups are slices, containers scopes.
    systemd: bool,
    runtimes: HashMap<String, OciRuntime>,
    cni: Cni,
    network: Option<NetworkConfig>,
    host: HostPaths,
    monitor_binary: PathBuf,
    /// Open connections to the pods' monitors.
    monitors: Arc<crate::monitor::client::Connections>,
    /// The node's pod CIDR as the kubelet last sent it (UpdateRuntimeConfig).
    pod_cidr: std::sync::RwLock<String>,
}

impl Node {
    /// Detects the cgroup layout, loads the CNI configuration and sets up each runtime handler.
    pub fn new(config: Arc<Config>, monitor_binary: PathBuf, host: HostPaths) -> Self {
        let c = &config.crio;
        let kernel_release = rustix::system::uname().release().to_string_lossy().into_owned();
        let runtimes = c
            .runtime
            .runtimes
            .iter()
            .map(|(name, h)| {
                let root =
                    if h.runtime_root.as_os_str().is_empty() { c.runroot.join("runtime").join(name) } else { h.runtime_root.clone() };
                let mut rt = OciRuntime::new(name, &h.runtime_path, &root);
                if !h.runtime_timeout.is_zero() {
                    rt.timeout = h.runtime_timeout.0;
                }
                rt.systemd_cgroup = c.runtime.cgroup_manager == "systemd";
                rt.features = crate::oci::Features::probe(&h.runtime_path, &kernel_release);
                tracing::debug!(runtime_handler = %name, features = ?rt.features, "runtime features");
                (name.clone(), rt)
            })
            .collect();
        let default = &c.runtime.runtimes[&c.runtime.default_runtime];
        tracing::info!(
            runtime = %c.runtime.default_runtime,
            path = %default.runtime_path.display(),
            "default OCI runtime (runc unless configured: crun 1.8 refuses hybrid cgroup hosts)"
        );
        let cgroups = Cgroups::detect(&host.cgroup_root);
        let systemd = c.runtime.cgroup_manager == "systemd";
        // Under systemd, systemd places scopes in the unified hierarchy itself.
        let unified = if systemd { None } else { Unified::detect(&cgroups, &host.proc) };
        let cni = Cni::new(c.network.plugin_dirs.clone(), c.state_dir.join("cni/results"));
        let network = pod_network(&config);
        Self {
            config,
            cgroups,
            unified,
            systemd,
            runtimes,
            cni,
            network,
            host,
            monitor_binary,
            monitors: Arc::default(),
            pod_cidr: Default::default(),
        }
    }

    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }

    pub fn unified(&self) -> Option<&Unified> {
        self.unified.as_ref()
    }

    pub fn systemd(&self) -> bool {
        self.systemd
    }

    /// Keeps the kubelet's pod CIDR; returns the one kept before.
    pub fn set_pod_cidr(&self, cidr: &str) -> String {
        std::mem::replace(&mut *self.pod_cidr.write().expect("pod cidr poisoned"), cidr.to_string())
    }

    pub fn pod_cidr(&self) -> String {
        self.pod_cidr.read().expect("pod cidr poisoned").clone()
    }

    pub fn host(&self) -> &HostPaths {
        &self.host
    }

    pub fn cni(&self) -> &Cni {
        &self.cni
    }

    /// The CNI network pods get, if one is usable.
    pub fn network(&self) -> Option<&NetworkConfig> {
        self.network.as_ref()
    }

    pub fn network_name(&self) -> Option<&str> {
        self.network.as_ref().map(|n| n.name.as_str())
    }

    pub fn monitor_binary(&self) -> &std::path::Path {
        &self.monitor_binary
    }

    /// The connections kept open to the pods' monitors.
    pub fn monitors(&self) -> &Arc<crate::monitor::client::Connections> {
        &self.monitors
    }

    /// A client of the pod's monitor on a kept connection.
    pub fn monitor(&self, pod: &PodSandbox) -> crate::monitor::client::MonitorClient {
        self.monitors.client(&pod.monitor_socket())
    }

    /// The exec helper ships beside the monitor.
    pub fn exec_helper(&self) -> PathBuf {
        self.monitor_binary.with_file_name("crio-exec")
    }

    /// The runtime of a handler (the default for an empty name).
    pub fn runtime(&self, handler: &str) -> Result<&OciRuntime, NodeError> {
        let name = self.config.crio.runtime.handler_name(handler);
        if let Some(h) = self.config.crio.runtime.runtimes.get(name).filter(|h| h.runtime_type != "oci") {
            return Err(NodeError::UnsupportedRuntimeType { handler: name.to_string(), runtime_type: h.runtime_type.clone() });
        }
        self.runtimes
            .get(name)
            .ok_or_else(|| NodeError::UnknownHandler { handler: name.to_string(), configured: self.runtimes.keys().cloned().collect() })
    }

    /// What each usable handler's runtime can do, by handler name.
    pub fn handler_features(&self) -> Vec<(String, crate::oci::Features)> {
        let oci = |n: &String| self.config.crio.runtime.runtimes.get(n).is_some_and(|h| h.runtime_type == "oci");
        let mut all: Vec<_> = self.runtimes.iter().filter(|(n, _)| oci(n)).map(|(n, r)| (n.clone(), r.features)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// A cgroup's directory in the default (v2) hierarchy: the v2 tree, or a hybrid host's
    /// unified one. `None` on pure v1.
    pub fn v2_dir(&self, path: &str) -> Option<PathBuf> {
        self.cgroups.v2_dir(path).or_else(|| self.unified.as_ref().map(|u| u.path(path)))
    }

    /// PSI of the cgroup at `path`, from its v2 directory; `None` where there is none.
    pub fn pressure(&self, path: &str) -> Option<crate::cgroups::pressure::Pressure> {
        crate::cgroups::pressure::read(&self.v2_dir(path)?)
    }

    /// The cgroup a new pod gets: the kubelet's parent, else one of ours.
    pub fn pod_cgroup(&self, cgroup_parent: &str, id: &str) -> String {
        match (cgroup_parent.is_empty(), self.systemd) {
            (false, _) => cgroup_parent.to_string(),
            (true, false) => format!("/crio/pod-{id}"),
            (true, true) => systemd::DEFAULT_SLICE.into(),
        }
    }

    /// The cgroup directory of a pod (its slice's path under systemd).
    pub fn pod_cgroup_path(&self, pod: &PodSandbox) -> String {
        if self.systemd { systemd::slice_path(pod.cgroup()).unwrap_or_default() } else { pod.cgroup().to_string() }
    }

    /// The cgroup a new container of `pod` gets: its directory, and the runtime's cgroupsPath.
    pub fn container_cgroup(&self, pod: &PodSandbox, id: &str) -> (String, String) {
        if self.systemd {
            let path = systemd::scope_path(pod.cgroup(), id).unwrap_or_default();
            (path, systemd::cgroups_path(pod.cgroup(), id))
        } else {
            let path = format!("{}/crio-{id}", pod.cgroup().trim_end_matches('/'));
            (path.clone(), path)
        }
    }

    /// Who the pod's network is for, as the CNI plugins are told.
    pub fn attachment(&self, pod: &PodSandbox) -> Attachment {
        Attachment {
            container_id: pod.id.clone(),
            netns: pod.netns.clone().unwrap_or_default(),
            ifname: "eth0".into(),
            pod_namespace: pod.spec.namespace.clone(),
            pod_name: pod.spec.name.clone(),
            pod_uid: pod.spec.uid.clone(),
            port_mappings: pod.spec.port_mappings.clone(),
        }
    }
}

/// The configured CNI network, else the embedded bridge when the directory has none; `None`
/// when the configured default network is missing.
fn pod_network(config: &Config) -> Option<NetworkConfig> {
    let c = &config.crio;
    let (found, bad) = cni::load_dir(&c.network.network_dir).unwrap_or_default();
    for e in bad {
        tracing::warn!(error = %crate::error_chain(&e), "CNI configuration ignored");
    }
    match cni::choose(found, &c.network.cni_default_network, &c.network.network_dir) {
        Ok(Some(n)) => Some(n),
        Ok(None) => {
            let net = cni::embedded_default("crio0", "10.85.0.0/16", &c.state_dir.join("cni/networks"));
            tracing::info!(dir = %c.network.network_dir.display(), "no CNI configuration found; using the embedded bridge network");
            Some(net)
        }
        Err(e) => {
            tracing::warn!(error = %e, "CNI default network not found; pods without host network cannot start");
            None
        }
    }
}
