//! The kernel's proof of isolation, through the daemon: a high-performance container pinned to
//! CPU 1 (load balancing and IRQs off there) has every other task, IRQ and softirq on CPU 1
//! counted with its kind, CPU and name, in the Scheduling RPC, verbose status, metrics, the
//! kernel event stream, `crioctl top` and the pinned maps; a container without isolation has
//! none. A CPU-bound neighbour on a container's CPU raises its scheduling delay; alone it
//! stays near zero. Needs 2 CPUs; the two tests take CPU 1 in turn.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::Daemon;
use common::host::HostGuard;
use common::pods::*;
use crio::api::kernel_v1 as k;
use crio::cri::v1 as cri;

/// CPU 1 is shared by both tests' measurements: one at a time.
static CPU1: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const METRICS: &str = "[crio.metrics]\nenable_metrics = true\nmetrics_host = \"127.0.0.1\"\nmetrics_port = 0\n";

async fn pod(d: &Daemon, name: &str, handler: &str, isolate: bool) -> (String, cri::PodSandboxConfig) {
    let mut pc = pod_config(name, &d.dir.path().join(format!("logs/{name}")));
    if isolate {
        pc.annotations = [("cpu-load-balancing.crio.io", "disable"), ("irq-load-balancing.crio.io", "disable")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }
    let req = cri::RunPodSandboxRequest { config: Some(pc.clone()), runtime_handler: handler.into() };
    (d.runtime().await.run_pod_sandbox(req).await.expect("RunPodSandbox").into_inner().pod_sandbox_id, pc)
}

async fn start(d: &Daemon, pod: &str, pc: &cri::PodSandboxConfig, config: cri::ContainerConfig) -> String {
    let ct = create(d, pod, pc, config).await.expect("CreateContainer");
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: ct.clone() }).await.expect("StartContainer");
    ct
}

async fn scheduling(d: &Daemon, ct: &str) -> k::ContainerScheduling {
    let mut client = k::kernel_events_client::KernelEventsClient::new(d.channel().await);
    let r = client.scheduling(k::SchedulingRequest { container_id: ct.into() }).await.expect("Scheduling").into_inner();
    assert!(r.enabled, "scheduling is traced: {r:?}");
    r.containers.into_iter().next().expect("the container's scheduling")
}

fn count(s: &k::ContainerScheduling, kind: k::IntrusionKind) -> u64 {
    s.intrusions.iter().filter(|i| i.kind == kind as i32 && i.cpu == 1).map(|i| i.count).sum()
}

/// Per IRQ number, how often it fired on CPU 1 (the numbered lines of /proc/interrupts).
fn irqs_on_cpu1() -> std::collections::BTreeMap<u32, u64> {
    let text = std::fs::read_to_string("/proc/interrupts").expect("/proc/interrupts");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let irq = f.next()?.strip_suffix(':')?.parse().ok()?;
            let _cpu0 = f.next()?;
            Some((irq, f.next()?.parse().ok()?))
        })
        .collect()
}

/// A thread of this test process named `crio-intruder`, on CPU 1 for `run`: it spins, sends
/// itself TCP on loopback (NET_RX softirqs on this CPU) and makes file writes durable (the
/// disk's completion IRQ, where the host routes it to CPU 1).
fn intruder(run: Duration, dir: PathBuf) -> std::thread::JoinHandle<u32> {
    std::thread::Builder::new()
        .name("crio-intruder".into())
        .spawn(move || {
            let mut cpus = rustix::thread::CpuSet::new();
            cpus.set(1);
            rustix::thread::sched_setaffinity(None, &cpus).expect("pinning the intruder to CPU 1");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback listener");
            let mut tx = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
            let (mut rx, _) = listener.accept().expect("accept");
            let file = dir.join("intruder-io");
            let mut buf = [7u8; 4096];
            let deadline = Instant::now() + run;
            while Instant::now() < deadline {
                tx.write_all(&buf).expect("send");
                rx.read_exact(&mut buf).expect("receive");
                std::fs::write(&file, buf).expect("write");
                std::fs::File::open(&file).and_then(|f| f.sync_all()).expect("fsync");
                let spin = Instant::now();
                while spin.elapsed() < Duration::from_millis(2) {
                    std::hint::spin_loop();
                }
            }
            let _ = std::fs::remove_file(&file);
            rustix::thread::gettid().as_raw_nonzero().get() as u32
        })
        .expect("starting the intruder")
}

