//! What scheduling tracing costs (issue: "the cost must be measured, not assumed"). The
//! scheduling program runs on every context switch of the node, so it is timed under a
//! context-switch storm: a pipe ping-pong of two processes on one CPU (each round trip is two
//! switches), run by tasks of the node and by tasks of a container's
//! cgroup (which the programs follow: histogram updates), with the daemon's scheduling tracing
//! on (with the kernel's run-time statistics, and without them: `program_stats = false`, what
//! the programs alone cost) and with `[crio.ebpf] sched_tracing = false`. Per program, the
//! kernel's own run-time statistics (`run_time_ns` / `run_cnt`, read through the daemon's metrics) give the cost
//! per run; the storm's round trips per second give the throughput lost. The exec storm runs
//! in both daemons as well.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crio::cri::v1 as cri;

use super::scenarios::{Results, Target, exec_storm, remove_pod, start_pod};

/// Round trips per storm: about a second on a 2-core VM.
const ROUND_TRIPS: u64 = 200_000;

/// The ping-pong, in C so the loop is only the two syscalls per side: joins the cgroup whose
/// `cgroup.procs` is argv[2] (if given), pins itself to CPU argv[3], forks, and bounces one
/// byte argv[1] times; prints the nanoseconds it took.
const PINGPONG_C: &str = r#"
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    if (argc > 2 && argv[2][0]) {
        FILE *f = fopen(argv[2], "w");
        if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f) != 0) { perror("joining the cgroup"); return 2; }
    }
    cpu_set_t set; CPU_ZERO(&set); CPU_SET(argc > 3 ? atoi(argv[3]) : 0, &set);
    if (sched_setaffinity(0, sizeof(set), &set)) { perror("sched_setaffinity"); return 2; }
    int a[2], b[2]; char c = 0;
    if (pipe(a) || pipe(b)) { perror("pipe"); return 2; }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t child = fork();
    if (child == 0) {
        for (long i = 0; i < n; i++) { if (read(a[0], &c, 1) != 1 || write(b[1], &c, 1) != 1) _exit(3); }
        _exit(0);
    }
    for (long i = 0; i < n; i++) { if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1) return 3; }
    int status; waitpid(child, &status, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%lld\n", (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    return status == 0 ? 0 : 3;
}
"#;

/// Builds the ping-pong once (gcc is in .ci/deps, as for the pause binary).
pub fn build_pingpong(dir: &Path) -> PathBuf {
    let src = dir.join("pingpong.c");
    std::fs::write(&src, PINGPONG_C).expect("writing pingpong.c");
    let out = dir.join("pingpong");
    let ok = std::process::Command::new("gcc").args(["-O2", "-o"]).arg(&out).arg(&src).status().expect("gcc");
    assert!(ok.success(), "building the ping-pong");
    out
}

/// Round trips per second of one storm, its processes in `cgroup` (a `cgroup.procs` path)
/// when given, on CPU 1 (CPU 0 where there is one CPU).
fn storm(pingpong: &Path, cgroup: Option<&Path>) -> f64 {
    let cpu = if std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) > 1 { "1" } else { "0" };
    let procs = cgroup.map(|p| p.display().to_string()).unwrap_or_default();
    let out = std::process::Command::new(pingpong).arg(ROUND_TRIPS.to_string()).arg(&procs).arg(cpu).output().expect("ping-pong");
    assert!(out.status.success(), "ping-pong: {}", String::from_utf8_lossy(&out.stderr));
    let ns: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("ping-pong prints nanoseconds");
    ROUND_TRIPS as f64 / (ns / 1e9)
}

