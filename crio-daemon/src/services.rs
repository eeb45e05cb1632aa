//! The daemon's services, made once at start and passed to every edge (the CRI, the status
//! API, the metrics endpoint) as one struct of `Arc`s. The dependency tree, top down:
//! pods -> containers -> {tuning, node, kernel, images}, each of them over the record stores.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::container::{ContainerError, ContainerService};
use crate::image::ImageService;
use crate::kernel::Kernel;
use crate::node::{HostPaths, Node};
use crate::sandbox::PodService;
use crate::state::{StateError, Stores};
use crate::tuning::Tuning;

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("loading the pod and container records")]
    Records(#[source] StateError),
    #[error("setting up the container service")]
    Containers(#[source] ContainerError),
}

#[derive(Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub images: Arc<ImageService>,
    pub kernel: Arc<Kernel>,
    pub node: Arc<Node>,
    pub containers: Arc<ContainerService>,
    pub pods: Arc<PodService>,
    /// Streaming requests waiting for their clients (Exec, Attach, PortForward).
    pub streams: Arc<crate::streaming::Tokens>,
}

impl Services {
    /// Loads the records and wires the services; nothing on the host is changed yet (that is
    /// `recover`'s job).
    pub fn new(
        config: Arc<Config>,
        images: Arc<ImageService>,
        kernel: Arc<Kernel>,
        monitor_binary: PathBuf,
        host: HostPaths,
        topology: Option<Arc<dyn crio_hooks::topology::Topology>>,
    ) -> Result<Self, ServicesError> {
        let (stores, unreadable) = Stores::load(&config.crio.state_dir).map_err(ServicesError::Records)?;
        for (path, why) in unreadable {
            tracing::error!(path = %path.display(), error = %why, "unreadable state record quarantined; what it describes is left alone");
        }
        let stores = Arc::new(stores);
        let node = Arc::new(Node::new(config.clone(), monitor_binary, host.clone()));
        let tuning = Arc::new(Tuning::new(config.clone(), node.cgroups().clone(), host, topology));
        let containers = Arc::new(
            ContainerService::new(config.clone(), images.clone(), stores.clone(), node.clone(), tuning, kernel.clone())
                .map_err(ServicesError::Containers)?,
        );
        let pods = Arc::new(PodService::new(config.clone(), stores, node.clone(), kernel.clone(), containers.clone()));
        Ok(Self { config, images, kernel, node, containers, pods, streams: Arc::default() })
    }
}
