//! A container's state as its exit record and the kernel tell it: an exit recorded by the
//! monitor turns it Exited (with the reason, OOMKilled when the kernel or the cgroup says so),
//! the kernel's OOM event marks it before it is even gone, and lists and statuses read the
//! records the exit watch keeps current.

use std::path::Path;
use std::time::Duration;

use super::{ContainerError, ContainerService};
use crate::model::{Container, ContainerState, EventKind};
use crate::monitor::protocol::ExitRecord;

fn oom_message(k: &crate::kernel::OomKill) -> String {
    let level = match k.level {
        crate::kernel::OomLevel::Container => "the container's memory limit",
        crate::kernel::OomLevel::Pod => "the pod's memory limit",
        crate::kernel::OomLevel::Above => "a memory limit above the pod",
        crate::kernel::OomLevel::Node => "the node running out of memory",
    };
    format!("OOM killed: {} (pid {}) by {level}", k.victim_comm, k.victim_pid)
}

impl ContainerService {
    /// Whether the container's init was OOM killed, with a message naming the victim: from
    /// the kernel programs when they attribute OOM kills (a child's OOM kill does not count),
    /// else from the cgroup's OOM counter with an init that died of SIGKILL.
    async fn oom_of(&self, ct: &Container, signal: Option<i32>) -> (Option<String>, Option<crate::kernel::InitFate>) {
        let mut fate = self.kernel.fate(&ct.id);
        if !self.kernel.oom_attribution() {
            // The cgroup lives until the runtime deletes the container, so its counter still
            // tells whether the kernel killed something there for memory.
            let oom = signal == Some(libc::SIGKILL) && self.node.cgroups().oom_kills(&ct.cgroup_path) > 0;
            return (oom.then(|| "OOM killed (from the cgroup's OOM counter)".to_string()), fate);
        }
        // An init killed while its cgroup counts an OOM kill: the kernel's event may still be
        // on its way through the ring buffer.
        if signal == Some(libc::SIGKILL)
            && fate.as_ref().is_none_or(|f| f.oom.is_none())
            && self.node.cgroups().oom_kills(&ct.cgroup_path) > 0
        {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                fate = self.kernel.fate(&ct.id);
                if fate.as_ref().is_some_and(|f| f.oom.is_some()) {
                    break;
                }
            }
        }
        let message = fate.as_ref().and_then(|f| f.oom.as_ref()).map(oom_message);
        (message, fate)
    }

    /// The container as it is now.
    pub async fn container(&self, id: &str) -> Result<Container, ContainerError> {
        // While the exit watch runs it refreshes every container as its exit lands, so the
        // record is current: no file read per container on status and list.
        let watched = self.exits_watched.load(std::sync::atomic::Ordering::Acquire);
        self.refresh(id, !watched).await
    }

    /// The container, with its exit record read first when `read_exit` (a recorded exit turns
    /// it Exited).
    pub(crate) async fn refresh(&self, id: &str, check_exit: bool) -> Result<Container, ContainerError> {
        let entry = self.stores.containers.resolve(id).ok_or_else(|| ContainerError::ContainerNotFound { id: id.into() })?;
        let ct = entry.get();
        if check_exit
            && matches!(ct.state, ContainerState::Running | ContainerState::Created)
            && let Some(exit) = read_exit(&ct.exit_file()).await
        {
            let (oom, fate) = self.oom_of(&ct, exit.signal).await;
            let mut was = ContainerState::Exited;
            let mut updated = self
                .stores
                .containers
                .update(&ct.id, &entry, |c| {
                    // Another refresh of the same exit may have been first.
                    was = c.state;
                    if !matches!(c.state, ContainerState::Running | ContainerState::Created) {
                        return;
                    }
                    c.state = ContainerState::Exited;
                    c.exit_code = exit.exit_code;
                    // The kernel's time of the init's exit, else the monitor's (a little later).
                    c.finished_at_nanos = fate
                        .as_ref()
                        .and_then(|f| f.exited_at)
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(exit.exited_at_unix_nanos as i64, |d| d.as_nanos() as i64);
                    c.reason = match (&oom, exit.exit_code) {
                        (Some(_), _) => "OOMKilled".into(),
                        (None, 0) => "Completed".into(),
                        (None, _) => "Error".into(),
                    };
                    if let Some(message) = oom {
                        c.message = message;
                    }
                    if c.started_at_nanos == 0 {
                        c.started_at_nanos = c.finished_at_nanos;
                    }
                })
                .await?;
            if matches!(was, ContainerState::Running | ContainerState::Created) {
                self.emit(&updated, EventKind::Stopped);
            }
            // However it ended (stopped, exited, killed): what it held goes back now.
            self.give_back(&updated.id).await;
            updated.hooks.clear();
            return Ok(updated);
        }
        // The kernel saw the init chosen as an OOM victim: say so before it is even gone.
        if ct.state == ContainerState::Running
            && ct.reason.is_empty()
            && let Some(kill) = self.kernel.fate(&ct.id).and_then(|f| f.oom)
        {
            return Ok(self
                .stores
                .containers
                .update(&ct.id, &entry, |c| {
                    // Unless its exit was recorded meanwhile, with its own reason.
                    if c.state == ContainerState::Running && c.reason.is_empty() {
                        c.reason = "OOMKilled".into();
                        c.message = oom_message(&kill);
                    }
                })
                .await?);
        }
        Ok(ct)
    }

    /// Every container as last recorded, without reading exits (metrics scrapes).
    pub fn list_records(&self) -> Vec<std::sync::Arc<Container>> {
        self.stores.containers.all().into_iter().map(|e| e.snapshot()).collect()
    }

    pub async fn list_containers(&self) -> Vec<std::sync::Arc<Container>> {
        let watched = self.exits_watched.load(std::sync::atomic::Ordering::Acquire);
        let entries = self.stores.containers.all();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let ct = e.snapshot();
            // Current as recorded, unless the kernel has news the record lacks.
            let news = ct.state == ContainerState::Running && ct.reason.is_empty() && self.kernel.init_oom_killed(&ct.id);
            if watched && !news {
                out.push(ct);
            } else if let Ok(c) = self.refresh(&ct.id, !watched).await {
                out.push(std::sync::Arc::new(c));
            }
        }
        out
    }
}

async fn read_exit(path: &Path) -> Option<ExitRecord> {
    let bytes = tokio::fs::read(path).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl ContainerService {
    /// The exit record at `path` once it lands, or `None` after `within`. While the exit
    /// watch runs, each landing record wakes the wait (no polling); without it, the record
    /// is read every 10 ms.
    pub(super) async fn wait_exit(&self, path: &Path, within: Duration) -> Option<ExitRecord> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = self.exits_seen.subscribe();
        loop {
            // Marked before the read: a record landing after it wakes the wait below.
            seen.mark_unchanged();
            if let Some(e) = read_exit(path).await {
                return Some(e);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return None;
            }
            let watched = self.exits_watched.load(std::sync::atomic::Ordering::Acquire);
            let nap = if watched { Duration::from_secs(1) } else { Duration::from_millis(10) };
            let _ = tokio::time::timeout_at(deadline.min(now + nap), seen.changed()).await;
        }
    }
}
