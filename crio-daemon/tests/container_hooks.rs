//! High-performance hooks on this machine's real cgroups and sysfs: a `high-performance`
//! handler's Guaranteed container gets no CFS quota (pod and container), no load balancing on
//! its cpuset and C-states off on its CPU, before it starts; all of it goes back when it stops.
//! Other handlers and fractional CPUs get nothing.

mod common;

use std::path::PathBuf;

use common::Daemon;
use common::host::{CPU1_LATENCY as LATENCY, HostGuard, irq_affinities, read};
use common::pods::*;
use crio::cri::v1 as cri;

async fn pod(d: &Daemon, name: &str, handler: &str) -> (String, cri::PodSandboxConfig) {
    let mut pc = pod_config(name, &d.dir.path().join(format!("logs/{name}")));
    pc.annotations = [
        ("cpu-quota.crio.io", "disable"),
        ("cpu-load-balancing.crio.io", "disable"),
        ("cpu-c-states.crio.io", "disable"),
        ("irq-load-balancing.crio.io", "disable"),
        // This VM has no cpufreq: reported as unsupported, the rest still applies.
        ("cpu-freq-governor.crio.io", "performance"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let req = cri::RunPodSandboxRequest { config: Some(pc.clone()), runtime_handler: handler.into() };
    (d.runtime().await.run_pod_sandbox(req).await.expect("RunPodSandbox").into_inner().pod_sandbox_id, pc)
}

fn pinned(name: &str, image: &str, shares: i64) -> cri::ContainerConfig {
    let mut c = container_config(name, image, "exec sleep 1000");
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_shares: shares,
            cpu_quota: 100_000,
            cpu_period: 100_000,
            cpuset_cpus: "1".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guaranteed_container_is_tuned_and_everything_goes_back() {
    let root = PathBuf::from(format!("/tmp/crio-hp-runc-{}", std::process::id()));
    let guard = HostGuard::new(root.clone());
    let extra =
        format!("[crio.runtime.runtimes.high-performance]\nruntime_path = \"/usr/sbin/runc\"\nruntime_root = \"{}\"\n", root.display());
    let e = env_config(1, false, &extra).await;
    let d = &e.d;

    let (hp, hp_pc) = pod(d, "tuned", "high-performance").await;
    let ct = create(d, &hp, &hp_pc, pinned("app", &e.image, 1024)).await.expect("CreateContainer");
    let cg = |controller: &str, leaf: &str| format!("/sys/fs/cgroup/{controller}/crio/pod-{hp}{leaf}");
    let ctr = format!("/crio-{ct}");
    assert_eq!(read(&format!("{}/cpu.cfs_quota_us", cg("cpu", &ctr))), "-1", "no quota on the container");
    assert_eq!(read(&format!("{}/cpu.cfs_quota_us", cg("cpu", ""))), "-1", "nor on the pod");
    assert_eq!(read(&format!("{}/cpuset.sched_load_balance", cg("cpuset", &ctr))), "0");
    assert_eq!(read(LATENCY), "n/a", "C-states off on CPU 1");
    // Interrupts leave CPU 1: the default and every IRQ that could run there.
    assert_eq!(read("/proc/irq/default_smp_affinity"), "1");
    // (Managed IRQs, like virtio's queues, stay: the kernel refuses to move them.)
    let left: Vec<_> = irq_affinities().into_iter().skip(1).filter(|(_, v)| v.contains('1')).collect();
    let movable: Vec<_> = left.iter().filter(|(path, _)| std::fs::write(path, "0").is_ok()).collect();
    assert!(movable.is_empty(), "movable IRQs still on CPU 1: {movable:?}");
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: ct.clone() }).await.expect("StartContainer");
    d.runtime().await.stop_container(cri::StopContainerRequest { container_id: ct.clone(), timeout: 0 }).await.expect("StopContainer");
    assert_eq!(read(&format!("{}/cpu.cfs_quota_us", cg("cpu", &ctr))), "100000", "the container's quota is back");
    assert_eq!(read(&format!("{}/cpuset.sched_load_balance", cg("cpuset", &ctr))), "1");
    assert_eq!(read(LATENCY), guard.latency, "CPU 1's C-states are back");
    assert_eq!(irq_affinities(), guard.irqs, "every IRQ affinity is back");
    let verbose = d.runtime().await.container_status(cri::ContainerStatusRequest { container_id: ct.clone(), verbose: true }).await;
    assert!(verbose.unwrap().into_inner().info["info"].contains("\"hooks\":[]"), "nothing left to restore");

    // Fractional CPUs, or a handler that is not high-performance: nothing is touched.
    let half = create(d, &hp, &hp_pc, pinned("half", &e.image, 512)).await.expect("CreateContainer");
    assert_eq!(read(&format!("{}/cpu.cfs_quota_us", cg("cpu", &format!("/crio-{half}")))), "100000");
    assert_eq!(read(LATENCY), guard.latency);
    let (plain, plain_pc) = pod(d, "plain", "").await;
    let other = create(d, &plain, &plain_pc, pinned("app", &e.image, 1024)).await.expect("CreateContainer");
    let path = format!("/sys/fs/cgroup/cpu/crio/pod-{plain}/crio-{other}/cpu.cfs_quota_us");
    assert_eq!(read(&path), "100000");
    for id in [hp, plain] {
        d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id }).await.expect("RemovePodSandbox");
    }
}
