//! Start-up reconciliation after a crash or reboot: what a dead daemon left half-made (pods and
//! containers with files but no record, root filesystems no container owns) is torn down, and
//! containers the runtime no longer knows (the node rebooted) are marked exited.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{Lifecycle, PodSandbox, PodSpec, PodState};
use crate::container::ContainerState;
use crate::oci::OciError;

/// Directory names under `dir` (records are `<id>.json` files beside them).
fn dirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

impl Lifecycle {
    pub async fn recover(&self) {
        let c = &self.config.crio;
        let containers: HashSet<String> = self.containers.all().iter().map(|e| e.get().id).collect();
        let runtime = self.runtime("").ok().cloned();
        for id in dirs(&c.state_dir.join("containers")).into_iter().filter(|id| !containers.contains(id)) {
            tracing::warn!(container_id = %id, "cleaning up a container left half-created by a previous run");
            if let Some(rt) = &runtime {
                let _ = rt.delete(&id, true).await;
            }
            let bundle = c.state_dir.join("containers").join(&id);
            // The runtime removed the v1 cgroups; the unified one of a hybrid host is ours.
            if let (Some(unified), Some(path)) = (&self.unified, cgroups_path(&bundle.join("config.json"))) {
                let _ = unified.remove(&path);
            }
            let _ = tokio::fs::remove_dir_all(&bundle).await;
        }
        // After the containers: a pod cgroup can only go once the cgroups below it have.
        let pods: HashSet<String> = self.pods.all().iter().map(|e| e.get().id).collect();
        let pod_dirs: HashSet<String> = dirs(&c.state_dir.join("pods")).into_iter().chain(dirs(&c.runroot.join("pods"))).collect();
        for id in pod_dirs.difference(&pods) {
            tracing::warn!(pod_sandbox_id = %id, "cleaning up a pod sandbox left half-created by a previous run");
            let orphan = orphan_pod(id, &c.state_dir.join("pods").join(id), &c.runroot.join("pods").join(id));
            self.tear_down_pod(&orphan, true).await;
        }
        let store = self.images.store().clone();
        let owned = containers.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for id in store.snapshot().containers.keys().filter(|id| !owned.contains(*id)) {
                if let Err(e) = store.remove_container(id) {
                    tracing::warn!(container_id = %id, error = %crate::error_chain(&e), "removing an orphaned root filesystem");
                }
            }
        })
        .await;
        self.reconcile_lost().await;
        self.retrack();
        let running: HashSet<String> = self
            .containers
            .all()
            .into_iter()
            .map(|e| e.get())
            .filter(|c| matches!(c.state, ContainerState::Running | ContainerState::Created))
            .map(|c| c.id)
            .collect();
        self.reconcile_irqs(&running);
        self.reconcile_placements();
    }

    /// Rebuilds what the kernel programs know: every recorded pod and container cgroup is
    /// tracked again (the pinned map may have outlived us, or not), and pinned entries no
    /// record owns are dropped.
    fn retrack(&self) {
        if !self.kernel.enabled() {
            return;
        }
        let mut owned = HashSet::new();
        let pods: std::collections::HashMap<String, PodSandbox> =
            self.pods.all().into_iter().map(|e| (e.get().id.clone(), e.get())).collect();
        for pod in pods.values() {
            if let Some(dir) = self.v2_dir(&self.pod_cgroup_path(pod)) {
                owned.extend(self.kernel.track_pod(&pod.id, &dir));
            }
        }
        for ct in self.containers.all().into_iter().map(|e| e.get()) {
            if let Some(pod) = pods.get(&ct.pod_id) {
                owned.insert(self.track_container(&ct, pod));
            }
        }
        self.kernel.reconcile(&owned);
    }

    /// Containers recorded as running that the runtime no longer has, with no exit record:
    /// after a reboot they are gone; say so instead of reporting them running forever.
    async fn reconcile_lost(&self) {
        for entry in self.containers.all() {
            let ct = entry.get();
            if !matches!(ct.state, ContainerState::Running | ContainerState::Created) || ct.exit_file().exists() {
                continue;
            }
            let handler = self.pods.get(&ct.pod_id).map(|p| p.get().spec.runtime_handler).unwrap_or_default();
            let Ok(rt) = self.runtime(&handler) else { continue };
            if let Err(OciError::NotFound { .. }) = rt.state(&ct.id).await {
                tracing::warn!(container_id = %ct.id, "container is gone from the runtime; marking it exited");
                let _ = self
                    .containers
                    .update(&ct.id, &entry, |c| {
                        c.state = ContainerState::Exited;
                        c.exit_code = 255;
                        c.reason = "Error".into();
                        c.message = "container lost: the runtime has no record of it (node rebooted?)".into();
                        c.finished_at_nanos = super::now_nanos();
                    })
                    .await;
            }
        }
        for entry in self.pods.all() {
            let pod = entry.get();
            let lost = pod.netns.as_ref().is_some_and(|ns| !crate::namespace::is_pinned(ns));
            if pod.state == PodState::Ready && lost {
                tracing::warn!(pod_sandbox_id = %pod.id, "pod network namespace is gone; marking the pod not ready");
                let _ = self.pods.update(&pod.id, &entry, |p| p.state = PodState::NotReady).await;
            }
        }
    }
}

/// The `linux.cgroupsPath` of an OCI bundle's config.
fn cgroups_path(config: &Path) -> Option<String> {
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(config).ok()?).ok()?;
    spec["linux"]["cgroupsPath"].as_str().map(str::to_string)
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

/// The pid of the monitor serving `socket`, found by its command line.
pub(super) fn find_monitor(socket: &Path) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
        serves(pid, socket).then_some(pid)
    })
}

/// Whether `pid` is `crio-monitor <socket>` (pids are reused; never signal on a pid alone).
/// The holder of a pod's PID namespace is a fork of its monitor with the same command line
/// but its own name.
pub(super) fn serves(pid: u32, socket: &Path) -> bool {
    if std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_ascii_end() != b"crio-monitor") {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let mut args = cmdline.split(|b| *b == 0);
    args.next().is_some_and(|a| a.ends_with(b"crio-monitor")) && args.next() == Some(socket.as_os_str().as_encoded_bytes())
}
