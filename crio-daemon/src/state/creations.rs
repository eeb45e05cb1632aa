//! The kubelet gives up on a slow RunPodSandbox or CreateContainer and retries it with the same
//! name. The work runs in its own task, so the caller going away does not cut it short (which
//! would leak half of it), and a retry for the same name joins it, or collects its result if
//! it already finished, instead of failing with "name is reserved" (CRI-O's ResourceStore).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

type Outcome<E> = Result<String, Arc<E>>;

/// Creations in flight by name; `E` is the creating service's error, which can say that the
/// creation's task itself failed.
pub struct Creations<E> {
    running: Mutex<HashMap<String, Shared<BoxFuture<'static, Outcome<E>>>>>,
}

impl<E> Default for Creations<E> {
    fn default() -> Self {
        Self { running: Mutex::default() }
    }
}

impl<E: From<tokio::task::JoinError> + Send + Sync + 'static> Creations<E> {
    /// Runs `work` for `name` unless it already runs (or ran unclaimed), then waits for it. The
    /// first caller to receive the result retires it, so a later request is new work.
    pub async fn run_once(&self, name: &str, work: impl Future<Output = Result<String, E>> + Send + 'static) -> Outcome<E> {
        let shared = {
            let mut running = self.running.lock().expect("creations poisoned");
            running
                .entry(name.to_string())
                .or_insert_with(|| {
                    let task = tokio::spawn(work);
                    async move {
                        match task.await {
                            Ok(r) => r.map_err(Arc::new),
                            Err(e) => Err(Arc::new(E::from(e))),
                        }
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        let outcome = shared.clone().await;
        let mut running = self.running.lock().expect("creations poisoned");
        if running.get(name).is_some_and(|s| s.ptr_eq(&shared)) {
            running.remove(name);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_retry_collects_work_its_caller_abandoned() {
        let c = Arc::new(Creations::<tokio::task::JoinError>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let work = |runs: Arc<AtomicUsize>| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, tokio::task::JoinError>("id-1".to_string())
        };
        // The first caller gives up after 10 ms; the work goes on.
        let first = tokio::time::timeout(Duration::from_millis(10), c.run_once("k8s_pod", work(runs.clone()))).await;
        assert!(first.is_err());
        let retry = c.run_once("k8s_pod", work(runs.clone())).await.unwrap();
        assert_eq!(retry, "id-1");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the retry joined, it did not start again");
        // Claimed: the next request is new work.
        c.run_once("k8s_pod", work(runs.clone())).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
