//! PID namespaces through CRI: a pod-wide one held by the monitor's holder process
//! (shareProcessNamespace), one per container, and a debug container that targets another.

mod common;

use std::time::Duration;

use common::Daemon;
use common::pods::*;
use crio::cri::v1 as cri;

const POD: i32 = 0;
const CONTAINER: i32 = 1;
const TARGET: i32 = 3;

fn with_pid_mode(mut pc: cri::PodSandboxConfig, pid: i32) -> cri::PodSandboxConfig {
    let ns = cri::NamespaceOption { pid, ..Default::default() };
    pc.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext { namespace_options: Some(ns), ..Default::default() }),
        ..Default::default()
    });
    pc
}

fn container_pid_mode(mut cc: cri::ContainerConfig, pid: i32, target: &str) -> cri::ContainerConfig {
    let ns = cri::NamespaceOption { pid, target_id: target.into(), ..Default::default() };
    cc.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext { namespace_options: Some(ns), ..Default::default() }),
        ..Default::default()
    });
    cc
}

async fn started(d: &Daemon, pod: &str, pc: &cri::PodSandboxConfig, cc: cri::ContainerConfig) -> String {
    let id = create(d, pod, pc, cc).await.expect("CreateContainer");
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
    wait_state(d, &id, cri::ContainerState::ContainerRunning).await;
    id
}

async fn run(d: &Daemon, id: &str, script: &str) -> String {
    let out = d.runtime().await.exec_sync(sh(id, script)).await.expect("ExecSync").into_inner();
    assert_eq!(out.exit_code, 0, "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The names of every process the container can see.
const PS: &str = "for p in /proc/[0-9]*; do cat $p/comm; done 2>/dev/null | sort | tr '\\n' ' '";

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_pid_namespace_is_held_reaped_and_released() {
    let e = env(1).await;
    let d = &e.d;
    let pc = with_pid_mode(pod_config("shared", &d.dir.path().join("logs/shared")), POD);
    let pod = run_pod(d, pc.clone()).await.expect("RunPodSandbox");
    let st = d.runtime().await.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: true }).await;
    let st = st.unwrap().into_inner();
    let ns = st.status.unwrap().linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(ns.pid, POD);
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    let holder = info["pid_holder"].as_i64().expect("the holder's pid in verbose info");
    assert_eq!(std::fs::read_to_string(format!("/proc/{holder}/comm")).unwrap().trim(), "crio-pidns");

    let a = started(d, &pod, &pc, container_pid_mode(container_config("a", &e.image, "exec sleep 1000"), POD, "")).await;
    let b = started(d, &pod, &pc, container_pid_mode(container_config("b", &e.image, "exec sleep 2000"), POD, "")).await;
    // PID 1 is the holder; each container sees the other's processes.
    assert_eq!(run(d, &b, "cat /proc/1/comm").await.trim(), "crio-pidns");
    let seen = run(d, &a, PS).await;
    assert_eq!(seen.matches("sleep").count(), 2, "both sleeps visible: {seen}");
    // A process orphaned in the pod is reaped by the holder, not left a zombie.
    run(d, &b, "sleep 0.2 & exit 0").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let states = run(d, &a, "cat /proc/[0-9]*/stat 2>/dev/null | awk '{print $3}' | sort | uniq -c").await;
    assert!(!states.contains(" Z"), "no zombies in the pod: {states}");

    // Stopping the pod ends the holder and everything left in its namespace.
    d.runtime().await.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.expect("StopPodSandbox");
    for _ in 0..200 {
        let gone = std::fs::read_to_string(format!("/proc/{holder}/comm")).map_or(true, |c| c.trim() != "crio-pidns");
        if gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let alive = std::fs::read_to_string(format!("/proc/{holder}/comm")).is_ok_and(|c| c.trim() == "crio-pidns");
    assert!(!alive, "the holder outlived StopPodSandbox");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    assert!(!d.dir.path().join("run/pods").read_dir().is_ok_and(|mut r| r.next().is_some()), "pod run directory removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn own_pid_namespaces_and_a_targeted_debug_container() {
    let e = env(2).await;
    let d = &e.d;
    let pc = with_pid_mode(pod_config("own", &d.dir.path().join("logs/own")), CONTAINER);
    let pod = run_pod(d, pc.clone()).await.expect("RunPodSandbox");
    let a = started(d, &pod, &pc, container_pid_mode(container_config("a", &e.image, "exec sleep 1000"), CONTAINER, "")).await;
    let b = started(d, &pod, &pc, container_pid_mode(container_config("b", &e.image, "exec sleep 2000"), CONTAINER, "")).await;
    assert_eq!(run(d, &a, "cat /proc/1/cmdline | tr '\\0' ' '").await.trim(), "sleep 1000");
    assert_eq!(run(d, &b, "cat /proc/1/cmdline | tr '\\0' ' '").await.trim(), "sleep 2000");

    // An ephemeral container that targets `a` sees `a`'s init as its PID 1.
    let debug = container_pid_mode(container_config("debug", &e.image, "exec sleep 3000"), TARGET, &a);
    let dbg = started(d, &pod, &pc, debug).await;
    assert_eq!(run(d, &dbg, "cat /proc/1/cmdline | tr '\\0' ' '").await.trim(), "sleep 1000");
    let bad = container_pid_mode(container_config("bad", &e.image, "true"), TARGET, "no-such-container");
    let err = create(d, &pod, &pc, bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("target_id"), "{}", err.message());
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}
