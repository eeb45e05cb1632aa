//! The per-pod monitor with the real runc: it holds the container's stdio, writes CRI-format
//! logs (full and partial lines, both streams), reopens logs, records exit codes and signals
//! durably, and keeps watching after its client goes away.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::unmount_under;
use common::{Daemon, Registry};
use crio::monitor::client::{self, MonitorClient};
use crio::monitor::protocol::{CreateRequest, ExitRecord, Request};
use crio::oci::OciRuntime;
use crio::storage::Store;
use oci_spec::runtime::{RootBuilder, Spec};

const RUNC: &str = "/usr/sbin/runc";

struct Fixture {
    dir: PathBuf,
    store: Store,
    image: String,
    runtime: OciRuntime,
    monitor_pid: u32,
    monitor: MonitorClient,
    ids: Vec<String>,
    _daemon: Daemon,
    _registry: Registry,
}

impl Fixture {
    async fn new() -> Fixture {
        let (reg, d, image) = common::pulled_busybox().await;
        let dir = d.dir.path().to_path_buf();
        let store = Store::open(&d.root(), &dir.join("run")).unwrap();
        let runtime = OciRuntime::new("runc", Path::new(RUNC), &dir.join("runc"));
        let socket = dir.join("monitor.sock");
        let monitor_pid =
            client::spawn(Path::new(env!("CARGO_BIN_EXE_crio-monitor")), &socket, &dir.join("monitor.log"), &Default::default())
                .await
                .expect("monitor");
        Fixture { monitor: MonitorClient::new(&socket), dir, store, image, runtime, monitor_pid, ids: vec![], _daemon: d, _registry: reg }
    }

    /// Creates (through the monitor) and starts a container running `script`.
    async fn run(&mut self, name: &str, script: &str) -> (String, PathBuf, PathBuf) {
        self.run_capped(name, script, 0).await
    }

    async fn run_capped(&mut self, name: &str, script: &str, log_max_size: u64) -> (String, PathBuf, PathBuf) {
        let id = format!("crio-mon-{name}-{}", std::process::id());
        self.ids.push(id.clone());
        let rootfs = self.store.create_container(&id, &self.image).unwrap();
        let bundle = self.dir.join(format!("bundle-{name}"));
        fs::create_dir_all(&bundle).unwrap();
        let mut spec = Spec::default();
        spec.set_root(Some(RootBuilder::default().path(rootfs).readonly(false).build().unwrap()));
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(vec!["/bin/sh".into(), "-c".into(), script.into()]));
        process.set_terminal(Some(false));
        process.set_env(Some(vec!["PATH=/bin".into()]));
        spec.set_process(Some(process));
        spec.save(bundle.join("config.json")).unwrap();
        let log = self.dir.join(format!("logs/{name}.log"));
        let exit = self.dir.join(format!("{name}.exit.json"));
        // Outside the bundle, as the daemon puts it (in the pod's volatile directory).
        let pids = self.dir.join("pids");
        fs::create_dir_all(&pids).unwrap();
        let pid_file = pids.join(format!("{name}.pid"));
        let bundle_dir = bundle.clone();
        let req = Request::Create(CreateRequest {
            id: id.clone(),
            bundle,
            runtime: RUNC.into(),
            runtime_root: self.runtime.root.clone(),
            log_path: log.clone(),
            log_max_size,
            exit_file: exit.clone(),
            pid_file: Some(pid_file.clone()),
            ..Default::default()
        });
        let resp = self.monitor.request(&req).await.expect("create through the monitor");
        let pid = resp.pid.unwrap();
        assert!(pid > 0);
        // Removed behind the answer, by the thread that records the exit: waited for, not raced.
        let removed_by = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pid_file.exists() && std::time::Instant::now() < removed_by {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(!pid_file.exists(), "the pid file is read once and removed");
        assert!(!bundle_dir.join("pid").exists(), "the runtime wrote where it was told, not in the bundle");
        self.runtime.start(&id, pid).await.expect("start");
        (id, log, exit)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = std::process::Command::new(RUNC).arg("--root").arg(&self.runtime.root).args(["delete", "--force", id]).output();
        }
        let _ =
            rustix::process::kill_process(rustix::process::Pid::from_raw(self.monitor_pid as i32).unwrap(), rustix::process::Signal::KILL);
        unmount_under(&self.dir);
    }
}

