//! RemoveContainer, and what every ended container gives back: its IRQ CPUs, its placement,
//! its hooks' settings; then the runtime's container, the root filesystem and the bundle.

use crio_hooks::files;

use super::{ContainerError, ContainerService};
use crate::model::{Container, ContainerState, EventKind};
use crate::monitor::client::MonitorClient;
use crate::monitor::protocol::Request;

impl ContainerService {
    /// Kills if needed and deletes everything of the container; a missing one is removed.
    /// The answer comes once its processes' cgroups and its record are gone (the two side by
    /// side: neither needs the other); its root filesystem is unmounted and its runtime state,
    /// directories and exit record are deleted right after (see `deferred`).
    pub async fn remove_container(&self, id: &str) -> Result<(), ContainerError> {
        let Some(entry) = self.stores.containers.resolve(id) else { return Ok(()) };
        self.stop_container(id, 0).await?;
        let _op = entry.op.lock().await;
        self.give_back(id).await;
        let ct = entry.get();
        let handler = self.handler_of(&ct);
        // Crash-safe in either order: until the deferred work ends, the bundle is there and
        // recovery deletes a bundle without a record through the runtime.
        let ((), unrecorded) = tokio::join!(self.release_runtime_state(&ct, &handler), self.stores.containers.remove(&ct.id));
        unrecorded?;
        self.tuning.crash_point("remove:unrecorded");
        self.stores.names.release(&ct.full_name);
        self.creations.forget(&super::create::creation_key(&ct.pod_id, &ct.spec.name, ct.spec.attempt));
        self.emit(&ct, EventKind::Deleted);
        self.deferred.spawn(self.files_of(&ct, &handler).remove());
        tracing::info!(container_id = %ct.id, "container removed");
        Ok(())
    }

    /// Returns once every removed container's files are gone (RemoveImage waits for this:
    /// until then the store still records the container as using its image).
    pub async fn removals_settled(&self) {
        self.deferred.settled().await;
    }

    /// Deletes the runtime's container, the root filesystem and the bundle; idempotent.
    pub(super) async fn tear_down_container(&self, ct: &Container, handler: &str) {
        self.release_runtime_state(ct, handler).await;
        self.files_of(ct, handler).remove().await;
    }

    /// What must be gone before RemoveContainer answers: the container's cgroups (the pod's
    /// cgroup can go only after them; the runtime's own delete when it is needed), and what
    /// the daemon keeps for it.
    async fn release_runtime_state(&self, ct: &Container, handler: &str) {
        if let Ok(rt) = self.node.runtime(handler)
            && !self.deleted_without_runtime(ct, rt).await
            && let Err(e) = rt.delete(&ct.id, true).await
        {
            tracing::warn!(container_id = %ct.id, error = %crate::error_chain(&e), "runtime delete failed");
        }
        self.cpu_rates.forget(&ct.id);
        self.seccomp_programs.release(&ct.id);
        self.kernel.untrack(ct.cgroup_id, Some(&ct.id));
        if let Some(unified) = self.node.unified()
            && let Err(e) = unified.remove(&ct.cgroup_path)
        {
            tracing::warn!(container_id = %ct.id, error = %e, "removing the unified cgroup");
        }
    }

    /// The container's files, to remove with or after its record.
    fn files_of(&self, ct: &Container, handler: &str) -> ContainerFiles {
        ContainerFiles {
            runtime_state: self.node.runtime(handler).ok().map(|rt| rt.root.join(&ct.id)),
            id: ct.id.clone(),
            monitor: self.stores.pods.get(&ct.pod_id).map(|p| p.get().monitor_socket()),
            store: self.images.store().clone(),
            bundle: ct.bundle.clone(),
            exit_file: ct.exit_file(),
        }
    }

    /// What `runtime delete` does for a container whose processes are all gone, done here
    /// without starting the runtime (a Go process for runc: most of RemoveContainer's time):
    /// its cgroups removed (an rmdir fails while any process is left); its state directory
    /// goes with its files, behind the answer (an unlink on a disk-backed run dir costs a
    /// millisecond). Anything else goes through the runtime: a container not known to have
    /// exited, one whose spec may hold hooks the runtime runs at delete (only CDI adds hooks),
    /// systemd scopes. Returns whether it was done.
    async fn deleted_without_runtime(&self, ct: &Container, rt: &crate::oci::OciRuntime) -> bool {
        if ct.state != ContainerState::Exited || has_hooks(ct) || rt.systemd_cgroup {
            return false;
        }
        let (cgroups, path) = (self.node.cgroups().clone(), ct.cgroup_path.clone());
        tokio::task::spawn_blocking(move || cgroups.remove(&path).is_ok()).await.unwrap_or(false)
    }

