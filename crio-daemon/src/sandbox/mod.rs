//! The pod service. Pod sandboxes without an infra container (CRI-O's `drop_infra_ctr`): a
//! pod is a set of pinned namespaces (network, IPC, UTS with its hostname), shared files
//! (resolv.conf, hosts, hostname), its CNI attachment, and its monitor process. Containers
//! join those namespaces. Every step of creation is undone by one idempotent teardown, which
//! also serves stop, remove and recovery. Stopping or removing a pod stops or removes its
//! containers through the container service, which is below this one.

pub mod files;
mod port_forward;
mod recover;
mod run;
mod status;
mod stop_remove;
mod teardown;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cgroups::CgroupError;
use crate::config::Config;
use crate::container::{ContainerError, ContainerService};
use crate::kernel::Kernel;
use crate::monitor::client::MonitorError;
use crate::network::cni::CniError;
use crate::network::netns::NetNsError;
use crate::node::{Node, NodeError};
use crate::state::{Creations, StateError, Stores};

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("invalid {field}: {why}")]
    InvalidArgument { field: &'static str, why: String },
    #[error("name {name} is reserved by {id}")]
    NameInUse { name: String, id: String },
    #[error("pod sandbox {id} not found")]
    PodNotFound { id: String },
    #[error("no CNI network is configured in {dir}")]
    NoNetwork { dir: PathBuf },
    #[error("pod sandbox {id} is not ready")]
    NotReady { id: String },
    #[error("connecting to port {port} in pod sandbox {id}")]
    Dial {
        id: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// StopPodSandbox went on past these containers and released the pod's network; a retry
    /// tries them again.
    #[error("pod sandbox {id} stopped, but these of its containers did not: {}", left.join("; "))]
    ContainersLeft { id: String, left: Vec<String> },
    #[error("a background task failed")]
    Task(#[from] tokio::task::JoinError),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PodError + 'a {
    move |source| PodError::Io { what, path: path.into(), source }
}

pub struct PodService {
    config: Arc<Config>,
    stores: Arc<Stores>,
    node: Arc<Node>,
    kernel: Arc<Kernel>,
    containers: Arc<ContainerService>,
    creations: Creations<PodError>,
    cpu_rates: crate::cgroups::CpuRates,
    netns_pool: Arc<crate::network::netns::NetNsPool>,
}

/// Network namespaces kept made ahead: a sequence of pod starts takes one at a time; a burst
/// empties the pool and makes the rest as before.
const NETNS_AHEAD: usize = 2;

impl PodService {
    pub fn new(config: Arc<Config>, stores: Arc<Stores>, node: Arc<Node>, kernel: Arc<Kernel>, containers: Arc<ContainerService>) -> Self {
        let netns_pool = Arc::new(crate::network::netns::NetNsPool::new(NETNS_AHEAD));
        Self { config, stores, node, kernel, containers, creations: Creations::default(), cpu_rates: Default::default(), netns_pool }
    }

    /// The sizes of the tables that grow with pods (their entries leave with their pods).
    pub fn table_sizes(&self) -> [(&'static str, usize); 2] {
        [("pod_creations", self.creations.len()), ("pod_cpu_samples", self.cpu_rates.tracked())]
    }
}
