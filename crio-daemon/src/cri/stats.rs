//! ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats, and the
//! kubelet's CRI metrics RPCs (ListMetricDescriptors, ListPodSandboxMetrics). One mapping of
//! a cgroup's use to CRI's messages serves containers and pods.

use crate::cri::v1 as cri;
use tonic::Status;

use super::containers::metadata as container_metadata;
use super::pods::{metadata as pod_metadata, selector_matches, to_hash_map};
use super::{Services, container_status, pod_status};
use crate::cgroups::Usage;
use crate::model::{ContainerState, PodState, now_nanos};
use crate::network::stats::InterfaceCounters;

fn u64v(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

fn cpu(timestamp: i64, u: &Usage, nano_cores: Option<u64>) -> cri::CpuUsage {
    // PSI is not read yet: absent, never zero.
    cri::CpuUsage { timestamp, usage_core_nano_seconds: u64v(u.cpu_nanos), usage_nano_cores: nano_cores.and_then(u64v), psi: None }
}

fn memory(timestamp: i64, u: &Usage) -> cri::MemoryUsage {
    cri::MemoryUsage {
        timestamp,
        working_set_bytes: u64v(u.memory_working_set),
        available_bytes: u.memory_limit.and_then(|l| u64v(l.saturating_sub(u.memory_working_set))),
        usage_bytes: u64v(u.memory_usage),
        rss_bytes: u64v(u.memory_rss),
        page_faults: u64v(u.page_faults),
        major_page_faults: u64v(u.major_page_faults),
        psi: None,
    }
}

fn interface(i: &InterfaceCounters) -> cri::NetworkInterfaceUsage {
    cri::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: u64v(i.rx_bytes),
        rx_errors: u64v(i.rx_errors),
        tx_bytes: u64v(i.tx_bytes),
        tx_errors: u64v(i.tx_errors),
    }
}

async fn container_stats_of(s: &Services, id: &str) -> Result<cri::ContainerStats, Status> {
    let (c, usage, nano_cores) = s.containers.container_stats(id).await.map_err(|e| container_status(&e))?;
    let timestamp = now_nanos();
    let upper = s.images.store().container_upper(&c.id);
    let (used_bytes, inodes) = tokio::task::spawn_blocking(move || crate::storage::unpack::tree_usage(&upper)).await.unwrap_or_default();
    let mountpoint = s.images.store().root().display().to_string();
    Ok(cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(container_metadata(&c)),
            labels: to_hash_map(&c.spec.labels),
            annotations: to_hash_map(&c.spec.annotations),
        }),
        cpu: usage.map(|u| cpu(timestamp, &u, nano_cores)),
        memory: usage.map(|u| memory(timestamp, &u)),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp,
            fs_id: Some(cri::FilesystemIdentifier { mountpoint }),
            used_bytes: u64v(used_bytes),
            inodes_used: u64v(inodes),
        }),
        ..Default::default()
    })
}

async fn pod_stats_of(s: &Services, id: &str) -> Result<cri::PodSandboxStats, Status> {
    let (p, usage, interfaces) = s.pods.pod_stats(id).await.map_err(|e| pod_status(&e))?;
    let timestamp = now_nanos();
    let mut containers = Vec::new();
    for c in s.pods.containers_of(&p.id).into_iter().filter(|c| c.state == ContainerState::Running) {
        // A container removed meanwhile is simply not listed.
        if let Ok(st) = container_stats_of(s, &c.id).await {
            containers.push(st);
        }
    }
    let network = (!interfaces.is_empty()).then(|| cri::NetworkUsage {
        timestamp,
        default_interface: interfaces.iter().find(|i| i.name == "eth0").or(interfaces.first()).map(interface),
        interfaces: interfaces.iter().map(interface).collect(),
    });
    Ok(cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: p.id.clone(),
            metadata: Some(pod_metadata(&p)),
            labels: to_hash_map(&p.spec.labels),
            annotations: to_hash_map(&p.spec.annotations),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: usage.map(|u| cpu(timestamp, &u, None)),
            memory: usage.map(|u| memory(timestamp, &u)),
            network,
            process: usage.map(|u| cri::ProcessUsage { timestamp, process_count: u64v(u.pids) }),
            containers,
            io: None,
        }),
        windows: None,
    })
}

pub async fn container_stats(s: &Services, req: cri::ContainerStatsRequest) -> Result<cri::ContainerStatsResponse, Status> {
    let stats = container_stats_of(s, &req.container_id).await?;
    Ok(cri::ContainerStatsResponse { stats: Some(stats) })
}

pub async fn list_container_stats(s: &Services, req: cri::ListContainerStatsRequest) -> Result<cri::ListContainerStatsResponse, Status> {
    let filter = req.filter.unwrap_or_default();
    let mut out = Vec::new();
    for c in s.containers.list_containers().await {
        let wanted = (filter.id.is_empty() || c.id.starts_with(&filter.id))
            && (filter.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&filter.pod_sandbox_id))
            && selector_matches(&c.spec.labels, &filter.label_selector)
            && c.state == ContainerState::Running;
        // A container removed meanwhile is simply not listed.
        if wanted && let Ok(st) = container_stats_of(s, &c.id).await {
            out.push(st);
        }
    }
    Ok(cri::ListContainerStatsResponse { stats: out })
}

pub async fn pod_sandbox_stats(s: &Services, req: cri::PodSandboxStatsRequest) -> Result<cri::PodSandboxStatsResponse, Status> {
    let stats = pod_stats_of(s, &req.pod_sandbox_id).await?;
    Ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
}

pub async fn list_pod_sandbox_stats(
    s: &Services,
    req: cri::ListPodSandboxStatsRequest,
) -> Result<cri::ListPodSandboxStatsResponse, Status> {
    let filter = req.filter.unwrap_or_default();
    let mut stats = Vec::new();
    for p in s.pods.list_pods() {
        let wanted = p.state == PodState::Ready
            && (filter.id.is_empty() || p.id.starts_with(&filter.id))
            && selector_matches(&p.spec.labels, &filter.label_selector);
        if wanted && let Ok(st) = pod_stats_of(s, &p.id).await {
            stats.push(st);
        }
    }
    Ok(cri::ListPodSandboxStatsResponse { stats })
}

pub async fn list_metric_descriptors(
    _s: &Services,
    _req: cri::ListMetricDescriptorsRequest,
) -> Result<cri::ListMetricDescriptorsResponse, Status> {
    Err(Status::unimplemented(
        "ListMetricDescriptors: CRI-sourced metrics are not implemented by this runtime yet; the kubelet falls back to cAdvisor",
    ))
}

pub async fn list_pod_sandbox_metrics(
    _s: &Services,
    _req: cri::ListPodSandboxMetricsRequest,
) -> Result<cri::ListPodSandboxMetricsResponse, Status> {
    Err(Status::unimplemented(
        "ListPodSandboxMetrics: CRI-sourced metrics are not implemented by this runtime yet; the kubelet falls back to cAdvisor",
    ))
}