    /// What an ended container held goes back: its IRQ CPUs, its placement, its hooks'
    /// settings. Safe to call more than once and from both the exit watch and StopContainer.
    pub(super) async fn give_back(&self, id: &str) {
        self.kernel.end_isolation(id);
        // Most containers steer no IRQs: no hand-off of the runtime thread for them.
        if self.tuning.steers_irqs(id) {
            super::blocking(|| self.tuning.release_irqs(id));
        }
        self.tuning.release_placement(id);
        self.restore_hooks(id).await;
    }

    /// Puts back what the hooks changed for a container that has ended, once: a second caller
    /// waits for the first's restore to be done and recorded.
    async fn restore_hooks(&self, id: &str) {
        // The record's list is cleared only after its restore is done: empty means nothing to
        // wait for (most containers never had hooks).
        if self.stores.containers.resolve(id).is_none_or(|e| e.snapshot().hooks.is_empty()) {
            return;
        }
        let _one = self.hooks_restore.lock().await;
        let Some(entry) = self.stores.containers.resolve(id) else { return };
        let changes = entry.get().hooks;
        if changes.is_empty() {
            return;
        }
        for e in files::restore(&changes) {
            tracing::warn!(container_id = %id, error = %crate::error_chain(&e), "could not restore a setting");
        }
        let _ = self.stores.containers.update(id, &entry, |c| c.hooks.clear()).await;
        self.tuning.forget_hooks(id);
        tracing::info!(container_id = %id, "high-performance hooks restored");
    }
}

/// What is left of a removed container on disk, and in its pod's monitor.
struct ContainerFiles {
    id: String,
    /// The runtime's state directory of the container (gone already when the runtime deleted it).
    runtime_state: Option<std::path::PathBuf>,
    monitor: Option<std::path::PathBuf>,
    store: std::sync::Arc<crate::storage::Store>,
    bundle: std::path::PathBuf,
    exit_file: std::path::PathBuf,
}

impl ContainerFiles {
    /// The monitor lets go of the container's log and stdio (a crash-looping container would
    /// otherwise hold one log descriptor per restart until its pod goes); the runtime's state,
    /// the root filesystem (unmounted first), bundle and exit record are deleted. The bundle
    /// goes last of what recovery needs: while it is there, a restart deletes the container
    /// through its runtime. Idempotent; failures are logged.
    async fn remove(self) {
        if let Some(socket) = &self.monitor {
            let req = Request::Forget { id: self.id.clone() };
            if let Err(e) = MonitorClient::new(socket).request(&req).await {
                // A stopped pod's monitor is gone already, and with it what it held.
                tracing::debug!(container_id = %self.id, error = %crate::error_chain(&e), "monitor did not forget the container");
            }
        }
        let (store, id) = (self.store, self.id.clone());
        warn_failed(&self.id, "removing root filesystem failed", tokio::task::spawn_blocking(move || store.remove_container(&id)).await);
        if let Some(dir) = &self.runtime_state
            && let Err(e) = tokio::fs::remove_dir_all(dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(container_id = %self.id, path = %dir.display(), error = %e, "removing the runtime's state failed; the bundle is kept for the next start to delete it");
            return;
        }
        let _ = tokio::fs::remove_dir_all(&self.bundle).await;
        let _ = tokio::fs::remove_file(&self.exit_file).await;
    }
}

/// Whether the container's spec may hold hooks the runtime runs at delete (only CDI adds
/// hooks to our specs).
fn has_hooks(ct: &Container) -> bool {
    !ct.spec.cdi_devices.is_empty()
}

/// Logs a store operation on the blocking pool that failed (or whose task did).
fn warn_failed(id: &str, what: &str, done: Result<Result<(), crate::storage::StoreError>, tokio::task::JoinError>) {
    match done {
        Ok(Err(e)) => tracing::warn!(container_id = %id, error = %crate::error_chain(&e), "{what}"),
        Err(e) => tracing::warn!(container_id = %id, error = %e, "{what}"),
        Ok(Ok(())) => {}
    }
}
