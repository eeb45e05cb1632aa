//! The scenarios, written once against the CRI so the same code measures any runtime.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crio::cri::v1 as cri;
use crio::cri::v1::image_service_client::ImageServiceClient;
use crio::cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use super::client::{Samples, Transport, on_lean_client, origin, timed};

/// A runtime under test, reached over its CRI socket.
pub struct Target {
    /// Parent of the pods' cgroups (the kubelet always gives one; containerd needs it for stats).
    pub cgroup_parent: String,
    pub rt: RuntimeServiceClient<Channel>,
    /// The CRI socket, for a client of its own (see `quick_calls`).
    pub socket: PathBuf,
    pub img: ImageServiceClient<Channel>,
    pub image: String,
    pub logs: PathBuf,
    /// The daemon's pid.
    pub daemon: u32,
    /// The processes the runtime added to the node (monitors; shims and pause containers).
    pub added: Box<dyn Fn() -> Vec<u32> + Send + Sync>,
    /// The watch that times the runtime's runc and CNI plugin calls.
    pub calls: std::sync::Arc<super::timing::Calls>,
}

/// Samples per measurement, and single values (CPU, memory) per measurement.
#[derive(Default)]
pub struct Results {
    pub samples: BTreeMap<String, Vec<Duration>>,
    pub values: BTreeMap<String, Vec<f64>>,
}

impl Results {
    pub(super) fn sample(&mut self, name: &str, d: Duration) {
        self.samples.entry(name.into()).or_default().push(d);
    }

    pub(super) fn value(&mut self, name: &str, v: f64) {
        self.values.entry(name.into()).or_default().push(v);
    }
}

pub(super) fn pod_config(t: &Target, name: &str) -> cri::PodSandboxConfig {
    pod_config_in(t, name, &format!("{}/pod-{name}", t.cgroup_parent))
}

/// A pod whose cgroup is `cgroup_parent` (empty: the runtime makes one, as for crictl).
fn pod_config_in(t: &Target, name: &str, cgroup_parent: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}"), namespace: "bench".into(), attempt: 0 }),
        hostname: name.into(),
        log_directory: t.logs.join(name).display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                // The kubelet's default: a PID namespace per container.
                namespace_options: Some(cri::NamespaceOption { pid: 1, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn container_config(t: &Target, name: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: t.image.clone(), ..Default::default() }),
        command: vec!["/bin/sleep".into(), "100000".into()],
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption { pid: 1, ..Default::default() }),
                // Said explicitly: left out, the two runtimes differ (RuntimeDefault here, as
                // CRI-O; unconfined in containerd 1.6), and a seccomp filter is part of the cost.
                seccomp: Some(cri::SecurityProfile { profile_type: 0, localhost_ref: String::new() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One pod with one running container; the three stages' times.
pub(super) async fn start_pod(t: &Target, name: &str) -> (String, String, [Duration; 3]) {
    start_pod_on(&mut t.rt.clone(), pod_config(t, name), container_config(t, "c")).await
}

async fn start_pod_on<S: Transport>(
    rt: &mut RuntimeServiceClient<S>,
    pc: cri::PodSandboxConfig,
    cc: cri::ContainerConfig,
) -> (String, String, [Duration; 3]) {
    let at = Instant::now();
    let pod = rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pc.clone()), runtime_handler: String::new() }).await;
    let pod = pod.expect("RunPodSandbox").into_inner().pod_sandbox_id;
    let ran = at.elapsed();
    let at = Instant::now();
    let req = cri::CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(cc), sandbox_config: Some(pc) };
    let ct = rt.create_container(req).await.expect("CreateContainer").into_inner().container_id;
    let created = at.elapsed();
    let at = Instant::now();
    rt.start_container(cri::StartContainerRequest { container_id: ct.clone() }).await.expect("StartContainer");
    (pod, ct, [ran, created, at.elapsed()])
}

pub(super) async fn remove_pod(t: &Target, pod: &str) {
    remove_pod_on(&mut t.rt.clone(), pod).await;
}

async fn remove_pod_on<S: Transport>(rt: &mut RuntimeServiceClient<S>, pod: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.into() }).await.expect("StopPodSandbox");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.into() }).await.expect("RemovePodSandbox");
}

/// Pods removed a few at a time (teardown is not what is measured).
pub(super) async fn remove_all(t: &Target, pods: Vec<String>) {
    for chunk in pods.chunks(4) {
        futures::future::join_all(chunk.iter().map(|p| remove_pod(t, p))).await;
    }
}

