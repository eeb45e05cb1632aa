//! High-performance hooks are undone however a container ends, not only by StopContainer:
//! when it exits on its own, and when it dies while the daemon is down (SIGKILLed) and the
//! restarted daemon reconciles, and when the daemon itself dies at any step of applying them.
//! Read from the real files: CPU 1's C-state policy, every IRQ's
//! affinity, and the irqbalance ban list (a temp config file). One test: the host state is
//! shared.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::host::{CPU1_LATENCY as LATENCY, HostGuard, irq_affinities, read};
use common::pods::*;
use crio::cri::v1 as cri;

/// CPU 1 is tuned: C-states off, no interrupts, banned for irqbalance.
fn assert_tuned(ban_file: &std::path::Path) {
    assert_eq!(read(LATENCY), "n/a", "C-states off on CPU 1");
    assert_eq!(read("/proc/irq/default_smp_affinity"), "1", "interrupts off CPU 1");
    let text = std::fs::read_to_string(ban_file).unwrap();
    assert!(text.contains("IRQBALANCE_BANNED_CPULIST=1\n") && text.contains("IRQBALANCE_BANNED_CPUS=2\n"), "{text}");
    assert!(text.starts_with("IRQBALANCE_ONESHOT=no\n"), "other settings kept: {text}");
}

/// Everything as it was before.
fn assert_untouched(g: &HostGuard, ban_file: &std::path::Path) {
    assert_eq!(read(LATENCY), g.latency, "CPU 1's C-states are back");
    assert_eq!(irq_affinities(), g.irqs, "every IRQ affinity is back");
    let text = std::fs::read_to_string(ban_file).unwrap();
    assert!(text.contains("IRQBALANCE_BANNED_CPULIST=\n"), "irqbalance bans nothing again: {text}");
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not happen within 10 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_are_undone_after_self_exit_and_after_a_daemon_crash() {
    let root = PathBuf::from(format!("/tmp/crio-hp-restore-runc-{}", std::process::id()));
    let guard = HostGuard::new(root.clone());
    let ban = tempfile::tempdir().unwrap();
    let ban_file = ban.path().join("irqbalance");
    std::fs::write(&ban_file, "IRQBALANCE_ONESHOT=no\n").unwrap();
    let extra = format!(
        "[crio.runtime]\nirqbalance_config_file = \"{}\"\n[crio.runtime.runtimes.high-performance]\nruntime_path = \"/usr/sbin/runc\"\nruntime_root = \"{}\"\n",
        ban_file.display(),
        root.display()
    );
    let mut e = env_config(21, false, &extra).await;
    let mut pc = pod_config("restore", &e.d.dir.path().join("logs/restore"));
    pc.annotations = [("cpu-c-states.crio.io", "disable"), ("irq-load-balancing.crio.io", "disable")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let req = cri::RunPodSandboxRequest { config: Some(pc.clone()), runtime_handler: "high-performance".into() };
    let pod = e.d.runtime().await.run_pod_sandbox(req).await.expect("RunPodSandbox").into_inner().pod_sandbox_id;

    // Exits on its own: the exit is seen and everything goes back, no RPC needed.
    let ct = create(&e.d, &pod, &pc, on_cpu1("brief", &e.image, "sleep 1")).await.expect("CreateContainer");
    assert_tuned(&ban_file);
    e.d.runtime().await.start_container(cri::StartContainerRequest { container_id: ct.clone() }).await.expect("StartContainer");
    wait_state(&e.d, &ct, cri::ContainerState::ContainerExited).await;
    wait_for("the restore after the exit", || read(LATENCY) == guard.latency).await;
    assert_untouched(&guard, &ban_file);

    // Dies while the daemon is down: the restarted daemon puts everything back.
    let ct = create(&e.d, &pod, &pc, on_cpu1("long", &e.image, "exec sleep 1000")).await.expect("CreateContainer");
    e.d.runtime().await.start_container(cri::StartContainerRequest { container_id: ct.clone() }).await.expect("StartContainer");
    wait_state(&e.d, &ct, cri::ContainerState::ContainerRunning).await;
    assert_tuned(&ban_file);
    let st = e.d.runtime().await.container_status(cri::ContainerStatusRequest { container_id: ct.clone(), verbose: true }).await;
    let info: serde_json::Value = serde_json::from_str(&st.unwrap().into_inner().info["info"]).unwrap();
    let pid = info["pid"].as_i64().expect("the init's pid") as i32;
    e.d.kill9();
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), rustix::process::Signal::KILL).unwrap();
    wait_for("the container's death", || !std::path::Path::new(&format!("/proc/{pid}")).exists()).await;
    assert_tuned(&ban_file);
    e.d.restart().await;
    wait_for("the restore at restart", || read(LATENCY) == guard.latency).await;
    assert_untouched(&guard, &ban_file);
    assert_eq!(status(&e.d, &ct).await.state, cri::ContainerState::ContainerExited as i32);

    // A crash at every step of applying them: the host is changed only after the originals
    // are on disk, so each restart puts everything back (or, once the container is recorded,
    // keeps it tuned until the container goes).
    for step in ["hooks:journaled", "hooks:wrote:0", "hooks:applied", "irq:recorded", "irq:steered", "hooks:recorded"] {
        e.d.env = vec![("CRIO_CRASH_AT".into(), step.into())];
        e.d.restart().await;
        let name = format!("crash-{}", step.replace(':', "-"));
        let made = create(&e.d, &pod, &pc, on_cpu1(&name, &e.image, "exec sleep 1000")).await;
        assert!(made.is_err(), "{step}: the daemon died during CreateContainer");
        let status = e.d.wait_exit();
        assert!(!status.success(), "{step}: {status}");
        e.d.env.clear();
        e.d.restart().await;
        let listed = e.d.runtime().await.list_containers(cri::ListContainersRequest::default()).await.unwrap().into_inner().containers;
        let left: Vec<_> = listed.iter().filter(|c| c.metadata.as_ref().is_some_and(|m| m.name == name)).collect();
        if step == "hooks:recorded" {
            assert_eq!(left.len(), 1, "{step}: recorded, so it exists");
            assert_tuned(&ban_file);
            let id = left[0].id.clone();
            e.d.runtime().await.remove_container(cri::RemoveContainerRequest { container_id: id }).await.expect("RemoveContainer");
        } else {
            assert!(left.is_empty(), "{step}: never recorded, so never listed: {left:?}");
        }
        wait_for(&format!("the restore after a crash at {step}"), || read(LATENCY) == guard.latency).await;
        assert_untouched(&guard, &ban_file);
    }

    e.d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    drop(guard);
}
