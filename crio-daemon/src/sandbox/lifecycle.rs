//! The pod lifecycle: run, stop, remove, and the records behind status and list. Container
//! operations live in `crate::container` on the same struct, since stopping a pod stops its
//! containers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{PodSandbox, PodSpec, PodState, files, full_name, now_nanos};
use crate::config::Config;
use crate::container::Container;
use crate::image::{ImageError, ImageService};
use crate::monitor::client::{self, MonitorError};
use crate::namespace::{self, Kind};
use crate::network::cni::{Attachment, Cni, CniError, NetworkConfig};
use crate::network::netns::{NetNs, NetNsError};
use crate::oci::{OciError, OciRuntime};
use crate::state::{Names, Records, StateError, new_id};
use crate::storage::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("invalid {field}: {why}")]
    InvalidArgument { field: &'static str, why: String },
    #[error("name {name} is reserved by {id}")]
    NameInUse { name: String, id: String },
    #[error("pod sandbox {id} not found")]
    PodNotFound { id: String },
    #[error("container {id} not found")]
    ContainerNotFound { id: String },
    #[error("{what} {id} is {state}; cannot {op}")]
    WrongState { what: &'static str, id: String, state: String, op: &'static str },
    #[error("image {image:?} not found; pull it first")]
    ImageNotFound { image: String },
    #[error("runtime handler {handler:?} is not configured (configured: {configured:?})")]
    UnknownHandler { handler: String, configured: Vec<String> },
    #[error("no CNI network is configured in {dir}")]
    NoNetwork { dir: PathBuf },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error("exec in container {id}")]
    Exec {
        id: String,
        #[source]
        source: crate::exec::ExecError,
    },
    #[error("high-performance hooks: {why}")]
    Hooks { why: String },
    #[error("a background task failed")]
    Task(#[source] tokio::task::JoinError),
}

pub(crate) fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LifecycleError + 'a {
    move |source| LifecycleError::Io { what, path: path.into(), source }
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

pub struct Lifecycle {
    pub(crate) config: Arc<Config>,
    pub(crate) images: Arc<ImageService>,
    pub pods: Records<PodSandbox>,
    pub containers: Records<Container>,
    pub(crate) names: Names,
    pub(crate) cni: Cni,
    pub(crate) network: Option<NetworkConfig>,
    pub(crate) runtimes: HashMap<String, OciRuntime>,
    pub(crate) monitor_binary: PathBuf,
    pub(crate) cgroups: crate::cgroups::Cgroups,
    /// The v2 hierarchy of a hybrid host, where each container also gets a cgroup.
    pub(crate) unified: Option<crate::cgroups::Unified>,
    /// The previous CPU sample per container, for usage_nano_cores.
    pub(crate) cpu_samples: std::sync::Mutex<HashMap<String, (std::time::Instant, u64)>>,
    pub(crate) events: tokio::sync::broadcast::Sender<crate::container::ContainerEvent>,
    pub(crate) creations: super::retry::Creations,
    /// cgroup_manager = "systemd": pod cgroups are slices, containers scopes.
    pub(crate) systemd: bool,
    pub kernel: Arc<crate::kernel::Kernel>,
    /// The exit watch runs (and has read the exits from before it began).
    pub(crate) exits_watched: Arc<std::sync::atomic::AtomicBool>,
    /// IRQ steering for the containers that asked for it.
    pub(crate) irq_node: std::sync::Mutex<crate::container::IrqNode>,
    /// One restore of hooks' settings at a time: the exit watch and StopContainer both see an
    /// exit, and the second must wait for the first's restore instead of skipping it or doing
    /// it again over a newer container's settings.
    pub(crate) hooks_restore: tokio::sync::Mutex<()>,
    /// Compiled seccomp programs by profile text: most containers share RuntimeDefault.
    pub(crate) seccomp_programs: std::sync::Mutex<HashMap<String, Arc<Vec<u8>>>>,
    pub(crate) host: HostPaths,
    /// The machine's CPU layout (hwloc), for NUMA placement; `None` if it could not be read.
    pub(crate) topology: Option<Arc<dyn crio_hooks::topology::Topology>>,
    /// CPUs the runtime chose for live containers (`numa-cpus.crio.io`), by container id:
    /// choices are made under this lock, so two never overlap.
    pub(crate) placed: std::sync::Mutex<std::collections::BTreeMap<String, crio_hooks::CpuSet>>,
}

