//! StopPodSandbox and RemovePodSandbox: the pod's containers first (through the container
//! service), then what the pod holds. Both idempotent, as the CRI requires.

use super::teardown::kill_pid_holder;
use super::{PodError, PodService};
use crate::model::PodState;

impl PodService {
    /// Stops every container and releases the network; idempotent (a missing pod is stopped).
    /// A container that fails to stop does not keep the others running or the network held:
    /// the rest goes on, and the error names what was left.
    pub async fn stop_pod(&self, id: &str) -> Result<(), PodError> {
        let Some(entry) = self.stores.pods.resolve(id) else { return Ok(()) };
        let _op = entry.op.lock().await;
        let pod = entry.get();
        let mut left = Vec::new();
        for ct in self.stores.containers_of(&pod.id) {
            if let Err(e) = self.containers.stop_container(&ct.id, 0).await {
                tracing::error!(pod_sandbox_id = %pod.id, container_id = %ct.id, error = %crate::error_chain(&e), "container did not stop");
                left.push(format!("{}: {}", ct.id, crate::error_chain(&e)));
            }
        }
        if pod.state == PodState::Ready {
            // What is left in a shared PID namespace (processes orphaned by the containers)
            // ends with its PID 1.
            kill_pid_holder(&pod);
            let released = self.tear_down_pod(&pod, false).await;
            self.stores
                .pods
                .update(&pod.id, &entry, |p| {
                    p.state = PodState::NotReady;
                    // Gone with its network: RemovePodSandbox has no DEL left to run.
                    if released {
                        p.netns = None;
                    }
                })
                .await?;
            tracing::info!(pod_sandbox_id = %pod.id, "pod sandbox stopped");
        }
        if !left.is_empty() {
            return Err(PodError::ContainersLeft { id: pod.id, left });
        }
        Ok(())
    }

    /// In-place pod resize: the pod cgroup this runtime made gets the new pod-level limits
    /// (`resources` with `overhead` added). A pod cgroup the kubelet made (`cgroup_parent`) or
    /// systemd holds is resized by its owner; nothing is left for the runtime to do there.
    pub async fn update_resources(
        &self,
        id: &str,
        resources: Option<crate::model::Resources>,
        overhead: Option<crate::model::Resources>,
    ) -> Result<(), PodError> {
        let entry = self.stores.pods.resolve(id).ok_or_else(|| PodError::PodNotFound { id: id.into() })?;
        let _op = entry.op.lock().await;
        let pod = entry.get();
        if pod.state != PodState::Ready {
            return Err(PodError::NotReady { id: pod.id });
        }
        let Some(total) = crate::model::Resources::pod_total(resources.as_ref(), overhead.as_ref()) else { return Ok(()) };
        if !pod.cgroup_created || self.node.systemd() {
            tracing::debug!(pod_sandbox_id = %pod.id, "pod cgroup belongs to the kubelet or systemd, which resizes it");
            return Ok(());
        }
        let (cgroups, path, limits) = (self.node.cgroups().clone(), pod.cgroup.clone(), total.clone());
        tokio::task::spawn_blocking(move || cgroups.update_pod(&path, &limits)).await??;
        self.stores.pods.update(&pod.id, &entry, |p| p.spec.resources = Some(total)).await?;
        tracing::info!(pod_sandbox_id = %pod.id, "pod sandbox resources updated");
        Ok(())
    }

    /// Removes the pod and everything in it; idempotent.
    pub async fn remove_pod(&self, id: &str) -> Result<(), PodError> {
        let Some(entry) = self.stores.pods.resolve(id) else { return Ok(()) };
        self.stop_pod(id).await?;
        let _op = entry.op.lock().await;
        let pod = entry.get();
        for ct in self.stores.containers_of(&pod.id) {
            self.containers.remove_container(&ct.id).await?;
        }
        // Its containers' directories are gone too when the pod is.
        self.containers.removals_settled().await;
        self.tear_down_pod(&pod, true).await;
        self.stores.pods.remove(&pod.id).await?;
        self.stores.names.release(&pod.full_name);
        self.creations.forget(&pod.full_name);
        self.cpu_rates.forget(&pod.id);
        tracing::info!(pod_sandbox_id = %pod.id, "pod sandbox removed");
        Ok(())
    }
}
