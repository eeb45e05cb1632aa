//! Capabilities through CRI, read back from the kernel: CRI-O's default set, adds and drops
//! (with and without the CAP_ prefix), ALL dropped, privileged = what the daemon holds, and an
//! unknown name refused.

mod common;

use common::Daemon;
use common::pods::*;
use crio::cri::v1 as cri;

/// Bit numbers of CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE.
const DEFAULT_MASK: u64 = 0b101_1111_1011;
const KILL: u64 = 1 << 5;
const NET_RAW: u64 = 1 << 13;

fn caps(add: &[&str], drop: &[&str], privileged: bool) -> Option<cri::LinuxContainerConfig> {
    let capabilities = cri::Capability {
        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
        drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext { capabilities: Some(capabilities), privileged, ..Default::default() }),
        ..Default::default()
    })
}

fn mask(status: &str, field: &str) -> u64 {
    let line = status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_else(|| panic!("{field} in {status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// The (effective, bounding) capability masks of a container's init.
async fn masks(
    d: &Daemon,
    pod: &str,
    pc: &cri::PodSandboxConfig,
    name: &str,
    image: &str,
    linux: Option<cri::LinuxContainerConfig>,
) -> (u64, u64) {
    let mut cc = container_config(name, image, "exec sleep 1000");
    cc.linux = linux;
    let id = create(d, pod, pc, cc).await.expect("CreateContainer");
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
    wait_state(d, &id, cri::ContainerState::ContainerRunning).await;
    let out = d.runtime().await.exec_sync(sh(&id, "cat /proc/self/status")).await.expect("ExecSync").into_inner();
    let status = String::from_utf8(out.stdout).unwrap();
    (mask(&status, "CapEff:"), mask(&status, "CapBnd:"))
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_follow_the_request() {
    let e = env(1).await;
    let d = &e.d;
    let pc = pod_config("caps", &d.dir.path().join("logs/caps"));
    let pod = run_pod(d, pc.clone()).await.expect("RunPodSandbox");

    assert_eq!(masks(d, &pod, &pc, "default", &e.image, None).await, (DEFAULT_MASK, DEFAULT_MASK));
    let changed = DEFAULT_MASK & !KILL | NET_RAW;
    assert_eq!(masks(d, &pod, &pc, "changed", &e.image, caps(&["NET_RAW"], &["CAP_KILL"], false)).await, (changed, changed));
    assert_eq!(masks(d, &pod, &pc, "none", &e.image, caps(&[], &["ALL"], false)).await, (0, 0));
    let held = mask(&std::fs::read_to_string("/proc/self/status").unwrap(), "CapEff:");
    assert_eq!(masks(d, &pod, &pc, "privileged", &e.image, caps(&[], &[], true)).await, (held, held));
    assert_eq!(masks(d, &pod, &pc, "all", &e.image, caps(&["ALL"], &[], false)).await, (held, held));

    let mut bad = container_config("bad", &e.image, "true");
    bad.linux = caps(&["CAP_TELEPORT"], &[], false);
    let err = create(d, &pod, &pc, bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("CAP_TELEPORT"), "{}", err.message());
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}
