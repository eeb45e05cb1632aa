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
    let mut cc = container_config("stopper", &image, "trap 'exit 7' USR1; while true; do sleep 0.1; done");
    cc.stop_signal = cri::Signal::Sigusr1 as i32;
    let stopper = start(&d, &pod, &pc, cc).await;
    wait_state(&d, &stopper, cri::ContainerState::ContainerRunning).await;
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

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}
