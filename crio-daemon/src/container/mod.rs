//! The container service: containers created from an image's root filesystem with an OCI spec
//! built from the CRI request and the image config, run by the pod's monitor, started, stopped
//! and removed through the OCI runtime. Exits come from the monitor's durable exit records.
//! It reads pods from the shared records but never changes them; the pod service, which stops
//! and removes a pod's containers through this one, is above it.

mod attach;
mod by_image;
mod checkpoint;
mod create;
mod deferred;
pub mod events;
mod exec_session;
mod exec_sync;
pub mod lsm;
mod propagation;
mod recover;
mod remove;
mod seccomp_programs;
mod signal;
pub mod spec;
mod start_stop;
mod stats;
mod status;
mod update;
pub mod user;

pub use attach::Attachment;
pub use exec_session::{ExecSession, Reader as ExecReader, Wants, Writer as ExecWriter};
pub use signal::{cri_name as signal_name_of, number as signal_number_of};
pub use stats::{ContainerSample, LayerUse, Sample};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::blocking;
use crate::config::Config;
use crate::image::{ImageError, ImageService};
use crate::kernel::Kernel;
use crate::model::{Container, ContainerEvent};
use crate::monitor::client::MonitorError;
use crate::node::{Node, NodeError};
use crate::oci::OciError;
use crate::state::{Creations, StateError, Stores};
use crate::storage::StoreError;
use crate::tuning::{Tuning, TuningError};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("invalid {field}: {why}")]
    InvalidArgument { field: &'static str, why: String },
    /// A valid request this host cannot carry out.
    #[error("cannot apply {field}: {why}")]
    Unsupported { field: &'static str, why: String },
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
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("exec in container {id}")]
    Exec {
        id: String,
        #[source]
        source: crate::exec::ExecError,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Tuning(#[from] TuningError),
    #[error("a background task failed")]
    Task(#[from] tokio::task::JoinError),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io { what, path: path.into(), source }
}

/// Output kept per stream of an ExecSync, as CRI-O caps it.
const EXEC_OUTPUT_CAP: usize = 16 * 1024 * 1024;

pub struct ContainerService {
    config: Arc<Config>,
    images: Arc<ImageService>,
    stores: Arc<Stores>,
    node: Arc<Node>,
    tuning: Arc<Tuning>,
    kernel: Arc<Kernel>,
    /// The previous CPU sample per container, for usage_nano_cores.
    cpu_rates: crate::cgroups::CpuRates,
    /// Compiled seccomp programs by profile text: most containers share RuntimeDefault.
    seccomp_programs: seccomp_programs::SeccompPrograms,
    /// Removed containers' files, removed after the answer.
    deferred: Arc<deferred::Deferred>,
    events: tokio::sync::broadcast::Sender<ContainerEvent>,
    creations: Creations<ContainerError>,
    /// What this daemon holds, read once at start: privileged containers get it, and without
    /// CAP_SYS_RESOURCE negative oom_score_adj values are clamped.
    held_capabilities: Vec<String>,
    /// The system-call ABIs the kernel runs (RuntimeDefault filters cover those alone).
    abis: crate::seccomp::Abis,
    /// Images' parsed account files, for writing specs while root filesystems mount (bounded
    /// by images, not containers: not one of the tables that follow live objects).
    accounts: user::AccountsCache,
    /// Images' run configs (user, environment, entrypoint, volumes): read and parsed once.
    run_configs: by_image::ByImage<spec::ImageRunConfig>,
    /// The host's /dev, whose devices privileged containers get.
    host_dev: std::path::PathBuf,
    /// The host's AppArmor and SELinux, detected once at start.
    lsm: lsm::HostLsm,
    /// The exit watch runs (and has read the exits from before it began).
    exits_watched: Arc<AtomicBool>,
    /// Bumped by the exit watch at every exit record that lands (and at a queue overflow):
    /// waiting for an exit is waiting for this, not polling the record.
    exits_seen: tokio::sync::watch::Sender<u64>,
    /// One restore of hooks' settings at a time: the exit watch and StopContainer both see an
    /// exit, and the second must wait for the first's restore instead of skipping it or doing
    /// it again over a newer container's settings.
    hooks_restore: tokio::sync::Mutex<()>,
}

impl ContainerService {
    /// Entries in the service's own tables, which must follow live containers (leaks show here).
    pub fn table_sizes(&self) -> [(&'static str, usize); 3] {
        [
            ("container_cpu_samples", self.cpu_rates.tracked()),
            ("seccomp_programs", self.seccomp_programs.in_use()),
            ("container_creations", self.creations.len()),
        ]
    }
}

impl ContainerService {
    pub fn new(
        config: Arc<Config>,
        images: Arc<ImageService>,
        stores: Arc<Stores>,
        node: Arc<Node>,
        tuning: Arc<Tuning>,
        kernel: Arc<Kernel>,
    ) -> Result<Self, ContainerError> {
        let exits = config.crio.state_dir.join("exits");
        std::fs::create_dir_all(&exits).map_err(io_err("creating", &exits))?;
        let (events, _) = tokio::sync::broadcast::channel(events::EVENT_BUFFER);
        let lsm = lsm::HostLsm::detect(&node.host().sys);
        let abis = crate::seccomp::Abis::detect(&node.host().proc);
        if !abis.x32 && cfg!(target_arch = "x86_64") {
            tracing::info!("the kernel runs no x32 system calls: RuntimeDefault seccomp filters leave that ABI out");
        }
        Ok(Self {
            config,
            images,
            stores,
            node,
            tuning,
            kernel,
            cpu_rates: Default::default(),
            seccomp_programs: Default::default(),
            deferred: Arc::default(),
            events,
            creations: Creations::default(),
            exits_watched: Arc::default(),
            exits_seen: tokio::sync::watch::Sender::new(0),
            hooks_restore: tokio::sync::Mutex::new(()),
            held_capabilities: crate::capabilities::held(),
            abis,
            accounts: Default::default(),
            run_configs: Default::default(),
            host_dev: "/dev".into(),
            lsm,
        })
    }

    /// Where a container's root filesystem is mounted.
    pub fn rootfs_of(&self, id: &str) -> std::path::PathBuf {
        self.images.store().container_mountpoint(id)
    }

    /// The runtime handler the container was created with.
    fn handler_of(&self, ct: &Container) -> String {
        if let Some(h) = &ct.runtime_handler {
            return h.clone();
        }
        self.stores.pods.get(&ct.pod_id).map(|p| p.get().spec.runtime_handler).unwrap_or_default()
    }
}
