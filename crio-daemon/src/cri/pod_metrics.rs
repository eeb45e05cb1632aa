//! The kubelet's CRI-sourced metrics (`ListMetricDescriptors`, `ListPodSandboxMetrics`,
//! `StreamPodSandboxMetrics`), which replace cAdvisor's per-container series: cAdvisor's
//! names and labels, from the same samples as ContainerStats and PodSandboxStats (cgroups,
//! PSI, the writable layer) and the kernel programs' counts (OOM kills, pod bytes, the wait
//! for a CPU, intrusions on isolated CPUs, CFS throttle events).
//!
//! The kubelet turns each descriptor into a Prometheus family with exactly its label keys, so
//! every metric carries values for `LABEL_KEYS` plus its family's own keys, in that order.
//! The CRI carries values as integers: seconds are whole seconds, as CRI-O reports them.
//! Metrics are gathered when asked, so their timestamp is 0 (the proto's rule for live data).

use futures::StreamExt;
use tonic::Status;

use super::v1 as cri;
use super::{Services, container_status, pod_status};
use crate::cgroups::pressure::Resource;
use crate::container::{ContainerSample, Sample};
use crate::model::{Container, ContainerState, PodSandbox, PodState};
use crate::network::stats::InterfaceCounters;

/// cAdvisor's labels of a container series, as the kubelet's `/metrics/cadvisor` has them:
/// `container` (the Kubernetes name, empty for the pod), `id` (the cgroup), `image`, `name`
/// (the runtime's id), `namespace`, `pod`.
pub const LABEL_KEYS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

use cri::MetricType::{Counter, Gauge};

struct Family {
    name: &'static str,
    help: &'static str,
    kind: cri::MetricType,
    /// Label keys after `LABEL_KEYS`.
    extra: &'static [&'static str],
}

const fn family(name: &'static str, kind: cri::MetricType, help: &'static str, extra: &'static [&'static str]) -> Family {
    Family { name, help, kind, extra }
}

const FAMILIES: &[Family] = &[
    family("container_cpu_usage_seconds_total", Counter, "Cumulative cpu time consumed in seconds.", &["cpu"]),
    family("container_cpu_user_seconds_total", Counter, "Cumulative user cpu time consumed in seconds.", &[]),
    family("container_cpu_system_seconds_total", Counter, "Cumulative system cpu time consumed in seconds.", &[]),
    family("container_cpu_cfs_periods_total", Counter, "Number of elapsed enforcement period intervals.", &[]),
    family("container_cpu_cfs_throttled_periods_total", Counter, "Number of throttled period intervals.", &[]),
    family("container_cpu_cfs_throttled_seconds_total", Counter, "Total time duration the container has been throttled.", &[]),
    family(
        "container_memory_usage_bytes",
        Gauge,
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        &[],
    ),
    family("container_memory_working_set_bytes", Gauge, "Current working set in bytes.", &[]),
    family("container_memory_rss", Gauge, "Size of RSS in bytes.", &[]),
    family("container_memory_cache", Gauge, "Number of bytes of page cache memory.", &[]),
    family("container_memory_failures_total", Counter, "Cumulative count of memory allocation failures.", &["failure_type", "scope"]),
    family("container_spec_memory_limit_bytes", Gauge, "Memory limit for the container in bytes (0: none).", &[]),
    family("container_oom_events_total", Counter, "Count of out of memory events observed for the container.", &[]),
    family("container_processes", Gauge, "Number of processes running inside the container.", &[]),
    family("container_start_time_seconds", Gauge, "Start time of the container since unix epoch in seconds.", &[]),
    family("container_fs_usage_bytes", Gauge, "Number of bytes that are consumed by the container on this filesystem.", &["device"]),
    family("container_fs_inodes_used", Gauge, "Number of inodes the container's writable layer uses.", &["device"]),
    family("container_network_receive_bytes_total", Counter, "Cumulative count of bytes received.", &["interface"]),
    family("container_network_receive_errors_total", Counter, "Cumulative count of errors encountered while receiving.", &["interface"]),
    family("container_network_transmit_bytes_total", Counter, "Cumulative count of bytes transmitted.", &["interface"]),
    family(
        "container_network_transmit_errors_total",
        Counter,
        "Cumulative count of errors encountered while transmitting.",
        &["interface"],
    ),
    family(
        "container_pressure_cpu_waiting_seconds_total",
        Counter,
        "Total time duration tasks in the container have waited due to CPU congestion.",
        &[],
    ),
    family(
        "container_pressure_cpu_stalled_seconds_total",
        Counter,
        "Total time duration no tasks in the container could make progress due to CPU congestion.",
        &[],
    ),
    family(
        "container_pressure_memory_waiting_seconds_total",
        Counter,
        "Total time duration tasks in the container have waited due to memory congestion.",
        &[],
    ),
    family(
        "container_pressure_memory_stalled_seconds_total",
        Counter,
        "Total time duration no tasks in the container could make progress due to memory congestion.",
        &[],
    ),
    family(
        "container_pressure_io_waiting_seconds_total",
        Counter,
        "Total time duration tasks in the container have waited due to IO congestion.",
        &[],
    ),
    family(
        "container_pressure_io_stalled_seconds_total",
        Counter,
        "Total time duration no tasks in the container could make progress due to IO congestion.",
        &[],
    ),
    // Ours, from the scheduling programs (the CRI carries integers: microseconds, not seconds).
    family(
        "container_sched_delay_microseconds_total",
        Counter,
        "Total time the container's tasks waited, runnable, for a CPU (kernel-observed).",
        &[],
    ),
    family("container_sched_waits_total", Counter, "Times the container's tasks waited for a CPU (kernel-observed).", &[]),
    family(
        "container_isolation_intrusions_total",
        Counter,
        "What ran on a CPU the container's hooks isolated that was not the container's, by kind and CPU.",
        &["kind", "cpu"],
    ),
    family(
        "container_cfs_throttle_events_total",
        Counter,
        "Times CFS throttled one of the container's per-CPU run queues (where the kernel reports it).",
        &[],
    ),
];

