//! NUMA-aware placement and the shared CPU pool on this machine's real cgroups (2 CPUs, one
//! NUMA node; multi-node planning is covered by crio-hooks' tests over hwloc synthetic
//! topologies): `numa-cpus.crio.io/<name>` makes the runtime choose CPUs that never overlap,
//! never take one the kubelet's CPU manager gave out (and refuse without its checkpoint),
//! and come back when the container goes; `cpu-shared.crio.io/<name>` adds `shared_cpuset`
//! with CRI-O's environment variables; `exec_cpu_affinity = "first"` puts exec'd processes on
//! one CPU; the placement shows in verbose status and `GET /containers/:id`.

mod common;

use std::path::PathBuf;

use common::Daemon;
use common::host::{RuncRoot, read};
use common::pods::*;
use crio::cri::v1 as cri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn pod(d: &Daemon, name: &str, handler: &str, annotations: &[(&str, &str)]) -> (String, cri::PodSandboxConfig) {
    let mut pc = pod_config(name, &d.dir.path().join(format!("logs/{name}")));
    pc.annotations = annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let req = cri::RunPodSandboxRequest { config: Some(pc.clone()), runtime_handler: handler.into() };
    (d.runtime().await.run_pod_sandbox(req).await.expect("RunPodSandbox").into_inner().pod_sandbox_id, pc)
}

async fn placement(d: &Daemon, id: &str) -> Option<String> {
    let st = d.runtime().await.container_status(cri::ContainerStatusRequest { container_id: id.into(), verbose: true }).await;
    st.expect("ContainerStatus").into_inner().info.get("placement").cloned()
}

fn cpuset(pod: &str, ct: &str, file: &str) -> String {
    read(&format!("/sys/fs/cgroup/cpuset/crio/pod-{pod}/crio-{ct}/cpuset.{file}"))
}

async fn start(d: &Daemon, id: &str) {
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: id.into() }).await.expect("StartContainer");
    wait_state(d, id, cri::ContainerState::ContainerRunning).await;
}

