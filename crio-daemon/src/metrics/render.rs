//! The scrape: static counters from `Metrics`, per-object series from the live services and
//! the kernel programs.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::{BUCKETS, Metrics};
use crate::kernel::OomLevel;
use crate::model::ContainerState;
use crate::services::Services;

const PREFIX: &str = "container_runtime_crio";

pub(super) struct Out(String);

impl Out {
    pub(super) fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {PREFIX}_{name} {help}\n# TYPE {PREFIX}_{name} {kind}");
    }

    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.0, "{PREFIX}_{name}");
        if !labels.is_empty() {
            let body: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.0, "{{{}}}", body.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

// Long by design: one short block per metric family, in the order the scrape lists them.
pub fn render(m: &Metrics, s: &Services) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    let ops = m.operations();
    o.header("operations_total", "counter", "CRI operations by type.");
    for (op, v) in &ops {
        o.sample("operations_total", &[("operation", op)], v.total);
    }
    o.header("operations_errors_total", "counter", "CRI operations that returned an error, by type.");
    for (op, v) in &ops {
        o.sample("operations_errors_total", &[("operation", op)], v.errors);
    }
    o.header("operations_latency_seconds_total", "histogram", "Latency of CRI operations, by type.");
    for (op, v) in &ops {
        for (bound, count) in BUCKETS.iter().zip(v.buckets) {
            o.sample("operations_latency_seconds_total_bucket", &[("operation", op), ("le", &bound.to_string())], count);
        }
        o.sample("operations_latency_seconds_total_bucket", &[("operation", op), ("le", "+Inf")], v.total);
        o.sample("operations_latency_seconds_total_sum", &[("operation", op)], v.seconds);
        o.sample("operations_latency_seconds_total_count", &[("operation", op)], v.total);
    }
    o.header("image_pulls_success_total", "counter", "Successful image pulls.");
    o.sample("image_pulls_success_total", &[], m.image_pulls_success.load(Ordering::Relaxed));
    o.header("image_pulls_failure_total", "counter", "Failed image pulls.");
    o.sample("image_pulls_failure_total", &[], m.image_pulls_failure.load(Ordering::Relaxed));
    o.header("image_pulls_bytes_total", "counter", "Layer bytes downloaded by image pulls (as served, compressed).");
    o.sample("image_pulls_bytes_total", &[], s.images.pulled_bytes.load(Ordering::Relaxed));

    o.header("daemon_table_entries", "gauge", "Entries in the daemon's own tables, which follow live objects.");
    for (table, n) in s.containers.table_sizes().into_iter().chain(s.pods.table_sizes()) {
        o.sample("daemon_table_entries", &[("table", table)], n);
    }

    let kernel = &s.kernel;
    let counters = kernel.counters();
    let containers = s.containers.list_records();
    // With the kernel programs an OOM kill is counted as it happens; without, a container
    // whose init was OOM killed counts once.
    let ooms = |id: &str, state: ContainerState, reason: &str| match counters.get(id) {
        Some(c) => c.oom_kills,
        None => u64::from(state == ContainerState::Exited && reason == "OOMKilled"),
    };
    o.header("containers_oom_count_total", "counter", "OOM kills in each container, by container name.");
    let mut total_oom = 0;
    for c in &containers {
        let n = ooms(&c.id, c.state, &c.reason);
        total_oom += n;
        o.sample("containers_oom_count_total", &[("name", &c.full_name)], n);
    }
    o.header("containers_oom_total", "counter", "OOM kills in all containers.");
    o.sample("containers_oom_total", &[], total_oom);
    o.header("containers_events_dropped_total", "counter", "Kernel events subscribers missed by falling behind.");
    o.sample("containers_events_dropped_total", &[], kernel.dropped.load(Ordering::Relaxed));

    if !kernel.enabled() {
        return o.0;
    }
    for (name, help, pick) in [
        ("container_execs_total", "Programs executed in each container (kernel-observed).", 0),
        ("container_forks_total", "Processes created in each container (kernel-observed).", 1),
        ("container_exits_total", "Processes ended in each container (kernel-observed).", 2),
    ] {
        o.header(name, "counter", help);
        for c in &containers {
            let n = counters.get(&c.id).map(|k| [k.execs, k.forks, k.exits][pick]).unwrap_or(0);
            o.sample(name, &[("pod_sandbox_id", &c.pod_id), ("container_id", &c.id), ("name", &c.full_name)], n);
        }
    }
    o.header("oom_kills_total", "counter", "OOM kills in containers, by whose memory limit fired.");
    let levels = kernel.oom_by_level();
    for (level, label) in [(OomLevel::Container, "container"), (OomLevel::Pod, "pod"), (OomLevel::Above, "above"), (OomLevel::Node, "node")]
    {
        o.sample("oom_kills_total", &[("level", label)], levels.get(&level).copied().unwrap_or(0));
    }
    let pods = s.pods.list_pods();
    let net: Vec<_> = pods.iter().filter_map(|p| kernel.pod_network(&p.id).map(|n| (p, n))).collect();
    type Pick = fn(&crio_ebpf::NetCounters) -> u64;
    let series: [(&str, &str, Pick); 8] = [
        ("pod_network_receive_bytes_total", "Bytes received by the pod's processes.", |n| n.rx_bytes),
        ("pod_network_transmit_bytes_total", "Bytes sent by the pod's processes.", |n| n.tx_bytes),
        ("pod_network_receive_packets_total", "Packets received by the pod's processes.", |n| n.rx_packets),
        ("pod_network_transmit_packets_total", "Packets sent by the pod's processes.", |n| n.tx_packets),
        ("pod_network_tcp_receive_bytes_total", "TCP bytes received by the pod's processes.", |n| n.tcp_rx_bytes),
        ("pod_network_tcp_transmit_bytes_total", "TCP bytes sent by the pod's processes.", |n| n.tcp_tx_bytes),
        ("pod_network_udp_receive_bytes_total", "UDP bytes received by the pod's processes.", |n| n.udp_rx_bytes),
        ("pod_network_udp_transmit_bytes_total", "UDP bytes sent by the pod's processes.", |n| n.udp_tx_bytes),
    ];
    for (name, help, pick) in series {
        o.header(name, "counter", help);
        for (p, n) in &net {
            o.sample(name, &[("pod_sandbox_id", &p.id), ("pod_name", &p.spec.name), ("pod_namespace", &p.spec.namespace)], pick(n));
        }
    }
    super::sched::render(&mut o, kernel, &containers);
    o.header("kernel_events_lost_total", "counter", "Kernel events dropped because the ring buffer was full.");
    o.sample("kernel_events_lost_total", &[], kernel.lost());
    let programs = kernel.program_stats();
    o.header("ebpf_program_run_seconds_total", "counter", "Time the kernel spent running each eBPF program.");
    for (name, time, _) in &programs {
        o.sample("ebpf_program_run_seconds_total", &[("program", name)], time.as_secs_f64());
    }
    o.header("ebpf_program_runs_total", "counter", "Runs of each eBPF program.");
    for (name, _, runs) in &programs {
        o.sample("ebpf_program_runs_total", &[("program", name)], runs);
    }
    o.0
}