/// The series one pod or container gives: its label values and the metrics so far.
struct Series {
    base: [String; 6],
    out: Vec<cri::Metric>,
}

impl Series {
    fn new(base: [String; 6]) -> Self {
        Series { base, out: Vec::new() }
    }

    fn push(&mut self, name: &'static str, value: u64, extra: &[&str]) {
        let Some(f) = FAMILIES.iter().find(|f| f.name == name) else {
            debug_assert!(false, "metric {name} has no descriptor");
            return;
        };
        debug_assert_eq!(f.extra.len(), extra.len(), "{name}: label values must match its keys");
        let label_values = self.base.iter().cloned().chain(extra.iter().map(|v| v.to_string())).collect();
        self.out.push(cri::Metric {
            name: name.into(),
            timestamp: 0,
            metric_type: f.kind as i32,
            label_values,
            value: Some(cri::UInt64Value { value }),
        });
    }

    /// What a cgroup sample gives: CPU, memory, processes, OOM kills and PSI.
    fn cgroup(&mut self, s: &Sample) {
        const NANOS: u64 = 1_000_000_000;
        if let Some(u) = s.usage {
            self.push("container_cpu_usage_seconds_total", u.cpu_nanos / NANOS, &["total"]);
            self.push("container_cpu_user_seconds_total", u.cpu_user_nanos / NANOS, &[]);
            self.push("container_cpu_system_seconds_total", u.cpu_system_nanos / NANOS, &[]);
            self.push("container_cpu_cfs_periods_total", u.cfs_periods, &[]);
            self.push("container_cpu_cfs_throttled_periods_total", u.cfs_throttled_periods, &[]);
            self.push("container_cpu_cfs_throttled_seconds_total", u.cfs_throttled_nanos / NANOS, &[]);
            self.push("container_memory_usage_bytes", u.memory_usage, &[]);
            self.push("container_memory_working_set_bytes", u.memory_working_set, &[]);
            self.push("container_memory_rss", u.memory_rss, &[]);
            self.push("container_memory_cache", u.memory_cache, &[]);
            let minor = u.page_faults.saturating_sub(u.major_page_faults);
            self.push("container_memory_failures_total", minor, &["pgfault", "container"]);
            self.push("container_memory_failures_total", u.major_page_faults, &["pgmajfault", "container"]);
            self.push("container_spec_memory_limit_bytes", u.memory_limit.unwrap_or(0), &[]);
            self.push("container_processes", u.pids, &[]);
            self.push("container_oom_events_total", s.oom_kills, &[]);
        }
        if let Some(p) = s.pressure {
            self.pressure("cpu", p.cpu.as_ref());
            self.pressure("memory", p.memory.as_ref());
            self.pressure("io", p.io.as_ref());
        }
    }

