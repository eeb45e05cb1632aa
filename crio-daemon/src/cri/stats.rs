//! ContainerStats, ListContainerStats, PodSandboxStats and ListPodSandboxStats. One mapping of
//! a cgroup's sample (use, CPU rate, PSI) to CRI's messages serves containers and pods; PSI
//! and IO are absent, never zero, where the host keeps no PSI for the cgroup.

use crate::cri::v1 as cri;
use futures::{StreamExt, TryStreamExt};
use tonic::Status;

use super::containers::metadata as container_metadata;
use super::pods::{metadata as pod_metadata, selector_matches, to_hash_map};
use super::{Services, container_status, pod_status};
use crate::cgroups::Usage;
use crate::cgroups::pressure::Resource;
use crate::container::{ContainerSample, Sample};
use crate::model::{ContainerState, PodState, now_nanos};
use crate::network::stats::InterfaceCounters;

fn u64v(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

/// PSI of one resource; the kernel's totals are microseconds, the CRI's nanoseconds.
fn psi(r: Option<&Resource>) -> Option<cri::PsiStats> {
    let data = |s: &crate::cgroups::pressure::Stall| cri::PsiData {
        total: s.total.saturating_mul(1000),
        avg10: s.avg10,
        avg60: s.avg60,
        avg300: s.avg300,
    };
    r.map(|r| cri::PsiStats { full: r.full.as_ref().map(data), some: Some(data(&r.some)) })
}

fn cpu(timestamp: i64, u: &Usage, s: &Sample) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp,
        usage_core_nano_seconds: u64v(u.cpu_nanos),
        usage_nano_cores: s.nano_cores.and_then(u64v),
        psi: psi(s.pressure.as_ref().and_then(|p| p.cpu.as_ref())),
    }
}

fn io(timestamp: i64, s: &Sample) -> Option<cri::IoUsage> {
    let psi = psi(s.pressure.as_ref().and_then(|p| p.io.as_ref()))?;
    Some(cri::IoUsage { timestamp, psi: Some(psi) })
}

fn memory(timestamp: i64, u: &Usage, s: &Sample) -> cri::MemoryUsage {
    cri::MemoryUsage {
        timestamp,
        working_set_bytes: u64v(u.memory_working_set),
        available_bytes: u.memory_limit.and_then(|l| u64v(l.saturating_sub(u.memory_working_set))),
        usage_bytes: u64v(u.memory_usage),
        rss_bytes: u64v(u.memory_rss),
        page_faults: u64v(u.page_faults),
        major_page_faults: u64v(u.major_page_faults),
        psi: psi(s.pressure.as_ref().and_then(|p| p.memory.as_ref())),
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

fn to_cri(s: &Services, cs: ContainerSample) -> cri::ContainerStats {
    let ContainerSample { container: c, sample, layer } = cs;
    let timestamp = now_nanos();
    let mountpoint = s.images.store().root().display().to_string();
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(container_metadata(&c)),
            labels: to_hash_map(&c.spec.labels),
            annotations: to_hash_map(&c.spec.annotations),
        }),
        cpu: sample.usage.map(|u| cpu(timestamp, &u, &sample)),
        memory: sample.usage.map(|u| memory(timestamp, &u, &sample)),
        io: io(timestamp, &sample),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp,
            fs_id: Some(cri::FilesystemIdentifier { mountpoint }),
            used_bytes: u64v(layer.bytes),
            inodes_used: u64v(layer.inodes),
        }),
        ..Default::default()
    }
}

pub(super) async fn container_stats_of(s: &Services, id: &str) -> Result<cri::ContainerStats, Status> {
    let sampled = s.containers.container_stats(id).await.map_err(|e| container_status(&e))?;
    Ok(to_cri(s, sampled))
}

/// Containers sampled per blocking trip; trips run side by side, as many as the node has
/// CPUs (a trip is mostly the kernel formatting cgroup files, ~15 us each, a dozen per
/// container).
const PER_TRIP: usize = 16;

