//! Pod network usage in PodSandboxStats, counted by the kernel's cgroup_skb programs on each
//! pod's cgroup: what the pod's own processes send and receive (host-network pods too), kept
//! when a container goes.

mod common;

use common::Daemon;
use common::pods::*;
use crio::cri::v1 as cri;

const SIZE: u64 = 4 << 20;

async fn finished(d: &Daemon, pod: &str, pc: &cri::PodSandboxConfig, name: &str, image: &str, script: &str) -> String {
    let id = create(d, pod, pc, container_config(name, image, script)).await.expect("CreateContainer");
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
    let st = wait_state(d, &id, cri::ContainerState::ContainerExited).await;
    assert_eq!(st.exit_code, 0, "{name} failed");
    id
}

async fn usage(d: &Daemon, pod: &str) -> cri::NetworkInterfaceUsage {
    let stats = d.runtime().await.pod_sandbox_stats(cri::PodSandboxStatsRequest { pod_sandbox_id: pod.into() }).await.unwrap();
    stats.into_inner().stats.unwrap().linux.unwrap().network.expect("network usage").default_interface.expect("a default interface")
}

/// Payload plus TCP/IP headers: at least the payload, within 10%.
fn about(bytes: Option<cri::UInt64Value>) -> bool {
    bytes.is_some_and(|b| b.value >= SIZE && b.value < SIZE * 11 / 10)
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_are_charged_for_their_own_traffic() {
    let e = env(1).await;
    let d = &e.d;
    let logs = d.dir.path().join("logs");
    let server_pc = pod_config("server", &logs.join("server"));
    let server = run_pod(d, server_pc.clone()).await.unwrap();
    let serve = format!(
        "mkdir -p /www && dd if=/dev/zero of=/www/blob bs=65536 count={} 2>/dev/null && exec httpd -f -p 8080 -h /www",
        SIZE / 65536
    );
    let httpd = create(d, &server, &server_pc, container_config("httpd", &e.image, &serve)).await.unwrap();
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: httpd.clone() }).await.unwrap();
    let req = cri::PodSandboxStatusRequest { pod_sandbox_id: server.clone(), verbose: false };
    let ip = d.runtime().await.pod_sandbox_status(req).await.unwrap().into_inner().status.unwrap().network.unwrap().ip;
    let fetch = format!("until wget -q -O /dev/null http://{ip}:8080/blob; do sleep 0.05; done");

    let client_pc = pod_config("client", &logs.join("client"));
    let client = run_pod(d, client_pc.clone()).await.unwrap();
    let wget = finished(d, &client, &client_pc, "wget", &e.image, &fetch).await;
    let mut host_pc = pod_config("host", &logs.join("host"));
    host_pc.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption { network: 2, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let host = run_pod(d, host_pc.clone()).await.unwrap();
    finished(d, &host, &host_pc, "wget", &e.image, &fetch).await;

    let sent = usage(d, &server).await;
    assert_eq!(sent.name, "eth0");
    assert!(
        sent.tx_bytes.as_ref().is_some_and(|b| b.value >= 2 * SIZE && b.value < 2 * SIZE * 11 / 10),
        "served twice: {sent:?} {}",
        d.log().lines().filter(|l| l.contains("WARN")).collect::<Vec<_>>().join("\n")
    );
    let got = usage(d, &client).await;
    assert!(about(got.rx_bytes), "the client pod received the blob: {got:?}");
    let host_got = usage(d, &host).await;
    assert!(about(host_got.rx_bytes), "a host-network pod is charged too: {host_got:?}");
    assert_ne!(host_got.name, "", "named after the host's interface");

    // A removed container's traffic stays the pod's.
    d.runtime().await.remove_container(cri::RemoveContainerRequest { container_id: wget }).await.unwrap();
    assert!(about(usage(d, &client).await.rx_bytes), "kept after the container is gone");
    let all = d.runtime().await.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None }).await.unwrap().into_inner().stats;
    assert_eq!(all.len(), 3);
    for id in [server, client, host] {
        d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id }).await.unwrap();
    }
}