    fn pressure(&mut self, resource: &str, r: Option<&Resource>) {
        let Some(r) = r else { return };
        let (waiting, stalled) = match resource {
            "cpu" => ("container_pressure_cpu_waiting_seconds_total", "container_pressure_cpu_stalled_seconds_total"),
            "memory" => ("container_pressure_memory_waiting_seconds_total", "container_pressure_memory_stalled_seconds_total"),
            _ => ("container_pressure_io_waiting_seconds_total", "container_pressure_io_stalled_seconds_total"),
        };
        // PSI totals are microseconds.
        self.push(waiting, r.some.total / 1_000_000, &[]);
        if let Some(full) = r.full {
            self.push(stalled, full.total / 1_000_000, &[]);
        }
    }

    /// What the scheduling programs counted for a container.
    fn sched(&mut self, r: &crate::kernel::SchedReport) {
        if let Some(d) = &r.delay {
            self.push("container_sched_delay_microseconds_total", d.total_ns / 1000, &[]);
            self.push("container_sched_waits_total", d.count, &[]);
        }
        for i in &r.intrusions {
            self.push("container_isolation_intrusions_total", i.count, &[i.kind, &i.cpu.to_string()]);
        }
        if let Some(n) = r.cfs_throttles {
            self.push("container_cfs_throttle_events_total", n, &[]);
        }
    }

    fn network(&mut self, interfaces: &[InterfaceCounters]) {
        for i in interfaces {
            self.push("container_network_receive_bytes_total", i.rx_bytes, &[&i.name]);
            self.push("container_network_receive_errors_total", i.rx_errors, &[&i.name]);
            self.push("container_network_transmit_bytes_total", i.tx_bytes, &[&i.name]);
            self.push("container_network_transmit_errors_total", i.tx_errors, &[&i.name]);
        }
    }
}

fn pod_labels(p: &PodSandbox) -> [String; 6] {
    [String::new(), p.cgroup().to_string(), String::new(), String::new(), p.spec.namespace.clone(), p.spec.name.clone()]
}

fn container_labels(p: &PodSandbox, c: &Container) -> [String; 6] {
    [c.spec.name.clone(), c.cgroup_path.clone(), c.spec.image.clone(), c.id.clone(), p.spec.namespace.clone(), p.spec.name.clone()]
}

fn container_metrics(s: &Services, p: &PodSandbox, cs: ContainerSample) -> cri::ContainerMetrics {
    let ContainerSample { container: c, sample, layer } = cs;
    let mut series = Series::new(container_labels(p, &c));
    series.cgroup(&sample);
    series.push("container_start_time_seconds", u64::try_from(c.started_at_nanos / 1_000_000_000).unwrap_or(0), &[]);
    let device = s.images.store().root().display().to_string();
    series.push("container_fs_usage_bytes", layer.bytes, &[&device]);
    series.push("container_fs_inodes_used", layer.inodes, &[&device]);
    if let Some(r) = s.kernel.sched_report(&c.id) {
        series.sched(&r);
    }
    cri::ContainerMetrics { container_id: c.id, metrics: series.out }
}

async fn pod_metrics(s: &Services, id: &str) -> Result<cri::PodSandboxMetrics, Status> {
    let (p, sample, interfaces) = s.pods.pod_stats(id).await.map_err(|e| pod_status(&e))?;
    let mut series = Series::new(pod_labels(&p));
    series.cgroup(&sample);
    series.network(&interfaces);
    let running: Vec<String> =
        s.pods.containers_of(&p.id).into_iter().filter(|c| c.state == ContainerState::Running).map(|c| c.id).collect();
    // A container removed meanwhile is simply not listed.
    let sampled = s.containers.containers_stats(&running).await.map_err(|e| container_status(&e))?;
    let container_metrics = sampled.into_iter().map(|cs| container_metrics(s, &p, cs)).collect();
    Ok(cri::PodSandboxMetrics { pod_sandbox_id: p.id, metrics: series.out, container_metrics })
}

pub async fn list_metric_descriptors(
    _s: &Services,
    _req: cri::ListMetricDescriptorsRequest,
) -> Result<cri::ListMetricDescriptorsResponse, Status> {
    let descriptors = FAMILIES
        .iter()
        .map(|f| cri::MetricDescriptor {
            name: f.name.into(),
            help: f.help.into(),
            label_keys: LABEL_KEYS.iter().chain(f.extra).map(|k| k.to_string()).collect(),
        })
        .collect();
    Ok(cri::ListMetricDescriptorsResponse { descriptors })
}

