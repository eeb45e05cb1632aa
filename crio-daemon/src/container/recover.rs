//! The container half of start-up reconciliation: what a dead daemon left half-made (bundles
//! without a record, root filesystems no container owns) is torn down, containers the runtime
//! no longer knows (the node rebooted) are marked exited, and what live containers hold (kernel
//! tracking, IRQ CPUs, chosen CPUs) is taken again.

use std::collections::HashSet;
use std::path::Path;

use super::ContainerService;
use crate::model::{Container, ContainerState, PodSandbox, now_nanos};
use crate::oci::OciError;

/// The `linux.cgroupsPath` of an OCI bundle's config.
fn cgroups_path(config: &Path) -> Option<String> {
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(config).ok()?).ok()?;
    spec["linux"]["cgroupsPath"].as_str().map(str::to_string)
}

/// The runtime handler an OCI bundle's config was made for (our annotation, as CRI-O's).
fn runtime_handler(config: &Path) -> Option<String> {
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(config).ok()?).ok()?;
    spec["annotations"][crate::container::spec::RUNTIME_HANDLER_ANNOTATION].as_str().map(str::to_string)
}

impl ContainerService {
    /// Tears down bundles without a record and root filesystems no container owns. Before the
    /// pods': a pod cgroup can only go once the cgroups below it have.
    pub async fn clean_half_created(&self) {
        let containers_dir = self.config.crio.state_dir.join("containers");
        // Quarantined records describe containers we cannot account for: they count as owned.
        let records = &self.stores.containers;
        let owned: HashSet<String> = records.all().iter().map(|e| e.snapshot().id.clone()).collect();
        let ours = |id: &String| owned.contains(id) || records.is_quarantined(id);
        for id in crate::state::record_dirs(&containers_dir).into_iter().filter(|id| !ours(id)) {
            tracing::warn!(container_id = %id, "cleaning up a container left half-created by a previous run");
            let bundle = containers_dir.join(&id);
            // Only the runtime it was created with may delete it; no spec, no runtime create.
            match runtime_handler(&bundle.join("config.json")) {
                Some(handler) => match self.node.runtime(&handler) {
                    Ok(rt) => {
                        let _ = rt.delete(&id, true).await;
                    }
                    Err(_) => {
                        tracing::warn!(container_id = %id, runtime_handler = %handler, "its runtime handler is no longer configured; left for the operator");
                        continue;
                    }
                },
                None if bundle.join("config.json").exists() => {
                    tracing::warn!(container_id = %id, "its bundle does not name a runtime handler; left for the operator");
                    continue;
                }
                None => {}
            }
            // The runtime removed the v1 cgroups; the unified one of a hybrid host is ours.
            if let (Some(unified), Some(path)) = (self.node.unified(), cgroups_path(&bundle.join("config.json"))) {
                let _ = unified.remove(&path);
            }
            let _ = tokio::fs::remove_dir_all(&bundle).await;
        }
        let store = self.images.store().clone();
        let quarantined: HashSet<String> = store.snapshot().containers.keys().filter(|id| records.is_quarantined(id)).cloned().collect();
        let _ = tokio::task::spawn_blocking(move || {
            for id in store.snapshot().containers.keys().filter(|id| !owned.contains(*id) && !quarantined.contains(*id)) {
                if let Err(e) = store.remove_container(id) {
                    tracing::warn!(container_id = %id, error = %crate::error_chain(&e), "removing an orphaned root filesystem");
                }
            }
        })
        .await;
    }

    /// Containers recorded as running that the runtime no longer has, with no exit record:
    /// after a reboot they are gone; say so instead of reporting them running forever.
    pub async fn mark_lost(&self) {
        for entry in self.stores.containers.all() {
            let ct = entry.get();
            if !matches!(ct.state, ContainerState::Running | ContainerState::Created) || ct.exit_file().exists() {
                continue;
            }
            let Ok(rt) = self.node.runtime(&self.handler_of(&ct)) else { continue };
            if let Err(OciError::NotFound { .. }) = rt.state(&ct.id).await {
                tracing::warn!(container_id = %ct.id, "container is gone from the runtime; marking it exited");
                let _ = self
                    .stores
                    .containers
                    .update(&ct.id, &entry, |c| {
                        c.state = ContainerState::Exited;
                        c.exit_code = 255;
                        c.reason = "Error".into();
                        c.message = "container lost: the runtime has no record of it (node rebooted?)".into();
                        c.finished_at_nanos = now_nanos();
                    })
                    .await;
            }
        }
    }

    /// Tracks every recorded container's cgroup in the kernel programs again; returns the
    /// cgroup ids now owned.
    pub fn retrack(&self) -> HashSet<u64> {
        let mut owned = HashSet::new();
        for ct in self.stores.containers.all().into_iter().map(|e| e.get()) {
            if let Some(pod) = self.stores.pods.get(&ct.pod_id) {
                owned.insert(self.track_container(&ct, &pod.snapshot()));
            }
        }
        owned
    }

    /// Live containers take their IRQ CPUs and chosen CPUs again; ended ones give theirs back.
    pub fn reconcile_tuning(&self) {
        let live: Vec<std::sync::Arc<Container>> = self
            .stores
            .containers
            .all()
            .into_iter()
            .map(|e| e.snapshot())
            .filter(|c| matches!(c.state, ContainerState::Running | ContainerState::Created))
            .collect();
        let running: HashSet<String> = live.iter().map(|c| c.id.clone()).collect();
        // Quarantined records describe containers we cannot account for: their settings stay.
        self.tuning.reconcile_hooks(|id| running.contains(id) || self.stores.containers.is_quarantined(id));
        self.tuning.reconcile_irqs(&running);
        self.tuning.reconcile_placements(live.iter().filter_map(|c| c.placement.as_ref().map(|p| (c.id.as_str(), p))));
    }

    /// Tells the kernel programs the container's cgroup (before it starts: its first
    /// instruction is seen). Returns the cgroup id, 0 when not tracked.
    pub(super) fn track_container(&self, ct: &Container, pod: &PodSandbox) -> u64 {
        let Some(dir) = self.node.v2_dir(&ct.cgroup_path) else { return 0 };
        let cgroups = self.node.cgroups();
        let memcg = cgroups.memory_dir(&ct.cgroup_path);
        let pod_memcg = cgroups.memory_dir(&self.node.pod_cgroup_path(pod));
        let cpu = cgroups.controller_dir("cpu", &ct.cgroup_path);
        // Only while it lives: an ended container's CPUs are nobody's.
        let live = matches!(ct.state, ContainerState::Created | ContainerState::Running);
        let isolated_cpus = if live { ct.isolated_cpus.as_str() } else { "" };
        let tracked = crate::kernel::ContainerCgroups { dir: &dir, memcg: &memcg, pod_memcg: &pod_memcg, cpu: &cpu, isolated_cpus };
        self.kernel.track_container((&pod.id, &ct.id), ct.pid.max(0) as u32, &tracked).unwrap_or(0)
    }
}
