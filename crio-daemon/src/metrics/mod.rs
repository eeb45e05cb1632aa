//! Prometheus metrics (`[crio.metrics]`), in the text exposition format. CRI-O's names where the
//! meaning is the same (`container_runtime_crio_operations_total`, the latency histogram,
//! OOM and image pull counts, dropped events), plus what the kernel programs see: exec, fork
//! and exit counts per container, OOM kills by level, pod network bytes and packets, lost
//! kernel events and each program's run time; per container, its wait for a CPU, intrusions
//! on the CPUs its hooks isolated and CFS throttle events (`sched`). Per-container and per-pod series are built at
//! scrape time from live objects, so a removed container's series are gone with it.

mod render;
mod sched;
pub mod serve;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub use render::render;

/// Upper bounds (seconds) of the operation latency buckets.
pub const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

/// One CRI operation's counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Operation {
    pub total: u64,
    pub errors: u64,
    /// Cumulative counts per bucket of `BUCKETS`.
    pub buckets: [u64; BUCKETS.len()],
    pub seconds: f64,
}

#[derive(Default)]
pub struct Metrics {
    operations: Mutex<HashMap<String, Operation>>,
    pub image_pulls_success: AtomicU64,
    pub image_pulls_failure: AtomicU64,
}

impl Metrics {
    /// Records one call of `operation` (a gRPC method name) that took `seconds`.
    pub fn observe(&self, operation: &str, seconds: f64, ok: bool) {
        {
            let mut ops = self.operations.lock().expect("metrics poisoned");
            let op = match ops.get_mut(operation) {
                Some(op) => op,
                None => ops.entry(operation.to_string()).or_default(),
            };
            op.total += 1;
            op.errors += u64::from(!ok);
            op.seconds += seconds;
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    op.buckets[i] += 1;
                }
            }
        }
        if operation == "PullImage" {
            let counter = if ok { &self.image_pulls_success } else { &self.image_pulls_failure };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn operations(&self) -> Vec<(String, Operation)> {
        let mut ops: Vec<_> = self.operations.lock().expect("metrics poisoned").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        ops.sort_by(|a, b| a.0.cmp(&b.0));
        ops
    }
}

/// The operation of a gRPC path: its method name (`/runtime.v1.RuntimeService/Version` ->
/// `Version`); `None` for other paths.
pub fn operation(path: &str) -> Option<&str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (service.contains('.') && !method.is_empty()).then_some(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_fill_cumulative_buckets() {
        let m = Metrics::default();
        m.observe("Version", 0.002, true);
        m.observe("Version", 0.3, false);
        m.observe("PullImage", 1.5, true);
        let ops = m.operations();
        let (name, v) = &ops[1];
        assert_eq!((name.as_str(), v.total, v.errors), ("Version", 2, 1));
        assert_eq!(v.buckets[..3], [0, 0, 1]);
        assert_eq!(v.buckets[BUCKETS.len() - 1], 2);
        assert_eq!(m.image_pulls_success.load(Ordering::Relaxed), 1);
        assert_eq!(operation("/runtime.v1.RuntimeService/RunPodSandbox"), Some("RunPodSandbox"));
        assert_eq!(operation("/info"), None);
        assert_eq!(operation("/containers/abc"), None);
    }
}
