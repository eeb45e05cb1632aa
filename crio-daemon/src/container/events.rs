//! Container events for GetContainerEvents: operations publish CREATED, STARTED and DELETED;
//! STOPPED is published when an exit is observed, and an inotify watch on the exit-record
//! directory observes every exit as the monitor records it, with no polling. Subscribers each
//! have their own place in a bounded broadcast: one that falls behind learns how many events
//! it lost, the others are unaffected.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::ContainerService;
use crate::model::{Container, ContainerEvent, EventKind, now_nanos};

/// Events kept for a subscriber that is momentarily behind.
pub const EVENT_BUFFER: usize = 1024;

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
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let fd = rustix::fs::inotify::init(rustix::fs::inotify::CreateFlags::CLOEXEC)?;
        rustix::fs::inotify::add_watch(
            &fd,
            &dir,
            rustix::fs::inotify::WatchFlags::MOVED_TO | rustix::fs::inotify::WatchFlags::CLOSE_WRITE,
        )?;
        let watched = self.exits_watched.clone();
        std::thread::Builder::new().name("exit-watch".into()).spawn(move || {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
            let mut reader = rustix::fs::inotify::Reader::new(&fd, &mut buf);
            loop {
                match reader.next() {
                    Ok(event) => {
                        let Some(name) = event.file_name().and_then(|n| n.to_str().ok()) else { continue };
                        if let Some(id) = name.strip_suffix(".json").filter(|id| !id.starts_with('.'))
                            && tx.send(id.to_string()).is_err()
                        {
                            return;
                        }
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => {
                        watched.store(false, std::sync::atomic::Ordering::Release);
                        tracing::warn!(error = %e, "exit watch stopped; exits are seen when status is asked");
                        return;
                    }
                }
            }
        })?;
        let service = Arc::downgrade(self);
        let me = self.clone();
        tokio::spawn(async move {
            // Exits recorded before the watch began (while the daemon was down) are read once;
            // from then on the watch sees every exit and records can be trusted.
            for ct in me.stores.containers.all() {
                let _ = me.refresh(&ct.get().id, true).await;
            }
            me.exits_watched.store(true, std::sync::atomic::Ordering::Release);
            drop(me);
            while let Some(id) = rx.recv().await {
                let Some(l) = service.upgrade() else { return };
                let _ = l.refresh(&id, true).await;
            }
        });
        Ok(())
    }
}
