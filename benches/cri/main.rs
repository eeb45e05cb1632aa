//! `cargo xtask bench cri`: this daemon and containerd (Debian's, with its CRI plugin) side by
//! side on this machine, in one run. Each runtime runs alone, in alternating rounds (ours,
//! ours without eBPF, peer; the next round starts one further on) so the machine's drift and
//! the order hit all alike; both use runc, the same CNI
//! plugins and network shape, and images from the same local registry. Prints and writes
//! `target/bench/cri.md` and `.json` with p50/p95/p99 and ours/peer ratios.

mod client;
#[path = "../../crio-daemon/tests/common/mod.rs"]
mod common;
mod containerd;
mod list_streams;
mod procs;
mod report;
mod scenarios;
mod sched_cost;
mod streaming;
mod timing;

use std::path::Path;

use common::daemon::DaemonConfig;
use common::{Daemon, ImageBuilder, Layer, Registry};
use crio::cri::v1 as cri;
use crio::cri::v1::image_service_client::ImageServiceClient;
use crio::cri::v1::runtime_service_client::RuntimeServiceClient;
use scenarios::{Results, Target};

/// Rounds per runtime; each runs every scenario once.
fn rounds() -> usize {
    std::env::var("CRIO_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}

/// Pod starts per flow over all rounds: 100, so the p99 column is a percentile, not a maximum.
const POD_STARTS: usize = 100;
const PROBES: usize = 1000;
const DENSITY: usize = 100;
/// Running containers the list streaming and metrics RPCs are measured with.
const MANY: usize = 1000;
/// Pods started at once, each with one container (the issue's burst).
const BURST: usize = 100;
const STORM: usize = 400;
const STORM_WORKERS: usize = 8;
/// Exec sessions timed in all (p99 needs at least 100), and idle ones held open per round.
const STREAM_SESSIONS: usize = 200;
const IDLE_SESSIONS: usize = 50;

/// The same network for both, on a bridge and subnet of its own.
fn conflist(bridge: &str, subnet: &str, ipam: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": format!("bench-{bridge}"),
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": ipam}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

/// A static pause binary for containerd's sandboxes (gcc and libc6-dev are in .ci/deps).
fn pause_binary(dir: &Path) -> Vec<u8> {
    let src = dir.join("pause.c");
    std::fs::write(&src, "#include <signal.h>\n#include <unistd.h>\nstatic void done(int s){(void)s;_exit(0);}\nint main(void){signal(SIGTERM,done);signal(SIGINT,done);for(;;)pause();}\n").unwrap();
    let out = dir.join("pause");
    let ok = std::process::Command::new("gcc").args(["-static", "-O2", "-o"]).arg(&out).arg(&src).status().expect("gcc");
    assert!(ok.success(), "building the pause binary");
    std::fs::read(out).unwrap()
}

/// Removes the networks' bridges and the pods' cgroup parent (in every hierarchy), even after
/// a failure.
struct Cleanup {
    bridges: Vec<String>,
    cgroup: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for b in &self.bridges {
            let _ = std::process::Command::new("ip").args(["link", "del", b]).status();
            // containerd's CNI library caches results here; a run that failed half way leaves them.
            for e in std::fs::read_dir("/var/lib/cni/results").into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(&format!("bench-{b}-")) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let top = h.path().join(&self.cgroup);
            let _ = std::process::Command::new("find").arg(&top).args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"]).output();
        }
    }
}

const SCENARIOS: [&str; 9] = ["pod_start", "probes", "exec_storm", "burst", "density", "image", "streaming", "list_streams", "sched_cost"];

/// `CRIO_BENCH_SCENARIOS` (comma-separated names from [`SCENARIOS`]) runs only those; unset,
/// all of them.
fn selected(name: &str) -> bool {
    match std::env::var("CRIO_BENCH_SCENARIOS") {
        Ok(list) => list.split(',').any(|s| s.trim() == name),
        Err(_) => true,
    }
}

/// Whether a scenario compared with containerd is selected (sched_cost is ours alone).
fn side_by_side() -> bool {
    SCENARIOS.iter().filter(|s| **s != "sched_cost").any(|s| selected(s))
}

/// The runtimes a round runs, each alone.
#[derive(Clone, Copy)]
enum Leg {
    Ours,
    Untraced,
    Peer,
}

impl Leg {
    /// Round `round`'s order: the three turned by one each round.
    fn order(round: usize) -> [Leg; 3] {
        let all = [Leg::Ours, Leg::Untraced, Leg::Peer];
        std::array::from_fn(|i| all[(i + round) % 3])
    }
}

/// containerd's part of a round: a daemon of its own, the images pulled, the scenarios.
#[expect(clippy::too_many_arguments, reason = "the round's shared set-up, passed as it is")]
async fn peer_round(
    reg: &Registry,
    peer_net: &str,
    cgroup_parent: &str,
    image: &str,
    work: &Path,
    calls: &std::sync::Arc<timing::Calls>,
    peer: &mut Results,
    round: usize,
    rounds: usize,
) {
    let c = containerd::Containerd::start(&reg.addr, &format!("{}/pause:1", reg.addr), peer_net, calls);
    let ch = common::daemon::unix_channel(&c.socket).await;
    let dir = c.dir.path().display().to_string();
    let t = Target {
        cgroup_parent: cgroup_parent.to_string(),
        rt: RuntimeServiceClient::new(ch.clone()),
        socket: c.socket.clone(),
        img: ImageServiceClient::new(ch),
        image: image.to_string(),
        logs: work.join("logs-peer"),
        daemon: c.pid(),
        calls: calls.clone(),
        added: Box::new(move || {
            procs::matching(|a| {
                let shim = a.first().is_some_and(|x| x.ends_with("containerd-shim-runc-v2")) && a.iter().any(|x| x.starts_with(&dir));
                shim || a.first().is_some_and(|x| x == "/pause")
            })
        }),
    };
    let mut img = t.img.clone();
    for i in [image, &format!("{}/pause:1", reg.addr)] {
        let spec = Some(cri::ImageSpec { image: i.to_string(), ..Default::default() });
        // Its socket answers before its CRI plugin is up ("server is not initialized
        // yet"): wait for that, up to 30 s.
        let mut tries = 0;
        loop {
            let req = cri::PullImageRequest { image: spec.clone(), auth: None, sandbox_config: None };
            match img.pull_image(req).await {
                Ok(_) => break,
                Err(e) if e.message().contains("not initialized") && tries < 300 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("containerd pull: {e}"),
            }
        }
    }
    run_round(&t, peer, round, rounds).await;
}

/// Whether scenario `name` runs; if it does, what the one before left behind is finished
/// first, not during it, maybe in another runtime's turn: dirty logs, state and inode tables
/// are written back, and the node is let go quiet (see `procs::quiet`). On ext4 without a
/// journal (this CI's VM), a new inode skips every inode of its group freed in the last
/// minute, or six while their inode table block is dirty: a scan each file a runtime creates
/// pays, growing with the inodes freed shortly before (2-6% of the node in profiled bursts).
async fn begin(name: &str) -> bool {
    let on = selected(name);
    if on {
        rustix::fs::sync();
        let waited = procs::quiet(std::time::Duration::from_secs(10)).await;
        if waited > std::time::Duration::from_millis(500) {
            eprintln!("{name}: the node went quiet after {} ms", waited.as_millis());
        }
    }
    on
}

async fn run_round(t: &Target, r: &mut Results, round: usize, n: usize) {
    let node = procs::NodeTicks::now();
    scenarios_of_round(t, r, round, n).await;
    // Both runtimes' rounds alternate, so a host that took the VM's CPUs for a while shows in
    // one runtime's rounds more than in the other's: the row says how fair the run was.
    r.value("node: CPU time the VM's host took (steal) %", procs::NodeTicks::now().since(node).steal_percent());
}

async fn scenarios_of_round(t: &Target, r: &mut Results, round: usize, n: usize) {
    if begin("pod_start").await {
        scenarios::pod_start(t, r, round, POD_STARTS / n).await;
    }
    if begin("probes").await {
        scenarios::probes(t, r, round, PROBES / n).await;
    }
    if begin("exec_storm").await {
        scenarios::exec_storm(t, r, round, STORM / n, STORM_WORKERS).await;
    }
    if begin("burst").await {
        scenarios::burst(t, r, round, BURST).await;
    }
    if begin("density").await {
        scenarios::density(t, r, round, DENSITY).await;
    }
    if begin("streaming").await {
        streaming::streaming(t, r, round, STREAM_SESSIONS / n, IDLE_SESSIONS).await;
    }
    if begin("image").await {
        scenarios::image(t, r).await;
    }
    if begin("list_streams").await {
        list_streams::list_streams(t, r, round, MANY).await;
    }
}

/// Our daemon for one round, at the default log level as the peer runs at its own
/// (`CRIO_BENCH_LOG`, e.g. `crio=debug,info`, sets another and keeps each round's log in
/// target/bench/, for profiling).
async fn ours_daemon(reg: &Registry, net: &str, extra: &str, calls: &timing::Calls) -> Daemon {
    let mut cfg = DaemonConfig::trusting(reg);
    cfg.runc = Some(calls.runc.clone());
    cfg.cni_plugin_dir = Some(calls.cni_dir.clone());
    cfg.cni_conflist = Some(net.into());
    cfg.extra = extra.into();
    cfg.log_filter = Some(std::env::var("CRIO_BENCH_LOG").unwrap_or_else(|_| "info".into()));
    cfg.volatile_on_tmpfs = true;
    Daemon::start(cfg).await
}

/// The target for our daemon `d`, with the busybox image pulled; what it adds to the node is
/// its monitors.
async fn ours_target(
    d: &Daemon,
    cgroup_parent: &str,
    image: &str,
    logs: std::path::PathBuf,
    calls: &std::sync::Arc<timing::Calls>,
) -> Target {
    let dir = d.dir.path().display().to_string();
    let ch = d.channel().await;
    d.pull(image).await.expect("pull busybox");
    Target {
        cgroup_parent: cgroup_parent.into(),
        rt: RuntimeServiceClient::new(ch.clone()),
        socket: d.socket.clone(),
        img: ImageServiceClient::new(ch),
        image: image.into(),
        logs,
        daemon: d.pid(),
        calls: calls.clone(),
        added: Box::new(move || {
            procs::matching(|c| c.first().is_some_and(|a| a.ends_with("crio-monitor")) && c.get(1).is_some_and(|s| s.starts_with(&dir)))
        }),
    }
}

fn version(cmd: &str, arg: &str) -> String {
    std::process::Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_string())
        .unwrap_or_else(|_| format!("{cmd}: not found"))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Ok(list) = std::env::var("CRIO_BENCH_SCENARIOS") {
        let unknown: Vec<&str> = list.split(',').map(str::trim).filter(|s| !SCENARIOS.contains(s)).collect();
        assert!(unknown.is_empty(), "CRIO_BENCH_SCENARIOS: unknown {unknown:?}; known: {SCENARIOS:?}");
    }
    let work = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    reg.push("busybox", "1", &ImageBuilder::new().layer(Layer::busybox())).await;
    let pause = Layer::builder().file_mode("pause", &pause_binary(work.path()), 0o755).build();
    reg.push("pause", "1", &ImageBuilder::new().layer(pause).entrypoint(&["/pause"])).await;
    let image = format!("{}/busybox:1", reg.addr);
    let tag = std::process::id() % 1000;
    let (ours_bridge, peer_bridge) = (format!("crbo{tag}"), format!("crbp{tag}"));
    let ours_net = conflist(&ours_bridge, "10.252.0.0/16", &work.path().join("ipam-ours"));
    let peer_net = conflist(&peer_bridge, "10.253.0.0/16", &work.path().join("ipam-peer"));

    let cleanup = Cleanup { bridges: vec![ours_bridge.clone(), peer_bridge.clone()], cgroup: format!("crio-bench-{}", std::process::id()) };
    let cgroup_parent = format!("/{}", cleanup.cgroup);
    let rounds = rounds();
    let (mut ours, mut peer, mut untraced) = (Results::default(), Results::default(), Results::default());
    let (mut sched_on, mut sched_lean, mut sched_off) = (Results::default(), Results::default(), Results::default());
    let pingpong = selected("sched_cost").then(|| sched_cost::build_pingpong(work.path()));
    let calls = std::sync::Arc::new(timing::watch());
    for round in 0..rounds {
        // Which runtime goes first turns each round, so none always follows another's
        // teardown (or the machine's quiet after start-up).
        for leg in Leg::order(round) {
            match leg {
                Leg::Ours if side_by_side() => {
                    eprintln!("round {}/{rounds}: crio", round + 1);
                    let d = ours_daemon(&reg, &ours_net, "", &calls).await;
                    let t = ours_target(&d, &cgroup_parent, &image, work.path().join("logs-ours"), &calls).await;
                    run_round(&t, &mut ours, round, rounds).await;
                    if std::env::var("CRIO_BENCH_LOG").is_ok() {
                        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
                        let _ = std::fs::create_dir_all(&dir);
                        std::fs::write(dir.join(format!("crio-round-{}.log", round + 1)), d.log()).unwrap();
                    }
                }
                // What the kernel programs cost: the same daemon with [crio.ebpf] enable = false.
                Leg::Untraced if selected("pod_start") || selected("exec_storm") => {
                    eprintln!("round {}/{rounds}: crio without eBPF tracing", round + 1);
                    let d = ours_daemon(&reg, &ours_net, "[crio.ebpf]\nenable = false\n", &calls).await;
                    let t = ours_target(&d, &cgroup_parent, &image, work.path().join("logs-untraced"), &calls).await;
                    if begin("pod_start").await {
                        scenarios::pod_start(&t, &mut untraced, round, POD_STARTS / rounds).await;
                    }
                    if begin("exec_storm").await {
                        scenarios::exec_storm(&t, &mut untraced, round, STORM / rounds, STORM_WORKERS).await;
                    }
                }
                Leg::Peer if side_by_side() => {
                    eprintln!("round {}/{rounds}: containerd", round + 1);
                    peer_round(&reg, &peer_net, &cgroup_parent, &image, work.path(), &calls, &mut peer, round, rounds).await;
                }
                _ => {}
            }
        }
        // What scheduling tracing costs: ours with it on and off, alternately, under storms.
        if let Some(pingpong) = &pingpong {
            let metrics = "[crio.metrics]\nenable_metrics = true\nmetrics_host = \"127.0.0.1\"\nmetrics_port = 0\n";
            // On with the kernel's run-time statistics (the cost per run), on without them
            // (what the programs alone take from the storm), and off.
            for (on, stats, results) in [(true, true, &mut sched_on), (true, false, &mut sched_lean), (false, true, &mut sched_off)] {
                eprintln!("round {}/{rounds}: crio with scheduling tracing {}, program statistics {}", round + 1, on, stats);
                let extra = format!("{metrics}[crio.ebpf]\nsched_tracing = {on}\nprogram_stats = {stats}\n");
                let d = ours_daemon(&reg, &ours_net, &extra, &calls).await;
                let t = ours_target(&d, &cgroup_parent, &image, work.path().join("logs-sched"), &calls).await;
                let port = (on && stats).then(|| d.metrics_port());
                sched_cost::sched_cost(&t, results, round, pingpong, port, STORM / rounds).await;
            }
        }
    }
    let machine = report::Machine {
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        kernel: version("uname", "-r"),
        ours: format!("crio {}", env!("CARGO_PKG_VERSION")),
        peer: version("containerd", "--version"),
        oci: version("runc", "--version"),
        rounds,
    };
    if selected("pod_start") {
        // Both runtimes' calls were timed by one watch: what it missed, it missed for both.
        ours.value("timing watch: process events lost (both runtimes)", calls.lost() as f64);
    }
    if side_by_side() {
        report::write(&machine, &ours, &peer, &untraced);
    }
    if pingpong.is_some() {
        report::write_sched(&machine, &sched_on, &sched_lean, &sched_off);
    }
}