impl Lifecycle {
    /// Loads pod and container records and re-reserves their names.
    pub fn new(
        config: Arc<Config>,
        images: Arc<ImageService>,
        monitor_binary: PathBuf,
        host: HostPaths,
        kernel: Arc<crate::kernel::Kernel>,
        topology: Option<Arc<dyn crio_hooks::topology::Topology>>,
    ) -> Result<Self, LifecycleError> {
        let c = &config.crio;
        let (pods, bad_pods) = Records::<PodSandbox>::load(&c.state_dir.join("pods"))?;
        let (containers, bad_ctrs) = Records::<Container>::load(&c.state_dir.join("containers"))?;
        for (path, why) in bad_pods.iter().chain(&bad_ctrs) {
            tracing::warn!(path = %path.display(), error = %why, "unreadable state record ignored");
        }
        let names = Names::default();
        for p in pods.all() {
            let p = p.get();
            let _ = names.reserve(&p.full_name, &p.id);
        }
        for ct in containers.all() {
            let ct = ct.get();
            let _ = names.reserve(&ct.full_name, &ct.id);
        }
        let (found, bad) = crate::network::cni::load_dir(&c.network.network_dir).unwrap_or_default();
        for e in bad {
            tracing::warn!(error = %crate::error_chain(&e), "CNI configuration ignored");
        }
        let network = match crate::network::cni::choose(found, &c.network.cni_default_network, &c.network.network_dir) {
            Ok(Some(n)) => Some(n),
            Ok(None) => {
                let net = crate::network::cni::embedded_default("crio0", "10.85.0.0/16", &c.state_dir.join("cni/networks"));
                tracing::info!(dir = %c.network.network_dir.display(), "no CNI configuration found; using the embedded bridge network");
                Some(net)
            }
            Err(e) => {
                tracing::warn!(error = %e, "CNI default network not found; pods without host network cannot start");
                None
            }
        };
        let runtimes = c
            .runtime
            .runtimes
            .iter()
            .map(|(name, h)| {
                let root =
                    if h.runtime_root.as_os_str().is_empty() { c.runroot.join("runtime").join(name) } else { h.runtime_root.clone() };
                let mut rt = OciRuntime::new(name, &h.runtime_path, &root);
                rt.systemd_cgroup = c.runtime.cgroup_manager == "systemd";
                (name.clone(), rt)
            })
            .collect();
        let cni = Cni::new(c.network.plugin_dirs.clone(), c.state_dir.join("cni/results"));
        let default = &c.runtime.runtimes[&c.runtime.default_runtime];
        tracing::info!(
            runtime = %c.runtime.default_runtime,
            path = %default.runtime_path.display(),
            "default OCI runtime (runc unless configured: crun 1.8 refuses hybrid cgroup hosts)"
        );
        let cgroups = crate::cgroups::Cgroups::detect(&host.cgroup_root);
        let exits = c.state_dir.join("exits");
        crate::container::events::ensure_dir(&exits).map_err(io_err("creating", &exits))?;
        let (events, _) = tokio::sync::broadcast::channel(crate::container::events::EVENT_BUFFER);
        let systemd = c.runtime.cgroup_manager == "systemd";
        // Under systemd, systemd places scopes in the unified hierarchy itself.
        let unified = if systemd { None } else { crate::cgroups::Unified::detect(&cgroups) };
        let irq_node = std::sync::Mutex::new(crate::container::IrqNode::load(&c.state_dir.join("irq-steering.json")));
        Ok(Self {
            irq_node,
            hooks_restore: tokio::sync::Mutex::new(()),
            exits_watched: Arc::default(),
            kernel,
            systemd,
            unified,
            creations: Default::default(),
            events,
            config,
            images,
            pods,
            containers,
            names,
            cni,
            network,
            runtimes,
            monitor_binary,
            seccomp_programs: Default::default(),
            host,
            topology,
            placed: Default::default(),
            cgroups,
            cpu_samples: Default::default(),
        })
    }

