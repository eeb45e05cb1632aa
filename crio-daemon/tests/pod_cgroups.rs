//! Pod cgroups on this (hybrid) host: made under `cgroup_parent` in every v1 hierarchy with the
//! pod-level limits, the parent of the containers' cgroups (v1 and unified), and removed with
//! the pod.

mod common;

use std::path::{Path, PathBuf};

use common::pods::*;
use crio::cri::v1 as cri;

const ROOT: &str = "/sys/fs/cgroup";

/// The test's top cgroup in every hierarchy, removed (deepest first) even when the test fails.
struct TopCgroup(String);

impl Drop for TopCgroup {
    fn drop(&mut self) {
        for h in std::fs::read_dir(ROOT).unwrap().flatten() {
            let top = h.path().join(&self.0);
            let mut dirs: Vec<PathBuf> = walk_dirs(&top);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = vec![dir.to_path_buf()];
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_dirs(&e.path()));
        }
    }
    out
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("reading {path}: {e}")).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_cgroup_with_pod_level_limits_parents_the_containers() {
    // Before the environment: dropped after it, once its containers are gone.
    let top = TopCgroup(format!("crio-test-{}", std::process::id()));
    let e = env(1).await;
    let d = &e.d;
    let parent = format!("/{}/pod-a", top.0);
    let mut pc = pod_config("limited", &d.dir.path().join("logs/limited"));
    let limits = cri::LinuxContainerResources {
        cpu_shares: 512,
        cpu_period: 100_000,
        cpu_quota: 50_000,
        memory_limit_in_bytes: 96 << 20,
        ..Default::default()
    };
    pc.linux = Some(cri::LinuxPodSandboxConfig { cgroup_parent: parent.clone(), resources: Some(limits), ..Default::default() });
    let pod = run_pod(d, pc.clone()).await.expect("RunPodSandbox");
    assert_eq!(read(&format!("memory{parent}/memory.limit_in_bytes")), (96u64 << 20).to_string());
    assert_eq!(read(&format!("cpu{parent}/cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&format!("cpu{parent}/cpu.shares")), "512");
    assert!(!read(&format!("cpuset{parent}/cpuset.cpus")).is_empty(), "the pod's cpuset is usable");

    let mut cc = container_config("c", &e.image, "exec sleep 1000");
    let own = cri::LinuxContainerResources { memory_limit_in_bytes: 64 << 20, ..Default::default() };
    cc.linux.get_or_insert_with(Default::default).resources = Some(own);
    let ct = create(d, &pod, &pc, cc).await.expect("CreateContainer");
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: ct.clone() }).await.expect("StartContainer");
    wait_state(d, &ct, cri::ContainerState::ContainerRunning).await;
    let out = d.runtime().await.exec_sync(sh(&ct, "cat /proc/self/cgroup")).await.expect("ExecSync").into_inner();
    let cgroups = String::from_utf8(out.stdout).unwrap();
    // As with CRI-O: the container reads its own limit at /sys/fs/cgroup (what JVMs and Go's
    // runtime size themselves from), and cannot change it.
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes";
    let out = d.runtime().await.exec_sync(sh(&ct, script)).await.expect("ExecSync").into_inner();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), (64u64 << 20).to_string(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_ne!(out.exit_code, 0, "the cgroup tree is read-only in the container");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only"), "{}", String::from_utf8_lossy(&out.stderr));
    let leaf = format!("{parent}/crio-{ct}");
    for controller in ["memory", "cpu,cpuacct", "pids"] {
        let line = cgroups.lines().find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|x| controller.contains(x))));
        assert!(line.is_some_and(|l| l.ends_with(&leaf)), "{controller} cgroup under the pod: {cgroups}");
    }
    assert!(cgroups.lines().any(|l| l == format!("0::{leaf}")), "unified cgroup under the pod: {cgroups}");
    let stats = d.runtime().await.pod_sandbox_stats(cri::PodSandboxStatsRequest { pod_sandbox_id: pod.clone() }).await;
    let linux = stats.expect("PodSandboxStats").into_inner().stats.unwrap().linux.unwrap();
    assert!(linux.memory.unwrap().usage_bytes.unwrap().value > 0, "the pod cgroup's memory is read");

    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    for h in ["memory", "cpu", "cpuset", "pids", "systemd", "unified"] {
        assert!(!Path::new(&format!("{ROOT}/{h}{parent}")).exists(), "{h} pod cgroup removed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_without_a_parent_gets_its_own_cgroup_and_an_existing_one_is_left_alone() {
    let top = TopCgroup(format!("crio-kubelet-{}", std::process::id()));
    let e = env(2).await;
    let d = &e.d;
    let pc = pod_config("plain", &d.dir.path().join("logs/plain"));
    let pod = run_pod(d, pc.clone()).await.expect("RunPodSandbox");
    let own = format!("{ROOT}/memory/crio/pod-{pod}");
    assert!(Path::new(&own).is_dir(), "{own}");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    assert!(!Path::new(&own).exists(), "{own} removed");

    // A cgroup the kubelet made keeps its limits and outlives the pod.
    for h in std::fs::read_dir(ROOT).unwrap().flatten().filter(|h| h.file_name() != "unified") {
        std::fs::create_dir(h.path().join(&top.0)).unwrap();
    }
    let existing = format!("{ROOT}/memory/{}", top.0);
    std::fs::write(format!("{existing}/memory.limit_in_bytes"), (200u64 << 20).to_string()).unwrap();
    let mut pc = pod_config("kubelet", &d.dir.path().join("logs/kubelet"));
    let limits = cri::LinuxContainerResources { memory_limit_in_bytes: 50 << 20, ..Default::default() };
    pc.linux = Some(cri::LinuxPodSandboxConfig { cgroup_parent: format!("/{}", top.0), resources: Some(limits), ..Default::default() });
    let pod = run_pod(d, pc).await.expect("RunPodSandbox");
    assert_eq!(read(&format!("memory/{}/memory.limit_in_bytes", top.0)), (200u64 << 20).to_string());
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    assert!(Path::new(&existing).is_dir(), "the kubelet's cgroup stays");

    let mut bad = pod_config("escape", &d.dir.path().join("logs/escape"));
    bad.linux = Some(cri::LinuxPodSandboxConfig { cgroup_parent: "/kubepods/../..".into(), ..Default::default() });
    let err = run_pod(d, bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}
