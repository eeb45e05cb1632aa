//! Start-up reconciliation after a crash or reboot, pods and (through the container service)
//! containers: what a dead daemon left half-made is torn down, what the node lost (a reboot)
//! is marked so, and the kernel programs learn every live cgroup again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::PodService;
use super::teardown::find_monitor;
use crate::model::{PodSandbox, PodSpec, PodState};
use crate::state::record_dirs as dirs;

impl PodService {
    pub async fn recover(&self) {
        self.containers.clean_half_created().await;
        // After the containers: a pod cgroup can only go once the cgroups below it have.
        let c = &self.config.crio;
        let pods: HashSet<String> = self.stores.pods.all().iter().map(|e| e.snapshot().id.clone()).collect();
        let pod_dirs: HashSet<String> = dirs(&c.state_dir.join("pods")).into_iter().chain(dirs(&c.runroot.join("pods"))).collect();
        for id in pod_dirs.difference(&pods).filter(|id| !self.stores.pods.is_quarantined(id)) {
            tracing::warn!(pod_sandbox_id = %id, "cleaning up a pod sandbox left half-created by a previous run");
            let orphan = orphan_pod(id, &c.state_dir.join("pods").join(id), &c.runroot.join("pods").join(id));
            self.tear_down_pod(&orphan, true).await;
        }
        self.containers.mark_lost().await;
        self.mark_lost().await;
        self.retrack();
        self.containers.reconcile_tuning();
    }

    /// A pod whose network namespace is gone (the node rebooted) is not ready.
    async fn mark_lost(&self) {
        for entry in self.stores.pods.all() {
            let pod = entry.get();
            let lost = pod.netns.as_ref().is_some_and(|ns| !crate::namespace::is_pinned(ns));
            if pod.state == PodState::Ready && lost {
                tracing::warn!(pod_sandbox_id = %pod.id, "pod network namespace is gone; marking the pod not ready");
                let _ = self.stores.pods.update(&pod.id, &entry, |p| p.state = PodState::NotReady).await;
            }
        }
    }

    /// Rebuilds what the kernel programs know: every recorded pod and container cgroup is
    /// tracked again (the pinned map may have outlived us, or not), and pinned entries no
    /// record owns are dropped.
    fn retrack(&self) {
        if !self.kernel.enabled() {
            return;
        }
        let mut owned = HashSet::new();
        for pod in self.list_pods() {
            if let Some(dir) = self.node.v2_dir(&self.node.pod_cgroup_path(&pod)) {
                owned.extend(self.kernel.track_pod(&pod.id, &dir));
            }
        }
        owned.extend(self.containers.retrack());
        self.kernel.reconcile(&owned);
    }
}

/// What teardown needs of a pod that has no record: its paths, whatever of them exists. Its
/// cgroup is the one the daemon would have made; a kubelet's is not known and stays.
fn orphan_pod(id: &str, dir: &Path, run_dir: &Path) -> PodSandbox {
    let existing = |name: &str| -> Option<PathBuf> { Some(run_dir.join(name)).filter(|p| p.exists()) };
    let monitor_pid = find_monitor(&run_dir.join("monitor.sock")).unwrap_or(0);
    PodSandbox {
        id: id.into(),
        full_name: String::new(),
        spec: PodSpec::default(),
        state: PodState::NotReady,
        created_at_nanos: 0,
        ips: Vec::new(),
        netns: existing("net"),
        ipcns: existing("ipc"),
        utsns: existing("uts"),
        pidns: existing("pid"),
        pid_holder: 0,
        cgroup: format!("/crio/pod-{id}"),
        cgroup_created: true,
        cgroup_id: 0,
        dir: dir.into(),
        run_dir: run_dir.into(),
        monitor_pid,
    }
}