/// Sequential pod starts, per stage and total, with where the time went; then the teardown,
/// timed apart. Each start in the kubelet's flow (pod cgroup given) is followed by one whose
/// cgroup the runtime makes (no `cgroup_parent`, as crictl and other direct clients). One
/// caller, as the kubelet's pod worker, on the lean client (see `client`): through tonic's
/// shared channel each call paid the client's own thread hops, counted as the runtime's.
pub async fn pod_start(t: &Target, r: &mut Results, round: usize, n: usize) {
    let mut starts = Vec::new();
    for i in 0..n {
        for (flow, given) in [("pod start", true), ("pod start (no cgroup_parent)", false)] {
            let name = format!("start-{round}-{i}{}", if given { "" } else { "-np" });
            starts.push((flow, given, if given { pod_config(t, &name) } else { pod_config_in(t, &name, "") }));
        }
    }
    let (calls, cc) = (t.calls.clone(), container_config(t, "c"));
    let _timing = calls.timing();
    let samples = on_lean_client(&t.socket, move |direct| async move {
        let mut rt = RuntimeServiceClient::with_origin(direct, origin());
        let mut out = Samples::new();
        for (flow, given, pc) in starts {
            let mark = calls.mark();
            let (pod, ct, stages) = start_pod_on(&mut rt, pc, cc.clone()).await;
            let spent = calls.since(mark);
            for (stage, d) in ["RunPodSandbox", "CreateContainer", "StartContainer"].iter().zip(stages) {
                out.push((format!("{flow}: {stage}"), d));
            }
            let total: Duration = stages.iter().sum();
            out.push((format!("{flow}: total"), total));
            out.push((format!("{flow}: in runc create"), spent.runc_create));
            out.push((format!("{flow}: in CNI ADD"), spent.cni_add));
            out.push((format!("{flow}: the rest (runtime's own)"), total.saturating_sub(spent.either)));
            if given {
                teardown_timed(&mut rt, &calls, &mut out, pod, ct).await;
            } else {
                remove_pod_on(&mut rt, &pod).await;
            }
        }
        out
    })
    .await;
    for (name, d) in samples {
        r.sample(&name, d);
    }
}

/// Teardown as the kubelet does it, each call timed, and in all.
async fn teardown_timed<S: Transport>(
    rt: &mut RuntimeServiceClient<S>,
    calls: &super::timing::Calls,
    out: &mut Samples,
    pod: String,
    ct: String,
) {
    let mut timed = Vec::new();
    let at = Instant::now();
    rt.stop_container(cri::StopContainerRequest { container_id: ct.clone(), timeout: 0 }).await.expect("StopContainer");
    timed.push(("pod teardown: StopContainer", at.elapsed()));
    let at = Instant::now();
    rt.remove_container(cri::RemoveContainerRequest { container_id: ct }).await.expect("RemoveContainer");
    timed.push(("pod teardown: RemoveContainer", at.elapsed()));
    let (mark, at) = (calls.mark(), Instant::now());
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.expect("StopPodSandbox");
    let stopped = at.elapsed();
    timed.push(("pod teardown: StopPodSandbox (no containers left)", stopped));
    let del = calls.since(mark).cni_del;
    out.push(("pod teardown: StopPodSandbox: in CNI DEL".into(), del));
    out.push(("pod teardown: StopPodSandbox: the rest (runtime's own)".into(), stopped.saturating_sub(del)));
    let at = Instant::now();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    timed.push(("pod teardown: RemovePodSandbox", at.elapsed()));
    out.push(("pod teardown: stop + remove".into(), timed.iter().map(|(_, d)| *d).sum()));
    out.extend(timed.into_iter().map(|(name, d)| (name.to_string(), d)));
}

/// `n` pods with one container each, started concurrently: time until all run.
pub async fn burst(t: &Target, r: &mut Results, round: usize, n: usize) {
    let (cpu, own) = (runtime_cpu(t), runtime_own_cpu(t));
    let node = super::procs::NodeTicks::now();
    // Marks the window on stderr, for a profiler watching the run.
    eprintln!("burst of {n}: begins");
    let at = Instant::now();
    // The clock stops when every container reads RUNNING, not when StartContainer returns.
    let started = futures::future::join_all((0..n).map(|i| {
        let name = format!("burst-{round}-{i}");
        async move {
            let started = start_pod(t, &name).await;
            until_running(t, &started.1).await;
            started
        }
    }))
    .await;
    r.sample(&format!("burst: {n} pods until every container reads RUNNING"), at.elapsed());
    eprintln!("burst of {n}: ends");
    // Read while the pods run: the monitors or shims that reaped the runc calls are alive.
    r.value("burst: runtime CPU ms per pod started", (runtime_cpu(t) - cpu) * 1000.0 / n as f64);
    r.value(
        "burst: runtime CPU ms per pod started, its own processes alone (no runc, no plugins)",
        (runtime_own_cpu(t) - own) * 1000.0 / n as f64,
    );
    // How busy the node's CPUs were: near 100 means the burst is bound by CPU, not by waiting;
    // what the VM's host took is apart, in the round's steal row.
    let went = super::procs::NodeTicks::now().since(node);
    r.value("burst: node CPU busy %", went.busy_percent());
    remove_all(t, started.into_iter().map(|(p, _, _)| p).collect()).await;
}

