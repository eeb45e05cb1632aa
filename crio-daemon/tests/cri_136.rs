//! The RPCs the Kubernetes 1.36 CRI added or the kubelet now calls, through the project's own
//! client generated from proto/runtime/v1/api.proto: UpdateRuntimeConfig keeps the pod CIDR,
//! the list streaming RPCs give each item of the matching List exactly once, and
//! UpdatePodSandboxResources resizes a pod cgroup the runtime made.

mod common;

use std::collections::BTreeSet;

use common::pods::*;
use crio::cri::v1 as cri;
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread")]
async fn the_136_rpcs_against_the_daemon() {
    let (_reg, d, image) = host_network_env("").await;
    let mut rt = d.runtime().await;

    // UpdateRuntimeConfig: kept and shown; a malformed CIDR refused.
    let config = |pod_cidr: &str| cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig { network_config: Some(cri::NetworkConfig { pod_cidr: pod_cidr.into() }) }),
    };
    rt.update_runtime_config(config("10.244.1.0/24,fd00:10:244:1::/64")).await.expect("UpdateRuntimeConfig");
    let runtime_status = rt.status(cri::StatusRequest { verbose: true }).await.unwrap().into_inner();
    assert_eq!(runtime_status.info["podCIDR"], "10.244.1.0/24,fd00:10:244:1::/64");
    let err = rt.update_runtime_config(config("10.244.1.0/33")).await.expect_err("not a CIDR");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Streams: the same items as the List RPCs, each once.
    let pc = host_network_pod_config("streams", &d.dir.path().join("logs/streams"));
    let pod = run_pod(&d, pc.clone()).await.expect("RunPodSandbox");
    for i in 0..5 {
        start(&d, &pod, &pc, container_config(&format!("c{i}"), &image, "exec sleep 1000")).await;
    }
    let listed: Vec<String> = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect();
    let mut streamed = Vec::new();
    let mut s = rt.stream_containers(cri::StreamContainersRequest::default()).await.expect("StreamContainers").into_inner();
    while let Some(r) = s.next().await {
        streamed.extend(r.expect("a response").containers.into_iter().map(|c| c.id));
    }
    assert_eq!(streamed.len(), listed.len(), "each once");
    assert_eq!(streamed.iter().collect::<BTreeSet<_>>(), listed.iter().collect::<BTreeSet<_>>());
    let mut stats = Vec::new();
    let mut s = rt.stream_container_stats(cri::StreamContainerStatsRequest::default()).await.expect("StreamContainerStats").into_inner();
    while let Some(r) = s.next().await {
        stats.extend(r.unwrap().container_stats.into_iter().map(|c| c.attributes.unwrap().id));
    }
    assert_eq!(stats.iter().collect::<BTreeSet<_>>(), listed.iter().collect::<BTreeSet<_>>());
    assert_eq!(stats.len(), 5);
    let mut pods = Vec::new();
    let mut s = rt.stream_pod_sandboxes(cri::StreamPodSandboxesRequest::default()).await.expect("StreamPodSandboxes").into_inner();
    while let Some(r) = s.next().await {
        pods.extend(r.unwrap().pod_sandboxes.into_iter().map(|p| p.id));
    }
    assert_eq!(pods, std::slice::from_ref(&pod));
    let mut pod_stats = 0;
    let mut s =
        rt.stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest::default()).await.expect("StreamPodSandboxStats").into_inner();
    while let Some(r) = s.next().await {
        pod_stats += r.unwrap().pod_sandbox_stats.len();
    }
    assert_eq!(pod_stats, 1);
    let mut images = d.images().await;
    let mut s = images.stream_images(cri::StreamImagesRequest::default()).await.expect("StreamImages").into_inner();
    let mut streamed_images = 0;
    while let Some(r) = s.next().await {
        streamed_images += r.unwrap().images.len();
    }
    assert_eq!(streamed_images, d.list().await.len());

    // UpdatePodSandboxResources: the pod cgroup the runtime made gets resources + overhead.
    let memory = |bytes| cri::LinuxContainerResources { memory_limit_in_bytes: bytes, ..Default::default() };
    let req = cri::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod.clone(),
        overhead: Some(memory(64 << 20)),
        resources: Some(memory(256 << 20)),
    };
    rt.update_pod_sandbox_resources(req).await.expect("UpdatePodSandboxResources");
    let limit =
        std::fs::read_to_string(format!("/sys/fs/cgroup/memory/crio/pod-{pod}/memory.limit_in_bytes")).expect("the pod's v1 memory cgroup");
    assert_eq!(limit.trim(), (320u64 << 20).to_string());
    let bad = cri::UpdatePodSandboxResourcesRequest { pod_sandbox_id: pod.clone(), resources: Some(memory(-1)), ..Default::default() };
    let err = rt.update_pod_sandbox_resources(bad).await.expect_err("a negative limit");
    assert!(err.code() == tonic::Code::InvalidArgument && err.message().contains("resources.memory_limit_in_bytes"), "{err:?}");

    // stop_signal: StopContainer sends the requested signal first, and status reports it.
    let mut cc = container_config("stopper", &image, "trap 'exit 7' USR1; touch /trapped; while true; do sleep 0.1; done");
    cc.stop_signal = cri::Signal::Sigusr1 as i32;
    let stopper = start(&d, &pod, &pc, cc).await;
    wait_state(&d, &stopper, cri::ContainerState::ContainerRunning).await;
    // Running is not yet trapping: wait for the shell to have set its trap.
    let trapped = rt.exec_sync(cri::ExecSyncRequest { timeout: 10, ..sh(&stopper, "while [ ! -e /trapped ]; do sleep 0.05; done") });
    assert_eq!(trapped.await.expect("ExecSync").into_inner().exit_code, 0, "the trap is set");
    assert_eq!(status(&d, &stopper).await.stop_signal, cri::Signal::Sigusr1 as i32);
    rt.stop_container(cri::StopContainerRequest { container_id: stopper.clone(), timeout: 30 }).await.expect("StopContainer");
    assert_eq!(status(&d, &stopper).await.exit_code, 7, "the trap for USR1 ran");
    let plain = start(&d, &pod, &pc, container_config("plain", &image, "exec sleep 1000")).await;
    assert_eq!(status(&d, &plain).await.stop_signal, cri::Signal::Sigterm as i32, "the default is SIGTERM");

    // Verbose PodSandboxStatus carries the pod's containers and when they were read.
    let verbose =
        rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: true }).await.unwrap().into_inner();
    assert_eq!(verbose.containers_statuses.len(), 7, "five, the stopper and the plain one");
    assert!(verbose.containers_statuses.iter().any(|c| c.id == stopper && c.exit_code == 7));
    assert!(verbose.timestamp > 0);
    let terse =
        rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false }).await.unwrap().into_inner();
    assert!(terse.containers_statuses.is_empty() && terse.timestamp == 0);

    // CheckpointContainer: an archive where CRIU works on this kernel, else FailedPrecondition
    // saying what is missing (CI's Debian 12 CRIU 3.17 cannot read Linux 6.18's vDSO).
    let location = d.dir.path().join("plain.tar");
    let req = cri::CheckpointContainerRequest { container_id: plain.clone(), location: location.display().to_string(), timeout: 60 };
    let criu_works = std::process::Command::new("criu").arg("check").output().is_ok_and(|o| o.status.success());
    match rt.checkpoint_container(req).await {
        Ok(_) => {
            assert!(criu_works, "checkpointed without a working CRIU?");
            assert!(location.exists(), "the archive");
            assert_eq!(status(&d, &plain).await.state, cri::ContainerState::ContainerRunning as i32, "left running");
        }
        Err(err) => {
            assert!(!criu_works, "CRIU works here, yet: {err:?}");
            assert!(
                err.code() == tonic::Code::FailedPrecondition && err.message().contains("CRIU") || err.message().contains("criu"),
                "{err:?}"
            );
            assert!(!location.exists() && !location.with_extension("partial").exists(), "nothing left behind");
        }
    }
    let err = rt
        .checkpoint_container(cri::CheckpointContainerRequest { container_id: plain.clone(), location: "relative.tar".into(), timeout: 60 })
        .await
        .expect_err("a relative location");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