/// How many samplings run at once: one per CPU.
pub(super) fn width() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Stats of the containers of `ids` that still exist (a container removed meanwhile is
/// simply not listed), in the order asked.
pub(super) async fn containers_stats_of(s: &Services, ids: &[String]) -> Result<Vec<cri::ContainerStats>, Status> {
    let chunks: Vec<Vec<String>> = ids.chunks(PER_TRIP).map(<[String]>::to_vec).collect();
    let trips = chunks.into_iter().map(|chunk| async move { s.containers.containers_stats(&chunk).await });
    let trips = futures::stream::iter(trips).buffered(width());
    let sampled: Vec<_> = trips.try_collect().await.map_err(|e| container_status(&e))?;
    Ok(sampled.into_iter().flatten().map(|cs| to_cri(s, cs)).collect())
}

pub(super) async fn pod_stats_of(s: &Services, id: &str) -> Result<cri::PodSandboxStats, Status> {
    let (p, sample, interfaces) = s.pods.pod_stats(id).await.map_err(|e| pod_status(&e))?;
    let timestamp = now_nanos();
    let running: Vec<String> =
        s.pods.containers_of(&p.id).into_iter().filter(|c| c.state == ContainerState::Running).map(|c| c.id).collect();
    let containers = containers_stats_of(s, &running).await?;
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
            cpu: sample.usage.map(|u| cpu(timestamp, &u, &sample)),
            memory: sample.usage.map(|u| memory(timestamp, &u, &sample)),
            network,
            process: sample.usage.map(|u| cri::ProcessUsage { timestamp, process_count: u64v(u.pids) }),
            containers,
            io: io(timestamp, &sample),
        }),
        windows: None,
    })
}

pub async fn container_stats(s: &Services, req: cri::ContainerStatsRequest) -> Result<cri::ContainerStatsResponse, Status> {
    let stats = container_stats_of(s, &req.container_id).await?;
    Ok(cri::ContainerStatsResponse { stats: Some(stats) })
}

/// The running containers a filter selects.
pub(super) async fn listed_containers(s: &Services, filter: Option<cri::ContainerStatsFilter>) -> Vec<String> {
    let filter = filter.unwrap_or_default();
    let mut ids = Vec::new();
    for c in s.containers.list_containers().await {
        let wanted = (filter.id.is_empty() || c.id.starts_with(&filter.id))
            && (filter.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&filter.pod_sandbox_id))
            && selector_matches(&c.spec.labels, &filter.label_selector)
            && c.state == ContainerState::Running;
        if wanted {
            ids.push(c.id.clone());
        }
    }
    ids
}

pub async fn list_container_stats(s: &Services, req: cri::ListContainerStatsRequest) -> Result<cri::ListContainerStatsResponse, Status> {
    let stats = containers_stats_of(s, &listed_containers(s, req.filter).await).await?;
    Ok(cri::ListContainerStatsResponse { stats })
}

pub async fn pod_sandbox_stats(s: &Services, req: cri::PodSandboxStatsRequest) -> Result<cri::PodSandboxStatsResponse, Status> {
    let stats = pod_stats_of(s, &req.pod_sandbox_id).await?;
    Ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
}

/// The ready pods a filter selects.
pub(super) fn listed_pods(s: &Services, filter: Option<cri::PodSandboxStatsFilter>) -> Vec<String> {
    let filter = filter.unwrap_or_default();
    s.pods
        .list_pods()
        .into_iter()
        .filter(|p| {
            p.state == PodState::Ready
                && (filter.id.is_empty() || p.id.starts_with(&filter.id))
                && selector_matches(&p.spec.labels, &filter.label_selector)
        })
        .map(|p| p.id)
        .collect()
}

pub async fn list_pod_sandbox_stats(
    s: &Services,
    req: cri::ListPodSandboxStatsRequest,
) -> Result<cri::ListPodSandboxStatsResponse, Status> {
    let ids = listed_pods(s, req.filter);
    let each = futures::stream::iter(ids.into_iter().map(|id| async move { pod_stats_of(s, &id).await })).buffered(width());
    // A pod removed meanwhile is simply not listed.
    let stats = each.filter_map(|r| std::future::ready(r.ok())).collect().await;
    Ok(cri::ListPodSandboxStatsResponse { stats })
}
