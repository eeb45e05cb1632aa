//! The one teardown of a pod, for a failed run, stop, remove and recovery: idempotent, and
//! it never stops at a failure (each is logged) so nothing is left behind.

use std::path::Path;

use super::PodService;
use crate::model::PodSandbox;
use crate::namespace;
use crate::network::netns::NetNs;

impl PodService {
    /// Releases the pod's network (and, with `everything`, its namespaces, monitor and files).
    /// Idempotent; failures are logged, not returned, so teardown always runs to the end.
    /// Returns whether the network is released (CNI DEL done and the namespace gone): a
    /// stopped pod records that, and its removal does not run the plugins again.
    pub(super) async fn tear_down_pod(&self, pod: &PodSandbox, everything: bool) -> bool {
        let net = self.node.network().map(|n| (n, self.node.attachment(pod)));
        let mut released = true;
        let began = std::time::Instant::now();
        if let Err(e) = self.node.cni().del(&pod.id, net.as_ref().filter(|_| pod.netns.is_some()).map(|(n, a)| (*n, a))).await {
            tracing::warn!(pod_sandbox_id = %pod.id, error = %crate::error_chain(&e), "CNI DEL failed");
            released = false;
        }
        let deleted = began.elapsed();
        if let Some(ns) = &pod.netns {
            released &= NetNs::remove(ns).is_ok();
        }
        tracing::debug!(
            pod_sandbox_id = %pod.id,
            cni_del_us = deleted.as_micros() as u64,
            netns_us = (began.elapsed() - deleted).as_micros() as u64,
            "pod network released"
        );
        if !everything {
            return released;
        }
        // Pins are the pod's files; a namespace its monitor holds (`/proc/<pid>/ns/...`) goes
        // with the monitor.
        for ns in [&pod.ipcns, &pod.utsns, &pod.pidns].into_iter().flatten().filter(|ns| ns.starts_with(&pod.run_dir)) {
            let _ = namespace::unpin(ns);
        }
        if let Some(shm) = pod.shm() {
            let _ = rustix::mount::unmount(&shm, rustix::mount::UnmountFlags::DETACH);
        }
        self.node.monitors().forget(&pod.monitor_socket());
        kill_monitor(pod.monitor_pid, &pod.monitor_socket());
        self.kernel.untrack(pod.cgroup_id, None);
        if let Some(unified) = self.node.unified()
            && let Err(e) = unified.remove(pod.cgroup())
        {
            tracing::warn!(pod_sandbox_id = %pod.id, error = %e, "removing the pod's unified cgroup failed");
        }
        if pod.cgroup_created
            && let Err(e) = self.node.cgroups().remove(pod.cgroup())
        {
            tracing::warn!(pod_sandbox_id = %pod.id, error = %crate::error_chain(&e), "removing the pod cgroup failed");
        }
        for d in [&pod.run_dir, &pod.dir] {
            let _ = tokio::fs::remove_dir_all(d).await;
        }
        released
    }
}

/// SIGKILL to the pod's PID namespace holder, through a pidfd checked to be in the pinned
/// namespace, so a reused pid is never signalled.
pub(super) fn kill_pid_holder(pod: &PodSandbox) {
    let (Some(ns), Some(pid)) = (&pod.pidns, rustix::process::Pid::from_raw(pod.pid_holder)) else { return };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else { return };
    if namespace::same(Path::new(&format!("/proc/{pid}/ns/pid")), ns) {
        let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
    }
}

/// SIGKILL to a monitor, but only if `pid` still is the monitor of `socket` (pids are reused).
fn kill_monitor(pid: u32, socket: &Path) {
    if pid == 0 || !serves(pid, socket) {
        return;
    }
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
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
fn serves(pid: u32, socket: &Path) -> bool {
    if std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_ascii_end() != b"crio-monitor") {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let mut args = cmdline.split(|b| *b == 0);
    args.next().is_some_and(|a| a.ends_with(b"crio-monitor")) && args.next() == Some(socket.as_os_str().as_encoded_bytes())
}
