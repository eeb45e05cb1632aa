//! Scheduling series per container, from the kernel programs' maps: the wait for a CPU as a
//! Prometheus histogram (log2 slots folded into 4x buckets from 1 us to 4 s), intrusions on
//! the CPUs its hooks isolated by kind and CPU, and CFS throttle events.

use super::render::Out;
use crate::kernel::Kernel;
use std::sync::Arc;

use crate::model::Container;

/// Bucket bounds as powers of two nanoseconds: 2^10 (1.024 us) to 2^32 (4.29 s), every 4x.
const BOUND_EXPONENTS: [u32; 12] = [10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32];

/// Cumulative counts at each bound of `BOUND_EXPONENTS`: slot i holds waits below 2^(i+1)
/// ns, so a bound 2^k takes every slot below k exactly.
fn buckets(slots: &[u64]) -> [u64; BOUND_EXPONENTS.len()] {
    BOUND_EXPONENTS.map(|k| slots.iter().take(k as usize).sum())
}

pub(super) fn render(o: &mut Out, kernel: &Kernel, containers: &[Arc<Container>]) {
    if !kernel.scheduling() {
        return;
    }
    let reports: Vec<_> = containers.iter().filter_map(|c| kernel.sched_report(&c.id).map(|r| (c, r))).collect();
    let delay = "container_sched_delay_seconds";
    o.header(delay, "histogram", "Time the container's tasks waited, runnable, for a CPU (wakeup or preemption to running).");
    for (c, r) in &reports {
        let Some(d) = &r.delay else { continue };
        let labels = [("pod_sandbox_id", c.pod_id.as_str()), ("container_id", c.id.as_str()), ("name", c.full_name.as_str())];
        for (k, n) in BOUND_EXPONENTS.iter().zip(buckets(&d.slots)) {
            let le = format!("{}", (1u64 << k) as f64 / 1e9);
            o.sample(&format!("{delay}_bucket"), &[labels[0], labels[1], labels[2], ("le", &le)], n);
        }
        o.sample(&format!("{delay}_bucket"), &[labels[0], labels[1], labels[2], ("le", "+Inf")], d.count);
        o.sample(&format!("{delay}_sum"), &labels, d.total_ns as f64 / 1e9);
        o.sample(&format!("{delay}_count"), &labels, d.count);
    }
    let intrusions = "isolation_intrusions_total";
    o.header(intrusions, "counter", "What ran on a CPU the container's hooks isolated that was not the container's, by kind and CPU.");
    for (c, r) in &reports {
        for i in &r.intrusions {
            let cpu = i.cpu.to_string();
            let labels = [
                ("pod_sandbox_id", c.pod_id.as_str()),
                ("container_id", c.id.as_str()),
                ("name", c.full_name.as_str()),
                ("kind", i.kind),
                ("cpu", &cpu),
            ];
            o.sample(intrusions, &labels, i.count);
        }
    }
    let throttles = "container_cfs_throttle_events_total";
    o.header(throttles, "counter", "Times CFS throttled one of the container's per-CPU run queues (where the kernel reports it).");
    for (c, r) in &reports {
        if let Some(n) = r.cfs_throttles {
            o.sample(throttles, &[("pod_sandbox_id", &c.pod_id), ("container_id", &c.id), ("name", &c.full_name)], n);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log2_slots_fold_into_cumulative_buckets() {
        let mut slots = vec![0u64; crio_ebpf::SCHED_SLOTS];
        slots[9] = 2; // [512, 1024) ns: under the first bound, 1.024 us
        slots[10] = 3; // [1024, 2048): under 4.096 us
        slots[35] = 1; // beyond every bound: only in +Inf
        let b = super::buckets(&slots);
        assert_eq!(b[0], 2);
        assert_eq!(b[1], 5);
        assert_eq!(b[b.len() - 1], 5);
    }
}