/// The ids of the pods whose metrics are listed: the ready ones.
pub fn listed_pods(s: &Services) -> Vec<String> {
    s.pods.list_pods().into_iter().filter(|p| p.state == PodState::Ready).map(|p| p.id).collect()
}

/// One pod's metrics, or `None` when it went away meanwhile.
pub async fn one_pod(s: &Services, id: &str) -> Option<cri::PodSandboxMetrics> {
    pod_metrics(s, id).await.ok()
}

pub async fn list_pod_sandbox_metrics(
    s: &Services,
    _req: cri::ListPodSandboxMetricsRequest,
) -> Result<cri::ListPodSandboxMetricsResponse, Status> {
    // One pod per CPU at a time, in the order listed.
    let each = futures::stream::iter(listed_pods(s).into_iter().map(|id| async move { one_pod(s, &id).await }));
    let pod_metrics = each.buffered(super::stats::width()).filter_map(std::future::ready).collect().await;
    Ok(cri::ListPodSandboxMetricsResponse { pod_metrics })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::Usage;
    use crate::cgroups::pressure::{Pressure, Stall};

    #[test]
    fn every_metric_has_a_descriptor_with_its_label_keys() {
        let stall = Stall { total: 3_000_000, ..Default::default() };
        let sample = Sample {
            usage: Some(Usage { cpu_nanos: 2_500_000_000, page_faults: 10, major_page_faults: 3, ..Default::default() }),
            nano_cores: None,
            pressure: Some(Pressure {
                cpu: Some(Resource { some: stall, full: None }),
                memory: Some(Resource { some: stall, full: Some(stall) }),
                io: Some(Resource { some: stall, full: Some(stall) }),
            }),
            oom_kills: 1,
        };
        let mut series = Series::new(std::array::from_fn(|i| format!("v{i}")));
        series.cgroup(&sample);
        series.network(&[InterfaceCounters { name: "eth0".into(), rx_bytes: 5, ..Default::default() }]);
        series.push("container_fs_usage_bytes", 1, &["/var/lib/containers"]);
        for m in &series.out {
            let f = FAMILIES.iter().find(|f| f.name == m.name).expect("a descriptor");
            assert_eq!(m.label_values.len(), LABEL_KEYS.len() + f.extra.len(), "{}", m.name);
            assert_eq!(m.timestamp, 0);
        }
        let value = |name: &str, extra: &str| {
            series
                .out
                .iter()
                .find(|m| m.name == name && (extra.is_empty() || m.label_values.contains(&extra.to_string())))
                .map(|m| m.value.unwrap().value)
        };
        assert_eq!(value("container_cpu_usage_seconds_total", "total"), Some(2));
        assert_eq!(value("container_memory_failures_total", "pgfault"), Some(7));
        assert_eq!(value("container_memory_failures_total", "pgmajfault"), Some(3));
        assert_eq!(value("container_pressure_cpu_waiting_seconds_total", ""), Some(3));
        // No "full" line for CPU: no series, never a zero.
        assert_eq!(value("container_pressure_cpu_stalled_seconds_total", ""), None);
        assert_eq!(value("container_pressure_io_stalled_seconds_total", ""), Some(3));
        assert_eq!(value("container_network_receive_bytes_total", "eth0"), Some(5));
        assert_eq!(value("container_oom_events_total", ""), Some(1));
        let report = crate::kernel::SchedReport {
            delay: Some(crate::kernel::DelayHistogram { slots: vec![], count: 4, total_ns: 9_000, p50_ns: 0, p99_ns: 0 }),
            intrusions: vec![crate::kernel::IntrusionCount { cpu: 3, kind: "irq", count: 2 }],
            ..Default::default()
        };
        let mut kernel = Series::new(std::array::from_fn(|i| format!("v{i}")));
        kernel.sched(&report);
        let value = |name: &str| kernel.out.iter().find(|m| m.name == name).map(|m| m.value.unwrap().value);
        assert_eq!(value("container_sched_delay_microseconds_total"), Some(9));
        assert_eq!(value("container_isolation_intrusions_total"), Some(2));
        assert_eq!(value("container_cfs_throttle_events_total"), None, "absent where the kernel gives no event");
        for m in &kernel.out {
            let f = FAMILIES.iter().find(|f| f.name == m.name).expect("a descriptor");
            assert_eq!(m.label_values.len(), LABEL_KEYS.len() + f.extra.len(), "{}", m.name);
        }
    }

    #[test]
    fn family_names_are_unique() {
        let mut names: Vec<_> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
    }
}