#[tokio::test(flavor = "multi_thread")]
async fn intruders_on_an_isolated_cpu_are_counted_by_kind_cpu_and_name() {
    let _cpu1 = CPU1.lock().await;
    let root = PathBuf::from(format!("/tmp/crio-iso-runc-{}", std::process::id()));
    let _host = HostGuard::new(root.clone());
    let extra = format!(
        "[crio.runtime.runtimes.high-performance]\nruntime_path = \"/usr/sbin/runc\"\nruntime_root = \"{}\"\n{METRICS}",
        root.display()
    );
    let e = env_config(1, false, &extra).await;
    let d = &e.d;
    let (hp, hp_pc) = pod(d, "isolated", "high-performance", true).await;
    let ct = start(d, &hp, &hp_pc, on_cpu1("app", &e.image, "exec sleep 1000")).await;
    let (plain, plain_pc) = pod(d, "shared", "", false).await;
    let other = start(d, &plain, &plain_pc, on_cpu1("app", &e.image, "exec sleep 1000")).await;
    assert_eq!(scheduling(d, &ct).await.isolated_cpus, [1]);

    let mut client = k::kernel_events_client::KernelEventsClient::new(d.channel().await);
    let watch = k::WatchRequest { container_id: ct.clone(), kinds: vec![k::EventKind::Intrusion as i32], ..Default::default() };
    let mut events = client.watch(watch).await.expect("Watch").into_inner();

    let (before, irqs_before) = (scheduling(d, &ct).await, irqs_on_cpu1());
    let tid = intruder(Duration::from_millis(600), d.dir.path().into()).join().expect("the intruder ran");
    let (after, irqs_after) = (scheduling(d, &ct).await, irqs_on_cpu1());

    // The task: counted on CPU 1 as a task (not a kernel thread), by its name.
    assert!(count(&after, k::IntrusionKind::Task) > count(&before, k::IntrusionKind::Task), "{after:#?}");
    let named = after.top_intruders.iter().find(|i| i.name == "crio-intruder");
    let named = named.unwrap_or_else(|| panic!("the intruder among the top ones: {after:#?}"));
    assert_eq!((named.kind, named.id, named.last_cpu), (k::IntrusionKind::Task as i32, tid, 1), "{named:?}");
    assert!(after.intrusions.iter().all(|i| i.cpu == 1), "only CPU 1 is isolated: {after:#?}");
    // Its loopback traffic raised softirqs there.
    assert!(count(&after, k::IntrusionKind::Softirq) > count(&before, k::IntrusionKind::Softirq), "{after:#?}");
    // Hard IRQs: ours counts what the kernel's own counters saw on CPU 1 in a wider window.
    let fired: u64 = irqs_after.iter().map(|(irq, n)| n - irqs_before.get(irq).copied().unwrap_or(0)).sum();
    let counted = count(&after, k::IntrusionKind::Irq) - count(&before, k::IntrusionKind::Irq);
    if fired > 0 {
        assert!(counted > 0 && counted <= fired, "{counted} IRQs counted, {fired} fired on CPU 1 ({irqs_before:?} -> {irqs_after:?})");
    } else {
        eprintln!("no IRQ fired on CPU 1 during the intrusion: every one was steered away on this host");
        assert_eq!(counted, 0);
    }

    // The stream says so, naming the CPU and the kind.
    let ev = tokio::time::timeout(Duration::from_secs(10), events.message()).await.expect("an event").expect("stream").expect("open");
    let what = ev.intrusion.expect("an intrusion");
    assert_eq!((ev.container_id.as_str(), what.cpu), (ct.as_str(), 1), "{ev:?}");

    // Verbose status, metrics, crioctl and bpftool show it.
    let req = cri::ContainerStatusRequest { container_id: ct.clone(), verbose: true };
    let info = d.runtime().await.container_status(req).await.expect("ContainerStatus").into_inner().info;
    assert!(info["scheduling"].contains("\"name\":\"crio-intruder\""), "{info:?}");
    let text = common::scrape_metrics(d.metrics_port());
    let series = format!("container_runtime_crio_isolation_intrusions_total{{pod_sandbox_id=\"{hp}\",container_id=\"{ct}\",");
    assert!(text.lines().any(|l| l.starts_with(&series) && l.contains("kind=\"task\",cpu=\"1\"")), "{text}");
    let top = Command::new(env!("CARGO_BIN_EXE_crioctl"))
        .args(["-r", &d.socket.display().to_string(), "top", "--once", "--sort", "intrusions"])
        .output()
        .expect("crioctl top");
    let table = String::from_utf8_lossy(&top.stdout);
    let line =
        table.lines().find(|l| l.starts_with(&ct[..13])).unwrap_or_else(|| panic!("{table}{}", String::from_utf8_lossy(&top.stderr)));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[5], "1", "isolated CPUs: {table}");
    assert!(cols[6].parse::<u64>().is_ok_and(|tasks| tasks > 0), "task intrusions: {table}");
    let pins = common::daemon::pin_dir(d.dir.path());
    let dump = Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(pins.join("intrusions")).output().expect("bpftool");
    let json = String::from_utf8_lossy(&dump.stdout);
    assert!(json.contains("\"cpu\":1") && json.contains("\"kind\":1"), "{json}");

    // The kubelet's CRI metrics carry them too.
    let listed = d.runtime().await.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {}).await.expect("metrics").into_inner();
    let pod_metrics = listed.pod_metrics.iter().find(|p| p.pod_sandbox_id == hp).expect("the pod's metrics");
    let ctr_metrics = pod_metrics.container_metrics.iter().find(|c| c.container_id == ct).expect("the container's metrics");
    let tasks = ctr_metrics
        .metrics
        .iter()
        .find(|m| m.name == "container_isolation_intrusions_total" && m.label_values.ends_with(&["task".to_string(), "1".to_string()]));
    assert!(tasks.is_some_and(|m| m.value.unwrap().value > 0), "{ctr_metrics:?}");
    assert!(ctr_metrics.metrics.iter().any(|m| m.name == "container_sched_waits_total"), "{ctr_metrics:?}");

    // The container without isolation has none, though it shares CPU 1.
    let shared = scheduling(d, &other).await;
    assert!(shared.isolated_cpus.is_empty() && shared.intrusions.is_empty() && shared.top_intruders.is_empty(), "{shared:#?}");
    assert!(shared.delay.is_some(), "its waits are still measured");

    // Once it has stopped, CPU 1 is nobody's.
    d.runtime().await.stop_container(cri::StopContainerRequest { container_id: ct.clone(), timeout: 0 }).await.expect("StopContainer");
    assert!(scheduling(d, &ct).await.isolated_cpus.is_empty());
    for id in [hp, plain] {
        d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id }).await.expect("RemovePodSandbox");
    }
    let mut client = k::kernel_events_client::KernelEventsClient::new(d.channel().await);
    let gone = client.scheduling(k::SchedulingRequest { container_id: ct.clone() }).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
}