/// Polls ContainerStatus (every millisecond) until the container reads RUNNING.
async fn until_running(t: &Target, ct: &str) {
    let mut rt = t.rt.clone();
    loop {
        let req = cri::ContainerStatusRequest { container_id: ct.into(), verbose: false };
        let st = rt.container_status(req).await.expect("ContainerStatus").into_inner().status.expect("a status");
        if st.state == cri::ContainerState::ContainerRunning as i32 {
            return;
        }
        assert_ne!(st.state, cri::ContainerState::ContainerExited as i32, "a burst container exited: {st:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The daemon's and its monitors' (or shims') CPU alone: what the runtime adds to the programs
/// every runtime runs.
fn runtime_own_cpu(t: &Target) -> f64 {
    super::procs::own_cpu_seconds(t.daemon) + (t.added)().into_iter().map(super::procs::own_cpu_seconds).sum::<f64>()
}

fn runtime_cpu(t: &Target) -> f64 {
    super::procs::cpu_seconds(t.daemon) + (t.added)().into_iter().map(super::procs::cpu_seconds).sum::<f64>()
}

/// ExecSync of /bin/true, and the runtime's CPU seconds per 1000 of them.
pub async fn probes(t: &Target, r: &mut Results, round: usize, n: usize) {
    let (pod, ct, _) = start_pod(t, &format!("probe-{round}")).await;
    let mut rt = t.rt.clone();
    let cpu = runtime_cpu(t);
    for _ in 0..n {
        let at = Instant::now();
        let out = rt.exec_sync(cri::ExecSyncRequest { container_id: ct.clone(), cmd: vec!["/bin/true".into()], timeout: 10 }).await;
        assert_eq!(out.expect("ExecSync").into_inner().exit_code, 0);
        r.sample("probes: ExecSync /bin/true", at.elapsed());
    }
    r.value("probes: runtime CPU seconds per 1000", (runtime_cpu(t) - cpu) * 1000.0 / n as f64);
    remove_pod(t, &pod).await;
}

/// An exec storm: `n` ExecSyncs of /bin/true from `workers` concurrent callers into one
/// container (a node where many probes fire at once), with the rate they reach.
pub async fn exec_storm(t: &Target, r: &mut Results, round: usize, n: usize, workers: usize) {
    let (pod, ct, _) = start_pod(t, &format!("storm-{round}")).await;
    let began = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (mut rt, ct) = (t.rt.clone(), ct.clone());
            tokio::spawn(async move {
                let mut took = Vec::new();
                for _ in 0..n / workers {
                    let at = Instant::now();
                    let req = cri::ExecSyncRequest { container_id: ct.clone(), cmd: vec!["/bin/true".into()], timeout: 10 };
                    assert_eq!(rt.exec_sync(req).await.expect("ExecSync").into_inner().exit_code, 0);
                    took.push(at.elapsed());
                }
                took
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        for d in task.await.expect("exec worker") {
            r.sample(&format!("exec storm: ExecSync, {workers} concurrent"), d);
            done += 1;
        }
    }
    r.value("exec storm: execs per second", done as f64 / began.elapsed().as_secs_f64());
    remove_pod(t, &pod).await;
}

/// List and status calls each made after an idle second, per round.
const IDLE_CALLS: usize = 5;
/// Unmeasured calls before the back-to-back list and status samples.
const WARM_UP: usize = 10;

/// `n` pods with a sleeping container: memory, then list / status / stats latency.
pub async fn density(t: &Target, r: &mut Results, round: usize, n: usize) {
    let mut pods = Vec::new();
    let mut containers = Vec::new();
    for i in 0..n {
        let (p, c, _) = start_pod(t, &format!("dense-{round}-{i}")).await;
        pods.push(p);
        containers.push(c);
    }
    // Let start-up garbage settle before reading memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    r.value(&format!("density: daemon RSS MiB ({n} pods)"), mib(super::procs::memory(t.daemon).0));
    let added: Vec<(u64, u64)> = (t.added)().into_iter().map(super::procs::memory).collect();
    let (rss, pss) = added.iter().fold((0, 0), |(a, b), (r, p)| (a + r, b + p));
    r.value(&format!("density: added processes ({n} pods)"), added.len() as f64);
    r.value("density: node overhead RSS MiB per pod", mib(rss) / n as f64);
    r.value("density: node overhead PSS MiB per pod", mib(pss) / n as f64);
    for (name, d) in quick_calls(&t.socket, containers.clone()).await {
        r.sample(&name, d);
    }
    let mut rt = t.rt.clone();
    for _ in 0..30 {
        let at = Instant::now();
        rt.list_container_stats(cri::ListContainerStatsRequest { filter: None }).await.expect("ListContainerStats");
        r.sample(&format!("stats: ListContainerStats ({n} running)"), at.elapsed());
        let at = Instant::now();
        rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None }).await.expect("ListPodSandboxStats");
        r.sample(&format!("stats: ListPodSandboxStats ({n} pods)"), at.elapsed());
    }
    remove_all(t, pods).await;
}

/// ImageStatus, and a pull of an image that is already there.
pub async fn image(t: &Target, r: &mut Results) {
    let image = t.image.clone();
    let status = on_lean_client(&t.socket, move |direct| async move {
        let mut img = ImageServiceClient::with_origin(direct, origin());
        let mut out = Samples::new();
        for _ in 0..300 {
            let spec = Some(cri::ImageSpec { image: image.clone(), ..Default::default() });
            timed(&mut out, "image: ImageStatus", img.image_status(cri::ImageStatusRequest { image: spec, verbose: false }))
                .await
                .expect("ImageStatus");
        }
        out
    })
    .await;
    for (name, d) in status {
        r.sample(&name, d);
    }
    let mut img = t.img.clone();
    let spec = || Some(cri::ImageSpec { image: t.image.clone(), ..Default::default() });
    for _ in 0..10 {
        let at = Instant::now();
        img.pull_image(cri::PullImageRequest { image: spec(), auth: None, sandbox_config: None }).await.expect("PullImage");
        r.sample("image: PullImage of a present image", at.elapsed());
    }
}

/// List, status and Version, on the lean client (see `client`).
async fn quick_calls(socket: &std::path::Path, containers: Vec<String>) -> Samples {
    on_lean_client(socket, move |direct| async move {
        let n = containers.len();
        let mut rt = RuntimeServiceClient::with_origin(direct, origin());
        let mut out = Samples::new();
        let (list, status, version) = (
            format!("list: ListContainers ({n} running)"),
            "status: ContainerStatus".to_string(),
            format!("transport: Version ({n} running)"),
        );
        let status_req = |i: usize| cri::ContainerStatusRequest { container_id: containers[i % n].clone(), verbose: false };
        // The kubelet relists about once a second, so on a quiet node each call comes after an
        // idle second, with the daemon's threads asleep (and on a VM, its vCPUs halted).
        for i in 0..IDLE_CALLS {
            tokio::time::sleep(Duration::from_secs(1)).await;
            timed(&mut out, &format!("{list} after 1 s idle"), rt.list_containers(cri::ListContainersRequest { filter: None }))
                .await
                .expect("ListContainers");
            tokio::time::sleep(Duration::from_secs(1)).await;
            timed(&mut out, &format!("{status} after 1 s idle"), rt.container_status(status_req(i))).await.expect("ContainerStatus");
            tokio::time::sleep(Duration::from_secs(1)).await;
            timed(&mut out, &format!("{version} after 1 s idle"), rt.version(cri::VersionRequest::default())).await.expect("Version");
        }
        // Back to back, after a few unmeasured calls: the handlers' own cost, without wake-ups.
        for i in 0..WARM_UP {
            rt.list_containers(cri::ListContainersRequest { filter: None }).await.expect("ListContainers");
            rt.container_status(status_req(i)).await.expect("ContainerStatus");
        }
        for i in 0..200 {
            timed(&mut out, &list, rt.list_containers(cri::ListContainersRequest { filter: None })).await.expect("ListContainers");
            timed(&mut out, &status, rt.container_status(status_req(i))).await.expect("ContainerStatus");
            // The transport and scheduling alone: an RPC that does no work.
            timed(&mut out, &version, rt.version(cri::VersionRequest::default())).await.expect("Version");
        }
        out
    })
    .await
}
