//! What a node operator trusts the daemon with, checked against the real thing: files holding a
//! container's secrets are root's alone, an image cannot make the daemon read host files, a
//! crash-looping container leaks nothing in its pod's monitor, and request values cannot
//! overflow; a stop whose client gave up runs to its end.

mod common;

use std::os::unix::fs::MetadataExt;

use common::pods::*;
use common::{ImageBuilder, Layer};
use crio::cri::v1 as cri;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn bundles_exec_profiles_and_logs_are_root_only() {
    let (_reg, d, image) = host_network_env("").await;
    let logs = d.dir.path().join("logs/secrets");
    let pc = host_network_pod_config("secrets", &logs);
    let pod = run_pod(&d, pc.clone()).await.expect("RunPodSandbox");
    let mut cc = container_config("app", &image, "echo started; exec sleep 1000");
    cc.envs = vec![cri::KeyValue { key: "DB_PASSWORD".into(), value: "hunter2".into() }];
    let id = start(&d, &pod, &pc, cc).await;
    wait_state(&d, &id, cri::ContainerState::ContainerRunning).await;

    let bundle = d.dir.path().join("state/containers").join(&id);
    assert_eq!(mode(&bundle), 0o700, "bundle directory");
    let config = std::fs::read_to_string(bundle.join("config.json")).unwrap();
    assert!(config.contains("hunter2"), "the environment is in the spec");
    assert_eq!(mode(&bundle.join("config.json")), 0o600, "config.json");
    let profiles: Vec<_> =
        std::fs::read_dir(&bundle).unwrap().map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().contains("exec")).collect();
    assert!(!profiles.is_empty(), "an exec profile in {}", bundle.display());
    for p in profiles {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    let log = logs.join("app/0.log");
    assert_eq!(mode(&log), 0o600, "container log");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

#[tokio::test(flavor = "multi_thread")]
async fn image_account_files_are_read_inside_the_image() {
    let (reg, d, _image) = host_network_env("").await;
    // The host has a `daemon` user (uid 1); the image has none, only a link that climbs out.
    assert!(std::fs::read_to_string("/etc/passwd").unwrap().lines().any(|l| l.starts_with("daemon:")), "the host has a daemon user");
    let escape = Layer::builder().symlink("etc/passwd", "../../../../../../../../etc/passwd").symlink("etc/group", "/etc/gshadow").build();
    reg.push("hostile", "1", &ImageBuilder::new().layer(Layer::busybox()).layer(escape).user("daemon")).await;
    let hostile = format!("{}/hostile:1", reg.addr);
    d.pull(&hostile).await.expect("pull hostile");
    let pc = host_network_pod_config("hostile", &d.dir.path().join("logs/hostile"));
    let pod = run_pod(&d, pc.clone()).await.expect("RunPodSandbox");
    let err = create(&d, &pod, &pc, container_config("escape", &hostile, "id")).await.expect_err("no daemon user in the image");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("\"daemon\" not found"), "{}", err.message());
    // A numeric user needs no file and gets the image's (absent) group: 0, never the host's.
    let mut numeric = container_config("numeric", &hostile, "id -u; id -g; exec sleep 1000");
    numeric.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = start(&d, &pod, &pc, numeric).await;
    let out = d.runtime().await.exec_sync(sh(&id, "cat /proc/self/status")).await.expect("ExecSync").into_inner();
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(status.lines().any(|l| l.starts_with("Gid:") && l.split_whitespace().nth(1) == Some("0")), "{status}");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

/// The pid of the monitor whose command line names `needle` (the pod's run directory).
fn monitor_pid(needle: &str) -> i32 {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("crio-monitor") && cmdline.contains(needle) {
            return pid;
        }
    }
    panic!("no monitor for {needle}");
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_container_leaks_nothing_in_its_monitor_or_the_daemon() {
    let (_reg, d, image) =
        host_network_env("[crio.metrics]\nenable_metrics = true\nmetrics_host = \"127.0.0.1\"\nmetrics_port = 0\n").await;
    let pc = host_network_pod_config("looping", &d.dir.path().join("logs/looping"));
    let pod = run_pod(&d, pc.clone()).await.expect("RunPodSandbox");
    let monitor = monitor_pid(&pod);
    let mut before = None;
    for attempt in 0..200u32 {
        // As the kubelet restarts a crashing container: a new attempt, the old one removed.
        let mut cc = container_config("crash", &image, "echo crashing; exit 3");
        // The runtime's default seccomp profile: a compiled program for the exec helper.
        cc.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                seccomp: Some(cri::SecurityProfile { profile_type: 0, localhost_ref: String::new() }),
                ..Default::default()
            }),
            ..Default::default()
        });
        cc.metadata.as_mut().unwrap().attempt = attempt;
        cc.log_path = format!("crash/{attempt}.log");
        let id = start(&d, &pod, &pc, cc).await;
        let st = wait_state(&d, &id, cri::ContainerState::ContainerExited).await;
        assert_eq!(st.exit_code, 3);
        d.runtime().await.container_stats(cri::ContainerStatsRequest { container_id: id.clone() }).await.expect("ContainerStats");
        d.runtime().await.remove_container(cri::RemoveContainerRequest { container_id: id }).await.expect("RemoveContainer");
        if attempt == 0 {
            // The monitor lets go of a removed container's files just after RemoveContainer
            // answers: counted once that is done.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            before = Some(fd_count(monitor));
        }
    }
    // A leak never comes down; the last removal's release lands within milliseconds.
    let before = before.unwrap();
    let mut after = fd_count(monitor);
    for _ in 0..50 {
        if after <= before + 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = fd_count(monitor);
    }
    assert!(after <= before + 2, "monitor descriptors {before} -> {after} after 200 restarts");
    // The daemon's own tables follow live objects: every container is gone, so are its entries.
    let port = d.metrics_port();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics listening");
    std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    let tables: Vec<&str> = text.lines().filter(|l| l.starts_with("container_runtime_crio_daemon_table_entries{")).collect();
    assert_eq!(tables.len(), 5, "{text}");
    for t in tables {
        assert!(t.ends_with(" 0"), "{t}");
    }
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_values_cannot_overflow() {
    let (_reg, d, image) = host_network_env("").await;
    let pc = host_network_pod_config("extremes", &d.dir.path().join("logs/extremes"));
    let pod = run_pod(&d, pc.clone()).await.expect("RunPodSandbox");
    let id = start(&d, &pod, &pc, container_config("app", &image, "exec sleep 1000")).await;
    wait_state(&d, &id, cri::ContainerState::ContainerRunning).await;

    // A wait as long as i64 allows is "forever", not an overflow.
    let req = cri::ExecSyncRequest { container_id: id.clone(), cmd: vec!["echo".into(), "ok".into()], timeout: i64::MAX };
    let out = d.runtime().await.exec_sync(req).await.expect("ExecSync with the longest timeout").into_inner();
    assert_eq!(out.stdout, b"ok\n");

    // Resources the kernel cannot hold are refused, naming the field, and change nothing.
    type Change = fn(&mut cri::LinuxContainerResources);
    let cases: [(&str, Change); 6] = [
        ("cpu_quota", |r| r.cpu_quota = i64::MIN),
        ("cpu_period", |r| r.cpu_period = i64::MAX),
        ("cpu_shares", |r| r.cpu_shares = -5),
        ("memory_limit_in_bytes", |r| r.memory_limit_in_bytes = i64::MIN),
        ("memory_swap_limit_in_bytes", |r| r.memory_swap_limit_in_bytes = i64::MIN),
        ("oom_score_adj", |r| r.oom_score_adj = i64::MAX),
    ];
    for (field, set) in cases {
        let mut r = cri::LinuxContainerResources::default();
        set(&mut r);
        let req = cri::UpdateContainerResourcesRequest { container_id: id.clone(), linux: Some(r.clone()), ..Default::default() };
        let err = d.runtime().await.update_container_resources(req).await.expect_err(field);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
        let mut cc = container_config("bad", &image, "true");
        cc.linux = Some(cri::LinuxContainerConfig { resources: Some(r), ..Default::default() });
        let err = create(&d, &pod, &pc, cc).await.expect_err(field);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {err:?}");
    }
    let mut cc = container_config("negative-user", &image, "true");
    cc.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: -1 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = create(&d, &pod, &pc, cc).await.expect_err("a negative uid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let listed = d.runtime().await.list_containers(cri::ListContainersRequest::default()).await.unwrap().into_inner().containers;
    assert_eq!(listed.len(), 1, "refused requests made nothing");

    let mut bad_port = host_network_pod_config("bad-port", &d.dir.path().join("logs/bad-port"));
    bad_port.port_mappings = vec![cri::PortMapping { host_port: 70000, container_port: 80, ..Default::default() }];
    let err = run_pod(&d, bad_port).await.expect_err("port 70000");
    assert!(err.code() == tonic::Code::InvalidArgument && err.message().contains("host_port"), "{err:?}");

    // StopContainer with the longest timeout: the container ends on SIGTERM, at once.
    let req = cri::StopContainerRequest { container_id: id.clone(), timeout: i64::MAX };
    d.runtime().await.stop_container(req).await.expect("StopContainer with the longest timeout");
    assert_eq!(status(&d, &id).await.state, cri::ContainerState::ContainerExited as i32);
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

fn security(privileged: bool, oom_score_adj: i64) -> Option<cri::LinuxContainerConfig> {
    Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext { privileged, ..Default::default() }),
        resources: Some(cri::LinuxContainerResources { oom_score_adj, ..Default::default() }),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_containers_get_host_devices_and_a_writable_sys() {
    let (_reg, d, image) = host_network_env("").await;
    let pc = host_network_pod_config("privileged", &d.dir.path().join("logs/privileged"));
    let pod = run_pod(&d, pc.clone()).await.expect("RunPodSandbox");
    let mut cc = container_config("device-plugin", &image, "exec sleep 1000");
    cc.linux = security(true, -997);
    let privileged = start(&d, &pod, &pc, cc).await;
    let mut cc = container_config("plain", &image, "exec sleep 1000");
    cc.linux = security(false, -997);
    let plain = start(&d, &pod, &pc, cc).await;

    // A block device of the host (loop0 here), visible and usable only in the privileged one.
    let host_block = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .find(|e| e.file_type().is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_block_device(&t)))
        .map(|e| e.path().display().to_string())
        .expect("the host has a block device");
    let probe = format!("test -b {host_block} && echo present; grep ' /sys ' /proc/mounts; cat /proc/self/oom_score_adj");
    let out = |r: cri::ExecSyncResponse| String::from_utf8_lossy(&r.stdout).to_string();
    let p = out(d.runtime().await.exec_sync(sh(&privileged, &probe)).await.expect("ExecSync").into_inner());
    assert!(p.contains("present"), "{host_block} in the privileged container: {p}");
    let sys = p.lines().find(|l| l.contains(" /sys ")).unwrap_or_else(|| panic!("/sys mounted: {p}"));
    assert!(sys.split_whitespace().nth(3).is_some_and(|o| o.split(',').any(|o| o == "rw")), "writable /sys: {sys}");
    let n = out(d.runtime().await.exec_sync(sh(&plain, &probe)).await.expect("ExecSync").into_inner());
    assert!(!n.contains("present"), "no host devices without privilege: {n}");
    let sys = n.lines().find(|l| l.contains(" /sys ")).unwrap();
    assert!(sys.split_whitespace().nth(3).is_some_and(|o| o.split(',').any(|o| o == "ro")), "read-only /sys: {sys}");

    // The kubelet's -997 for Guaranteed pods reaches them where the daemon may lower it;
    // without CAP_SYS_RESOURCE (this sandbox) it is clamped to 0, as a runtime there must.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = u64::from_str_radix(status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim(), 16).unwrap();
    let expected = if eff & (1 << 24) != 0 { "-997" } else { "0" };
    assert_eq!(n.lines().last(), Some(expected), "{n}");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

/// An OCI runtime that is runc (and logs its calls to `<dir>/calls`), except that `create` hangs while `<dir>/hang-create` exists and
/// `delete` fails while `<dir>/fail-delete` does.
fn flaky_runtime(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("flaky-runc");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> {d}/calls\nfor a in \"$@\"; do\n  case \"$a\" in\n    create) [ -e {d}/hang-create ] && exec sleep 100000 ;;\n    delete) [ -e {d}/fail-delete ] && {{ echo 'delete refused by the test' >&2; exit 1; }} ;;\n  esac\ndone\nexec /usr/sbin/runc \"$@\"\n",
        d = dir.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

async fn run_pod_with(d: &common::Daemon, pc: &cri::PodSandboxConfig, handler: &str) -> String {
    let req = cri::RunPodSandboxRequest { config: Some(pc.clone()), runtime_handler: handler.into() };
    d.runtime().await.run_pod_sandbox(req).await.expect("RunPodSandbox").into_inner().pod_sandbox_id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_runtime_fails_its_rpc_and_the_pod_can_still_go() {
    let flaky = tempfile::tempdir().unwrap();
    let runtime = flaky_runtime(flaky.path());
    let extra = format!("[crio.runtime.runtimes.flaky]\nruntime_path = \"{}\"\nruntime_timeout = \"3s\"\n", runtime.display());
    let (_reg, d, image) = host_network_env(&extra).await;
    let pc = host_network_pod_config("hung", &d.dir.path().join("logs/hung"));
    let pod = run_pod_with(&d, &pc, "flaky").await;

    std::fs::write(flaky.path().join("hang-create"), "").unwrap();
    let err = create(&d, &pod, &pc, container_config("stuck", &image, "exec sleep 1000")).await.expect_err("runtime create hangs");
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("did not finish within"), "{}", err.message());
    // The pod's lock went with the RPC: it stops and goes, and no runtime process is left.
    d.runtime().await.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.expect("StopPodSandbox");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    let runtime = runtime.display().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&cmdline).contains(&runtime), "a runtime call left running: pid {:?}", e.file_name());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_pod_sandbox_goes_past_a_container_that_fails_to_stop() {
    let flaky = tempfile::tempdir().unwrap();
    let runtime = flaky_runtime(flaky.path());
    let extra = format!("[crio.runtime.runtimes.flaky]\nruntime_path = \"{}\"\n", runtime.display());
    let e = env_config(0, false, &extra).await;
    let d = &e.d;
    let pc = pod_config("stubborn", &d.dir.path().join("logs/stubborn"));
    let pod = run_pod_with(d, &pc, "flaky").await;
    let netns = d.runtime().await.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: true }).await;
    let ip = netns.expect("PodSandboxStatus").into_inner().status.unwrap().network.unwrap().ip;
    // Never started: stopping it takes the runtime's delete, which fails.
    let stuck = create(d, &pod, &pc, container_config("stuck", &e.image, "exec sleep 1000")).await.expect("create");
    let running = start(d, &pod, &pc, container_config("running", &e.image, "exec sleep 1000")).await;
    std::fs::write(flaky.path().join("fail-delete"), "").unwrap();

    let err =
        d.runtime().await.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.expect_err("delete fails");
    assert!(err.message().contains(&stuck) && err.message().contains("delete refused"), "names what was left: {}", err.message());
    assert_eq!(status(d, &running).await.state, cri::ContainerState::ContainerExited as i32, "the other container stopped");
    // The network was released all the same: the IP is back in the pool.
    let leases: Vec<String> = walk(e.ipam.path()).into_iter().map(|p| p.file_name().unwrap().to_string_lossy().to_string()).collect();
    assert!(!leases.contains(&ip), "{ip} still leased: {leases:?}");
    let st = d.runtime().await.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false }).await;
    assert_eq!(st.unwrap().into_inner().status.unwrap().state, cri::PodSandboxState::SandboxNotready as i32);

    // The kubelet's retry, once the runtime behaves: everything goes.
    std::fs::remove_file(flaky.path().join("fail-delete")).unwrap();
    d.runtime().await.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.expect("StopPodSandbox retry");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_record_is_quarantined_and_its_container_left_alone() {
    let (_reg, mut d, image) = host_network_env("").await;
    let pc = host_network_pod_config("quarantine", &d.dir.path().join("logs/quarantine"));
    let pod = run_pod(&d, pc.clone()).await.expect("RunPodSandbox");
    let id = start(&d, &pod, &pc, container_config("app", &image, "exec sleep 1000")).await;
    wait_state(&d, &id, cri::ContainerState::ContainerRunning).await;
    let pid = status_pid(&d, &id).await;

    d.kill9();
    let record = d.dir.path().join("state/containers").join(format!("{id}.record"));
    let good = std::fs::read(&record).unwrap();
    // A bad disk: both slots' bytes lost, the file's size kept.
    std::fs::write(&record, vec![0u8; good.len()]).unwrap();
    d.restart().await;

    let aside = d.dir.path().join("state/containers").join(format!("{id}.record.quarantined"));
    assert!(aside.exists() && !record.exists(), "the record is renamed aside");
    let log = d.log();
    let line = log.lines().find(|l| l.contains("quarantined")).unwrap_or_else(|| panic!("logged: {log}"));
    assert!(line.contains(&aside.display().to_string()) && line.contains("neither slot"), "names the path and the damage: {line}");
    // Left alone: still running, its bundle and root filesystem in place, not listed.
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "the container's init still runs");
    assert!(d.dir.path().join("state/containers").join(&id).join("config.json").exists(), "bundle kept");
    let listed = d.runtime().await.list_containers(cri::ListContainersRequest::default()).await.unwrap().into_inner().containers;
    assert!(listed.is_empty(), "{listed:?}");
    // A second start leaves it alone too.
    d.restart().await;
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    // The operator repairs the record: the container is back and goes with its pod.
    std::fs::remove_file(&aside).unwrap();
    std::fs::write(&record, good).unwrap();
    d.restart().await;
    assert_eq!(status(&d, &id).await.state, cri::ContainerState::ContainerRunning as i32);
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