/// Per program, (seconds run, runs) from the daemon's metrics.
fn program_stats(port: u16) -> BTreeMap<String, (f64, f64)> {
    let text = super::common::scrape_metrics(port);
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        for (family, seconds) in
            [("container_runtime_crio_ebpf_program_run_seconds_total", true), ("container_runtime_crio_ebpf_program_runs_total", false)]
        {
            let Some(rest) = line.strip_prefix(family).and_then(|r| r.strip_prefix("{program=\"")) else { continue };
            let Some((name, value)) = rest.split_once("\"} ") else { continue };
            let Ok(v) = value.trim().parse::<f64>() else { continue };
            let e = out.entry(name.to_string()).or_default();
            if seconds { e.0 = v } else { e.1 = v }
        }
    }
    out
}

/// Nanoseconds per run of each scheduling program between two readings.
fn per_run(before: &BTreeMap<String, (f64, f64)>, after: &BTreeMap<String, (f64, f64)>) -> Vec<(String, f64, f64)> {
    after
        .iter()
        .filter(|(name, _)| name.starts_with("crio_sched") || name.contains("irq"))
        .filter_map(|(name, (s, n))| {
            let (s0, n0) = before.get(name).copied().unwrap_or_default();
            let runs = n - n0;
            (runs > 0.0).then(|| (name.clone(), (s - s0) * 1e9 / runs, runs))
        })
        .collect()
}

/// The container's unified-hierarchy `cgroup.procs`, from its init's /proc/<pid>/cgroup.
async fn container_procs(t: &Target, ct: &str) -> PathBuf {
    let mut rt = t.rt.clone();
    let st = rt.container_status(cri::ContainerStatusRequest { container_id: ct.into(), verbose: true }).await.expect("ContainerStatus");
    let info: serde_json::Value = serde_json::from_str(&st.into_inner().info["info"]).expect("verbose info");
    let pid = info["pid"].as_i64().expect("the container's pid");
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("the container's cgroups");
    let path = text.lines().find_map(|l| l.strip_prefix("0::")).expect("a unified cgroup");
    let unified = Path::new("/sys/fs/cgroup/unified");
    let root = if unified.join("cgroup.procs").exists() { unified } else { Path::new("/sys/fs/cgroup") };
    root.join(path.trim_start_matches('/')).join("cgroup.procs")
}

/// One daemon's storms: node tasks, then container tasks; with `metrics` the programs' cost.
pub async fn sched_cost(t: &Target, r: &mut Results, round: usize, pingpong: &Path, metrics: Option<u16>, storms: usize) {
    let (pod, ct, _) = start_pod(t, &format!("sched-{round}")).await;
    let procs = container_procs(t, &ct).await;
    for (label, cgroup) in [("node tasks", None), ("container tasks", Some(procs.as_path()))] {
        let before = metrics.map(program_stats);
        let pp = pingpong.to_path_buf();
        let cg = cgroup.map(Path::to_path_buf);
        let rate = tokio::task::spawn_blocking(move || storm(&pp, cg.as_deref())).await.expect("storm");
        r.value(&format!("ctx-switch storm, {label}: round trips per second"), rate);
        if let (Some(port), Some(before)) = (metrics, before) {
            // Programs the storm hardly ran (an odd IRQ) would only add noise.
            for (program, ns, runs) in per_run(&before, &program_stats(port)).into_iter().filter(|p| p.2 >= ROUND_TRIPS as f64 / 10.0) {
                r.value(&format!("ctx-switch storm, {label}: {program} ns per run"), ns);
                r.value(&format!("ctx-switch storm, {label}: {program} runs per round trip"), runs / ROUND_TRIPS as f64);
            }
        }
    }
    remove_pod(t, &pod).await;
    let before = metrics.map(program_stats);
    exec_storm(t, r, round, storms, super::STORM_WORKERS).await;
    if let (Some(port), Some(before)) = (metrics, before) {
        for (program, ns, _) in per_run(&before, &program_stats(port)) {
            r.value(&format!("exec storm: {program} ns per run"), ns);
        }
    }
    // Let the monitors' exits settle before the next daemon.
    tokio::time::sleep(Duration::from_millis(200)).await;
}
