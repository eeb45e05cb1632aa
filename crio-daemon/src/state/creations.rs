//! The kubelet gives up on a slow RunPodSandbox or CreateContainer and retries it with the same
//! name. The work runs in its own task, so the caller going away does not cut it short (which
//! would leak half of it), and a retry for the same name joins it, or collects its result if
//! it already finished, instead of failing with "name is reserved" (CRI-O's ResourceStore).
//! A result nobody collects leaves with its object (`forget` at removal), or after
//! `UNCLAIMED_TTL` when the work failed and left no object.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

type Outcome<E> = Result<String, Arc<E>>;

/// How long a finished creation waits for its caller's retry: the kubelet retries within
/// seconds of its deadline.
const UNCLAIMED_TTL: Duration = Duration::from_secs(600);

struct Creation<E> {
    result: Shared<BoxFuture<'static, Outcome<E>>>,
    finished: Arc<OnceLock<Instant>>,
}

/// Creations in flight by name; `E` is the creating service's error, which can say that the
/// creation's task itself failed.
pub struct Creations<E> {
    running: Mutex<HashMap<String, Creation<E>>>,
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
            running.retain(|_, c| c.finished.get().is_none_or(|at| at.elapsed() < UNCLAIMED_TTL));
            running
                .entry(name.to_string())
                .or_insert_with(|| {
                    let finished = Arc::new(OnceLock::new());
                    let done = finished.clone();
                    // Marked finished by the task itself: nobody may be polling the result.
                    let task = tokio::spawn(async move {
                        let r = work.await;
                        let _ = done.set(Instant::now());
                        r
                    });
                    let result = async move {
                        match task.await {
                            Ok(r) => r.map_err(Arc::new),
                            Err(e) => Err(Arc::new(E::from(e))),
                        }
                    }
                    .boxed()
                    .shared();
                    Creation { result, finished }
                })
                .result
                .clone()
        };
        let outcome = shared.clone().await;
        let mut running = self.running.lock().expect("creations poisoned");
        if running.get(name).is_some_and(|c| c.result.ptr_eq(&shared)) {
            running.remove(name);
        }
        outcome
    }

    /// The object made under `name` is gone: an uncollected result for it goes too. Work
    /// still running is left alone (its object does not exist yet).
    pub fn forget(&self, name: &str) {
        let mut running = self.running.lock().expect("creations poisoned");
        if running.get(name).is_some_and(|c| c.finished.get().is_some()) {
            running.remove(name);
        }
    }

    /// Creations kept: running, or finished and not yet collected.
    pub fn len(&self) -> usize {
        self.running.lock().expect("creations poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    #[tokio::test]
    async fn uncollected_results_leave_with_their_object() {
        let c = Arc::new(Creations::<tokio::task::JoinError>::default());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let work = |gate: Arc<tokio::sync::Semaphore>| async move {
            let _ = gate.acquire().await;
            Ok::<_, tokio::task::JoinError>("id".to_string())
        };
        for i in 0..100 {
            let _ = tokio::time::timeout(Duration::from_millis(1), c.run_once(&format!("pod-{i}"), work(gate.clone()))).await;
        }
        assert_eq!(c.len(), 100);
        // Still running: forgetting it would let a retry start a second creation.
        c.forget("pod-0");
        assert_eq!(c.len(), 100);
        gate.add_permits(100);
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..100 {
            c.forget(&format!("pod-{i}"));
        }
        assert!(c.is_empty());
    }
}
