//! Attach: joining the stdio of a running container, which its pod's monitor holds. The
//! monitor serves each attacher on a connection of its own (`monitor::protocol::attach`).

use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::{ContainerError, ContainerService};
use crate::model::ContainerState;
use crate::monitor::client::MonitorClient;

/// A connection to the monitor carrying one container's stdio.
pub struct Attachment {
    /// Output and, last, the exit: `protocol::attach` frames.
    pub output: BufReader<OwnedReadHalf>,
    /// Stdin, its end and resizes.
    pub input: OwnedWriteHalf,
}

impl ContainerService {
    pub async fn attach(&self, id: &str) -> Result<Attachment, ContainerError> {
        let ct = self.container(id).await?;
        if ct.state != ContainerState::Running {
            return Err(ContainerError::WrongState { what: "container", id: ct.id, state: format!("{:?}", ct.state), op: "attach to it" });
        }
        let pod = self.stores.pods.get(&ct.pod_id).ok_or_else(|| ContainerError::PodNotFound { id: ct.pod_id.clone() })?.get();
        let (output, input) = MonitorClient::new(&pod.monitor_socket()).attach(&ct.id).await?;
        Ok(Attachment { output, input })
    }
}