    /// A cgroup's directory in the default (v2) hierarchy: the v2 tree, or a hybrid host's
    /// unified one. `None` on pure v1.
    pub(crate) fn v2_dir(&self, path: &str) -> Option<PathBuf> {
        self.cgroups.v2_dir(path).or_else(|| self.unified.as_ref().map(|u| u.path(path)))
    }

    /// The cgroup directory of a pod (its slice's path under systemd).
    pub(crate) fn pod_cgroup_path(&self, pod: &PodSandbox) -> String {
        if self.systemd { crate::cgroups::systemd::slice_path(pod.cgroup()).unwrap_or_default() } else { pod.cgroup().to_string() }
    }

    /// The cgroup a new container of `pod` gets: its directory, and the runtime's cgroupsPath.
    pub(crate) fn container_cgroup(&self, pod: &PodSandbox, id: &str) -> (String, String) {
        if self.systemd {
            let path = crate::cgroups::systemd::scope_path(pod.cgroup(), id).unwrap_or_default();
            (path, crate::cgroups::systemd::cgroups_path(pod.cgroup(), id))
        } else {
            let path = format!("{}/crio-{id}", pod.cgroup().trim_end_matches('/'));
            (path.clone(), path)
        }
    }

    /// The CNI network pods get, if one is usable.
    pub fn network_name(&self) -> Option<&str> {
        self.network.as_ref().map(|n| n.name.as_str())
    }

    pub(crate) fn runtime(&self, handler: &str) -> Result<&OciRuntime, LifecycleError> {
        let name = if handler.is_empty() { &self.config.crio.runtime.default_runtime } else { handler };
        self.runtimes.get(name).ok_or_else(|| LifecycleError::UnknownHandler {
            handler: name.to_string(),
            configured: self.runtimes.keys().cloned().collect(),
        })
    }

    /// RunPodSandbox as the kubelet needs it: completes even if the caller goes away, and a
    /// retry with the same name gets the same pod.
    pub async fn run_pod_once(self: &Arc<Self>, spec: PodSpec) -> Result<String, Arc<LifecycleError>> {
        let me = self.clone();
        let name = full_name(&spec);
        self.creations.run_once(&name, async move { me.run_pod(spec).await.map(|p| p.id) }).await
    }