/// A busy loop outside any container, on CPU 1; killed by PID when dropped.
struct Neighbour(Child);

impl Neighbour {
    fn start() -> Neighbour {
        let child = Command::new("taskset").args(["-c", "1", "/bin/sh", "-c", "while :; do :; done"]).spawn().expect("taskset");
        Neighbour(child)
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the container waited over `d`: (total ns, waits).
async fn waited_over(d: &Daemon, ct: &str, over: Duration) -> (u64, u64) {
    let delay = |s: k::ContainerScheduling| s.delay.expect("scheduling delay");
    let before = delay(scheduling(d, ct).await);
    tokio::time::sleep(over).await;
    let after = delay(scheduling(d, ct).await);
    (after.total_ns - before.total_ns, after.count - before.count)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cpu_bound_neighbour_raises_the_containers_scheduling_delay() {
    let _cpu1 = CPU1.lock().await;
    let e = env_config(2, false, METRICS).await;
    let d = &e.d;
    let (pod, pc) = pod(d, "busy", "", false).await;
    let ct = start(d, &pod, &pc, on_cpu1("spin", &e.image, "while :; do :; done")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (alone, _) = waited_over(d, &ct, Duration::from_secs(1)).await;
    let neighbour = Neighbour::start();
    let (shared, waits) = waited_over(d, &ct, Duration::from_secs(1)).await;
    drop(neighbour);
    // The fair scheduler gives each about half of CPU 1: the container waits ~0.5 s a second.
    assert!(shared > 200_000_000, "waited {shared} ns in {waits} waits beside a busy neighbour");
    assert!(alone < shared / 4, "alone it waited {alone} ns; beside a neighbour {shared} ns");
    let s = scheduling(d, &ct).await;
    let delay = s.delay.clone().expect("delay");
    assert!(delay.p99_ns >= 1_000_000, "the neighbour's slices make millisecond waits: {delay:?}");
    assert!(s.intrusions.is_empty(), "no isolation asked, so no intrusions: {s:?}");
    // Throttle events are counted where the kernel loads the fexit program, and absent (not
    // zero) where it refuses it, as this CI's kernel does.
    let mut client = k::kernel_events_client::KernelEventsClient::new(d.channel().await);
    let r = client.scheduling(k::SchedulingRequest::default()).await.expect("Scheduling").into_inner();
    let refused = r.off.iter().any(|o| o.starts_with("CFS throttle events"));
    assert_eq!(s.cfs_throttles.is_none(), refused, "{r:?}");

    let text = common::scrape_metrics(d.metrics_port());
    let count = format!("container_runtime_crio_container_sched_delay_seconds_count{{pod_sandbox_id=\"{pod}\",container_id=\"{ct}\",");
    let n: f64 =
        text.lines().find_map(|l| l.starts_with(&count).then(|| l.rsplit(' ').next()?.parse().ok())?).unwrap_or_else(|| panic!("{text}"));
    assert!(n >= waits as f64, "{n} waits in the histogram");
    let inf = format!("container_runtime_crio_container_sched_delay_seconds_bucket{{pod_sandbox_id=\"{pod}\",container_id=\"{ct}\",");
    assert!(text.lines().any(|l| l.starts_with(&inf) && l.contains("le=\"+Inf\"")), "{text}");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduling_tracing_turns_off_on_its_own() {
    let e = env_config(3, false, &format!("[crio.ebpf]\nsched_tracing = false\n{METRICS}")).await;
    let d = &e.d;
    let mut client = k::kernel_events_client::KernelEventsClient::new(d.channel().await);
    let r = client.scheduling(k::SchedulingRequest::default()).await.expect("Scheduling").into_inner();
    assert!(!r.enabled && r.off.iter().any(|o| o.contains("sched_tracing = false")), "{r:?}");
    let st = d.runtime().await.status(cri::StatusRequest { verbose: false }).await.expect("Status").into_inner();
    let kernel = st.status.expect("status").conditions.into_iter().find(|c| c.r#type == "KernelTracingReady").expect("condition");
    assert!(!kernel.status && kernel.message.contains("sched_tracing = false"), "{kernel:?}");
    // The other programs still run; the scheduling ones were never loaded.
    let stats = client.stats(k::StatsRequest {}).await.expect("Stats").into_inner();
    assert!(stats.enabled, "{stats:?}");
    let text = common::scrape_metrics(d.metrics_port());
    assert!(text.contains("program=\"crio_exec\"") && !text.contains("crio_sched_switch"), "{text}");
    assert!(!text.contains("container_sched_delay_seconds"), "{text}");
}