/// The values of one series by label key, as the kubelet pairs a descriptor's keys with a
/// metric's values.
fn labelled<'a>(d: &'a cri::MetricDescriptor, m: &'a cri::Metric) -> std::collections::HashMap<&'a str, &'a str> {
    assert_eq!(d.label_keys.len(), m.label_values.len(), "{}: keys and values pair up", m.name);
    d.label_keys.iter().map(String::as_str).zip(m.label_values.iter().map(String::as_str)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_rpcs_psi_and_pod_cpu_rate() {
    let (_reg, d, image) = host_network_env("").await;
    let mut rt = d.runtime().await;
    let pc = host_network_pod_config("metrics", &d.dir.path().join("logs/metrics"));
    let pod = run_pod(&d, pc.clone()).await.expect("RunPodSandbox");
    // Two seconds of CPU, then idle: whole CPU seconds to count.
    let busy = start(&d, &pod, &pc, container_config("busy", &image, "timeout 2 sh -c 'while :; do :; done'; exec sleep 1000")).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    let descriptors =
        rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest {}).await.expect("ListMetricDescriptors").into_inner().descriptors;
    let by_name: std::collections::HashMap<_, _> = descriptors.iter().map(|d| (d.name.as_str(), d)).collect();
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_processes",
    ] {
        assert!(by_name.contains_key(name), "{name} described");
    }
    let metrics =
        rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {}).await.expect("ListPodSandboxMetrics").into_inner().pod_metrics;
    let ours = metrics.iter().find(|m| m.pod_sandbox_id == pod).expect("the pod's metrics");
    for m in ours.metrics.iter().chain(ours.container_metrics.iter().flat_map(|c| &c.metrics)) {
        let d = by_name.get(m.name.as_str()).unwrap_or_else(|| panic!("{} has a descriptor", m.name));
        labelled(d, m);
    }
    let c = ours.container_metrics.iter().find(|c| c.container_id == busy).expect("the container's metrics");
    let cpu = c.metrics.iter().find(|m| m.name == "container_cpu_usage_seconds_total").expect("CPU seconds");
    let labels = labelled(by_name["container_cpu_usage_seconds_total"], cpu);
    assert_eq!((labels["container"], labels["pod"], labels["namespace"], labels["name"]), ("busy", "metrics", "default", busy.as_str()));
    assert!(cpu.value.unwrap().value >= 1, "two busy seconds: {cpu:?}");
    assert_eq!(cpu.metric_type, cri::MetricType::Counter as i32);
    let processes = c.metrics.iter().find(|m| m.name == "container_processes").expect("processes");
    assert_eq!(processes.value.unwrap().value, 1, "the sleep");

    // The stream gives the same pods, each once.
    let mut streamed = Vec::new();
    let mut s = rt.stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest {}).await.expect("StreamPodSandboxMetrics").into_inner();
    while let Some(r) = s.next().await {
        streamed.extend(r.unwrap().pod_sandbox_metrics.into_iter().map(|m| m.pod_sandbox_id));
    }
    assert_eq!(streamed.len(), metrics.len());
    assert!(streamed.contains(&pod));

    // PSI and IO where the container has a v2 cgroup with pressure files (this host: the
    // unified hierarchy); absent, never zero, where it has none.
    let stats = rt.container_stats(cri::ContainerStatsRequest { container_id: busy.clone() }).await.unwrap().into_inner().stats.unwrap();
    let has_psi = ["/sys/fs/cgroup/unified/cpu.pressure", "/sys/fs/cgroup/cpu.pressure"].iter().any(|p| std::path::Path::new(p).exists());
    let cpu_psi = stats.cpu.as_ref().unwrap().psi.as_ref();
    assert_eq!(cpu_psi.is_some(), has_psi, "{stats:?}");
    if let Some(psi) = cpu_psi {
        assert!(psi.some.as_ref().unwrap().total > 0, "two busy seconds on two cores wait for CPU at times: {psi:?}");
        assert!(stats.memory.as_ref().unwrap().psi.is_some() && stats.io.as_ref().unwrap().psi.is_some());
    } else {
        assert!(stats.io.is_none());
    }

    // The pod's CPU rate, from its second sample on (the metrics above took one already).
    let pod_cpu = |r: cri::PodSandboxStatsResponse| r.stats.unwrap().linux.unwrap().cpu.unwrap();
    pod_cpu(rt.pod_sandbox_stats(cri::PodSandboxStatsRequest { pod_sandbox_id: pod.clone() }).await.unwrap().into_inner());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let second = pod_cpu(rt.pod_sandbox_stats(cri::PodSandboxStatsRequest { pod_sandbox_id: pod.clone() }).await.unwrap().into_inner());
    assert!(second.usage_nano_cores.is_some(), "{second:?}");

    // ImageFsInfo: the containers' writable layers, apart from the image layers.
    let fs_info = || async { d.images().await.image_fs_info(cri::ImageFsInfoRequest {}).await.unwrap().into_inner() };
    let before = fs_info().await.container_filesystems[0].used_bytes.unwrap().value;
    let wrote = rt.exec_sync(sh(&busy, "dd if=/dev/zero of=/blob bs=1M count=4 2>/dev/null")).await.unwrap().into_inner();
    assert_eq!(wrote.exit_code, 0, "{wrote:?}");
    let info = fs_info().await;
    let after = info.container_filesystems[0].used_bytes.unwrap().value;
    assert!(after >= before + (4 << 20), "container filesystem {before} -> {after}");
    assert_eq!(info.image_filesystems[0].fs_id, info.container_filesystems[0].fs_id, "one filesystem under the root");

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}
