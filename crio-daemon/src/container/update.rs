//! UpdateContainerResources and ReopenContainerLog on a running container.

use super::{ContainerError, ContainerService};
use crate::model::{ContainerState, Resources};
use crate::monitor::client::MonitorClient;
use crate::monitor::protocol::Request;

impl ContainerService {
    /// Applies new resources to a running container (`<runtime> update`).
    pub async fn update_resources(&self, id: &str, requested: &Resources) -> Result<(), ContainerError> {
        let resources = requested;
        let ct = self.container(id).await?;
        if !matches!(ct.state, ContainerState::Running | ContainerState::Created) {
            return Err(ContainerError::WrongState {
                what: "container",
                id: ct.id,
                state: format!("{:?}", ct.state),
                op: "update its resources",
            });
        }
        // The kubelet's CPU manager re-sends its cpuset: the runtime's own choice, or the shared
        // pool beside the kubelet's CPUs, stays.
        let placed = ct.placement.as_ref().map(|p| self.tuning.updated_placement(p, &resources.cpuset_cpus));
        let mut resources = resources.clone();
        if let Some(p) = &placed {
            resources.cpuset_cpus = p.cpus.to_list();
            if resources.cpuset_mems.is_empty() {
                resources.cpuset_mems = p.mems.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            }
        }
        let body = runtime_update(&resources);
        self.node.runtime(&self.handler_of(&ct))?.update(&ct.id, &body).await?;
        let new = requested.clone();
        let entry = self.stores.containers.resolve(id).ok_or_else(|| ContainerError::ContainerNotFound { id: id.into() })?;
        self.stores
            .containers
            .update(&ct.id, &entry, move |c| {
                c.spec.resources = new;
                if placed.is_some() {
                    c.placement = placed;
                }
            })
            .await?;
        Ok(())
    }

    /// Asks the monitor to reopen the container's log (after the kubelet rotated it).
    pub async fn reopen_log(&self, id: &str) -> Result<(), ContainerError> {
        let ct = self.container(id).await?;
        if ct.state != ContainerState::Running {
            return Err(ContainerError::WrongState {
                what: "container",
                id: ct.id,
                state: format!("{:?}", ct.state),
                op: "reopen its log",
            });
        }
        let pod = self.stores.pods.get(&ct.pod_id).ok_or_else(|| ContainerError::PodNotFound { id: ct.pod_id.clone() })?.get();
        MonitorClient::new(&pod.monitor_socket()).request(&Request::ReopenLog { id: ct.id }).await?;
        Ok(())
    }
}

/// The body of `<runtime> update --resources -`.
fn runtime_update(resources: &Resources) -> serde_json::Value {
    let mut cpu = serde_json::Map::new();
    if resources.cpu_shares > 0 {
        cpu.insert("shares".into(), resources.cpu_shares.into());
    }
    if resources.cpu_quota != 0 {
        cpu.insert("quota".into(), resources.cpu_quota.into());
    }
    if resources.cpu_period > 0 {
        cpu.insert("period".into(), resources.cpu_period.into());
    }
    if !resources.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), resources.cpuset_cpus.clone().into());
    }
    if !resources.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), resources.cpuset_mems.clone().into());
    }
    let mut body = serde_json::json!({ "cpu": cpu });
    if resources.memory_limit > 0 {
        body["memory"] = serde_json::json!({ "limit": resources.memory_limit });
    }
    body
}
