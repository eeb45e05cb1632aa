//! Container events for GetContainerEvents: operations publish CREATED, STARTED and DELETED;
//! STOPPED is published when an exit is observed, and an inotify watch on the exit-record
//! directory observes every exit as the monitor records it, with no polling. Subscribers each
//! have their own place in a bounded broadcast: one that falls behind learns how many events
//! it lost, the others are unaffected. When the kernel's inotify queue overflows, events were
//! lost: every container is read again, so no exit is missed.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::ContainerService;
use crate::model::{Container, ContainerEvent, EventKind, now_nanos};

/// Events kept for a subscriber that is momentarily behind.
pub const EVENT_BUFFER: usize = 1024;

/// What the exit-record directory's watch saw.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The exit record of this container landed.
    Exit(String),
    /// The kernel's queue overflowed: some records landed unseen.
    Overflow,
}

/// Reads inotify events of the exit directory into `tx` until the receiver goes or reading
/// fails.
fn read_exit_events(fd: &std::os::fd::OwnedFd, tx: &mpsc::UnboundedSender<Seen>) -> rustix::io::Result<()> {
    use rustix::fs::inotify::ReadFlags;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = rustix::fs::inotify::Reader::new(fd, &mut buf);
    loop {
        let seen = match reader.next() {
            Ok(event) if event.events().contains(ReadFlags::QUEUE_OVERFLOW) => Seen::Overflow,
            Ok(event) => {
                let Some(name) = event.file_name().and_then(|n| n.to_str().ok()) else { continue };
                let Some(id) = name.strip_suffix(".json").filter(|id| !id.starts_with('.')) else { continue };
                Seen::Exit(id.to_string())
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e),
        };
        if tx.send(seen).is_err() {
            return Ok(());
        }
    }
}

impl ContainerService {
    pub(crate) fn emit(&self, ct: &Container, kind: EventKind) {
        // No subscriber is not an error.
        let _ = self.events.send(ContainerEvent { container_id: ct.id.clone(), pod_id: ct.pod_id.clone(), kind, at_nanos: now_nanos() });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEvent> {
        self.events.subscribe()
    }

    /// Watches `<state_dir>/exits` and refreshes each container whose exit lands there, which
    /// publishes its STOPPED event.
    pub fn watch_exits(self: &Arc<Self>) -> std::io::Result<()> {
        let dir = self.config.crio.state_dir.join("exits");
        let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
        let fd = rustix::fs::inotify::init(rustix::fs::inotify::CreateFlags::CLOEXEC)?;
        rustix::fs::inotify::add_watch(
            &fd,
            &dir,
            rustix::fs::inotify::WatchFlags::MOVED_TO | rustix::fs::inotify::WatchFlags::CLOSE_WRITE,
        )?;
        let watched = self.exits_watched.clone();
        std::thread::Builder::new().name("exit-watch".into()).spawn(move || {
            if let Err(e) = read_exit_events(&fd, &tx) {
                watched.store(false, std::sync::atomic::Ordering::Release);
                tracing::warn!(error = %e, "exit watch stopped; exits are seen when status is asked");
            }
        })?;
        let service = Arc::downgrade(self);
        let me = self.clone();
        tokio::spawn(async move {
            // Exits recorded before the watch began (while the daemon was down) are read once;
            // from then on the watch sees every exit and records can be trusted.
            me.rescan_exits().await;
            drop(me);
            while let Some(seen) = rx.recv().await {
                let Some(l) = service.upgrade() else { return };
                l.exits_seen.send_modify(|n| *n = n.wrapping_add(1));
                match seen {
                    Seen::Exit(id) => {
                        let _ = l.refresh(&id, true).await;
                    }
                    Seen::Overflow => {
                        tracing::warn!("exit watch queue overflowed; reading every container's exit record again");
                        l.rescan_exits().await;
                    }
                }
            }
        });
        Ok(())
    }

    /// Reads every container's exit record; until done, status reads records itself.
    async fn rescan_exits(&self) {
        self.exits_watched.store(false, std::sync::atomic::Ordering::Release);
        for ct in self.stores.containers.all() {
            let _ = self.refresh(&ct.get().id, true).await;
        }
        self.exits_watched.store(true, std::sync::atomic::Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_overflow_is_reported_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let fd = rustix::fs::inotify::init(rustix::fs::inotify::CreateFlags::CLOEXEC).unwrap();
        rustix::fs::inotify::add_watch(&fd, dir.path(), rustix::fs::inotify::WatchFlags::CLOSE_WRITE).unwrap();
        let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events").unwrap().trim().parse().unwrap();
        // More records than the kernel queues before anyone reads: the queue overflows.
        for i in 0..=max {
            std::fs::write(dir.path().join(format!("c{i}.json")), "{}").unwrap();
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || read_exit_events(&fd, &tx));
        let mut exits = 0;
        while let Seen::Exit(_) = rx.blocking_recv().expect("events") {
            exits += 1;
        }
        assert_eq!(exits, max, "every queued event, then the overflow");
    }
}
