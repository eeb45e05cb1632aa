//! Scheduling of our containers as the kernel programs count it: how long each container's
//! tasks waited for a CPU (log2 histogram, with p50/p99 read from it), what else ran on the
//! CPUs its hooks isolated and who, and how often CFS throttled it. Read at the caller's pace
//! (scrape, status, `crioctl top`) from the maps; nothing flows per event.

use std::collections::HashSet;

use crio_ebpf::{SCHED_SLOTS, SchedDelay};

use super::Kernel;

/// Top intruders kept in a report.
const TOP_INTRUDERS: usize = 10;

/// How long a container's tasks waited, runnable, for a CPU.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DelayHistogram {
    /// Slot i counts waits of [2^i, 2^(i+1)) nanoseconds.
    pub slots: Vec<u64>,
    pub count: u64,
    pub total_ns: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
}

impl From<SchedDelay> for DelayHistogram {
    fn from(d: SchedDelay) -> Self {
        DelayHistogram {
            p50_ns: quantile(&d.slots, 0.50),
            p99_ns: quantile(&d.slots, 0.99),
            slots: d.slots.to_vec(),
            count: d.count,
            total_ns: d.total_ns,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IntrusionCount {
    pub cpu: u32,
    pub kind: &'static str,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IntruderSummary {
    pub kind: &'static str,
    /// Thread id (tasks, kernel threads), IRQ number or softirq vector.
    pub id: u32,
    pub name: String,
    pub count: u64,
    pub last_cpu: u32,
}

/// A container's scheduling, as far as the kernel programs run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SchedReport {
    /// `None` when scheduling is not traced (configured off, or the programs did not load).
    pub delay: Option<DelayHistogram>,
    /// The CPUs isolated for it now (empty: none, or it has ended).
    pub isolated_cpus: Vec<u32>,
    pub intrusions: Vec<IntrusionCount>,
    pub top_intruders: Vec<IntruderSummary>,
    /// Times CFS throttled one of its run queues; `None` where the kernel gives no event
    /// (the fexit program did not load): cpu.stat's throttled periods then tell.
    pub cfs_throttles: Option<u64>,
}

/// The `q` quantile (0..=1) of a log2 histogram, in ns: linear within its slot.
pub fn quantile(slots: &[u64], q: f64) -> u64 {
    let total: u64 = slots.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = (q * total as f64).ceil().max(1.0);
    let mut seen = 0u64;
    for (i, n) in slots.iter().enumerate() {
        if *n > 0 && (seen + n) as f64 >= rank {
            let (lo, hi) = (if i == 0 { 0 } else { 1u64 << i }, 1u64 << (i + 1));
            let within = (rank - seen as f64) / *n as f64;
            return lo + ((hi - lo) as f64 * within) as u64;
        }
        seen += n;
    }
    1u64 << SCHED_SLOTS
}

/// Where a container's scheduling is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SchedIds {
    pub cgroup_id: u64,
    /// Its CPU controller's cgroup id (the same on v2; the v1 hierarchy's on v1 and hybrid).
    pub cpu_cgroup_id: u64,
}

impl Kernel {
    /// Whether the scheduling programs run.
    pub fn scheduling(&self) -> bool {
        self.tracer.as_ref().is_some_and(|t| t.scheduling())
    }

    /// Starts counting intrusions on `cpus` (a CPU list) for the container.
    pub(super) fn isolate(&self, container_id: &str, ids: SchedIds, cpus: &str) {
        let Some(tracer) = &self.tracer else { return };
        let Ok(set) = crio_hooks::CpuSet::parse_list(cpus) else { return };
        let list: Vec<u32> = set.iter().collect();
        if let Err(e) = tracer.isolate(ids.cgroup_id, &list) {
            tracing::warn!(container_id, error = %crate::error_chain(&e), "intrusions on its CPUs are not counted");
        }
    }

    /// The container has ended: what runs on its CPUs is nobody's intrusion any more.
    pub fn end_isolation(&self, container_id: &str) {
        let Some(tracer) = &self.tracer else { return };
        let Some(ids) = self.sched_ids(container_id) else { return };
        if let Err(e) = tracer.end_isolation(ids.cgroup_id) {
            tracing::warn!(container_id, error = %crate::error_chain(&e), "could not end the isolation of its CPUs");
        }
    }

    fn sched_ids(&self, container_id: &str) -> Option<SchedIds> {
        self.index.lock().expect("kernel index poisoned").sched.get(container_id).copied()
    }

    /// The container's scheduling; `None` when the kernel programs do not track it.
    pub fn sched_report(&self, container_id: &str) -> Option<SchedReport> {
        let tracer = self.tracer.as_ref()?;
        let ids = self.sched_ids(container_id)?;
        if !tracer.scheduling() {
            return Some(SchedReport::default());
        }
        Some(SchedReport {
            delay: tracer.sched_delay(ids.cgroup_id).map(DelayHistogram::from),
            isolated_cpus: tracer.isolated_cpus(ids.cgroup_id),
            intrusions: tracer
                .intrusions(ids.cgroup_id)
                .into_iter()
                .map(|(cpu, kind, count)| IntrusionCount { cpu, kind: kind.name(), count })
                .collect(),
            top_intruders: tracer
                .intruders(ids.cgroup_id, TOP_INTRUDERS)
                .into_iter()
                .map(|i| IntruderSummary { kind: i.kind.name(), id: i.id, name: i.name, count: i.count, last_cpu: i.last_cpu })
                .collect(),
            cfs_throttles: tracer.throttled(ids.cpu_cgroup_id),
        })
    }

    /// Forgets what was counted for a removed container.
    pub(super) fn forget_sched(&self, ids: SchedIds) {
        let Some(tracer) = &self.tracer else { return };
        if let Err(e) = tracer.forget_sched(ids.cgroup_id, ids.cpu_cgroup_id) {
            tracing::warn!(cgroup_id = ids.cgroup_id, error = %crate::error_chain(&e), "could not forget a container's scheduling counts");
        }
    }

    /// After a restart: drops pinned scheduling entries of cgroups no record owns.
    pub(super) fn reconcile_sched(&self, owned: &HashSet<u64>) {
        let Some(tracer) = &self.tracer else { return };
        let cpu_owned: HashSet<u64> = self.index.lock().expect("kernel index poisoned").sched.values().map(|i| i.cpu_cgroup_id).collect();
        if let Err(e) = tracer.reconcile_sched(owned, &cpu_owned) {
            tracing::warn!(error = %crate::error_chain(&e), "could not drop stale scheduling entries");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_log2_slots() {
        let mut slots = [0u64; SCHED_SLOTS];
        assert_eq!(quantile(&slots, 0.5), 0, "no waits: zero");
        slots[10] = 100; // [1024, 2048) ns
        assert_eq!(quantile(&slots, 0.5), 1024 + 512);
        assert_eq!(quantile(&slots, 1.0), 2048);
        slots[20] = 1; // one wait of about a millisecond
        assert!(quantile(&slots, 0.5) < 2048);
        assert!(quantile(&slots, 0.999) >= 1 << 20, "the tail reaches the slow wait");
        slots = [0; SCHED_SLOTS];
        slots[0] = 4;
        assert!(quantile(&slots, 0.99) <= 2);
    }
}