    pub async fn run_pod(&self, spec: PodSpec) -> Result<PodSandbox, LifecycleError> {
        for (field, value) in [("metadata.name", &spec.name), ("metadata.namespace", &spec.namespace), ("metadata.uid", &spec.uid)] {
            if value.is_empty() {
                return Err(LifecycleError::InvalidArgument { field, why: "must not be empty".into() });
            }
        }
        if !spec.hostname.is_empty() {
            super::check_hostname(&spec.hostname).map_err(|why| LifecycleError::InvalidArgument { field: "config.hostname", why })?;
        }
        self.runtime(&spec.runtime_handler)?;
        let bad_parent = |why| LifecycleError::InvalidArgument { field: "config.linux.cgroup_parent", why };
        if self.systemd {
            if !spec.cgroup_parent.is_empty() {
                crate::cgroups::systemd::slice_path(&spec.cgroup_parent).map_err(bad_parent)?;
            }
        } else if Path::new(&spec.cgroup_parent).components().any(|c| c == std::path::Component::ParentDir) {
            return Err(bad_parent(format!("{:?} leaves the cgroup hierarchy", spec.cgroup_parent)));
        }
        for key in spec.sysctls.keys() {
            super::check_sysctl(key, spec.host_network, spec.host_ipc)
                .map_err(|why| LifecycleError::InvalidArgument { field: "config.linux.sysctls", why })?;
        }
        if !spec.host_network && self.network.is_none() {
            return Err(LifecycleError::NoNetwork { dir: self.config.crio.network.network_dir.clone() });
        }
        let id = new_id();
        let full = full_name(&spec);
        self.names.reserve(&full, &id).map_err(|holder| LifecycleError::NameInUse { name: full.clone(), id: holder })?;
        let c = &self.config.crio;
        let mut pod = PodSandbox {
            id: id.clone(),
            full_name: full,
            state: PodState::Ready,
            created_at_nanos: now_nanos(),
            ips: Vec::new(),
            netns: None,
            ipcns: None,
            utsns: None,
            pidns: None,
            pid_holder: 0,
            cgroup: match (spec.cgroup_parent.is_empty(), self.systemd) {
                (false, _) => spec.cgroup_parent.clone(),
                (true, false) => format!("/crio/pod-{id}"),
                (true, true) => crate::cgroups::systemd::DEFAULT_SLICE.into(),
            },
            cgroup_created: false,
            cgroup_id: 0,
            dir: c.state_dir.join("pods").join(&id),
            run_dir: c.runroot.join("pods").join(&id),
            monitor_pid: 0,
            spec,
        };
        let created = match self.set_up_pod(&mut pod).await {
            Ok(()) => self.pods.insert(&id, pod.clone()).await.map_err(LifecycleError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = created {
            // Undo whatever was set up: nothing of a failed run may remain.
            self.tear_down_pod(&pod, true).await;
            self.names.release(&pod.full_name);
            return Err(e);
        }
        tracing::info!(pod_sandbox_id = %id, pod_name = %pod.spec.name, pod_namespace = %pod.spec.namespace, "pod sandbox ready");
        Ok(pod)
    }

    async fn set_up_pod(&self, pod: &mut PodSandbox) -> Result<(), LifecycleError> {
        let began = std::time::Instant::now();
        for d in [&pod.dir, &pod.run_dir] {
            tokio::fs::create_dir_all(d).await.map_err(io_err("creating pod directory", d))?;
        }
        // Slices are systemd's (the kubelet asks it for them); cgroupfs pod cgroups may be ours.
        if !self.systemd {
            let (cgroups, path, resources) = (self.cgroups.clone(), pod.cgroup.clone(), pod.spec.resources.clone());
            pod.cgroup_created = tokio::task::spawn_blocking(move || cgroups.create_pod(&path, resources.as_ref()))
                .await
                .map_err(LifecycleError::Task)??;
        }
        // The kernel learns the pod's cgroup before anything runs in it; on hybrid hosts that is
        // the pod's directory in the unified hierarchy, made here.
        if let Some(dir) = self.v2_dir(&self.pod_cgroup_path(pod)) {
            if self.unified.is_some() {
                tokio::fs::create_dir_all(&dir).await.map_err(io_err("creating the pod's unified cgroup", &dir))?;
            }
            pod.cgroup_id = self.kernel.track_pod(&pod.id, &dir).unwrap_or(0);
        }
        let hostname = super::pod_hostname(&pod.spec);
        if !pod.spec.host_ipc {
            let path = pod.run_dir.join("ipc");
            let p = path.clone();
            tokio::task::spawn_blocking(move || namespace::pin_new(Kind::Ipc, &p, || Ok(())))
                .await
                .map_err(LifecycleError::Task)?
                .map_err(io_err("creating IPC namespace", &path))?;
            pod.ipcns = Some(path);
            let shm = pod.run_dir.join("shm");
            tokio::fs::create_dir_all(&shm).await.map_err(io_err("creating shm mountpoint", &shm))?;
            let data = format!("mode=1777,size={}", super::SHM_SIZE);
            let flags = rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV | rustix::mount::MountFlags::NOEXEC;
            let cdata = std::ffi::CString::new(data).expect("no NUL in mount options");
            rustix::mount::mount("shm", &shm, "tmpfs", flags, cdata.as_c_str()).map_err(|e| LifecycleError::Io {
                what: "mounting the pod's /dev/shm",
                path: shm.clone(),
                source: e.into(),
            })?;
        }
        if !pod.spec.host_network {
            let path = pod.run_dir.join("uts");
            let (p, name) = (path.clone(), hostname.clone());
            tokio::task::spawn_blocking(move || {
                namespace::pin_new(Kind::Uts, &p, move || rustix::system::sethostname(name.as_bytes()).map_err(std::io::Error::from))
            })
            .await
            .map_err(LifecycleError::Task)?
            .map_err(io_err("creating UTS namespace", &path))?;
            pod.utsns = Some(path);
        }
        let local_done = began.elapsed();
        // The monitor starts while the network is set up: neither needs the other.
        let socket = pod.monitor_socket();
        let log = pod.run_dir.join("monitor.log");
        let share_pid = pod.spec.share_pid && !pod.spec.host_pid;
        let (network, monitor) = tokio::join!(self.set_up_network(pod), client::spawn(&self.monitor_binary, &socket, &log, share_pid));
        // Recorded before any error is returned, so teardown finds the monitor.
        if let Ok(pid) = &monitor {
            pod.monitor_pid = *pid;
        }
        network?;
        monitor?;
        tracing::debug!(
            pod_sandbox_id = %pod.id,
            namespaces_cgroups_us = local_done.as_micros() as u64,
            network_and_monitor_us = (began.elapsed() - local_done).as_micros() as u64,
            "pod set up"
        );
        let resolv = match files::resolv_conf(&pod.spec.dns) {
            Some(text) => text,
            None => tokio::fs::read_to_string("/etc/resolv.conf").await.unwrap_or_default(),
        };
        let hosts = if pod.spec.host_network {
            tokio::fs::read_to_string("/etc/hosts").await.unwrap_or_else(|_| files::hosts(&hostname, None))
        } else {
            files::hosts(&hostname, pod.ips.first().map(String::as_str))
        };
        for (name, text) in [("resolv.conf", resolv), ("hosts", hosts), ("hostname", format!("{hostname}\n"))] {
            let path = pod.dir.join(name);
            tokio::fs::write(&path, text).await.map_err(io_err("writing pod file", &path))?;
        }
        if share_pid {
            let state = client::MonitorClient::new(&socket).request(&crate::monitor::protocol::Request::State).await?;
            let holder = state.pid_holder.unwrap_or(0);
            let source = PathBuf::from(format!("/proc/{holder}/ns/pid"));
            let path = pod.run_dir.join("pid");
            // Pinned by path, so a container never joins whatever later reuses the pid.
            namespace::pin_existing(&source, &path).map_err(io_err("pinning the pod's PID namespace", &path))?;
            (pod.pidns, pod.pid_holder) = (Some(path), holder);
        }
        Ok(())
    }

    /// The pod's network namespace and its CNI attachment (nothing for host-network pods).
    async fn set_up_network(&self, pod: &mut PodSandbox) -> Result<(), LifecycleError> {
        if pod.spec.host_network {
            return Ok(());
        }
        let netns = pod.run_dir.join("net");
        let p = netns.clone();
        tokio::task::spawn_blocking(move || NetNs::create(&p)).await.map_err(LifecycleError::Task)??;
        pod.netns = Some(netns.clone());
        self.cni.loopback(&netns, &pod.id).await?;
        let net = self.network.as_ref().expect("checked before set-up");
        let added = self.cni.add(net, &self.attachment(pod)).await?;
        pod.ips = added.ips.iter().map(|ip| ip.to_string()).collect();
        Ok(())
    }

    fn attachment(&self, pod: &PodSandbox) -> Attachment {
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

    /// Releases the pod's network (and, with `everything`, its namespaces, monitor and files).
    /// Idempotent; failures are logged, not returned, so teardown always runs to the end.
    pub(super) async fn tear_down_pod(&self, pod: &PodSandbox, everything: bool) {
        let net = self.network.as_ref().map(|n| (n, self.attachment(pod)));
        if let Err(e) = self.cni.del(&pod.id, net.as_ref().filter(|_| pod.netns.is_some()).map(|(n, a)| (*n, a))).await {
            tracing::warn!(pod_sandbox_id = %pod.id, error = %crate::error_chain(&e), "CNI DEL failed");
        }
        if let Some(ns) = &pod.netns {
            let _ = NetNs::remove(ns);
        }
        if !everything {
            return;
        }
        for ns in [&pod.ipcns, &pod.utsns, &pod.pidns].into_iter().flatten() {
            let _ = namespace::unpin(ns);
        }
        if let Some(shm) = pod.shm() {
            let _ = rustix::mount::unmount(&shm, rustix::mount::UnmountFlags::DETACH);
        }
        kill_monitor(pod.monitor_pid, &pod.monitor_socket());
        self.kernel.untrack(pod.cgroup_id, None);
        if let Some(unified) = &self.unified
            && let Err(e) = unified.remove(pod.cgroup())
        {
            tracing::warn!(pod_sandbox_id = %pod.id, error = %e, "removing the pod's unified cgroup failed");
        }
        if pod.cgroup_created
            && let Err(e) = self.cgroups.remove(pod.cgroup())
        {
            tracing::warn!(pod_sandbox_id = %pod.id, error = %crate::error_chain(&e), "removing the pod cgroup failed");
        }
        for d in [&pod.run_dir, &pod.dir] {
            let _ = tokio::fs::remove_dir_all(d).await;
        }
    }

    /// Stops every container and releases the network; idempotent (a missing pod is stopped).
    pub async fn stop_pod(&self, id: &str) -> Result<(), LifecycleError> {
        let Some(entry) = self.pods.resolve(id) else { return Ok(()) };
        let _op = entry.op.lock().await;
        let pod = entry.get();
        for ct in self.containers_of(&pod.id) {
            self.stop_container(&ct.id, 0).await?;
        }
        if pod.state == PodState::Ready {
            // What is left in a shared PID namespace (processes orphaned by the containers)
            // ends with its PID 1.
            kill_pid_holder(&pod);
            self.tear_down_pod(&pod, false).await;
            self.pods.update(&pod.id, &entry, |p| p.state = PodState::NotReady).await?;
            tracing::info!(pod_sandbox_id = %pod.id, "pod sandbox stopped");
        }
        Ok(())
    }

    /// Removes the pod and everything in it; idempotent.
    pub async fn remove_pod(&self, id: &str) -> Result<(), LifecycleError> {
        let Some(entry) = self.pods.resolve(id) else { return Ok(()) };
        self.stop_pod(id).await?;
        let _op = entry.op.lock().await;
        let pod = entry.get();
        for ct in self.containers_of(&pod.id) {
            self.remove_container(&ct.id).await?;
        }
        self.tear_down_pod(&pod, true).await;
        self.pods.remove(&pod.id).await?;
        self.names.release(&pod.full_name);
        tracing::info!(pod_sandbox_id = %pod.id, "pod sandbox removed");
        Ok(())
    }

    pub fn pod(&self, id: &str) -> Result<PodSandbox, LifecycleError> {
        self.pods.resolve(id).map(|e| e.get()).ok_or_else(|| LifecycleError::PodNotFound { id: id.into() })
    }

    /// Where a container's root filesystem is mounted.
    pub fn rootfs_of(&self, id: &str) -> PathBuf {
        self.images.store().container_mountpoint(id)
    }

    pub fn containers_of(&self, pod_id: &str) -> Vec<Container> {
        self.containers.all().into_iter().map(|e| e.get()).filter(|c| c.pod_id == pod_id).collect()
    }
}

/// SIGKILL to the pod's PID namespace holder, through a pidfd checked to be in the pinned
/// namespace, so a reused pid is never signalled.
fn kill_pid_holder(pod: &PodSandbox) {
    let (Some(ns), Some(pid)) = (&pod.pidns, rustix::process::Pid::from_raw(pod.pid_holder)) else { return };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else { return };
    if namespace::same(Path::new(&format!("/proc/{pid}/ns/pid")), ns) {
        let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
    }
}

/// SIGKILL to a monitor, but only if `pid` still is the monitor of `socket` (pids are reused).
fn kill_monitor(pid: u32, socket: &Path) {
    if pid == 0 || !super::recover::serves(pid, socket) {
        return;
    }
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}
