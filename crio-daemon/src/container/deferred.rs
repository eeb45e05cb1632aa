//! Work a removal leaves for after its answer: a removed container's root filesystem, bundle
//! and exit record go once its durable record is gone, off the RPC's path (the kubelet waits
//! for RemoveContainer; nothing it does next needs those directories gone). A crash in
//! between leaves orphans that recovery removes at the next start. What must not race it
//! (RemoveImage, while the store still records the container as using its image)
//! waits for [`Deferred::settled`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Deferred {
    running: AtomicUsize,
    idle: Notify,
}

impl Deferred {
    /// Runs `work` on its own task, counted until it ends.
    pub fn spawn(self: &Arc<Self>, work: impl Future<Output = ()> + Send + 'static) {
        self.running.fetch_add(1, Ordering::AcqRel);
        let me = self.clone();
        tokio::spawn(async move {
            work.await;
            if me.running.fetch_sub(1, Ordering::AcqRel) == 1 {
                me.idle.notify_waiters();
            }
        });
    }

    /// Returns once no deferred work is left (work spawned meanwhile included).
    pub async fn settled(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the count is read: an end in between still wakes us.
            idle.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settled_waits_for_every_deferred_task() {
        let d = Arc::new(Deferred::default());
        d.settled().await;
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..8u64 {
            let done = done.clone();
            d.spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(5 * i)).await;
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        d.settled().await;
        assert_eq!(done.load(Ordering::SeqCst), 8);
    }
}