async fn exec_out(d: &Daemon, id: &str, script: &str) -> String {
    let out = d.runtime().await.exec_sync(sh(id, script)).await.expect("ExecSync").into_inner();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

async fn http_get(d: &Daemon, path: &str) -> String {
    let mut s = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn chosen_cpus_shared_pools_and_exec_affinity() {
    let root = RuncRoot(PathBuf::from(format!("/tmp/crio-placement-runc-{}", std::process::id())));
    // The kubelet's CPU manager has given CPU 0 to a Guaranteed pod.
    let kubelet = tempfile::tempdir().unwrap();
    let state = kubelet.path().join("cpu_manager_state");
    let cpu0_taken = r#"{"policyName":"static","defaultCpuSet":"1","entries":{"uid-g":{"guaranteed":"0"}},"checksum":1}"#;
    std::fs::write(&state, cpu0_taken).unwrap();
    let extra = format!(
        "[crio.runtime]\nshared_cpuset = \"0\"\nkubelet_cpu_manager_state = \"{}\"\n[crio.runtime.runtimes.high-performance]\nruntime_path = \"/usr/sbin/runc\"\n\
         runtime_root = \"{}\"\nexec_cpu_affinity = \"first\"\n",
        state.display(),
        root.0.display()
    );
    let e = env_config(20, false, &extra).await;
    let d = &e.d;

    // The runtime chooses: one CPU each, never the same one, back when a container goes.
    let numa = [("numa-cpus.crio.io/a", "1"), ("numa-cpus.crio.io/b", "1"), ("numa-cpus.crio.io/c", "1")];
    let (p, pc) = pod(d, "placed", "high-performance", &numa).await;
    let a = create(d, &p, &pc, container_config("a", &e.image, "exec sleep 1000")).await.expect("CreateContainer a");
    assert_eq!(cpuset(&p, &a, "cpus"), "1", "never the kubelet's exclusive CPU");
    let err = create(d, &p, &pc, container_config("b", &e.image, "exec sleep 1000")).await.expect_err("CPU 0 is the kubelet's");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // The Guaranteed pod went: its CPU is free again.
    std::fs::write(&state, r#"{"policyName":"static","defaultCpuSet":"0-1","checksum":2}"#).unwrap();
    let b = create(d, &p, &pc, container_config("b", &e.image, "exec sleep 1000")).await.expect("CreateContainer b");
    let (cpu_a, cpu_b) = (cpuset(&p, &a, "cpus"), cpuset(&p, &b, "cpus"));
    let mut both = [cpu_a.clone(), cpu_b.clone()];
    both.sort();
    assert_eq!(both, ["0", "1"], "each gets one CPU of its own");
    assert_eq!(cpuset(&p, &a, "mems"), "0", "memory from the CPU's node");
    let shown = placement(d, &a).await.expect("the placement in verbose status");
    assert!(shown.contains(&format!("\"cpus\":\"{cpu_a}\"")) && shown.contains("NUMA node 0"), "{shown}");
    let err = create(d, &p, &pc, container_config("c", &e.image, "exec sleep 1000")).await.expect_err("no CPU is left");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("free"), "{}", err.message());
    // Without the kubelet's state the runtime does not choose blind.
    std::fs::rename(&state, state.with_extension("away")).unwrap();
    let err = create(d, &p, &pc, container_config("c", &e.image, "exec sleep 1000")).await.expect_err("no kubelet state");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("cpu_manager_state"), "{}", err.message());
    std::fs::rename(state.with_extension("away"), &state).unwrap();
    start(d, &b).await;
    assert_eq!(exec_out(d, &b, "grep Cpus_allowed_list /proc/self/status").await.split_whitespace().last(), Some(cpu_b.as_str()));
    let http = http_get(d, &format!("/containers/{b}")).await;
    assert!(http.contains("\"placement\"") && http.contains(&format!("\"cpus\":\"{cpu_b}\"")), "{http}");
    d.runtime().await.remove_container(cri::RemoveContainerRequest { container_id: a.clone() }).await.expect("RemoveContainer");
    let c = create(d, &p, &pc, container_config("c", &e.image, "exec sleep 1000")).await.expect("CreateContainer c after a left");
    assert_eq!(cpuset(&p, &c, "cpus"), cpu_a, "a's CPU came back");

    // The shared pool beside the kubelet's exclusive CPU, and execs on the first shared CPU.
    let (s, spc) = pod(d, "shared", "high-performance", &[("cpu-shared.crio.io/app", "enable")]).await;
    let mut cc = container_config("app", &e.image, "exec sleep 1000");
    cc.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources { cpu_shares: 1024, cpuset_cpus: "1".into(), ..Default::default() }),
        ..Default::default()
    });
    let app = create(d, &s, &spc, cc).await.expect("CreateContainer");
    assert_eq!(cpuset(&s, &app, "cpus"), "0-1");
    start(d, &app).await;
    let env = exec_out(d, &app, "env").await;
    assert!(env.contains("OPENSHIFT_ISOLATED_CPUS=1") && env.contains("OPENSHIFT_SHARED_CPUS=0"), "{env}");
    assert_eq!(exec_out(d, &app, "grep Cpus_allowed_list /proc/self/status").await.split_whitespace().last(), Some("0"));

    // A handler that is not high-performance and does not allow the annotation: ignored.
    let (plain, ppc) = pod(d, "plain", "", &[("numa-cpus.crio.io/x", "1")]).await;
    let x = create(d, &plain, &ppc, container_config("x", &e.image, "exec sleep 1000")).await.expect("CreateContainer");
    assert!(placement(d, &x).await.is_none());
    for id in [p, s, plain] {
        d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id }).await.expect("RemovePodSandbox");
    }
    drop(root);
}