/// The pid of a container's init, from its verbose status (the record the daemon keeps).
async fn status_pid(d: &common::Daemon, id: &str) -> i32 {
    let req = cri::ContainerStatusRequest { container_id: id.into(), verbose: true };
    let info = d.runtime().await.container_status(req).await.expect("ContainerStatus").into_inner().info;
    let record: serde_json::Value = serde_json::from_str(info.get("info").expect("verbose info")).expect("info is JSON");
    record["pid"].as_i64().filter(|p| *p > 0).expect("a running container's pid") as i32
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_created_container_is_deleted_by_the_runtime_it_was_made_with() {
    let flaky = tempfile::tempdir().unwrap();
    let runtime = flaky_runtime(flaky.path());
    let extra = format!("[crio.runtime.runtimes.flaky]\nruntime_path = \"{}\"\n", runtime.display());
    let (_reg, mut d, image) = host_network_env(&extra).await;
    let pc = host_network_pod_config("half", &d.dir.path().join("logs/half"));
    let pod = run_pod_with(&d, &pc, "flaky").await;
    let id = create(&d, &pod, &pc, container_config("app", &image, "exec sleep 1000")).await.expect("create");
    // A crash just before the record was published: the bundle and the runtime's container
    // exist, the record is still staged.
    d.kill9();
    let record = d.dir.path().join("state/containers").join(format!("{id}.record"));
    let bytes = std::fs::read(&record).unwrap();
    let version = crio::durable::slots::read(&bytes).expect("a whole record");
    crio::durable::slots::create(&record, version.payload, 1, crio::durable::slots::STAGED).unwrap();
    std::fs::write(flaky.path().join("calls"), "").unwrap();
    d.restart().await;
    let calls = std::fs::read_to_string(flaky.path().join("calls")).unwrap();
    assert!(calls.lines().any(|l| l.contains("delete") && l.contains("--force") && l.ends_with(&id)), "deleted through flaky: {calls}");
    assert!(!d.dir.path().join("state/containers").join(&id).exists(), "bundle gone");
    assert!(!record.exists(), "the staged record dropped");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

fn init_pid(info: &std::collections::HashMap<String, String>) -> i32 {
    let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    v["pid"].as_i64().expect("the init's pid") as i32
}

#[tokio::test(flavor = "multi_thread")]
async fn update_container_resources_applies_everything_or_nothing() {
    let (_reg, d, image) = host_network_env("").await;
    let pc = host_network_pod_config("update", &d.dir.path().join("logs/update"));
    let pod = run_pod(&d, pc.clone()).await.expect("RunPodSandbox");
    let id = start(&d, &pod, &pc, container_config("app", &image, "exec sleep 1000")).await;
    wait_state(&d, &id, cri::ContainerState::ContainerRunning).await;
    let st = d.runtime().await.container_status(cri::ContainerStatusRequest { container_id: id.clone(), verbose: true }).await;
    let pid = init_pid(&st.unwrap().into_inner().info);
    let memory_limit = || {
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let path = cg.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string())).expect("a v1 memory cgroup");
        std::fs::read_to_string(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")).unwrap().trim().to_string()
    };
    let before = memory_limit();
    let update = |r: cri::LinuxContainerResources| cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(r),
        ..Default::default()
    };

    // What this host cannot apply (no hugetlb controller here; v1 has no unified files) is
    // refused, and the memory limit asked for beside it is not applied either.
    let hugepages = cri::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        hugepage_limits: vec![cri::HugepageLimit { page_size: "2MB".into(), limit: 4 << 20 }],
        ..Default::default()
    };
    let has_hugetlb = std::path::Path::new("/sys/fs/cgroup/hugetlb").exists();
    if !has_hugetlb {
        let err = d.runtime().await.update_container_resources(update(hugepages)).await.expect_err("no hugetlb controller");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("hugepage_limits"), "{}", err.message());
        assert_eq!(memory_limit(), before, "nothing applied");
    }
    let unified = cri::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        unified: [("memory.high".to_string(), "50000000".to_string())].into(),
        ..Default::default()
    };
    let err = d.runtime().await.update_container_resources(update(unified)).await.expect_err("hybrid: no v2 controllers");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("unified"), "{}", err.message());
    assert_eq!(memory_limit(), before, "nothing applied");

    // What it can apply, it applies, oom_score_adj included (to every process).
    let ok = cri::LinuxContainerResources { memory_limit_in_bytes: 64 << 20, oom_score_adj: 500, ..Default::default() };
    d.runtime().await.update_container_resources(update(ok)).await.expect("UpdateContainerResources");
    assert_eq!(memory_limit(), (64u64 << 20).to_string());
    assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap().trim(), "500");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decompression_bomb_stops_at_the_cap_and_leaves_nothing() {
    let reg = common::Registry::start();
    // 256 MiB of zeros in a layer of a few hundred KiB.
    let bomb = Layer::builder().file("zeros", &vec![0u8; 256 << 20]).build().with(common::image::Compression::Zstd);
    reg.push("bomb", "1", &ImageBuilder::new().layer(Layer::busybox()).layer(bomb)).await;
    let mut cfg = common::daemon::DaemonConfig::trusting(&reg);
    cfg.extra = "max_layer_bytes = 16777216\n".into();
    let d = common::Daemon::start(cfg).await;
    let err = d.pull(&format!("{}/bomb:1", reg.addr)).await.expect_err("past the cap");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_layer_bytes"), "{}", err.message());
    // Nothing of the bomb stays: no temp files, no layer, no image.
    let root = d.root();
    let tmp: Vec<_> = std::fs::read_dir(root.join("tmp")).unwrap().flatten().map(|e| e.path()).collect();
    assert!(
        tmp.is_empty(),
        "temp files left: {tmp:?} {:?}",
        tmp.iter().map(|p| std::fs::read_dir(p).map(|r| r.flatten().map(|e| e.path()).collect::<Vec<_>>())).collect::<Vec<_>>()
    );
    let layers: Vec<_> = std::fs::read_dir(root.join("layers")).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(layers.len() <= 1, "at most busybox's layer: {layers:?}");
    assert!(d.list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_remove_containers_answer_and_its_files_leaves_nothing_after_restart() {
    let (_reg, mut d, image) = host_network_env("").await;
    let pc = host_network_pod_config("gone", &d.dir.path().join("logs/gone"));
    let pod = run_pod(&d, pc.clone()).await.expect("RunPodSandbox");
    let id = start(&d, &pod, &pc, container_config("app", &image, "exec sleep 1000")).await;
    d.runtime().await.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.expect("StopContainer");
    // The daemon dies once the record is gone, before the work RemoveContainer leaves for
    // after its answer: runc's state, the bundle and the mounted root filesystem are all left.
    d.env = vec![("CRIO_CRASH_AT".into(), "remove:unrecorded".into())];
    d.restart().await;
    let removed = d.runtime().await.remove_container(cri::RemoveContainerRequest { container_id: id.clone() }).await;
    assert!(removed.is_err(), "the daemon died in RemoveContainer");
    assert!(!d.wait_exit().success());
    let (runc_state, bundle) = (d.dir.path().join("runc").join(&id), d.dir.path().join("state/containers").join(&id));
    let rootfs = d.runroot.join("overlay").join(&id).join("merged");
    let mounted = || std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(rootfs.to_str().unwrap());
    assert!(runc_state.exists() && bundle.exists() && mounted(), "left by the crash");
    d.env.clear();
    d.restart().await;
    let listed = d.runtime().await.list_containers(cri::ListContainersRequest::default()).await.unwrap().into_inner().containers;
    assert!(listed.iter().all(|c| c.id != id), "unrecorded, so gone: {listed:?}");
    assert!(!runc_state.exists(), "runc's state deleted through runc at start");
    assert!(!bundle.exists(), "bundle gone");
    assert!(!mounted(), "root filesystem unmounted");
    assert!(!d.dir.path().join("root/containers").join(&id).exists(), "writable layer gone");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

/// A client that gives up on StopPodSandbox (crictl's 2 s deadline, a kubelet's) does not cut
/// the teardown short: the CNI DEL it began runs to its end and the pod is recorded stopped
/// with no further call. A plugin killed halfway can leave what no retry removes.
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_stop_whose_client_gave_up_runs_to_its_end() {
    // Chained after bridge, so DEL runs it first; its DEL outlasts the client.
    let log = tempfile::tempdir().unwrap();
    let tally = log.path().join("tally.log");
    let body = format!(
        "if cmd == 'DEL':\n    time.sleep(1.5)\nopen('{}', 'a').write(cmd + ' done\\n')\nif cmd == 'ADD':\n    print(json.dumps(conf['prevResult']))\n",
        tally.display()
    );
    let plugins = plugin_dir_with("slow", &body);
    let bridge = format!("crh{}", std::process::id() % 100_000);
    let _bridge_gone = BridgeGuard(bridge.clone());
    let ipam = tempfile::tempdir().unwrap();
    let conflist = serde_json::json!({"cniVersion": "1.0.0", "name": format!("slow-{bridge}"), "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("10.230.{}.0/24", std::process::id() % 200)}]], "dataDir": ipam.path()}},
        {"type": "slow"}]});
    let cfg = common::daemon::DaemonConfig {
        cni_conflist: Some(conflist.to_string()),
        cni_plugin_dir: Some(plugins.path().into()),
        ..Default::default()
    };
    let d = common::Daemon::start(cfg).await;
    let pod = run_pod(&d, pod_config("impatient", &d.dir.path().join("logs/impatient"))).await.expect("RunPodSandbox");
    let leases = || -> Vec<String> {
        let dir = std::fs::read_dir(ipam.path().join(format!("slow-{bridge}"))).expect("the IPAM directory");
        let names = dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
        names.filter(|n| n.parse::<std::net::IpAddr>().is_ok()).collect()
    };
    assert_eq!(leases().len(), 1, "the pod's address is leased");

    let mut rt = d.runtime().await;
    let stop = rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() });
    let gave_up = tokio::time::timeout(std::time::Duration::from_millis(300), stop).await;
    assert!(gave_up.is_err(), "the stop outlasts its client (its DEL takes 1.5 s)");
    drop(rt);

    let status = cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false };
    let began = std::time::Instant::now();
    loop {
        let st = d.runtime().await.pod_sandbox_status(status.clone()).await.expect("PodSandboxStatus").into_inner();
        if st.status.expect("a status").state == cri::PodSandboxState::SandboxNotready as i32 {
            break;
        }
        assert!(began.elapsed() < std::time::Duration::from_secs(20), "the pod is still ready: its stop was cut short\n{}", d.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let calls = std::fs::read_to_string(&tally).unwrap();
    assert_eq!(calls.lines().collect::<Vec<_>>(), ["ADD done", "DEL done"], "the slow DEL ran to its end");
    assert!(leases().is_empty(), "the bridge plugin's DEL ran after it and released the address: {:?}", leases());

    // The retry the client would make finds the work done and runs no plugin again.
    d.runtime().await.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.expect("StopPodSandbox");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    assert_eq!(std::fs::read_to_string(&tally).unwrap().lines().count(), 2, "one DEL in all");
}
