//! The kernel's view of containers through the daemon: the crio.kernel.v1 stream (exec, fork,
//! exit with codes, filtered by pod, container and kind), the exact exit time in
//! ContainerStatus, per-container counts, and `crioctl events --kernel`.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::pods::*;
use crio::api::kernel_v1 as k;
use crio::cri::v1 as cri;

async fn next(stream: &mut tonic::Streaming<k::Event>) -> k::Event {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10s")
        .expect("stream")
        .expect("open stream")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kernel_reports_what_runs_in_a_container() {
    let e = env(1).await;
    let d = &e.d;
    let pc = pod_config("traced", &d.dir.path().join("logs/traced"));
    let pod = run_pod(d, pc.clone()).await.expect("RunPodSandbox");
    let mut client = k::kernel_events_client::KernelEventsClient::new(d.channel().await);
    let mut stream = client.watch(k::WatchRequest { pod_sandbox_id: pod.clone(), ..Default::default() }).await.expect("Watch").into_inner();

    let ct = create(d, &pod, &pc, container_config("c", &e.image, "/bin/true; exit 4")).await.expect("CreateContainer");
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: ct.clone() }).await.expect("StartContainer");
    let mut seen = Vec::new();
    let init_exit = loop {
        let ev = next(&mut stream).await;
        assert_eq!((ev.pod_sandbox_id.as_str(), ev.container_id.as_str(), ev.missed), (pod.as_str(), ct.as_str(), 0), "{ev:?}");
        let done = ev.kind == k::EventKind::Exit as i32 && ev.exit_code == 4;
        seen.push(ev);
        if done {
            break seen.last().unwrap().clone();
        }
    };
    let init = init_exit.pid;
    let kinds = |kind: k::EventKind| seen.iter().filter(move |e| e.kind == kind as i32);
    assert!(kinds(k::EventKind::Exec).any(|e| e.pid == init && e.filename == "/bin/sh"), "the init's exec: {seen:#?}");
    let child = kinds(k::EventKind::Fork).find(|e| e.ppid == init).expect("the shell forks");
    assert!(kinds(k::EventKind::Exec).any(|e| e.pid == child.pid && e.filename == "/bin/true"), "{seen:#?}");
    assert!(kinds(k::EventKind::Exit).any(|e| e.pid == child.pid && e.exit_code == 0), "{seen:#?}");

    // The status carries the kernel's exit time, not the monitor's later one.
    let st = wait_state(d, &ct, cri::ContainerState::ContainerExited).await;
    assert_eq!((st.exit_code, st.finished_at), (4, init_exit.timestamp));
    let stats = client.stats(k::StatsRequest {}).await.expect("Stats").into_inner();
    // Only the fexit program may be off (kernels without BPF trampolines refuse it, as CI's).
    let off_here = stats.off.iter().all(|o| o.starts_with("CFS throttle events"));
    assert!(stats.enabled && off_here && stats.lost == 0, "{stats:?}");
    let counts = stats.containers.iter().find(|c| c.container_id == ct).expect("counts for the container");
    assert!(counts.execs >= 2 && counts.forks >= 1 && counts.exits >= 2, "{counts:?}");

    let bad = client.watch(k::WatchRequest { kinds: vec![42], ..Default::default() }).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // crioctl follows one container's execs.
    let long = create(d, &pod, &pc, container_config("long", &e.image, "exec sleep 1000")).await.unwrap();
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: long.clone() }).await.unwrap();
    wait_state(d, &long, cri::ContainerState::ContainerRunning).await;
    let mut ctl = std::process::Command::new(env!("CARGO_BIN_EXE_crioctl"))
        .args(["--socket", d.socket.to_str().unwrap(), "events", "--kernel", "--container", &long, "--kind", "exec"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("crioctl");
    let lines = BufReader::new(ctl.stdout.take().unwrap()).lines();
    let reader = std::thread::spawn(move || lines.map_while(Result::ok).find(|l| l.contains("/bin/echo")));
    // The stream is open once crioctl runs; exec until it has reported one.
    for _ in 0..100 {
        d.runtime().await.exec_sync(sh(&long, "/bin/echo hi")).await.expect("ExecSync");
        if reader.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = ctl.kill();
    let _ = ctl.wait();
    let line = reader.join().unwrap().expect("crioctl printed the exec");
    assert!(line.contains("EXEC") && line.contains(&long[..13]), "{line}");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

#[tokio::test(flavor = "multi_thread")]
async fn tracking_survives_a_daemon_crash() {
    let mut e = env(2).await;
    let pc = pod_config("crashy", &e.d.dir.path().join("logs/crashy"));
    let pod = run_pod(&e.d, pc.clone()).await.expect("RunPodSandbox");
    let ct = create(&e.d, &pod, &pc, container_config("c", &e.image, "exec sleep 1000")).await.unwrap();
    e.d.runtime().await.start_container(cri::StartContainerRequest { container_id: ct.clone() }).await.unwrap();
    wait_state(&e.d, &ct, cri::ContainerState::ContainerRunning).await;

    e.d.kill9();
    e.d.restart().await;
    let d = &e.d;
    // The pinned map still names the container, and the rebuilt index resolves its events.
    let dump = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(common::daemon::pin_dir(d.dir.path()).join("containers"))
        .output()
        .expect("bpftool");
    assert!(String::from_utf8_lossy(&dump.stdout).contains(&ct), "{}", String::from_utf8_lossy(&dump.stdout));
    let mut client = k::kernel_events_client::KernelEventsClient::new(d.channel().await);
    let req = k::WatchRequest { container_id: ct.clone(), kinds: vec![k::EventKind::Exec as i32], ..Default::default() };
    let mut stream = client.watch(req).await.expect("Watch").into_inner();
    d.runtime().await.exec_sync(sh(&ct, "/bin/echo again")).await.expect("ExecSync");
    loop {
        let ev = next(&mut stream).await;
        assert_eq!((ev.pod_sandbox_id.as_str(), ev.container_id.as_str()), (pod.as_str(), ct.as_str()));
        if ev.filename == "/bin/echo" {
            break;
        }
    }
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    let dump = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(common::daemon::pin_dir(d.dir.path()).join("containers"))
        .output()
        .expect("bpftool");
    assert_eq!(String::from_utf8_lossy(&dump.stdout).trim(), "[]", "entries leave with their pods and containers");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_ebpf_oom_kills_come_from_cgroup_files() {
    let e = env_config(3, false, "[crio.ebpf]\nenable = false\n").await;
    let d = &e.d;
    let pc = pod_config("plain", &d.dir.path().join("logs/plain"));
    let pod = run_pod(d, pc.clone()).await.expect("RunPodSandbox");
    let hog = memory_limited("hog", &e.image, "exec tail /dev/zero", 32 << 20);
    let hog = create(d, &pod, &pc, hog).await.unwrap();
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: hog.clone() }).await.unwrap();
    let st = wait_state(d, &hog, cri::ContainerState::ContainerExited).await;
    assert_eq!((st.reason.as_str(), st.exit_code), ("OOMKilled", 137));
    assert!(st.message.contains("cgroup's OOM counter"), "{}", st.message);
    let mut client = k::kernel_events_client::KernelEventsClient::new(d.channel().await);
    let err = client.watch(k::WatchRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_leaves_a_used_pin_dir_alone() {
    let e = env(4).await;
    let pc = pod_config("pinned", &e.d.dir.path().join("logs/pinned"));
    let pod = run_pod(&e.d, pc.clone()).await.expect("RunPodSandbox");
    let ct = create(&e.d, &pod, &pc, container_config("c", &e.image, "exec sleep 1000")).await.unwrap();
    e.d.runtime().await.start_container(cri::StartContainerRequest { container_id: ct.clone() }).await.unwrap();
    wait_state(&e.d, &ct, cri::ContainerState::ContainerRunning).await;
    let shared = common::daemon::pin_dir(e.d.dir.path());

    // Another daemon pointed at the same pin directory: it would reuse the maps and drop the
    // first one's entries as no record of its own; it runs without tracing instead, and says why.
    let extra = format!("[crio.ebpf]\npin_dir = \"{}\"\n", shared.display());
    let other = common::Daemon::start(common::daemon::DaemonConfig { extra, ..Default::default() }).await;
    let status = other.runtime().await.status(cri::StatusRequest { verbose: false }).await.expect("Status").into_inner();
    let kernel = status.status.expect("status").conditions.into_iter().find(|c| c.r#type == "KernelTracingReady").expect("condition");
    assert!(!kernel.status, "{kernel:?}");
    assert!(kernel.message.contains(&format!("{} is in use by another daemon (pid {})", shared.display(), e.d.pid())), "{kernel:?}");
    drop(other);

    let dump = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(shared.join("containers"))
        .output()
        .expect("bpftool");
    assert!(
        String::from_utf8_lossy(&dump.stdout).contains(&ct),
        "the first daemon's entries stay: {}",
        String::from_utf8_lossy(&dump.stdout)
    );
    let mut client = k::kernel_events_client::KernelEventsClient::new(e.d.channel().await);
    let req = k::WatchRequest { container_id: ct.clone(), kinds: vec![k::EventKind::Exec as i32], ..Default::default() };
    let mut stream = client.watch(req).await.expect("Watch").into_inner();
    e.d.runtime().await.exec_sync(sh(&ct, "/bin/echo still")).await.expect("ExecSync");
    while next(&mut stream).await.filename != "/bin/echo" {}
    e.d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}