async fn exit_record(path: &Path) -> ExitRecord {
    for _ in 0..1000 {
        if let Ok(bytes) = fs::read(path) {
            return serde_json::from_slice(&bytes).expect("exit record JSON");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no exit record at {}", path.display());
}

/// (stream, tag, content) of each CRI log line; the timestamp must parse as RFC3339.
fn entries(log: &Path) -> Vec<(String, String, String)> {
    fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let ts = p.next().unwrap();
            assert!(ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "timestamp {ts}");
            (p.next().unwrap().into(), p.next().unwrap().into(), p.next().unwrap_or("").into())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_and_exit_codes() {
    let mut fx = Fixture::new().await;
    let (_, log, exit) = fx.run("short", "echo out; echo err >&2; printf partial; exit 3").await;
    let rec = exit_record(&exit).await;
    assert_eq!((rec.exit_code, rec.signal), (3, None));
    let mut got = entries(&log);
    got.sort();
    let want = [("stderr", "F", "err"), ("stdout", "F", "out"), ("stdout", "P", "partial")];
    assert_eq!(got, want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())));

    let rss = fs::read_to_string(format!("/proc/{}/status", fx.monitor_pid)).unwrap();
    let rss_kb: u64 = rss.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    eprintln!("monitor RSS with one exited container: {rss_kb} KiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_state_and_signals() {
    let mut fx = Fixture::new().await;
    let (id, log, exit) = fx.run("ticker", "while true; do echo tick; sleep 0.05; done").await;
    for _ in 0..200 {
        if fs::read_to_string(&log).unwrap_or_default().contains("tick") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The kubelet's rotation: rename, then ask for a reopen.
    let rotated = log.with_extension("log.1");
    fs::rename(&log, &rotated).unwrap();
    fx.monitor.request(&Request::ReopenLog { id: id.clone() }).await.expect("reopen");
    for _ in 0..200 {
        if fs::read_to_string(&log).unwrap_or_default().contains("tick") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(entries(&log).iter().all(|(s, t, c)| s == "stdout" && t == "F" && c == "tick"), "new file gets new lines");

    // A new client (as after a daemon restart) sees the running container.
    let state = MonitorClient::new(&fx.monitor.socket).request(&Request::State).await.unwrap();
    let watched = state.containers.iter().find(|c| c.id == id).unwrap();
    assert!(watched.exit.is_none());
    let err = fx.monitor.request(&Request::ReopenLog { id: "nope".into() }).await.unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    fx.runtime.kill(&id, libc::SIGKILL, false).await.unwrap();
    let rec = exit_record(&exit).await;
    assert_eq!((rec.exit_code, rec.signal), (137, Some(9)));
    let state = fx.monitor.request(&Request::State).await.unwrap();
    assert_eq!(state.containers.iter().find(|c| c.id == id).unwrap().exit, Some(rec));
}

#[tokio::test(flavor = "multi_thread")]
async fn create_failure_reports_the_runtime_error() {
    let mut fx = Fixture::new().await;
    let id = format!("crio-mon-bad-{}", std::process::id());
    fx.ids.push(id.clone());
    let rootfs = fx.store.create_container(&id, &fx.image).unwrap();
    let bundle = fx.dir.join("bundle-bad");
    fs::create_dir_all(&bundle).unwrap();
    let mut spec = Spec::default();
    spec.set_root(Some(RootBuilder::default().path(rootfs).build().unwrap()));
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(vec!["/does/not/exist".into()]));
    spec.set_process(Some(process));
    spec.save(bundle.join("config.json")).unwrap();
    let req = Request::Create(CreateRequest {
        id: id.clone(),
        bundle,
        runtime: RUNC.into(),
        runtime_root: fx.runtime.root.clone(),
        log_path: fx.dir.join("bad.log"),
        exit_file: fx.dir.join("bad.exit"),
        ..Default::default()
    });
    let err = fx.monitor.request(&req).await.unwrap_err().to_string();
    assert!(err.contains("/does/not/exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn log_size_cap_truncates_and_continues() {
    let mut fx = Fixture::new().await;
    let (_, log, exit) = fx.run_capped("capped", "i=0; while [ $i -lt 50 ]; do i=$((i+1)); echo line $i; done", 400).await;
    exit_record(&exit).await;
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.len() <= 400, "log stays under its cap: {} bytes", text.len());
    assert!(text.trim_end().ends_with("stdout F line 50"), "the newest output is kept: {text}");
}
