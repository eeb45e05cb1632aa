//! The daemon itself: socket handling, configuration errors and warnings, the status API,
//! Version/Status/RuntimeConfig, graceful shutdown.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::Daemon;
use common::daemon::DaemonConfig;
use crio::cri::v1 as cri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const CRIO: &str = env!("CARGO_BIN_EXE_crio");

/// One HTTP/1.1 GET over the CRI socket, as `curl --unix-socket` would send it.
async fn http_get(d: &Daemon, path: &str) -> (u16, String) {
    let mut s = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_is_0660_and_serves_cri_and_http() {
    let d = Daemon::start(DaemonConfig::default()).await;
    let meta = fs::metadata(&d.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let mut rt = d.runtime().await;
    let v = rt.version(cri::VersionRequest::default()).await.unwrap().into_inner();
    assert_eq!((v.runtime_name.as_str(), v.runtime_api_version.as_str()), ("crio", "v1"));
    let st = rt.status(cri::StatusRequest { verbose: true }).await.unwrap().into_inner();
    let conds = st.status.unwrap().conditions;
    let names: Vec<_> = conds.iter().map(|c| c.r#type.as_str()).collect();
    assert_eq!(names, ["RuntimeReady", "NetworkReady", "KernelTracingReady"]);
    for c in &conds {
        assert!(c.status || (!c.reason.is_empty() && !c.message.is_empty()), "a false condition says why: {c:?}");
    }
    // This machine's kernel runs every tracepoint program (BTF); the maps are pinned. It
    // refuses fexit programs (no BPF trampolines here), so CFS throttle events may be named off.
    let off = conds[2].message.split_once(": ").map(|(_, list)| list).unwrap_or_default();
    let only_throttle = !off.is_empty() && off.split("; ").all(|f| f.starts_with("CFS throttle events"));
    assert!(conds[2].status || only_throttle, "{:?}", conds[2]);
    assert!(common::daemon::pin_dir(d.dir.path()).join("containers").exists());
    assert!(st.info["config"].contains("\"root\""), "verbose status carries the config");
    let rc = rt.runtime_config(cri::RuntimeConfigRequest {}).await.unwrap().into_inner();
    assert_eq!(rc.linux.unwrap().cgroup_driver, cri::CgroupDriver::Cgroupfs as i32);
    // Answered, never UNIMPLEMENTED: an empty request has no archive location.
    let err = rt.checkpoint_container(cri::CheckpointContainerRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let (code, body) = http_get(&d, "/info").await;
    assert_eq!(code, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["storage_root"], d.root().display().to_string());
    assert_eq!(info["cgroup_driver"], "cgroupfs");
    let (code, body) = http_get(&d, "/config").await;
    assert_eq!(code, 200);
    assert!(body.contains("[crio.image]") && body.contains(&format!("root = \"{}\"", d.root().display())), "{body}");
    assert_eq!(http_get(&d, "/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_socket_is_replaced_and_live_one_is_not_stolen() {
    let mut d = Daemon::start(DaemonConfig::default()).await;
    let second = |config_dir: &std::path::Path| {
        Command::new(CRIO)
            .args(["--listen", d.socket.to_str().unwrap(), "--root", d.dir.path().join("root2").to_str().unwrap()])
            .args(["--runroot", d.dir.path().join("run2").to_str().unwrap()])
            .args(["--config", d.dir.path().join("crio.conf").to_str().unwrap(), "--config-dir", config_dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    // A second daemon on the same state directory refuses before touching it.
    let out = second(&d.dir.path().join("crio.conf.d"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use by another crio") && err.contains(&d.pid().to_string()), "{err}");
    // On a state directory of its own but the same socket, it refuses too.
    let own = d.dir.path().join("conf2.d");
    fs::create_dir_all(&own).unwrap();
    let dropin = fs::read_to_string(d.dir.path().join("crio.conf.d/10-test.conf")).unwrap();
    let state = d.dir.path().join("state").display().to_string();
    fs::write(own.join("10-test.conf"), dropin.replace(&state, &d.dir.path().join("state2").display().to_string())).unwrap();
    let out = second(&own);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "{}", String::from_utf8_lossy(&out.stderr));
    d.runtime().await.version(cri::VersionRequest::default()).await.expect("first daemon still serving");

    // Crash: the socket file stays behind; the next start replaces it.
    d.kill9();
    assert!(d.socket.exists());
    d.restart().await;
    d.runtime().await.version(cri::VersionRequest::default()).await.expect("serving after stale socket replaced");
    // A clean stop removes it.
    let status = d.stop().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!d.socket.exists());
}

#[test]
fn a_regular_file_at_the_socket_path_is_never_deleted() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("crio.sock");
    fs::write(&path, b"precious").unwrap();
    fs::create_dir(t.path().join("d")).unwrap();
    // Start-up runs before the socket is checked: its maps would be pinned at the default place.
    fs::write(t.path().join("d/10-no-ebpf.conf"), "[crio.ebpf]\nenable = false\n").unwrap();
    let out = Command::new(CRIO)
        .args(["--listen", path.to_str().unwrap(), "--root", t.path().join("r").to_str().unwrap()])
        .args(["--runroot", t.path().join("rr").to_str().unwrap(), "--config-dir", t.path().join("d").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(fs::read(&path).unwrap(), b"precious");
}

#[test]
fn invalid_config_stops_startup_naming_file_key_and_allowed() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("crio.conf.d");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("50-bad.conf"), "[crio.runtime]\ncgroup_manager = \"cgroupv3\"\n").unwrap();
    let out = Command::new(CRIO).args(["--config-dir", dir.to_str().unwrap(), "config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("50-bad.conf") && err.contains("crio.runtime.cgroup_manager") && err.contains("cgroupfs, systemd"), "{err}");
}

#[test]
fn crio_config_prints_effective_config_and_warns_on_unknown_keys() {
    let t = tempfile::tempdir().unwrap();
    let main = t.path().join("crio.conf");
    fs::write(&main, "[crio.image]\npause_image = \"from/main:1\"\n[crio.runtime]\nconmon_cgroup = \"pod\"\n").unwrap();
    let dir = t.path().join("crio.conf.d");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("01-a.conf"), "[crio.image]\npause_image = \"from/a:1\"\n").unwrap();
    fs::write(dir.join("02-b.conf"), "[crio.metrics]\nenable_metrics = true\n").unwrap();
    let out = Command::new(CRIO)
        .args(["--config", main.to_str().unwrap(), "--config-dir", dir.to_str().unwrap(), "--log-level", "debug", "config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: toml::Value = toml::from_str(&text).expect("crio config prints TOML");
    assert_eq!(parsed["crio"]["image"]["pause_image"].as_str(), Some("from/a:1"), "drop-ins apply in order");
    assert_eq!(parsed["crio"]["metrics"]["enable_metrics"].as_bool(), Some(true));
    assert_eq!(parsed["crio"]["runtime"]["log_level"].as_str(), Some("debug"), "flags override files");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("crio.runtime.conmon_cgroup") && err.contains("crio.conf"), "{err}");

    let v = Command::new(CRIO).arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("crio "));
}

#[test]
fn starts_with_no_config_file_at_all() {
    // The embedded defaults alone are a valid configuration.
    let out = Command::new(CRIO).args(["--config-dir", "/nonexistent-but-explicit"]).arg("config").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an explicit drop-in dir must exist");
    let out = Command::new(CRIO).arg("config").env_remove("CRIO_LOG").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed: toml::Value = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(parsed["crio"]["api"]["listen"].as_str(), Some("/var/run/crio/crio.sock"));
}

#[test]
fn the_systemd_cgroup_manager_is_refused_where_systemd_is_not_init() {
    assert!(!Path::new("/run/systemd/system").exists(), "this test needs a host whose init is not systemd");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("d");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("10-systemd.conf"), "[crio.runtime]\ncgroup_manager = \"systemd\"\n").unwrap();
    let p = |s: &str| t.path().join(s).display().to_string();
    let out = Command::new(CRIO)
        .args(["--config-dir", &p("d"), "--root", &p("root"), "--runroot", &p("rr"), "--listen", &p("crio.sock")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cgroup_manager") && err.contains("systemd running as init"), "{err}");
    assert!(!t.path().join("crio.sock").exists(), "nothing served");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_ebpf_disabled_status_says_so_and_the_daemon_serves() {
    let d = Daemon::start(DaemonConfig { extra: "[crio.ebpf]\nenable = false\n".into(), ..Default::default() }).await;
    let st = d.runtime().await.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner();
    let kernel = st.status.unwrap().conditions.into_iter().find(|c| c.r#type == "KernelTracingReady").expect("the condition");
    assert!(!kernel.status && kernel.reason == "EBPFFeaturesOff" && kernel.message.contains("enable = false"), "{kernel:?}");
}
