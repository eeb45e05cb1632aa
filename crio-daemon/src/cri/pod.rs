//! RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox.

use std::collections::{BTreeMap, HashMap};

use k8s_cri::v1 as cri;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info_span};

use super::{Services, lifecycle_status};
use crate::network::cni::PortMapping;
use crate::sandbox::{Dns, PodSandbox, PodSpec, PodState};

/// NamespaceMode::POD: shared by the pod's containers.
const POD: i32 = 0;
/// NamespaceMode::CONTAINER: each container its own.
const CONTAINER: i32 = 1;
/// NamespaceMode::NODE: share the host's.
const NODE: i32 = 2;

fn to_spec(req: cri::RunPodSandboxRequest) -> Result<PodSpec, Status> {
    let config = req.config.ok_or_else(|| Status::invalid_argument("config is required"))?;
    let meta = config.metadata.ok_or_else(|| Status::invalid_argument("config.metadata is required"))?;
    let linux = config.linux.unwrap_or_default();
    let ns = linux.security_context.and_then(|s| s.namespace_options).unwrap_or_default();
    let dns = config.dns_config.map(|d| Dns { servers: d.servers, searches: d.searches, options: d.options }).unwrap_or_default();
    let port_mappings = config
        .port_mappings
        .into_iter()
        .filter(|p| p.host_port > 0)
        .map(|p| PortMapping {
            host_port: p.host_port as u16,
            container_port: p.container_port as u16,
            protocol: match p.protocol {
                1 => "udp",
                2 => "sctp",
                _ => "tcp",
            }
            .into(),
            host_ip: p.host_ip,
        })
        .collect();
    Ok(PodSpec {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        attempt: meta.attempt,
        hostname: config.hostname,
        log_directory: config.log_directory.into(),
        dns,
        port_mappings,
        labels: config.labels.into_iter().collect(),
        annotations: config.annotations.into_iter().collect(),
        host_network: ns.network == NODE,
        host_ipc: ns.ipc == NODE,
        host_pid: ns.pid == NODE,
        share_pid: ns.pid == POD,
        cgroup_parent: linux.cgroup_parent,
        resources: linux.resources.map(super::container::resources),
        runtime_handler: req.runtime_handler,
        sysctls: linux.sysctls.into_iter().collect(),
    })
}

fn metadata(p: &PodSandbox) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: p.spec.name.clone(),
        uid: p.spec.uid.clone(),
        namespace: p.spec.namespace.clone(),
        attempt: p.spec.attempt,
    }
}

fn state(p: &PodSandbox) -> i32 {
    match p.state {
        PodState::Ready => cri::PodSandboxState::SandboxReady as i32,
        PodState::NotReady => cri::PodSandboxState::SandboxNotready as i32,
    }
}

pub(super) fn to_hash_map(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(super) fn selector_matches(labels: &BTreeMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub async fn run(s: &Services, req: Request<cri::RunPodSandboxRequest>) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
    let spec = to_spec(req.into_inner())?;
    let span =
        info_span!("run_pod_sandbox", pod_name = %spec.name, pod_namespace = %spec.namespace, runtime_handler = %spec.runtime_handler);
    let id = s.lifecycle.run_pod_once(spec).instrument(span).await.map_err(|e| lifecycle_status(&e))?;
    Ok(Response::new(cri::RunPodSandboxResponse { pod_sandbox_id: id }))
}

pub async fn stop(s: &Services, req: Request<cri::StopPodSandboxRequest>) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
    let id = req.into_inner().pod_sandbox_id;
    s.lifecycle.stop_pod(&id).instrument(info_span!("stop_pod_sandbox", pod_sandbox_id = %id)).await.map_err(|e| lifecycle_status(&e))?;
    Ok(Response::new(cri::StopPodSandboxResponse {}))
}

pub async fn remove(s: &Services, req: Request<cri::RemovePodSandboxRequest>) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
    let id = req.into_inner().pod_sandbox_id;
    s.lifecycle
        .remove_pod(&id)
        .instrument(info_span!("remove_pod_sandbox", pod_sandbox_id = %id))
        .await
        .map_err(|e| lifecycle_status(&e))?;
    Ok(Response::new(cri::RemovePodSandboxResponse {}))
}

pub(super) fn status_message(p: &PodSandbox) -> cri::PodSandboxStatus {
    let mode = |host: bool| if host { NODE } else { 0 };
    cri::PodSandboxStatus {
        id: p.id.clone(),
        metadata: Some(metadata(p)),
        state: state(p),
        created_at: p.created_at_nanos,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: p.ips.first().cloned().unwrap_or_default(),
            additional_ips: p.ips.iter().skip(1).map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: mode(p.spec.host_network),
                    pid: if p.spec.share_pid {
                        POD
                    } else if p.spec.host_pid {
                        NODE
                    } else {
                        CONTAINER
                    },
                    ipc: mode(p.spec.host_ipc),
                    ..Default::default()
                }),
            }),
        }),
        labels: to_hash_map(&p.spec.labels),
        annotations: to_hash_map(&p.spec.annotations),
        runtime_handler: p.spec.runtime_handler.clone(),
    }
}

pub async fn status(s: &Services, req: Request<cri::PodSandboxStatusRequest>) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
    let req = req.into_inner();
    let p = s.lifecycle.pod(&req.pod_sandbox_id).map_err(|e| lifecycle_status(&e))?;
    let status = status_message(&p);
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("info".to_string(), serde_json::to_string(&p).unwrap_or_default());
    }
    Ok(Response::new(cri::PodSandboxStatusResponse { status: Some(status), info, ..Default::default() }))
}

pub async fn list(s: &Services, req: Request<cri::ListPodSandboxRequest>) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
    let filter = req.into_inner().filter.unwrap_or_default();
    let mut items: Vec<cri::PodSandbox> = s
        .lifecycle
        .pods
        .all()
        .into_iter()
        .map(|e| e.get())
        .filter(|p| filter.id.is_empty() || p.id.starts_with(&filter.id))
        .filter(|p| filter.state.as_ref().is_none_or(|st| st.state == state(p)))
        .filter(|p| selector_matches(&p.spec.labels, &filter.label_selector))
        .map(|p| cri::PodSandbox {
            id: p.id.clone(),
            metadata: Some(metadata(&p)),
            state: state(&p),
            created_at: p.created_at_nanos,
            labels: to_hash_map(&p.spec.labels),
            annotations: to_hash_map(&p.spec.annotations),
            runtime_handler: p.spec.runtime_handler.clone(),
        })
        .collect();
    items.sort_by_key(|p| p.created_at);
    Ok(Response::new(cri::ListPodSandboxResponse { items }))
}

async fn stats_of(s: &Services, id: &str) -> Result<cri::PodSandboxStats, Status> {
    use super::container::u64v;
    let (p, usage, interfaces) = s.lifecycle.pod_stats(id).await.map_err(|e| lifecycle_status(&e))?;
    let timestamp = crate::sandbox::now_nanos();
    let iface = |i: &crate::network::stats::InterfaceCounters| cri::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: u64v(i.rx_bytes),
        rx_errors: u64v(i.rx_errors),
        tx_bytes: u64v(i.tx_bytes),
        tx_errors: u64v(i.tx_errors),
    };
    let mut containers = Vec::new();
    for c in s.lifecycle.containers_of(&p.id).into_iter().filter(|c| c.state == crate::container::ContainerState::Running) {
        if let Ok(st) = super::container::stats_of(s, &c.id).await {
            containers.push(st);
        }
    }
    let network = (!interfaces.is_empty()).then(|| cri::NetworkUsage {
        timestamp,
        default_interface: interfaces.iter().find(|i| i.name == "eth0").or(interfaces.first()).map(iface),
        interfaces: interfaces.iter().map(iface).collect(),
    });
    Ok(cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: p.id.clone(),
            metadata: Some(metadata(&p)),
            labels: to_hash_map(&p.spec.labels),
            annotations: to_hash_map(&p.spec.annotations),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: usage.map(|u| cri::CpuUsage { timestamp, usage_core_nano_seconds: u64v(u.cpu_nanos), usage_nano_cores: None }),
            memory: usage.map(|u| cri::MemoryUsage {
                timestamp,
                working_set_bytes: u64v(u.memory_working_set),
                usage_bytes: u64v(u.memory_usage),
                rss_bytes: u64v(u.memory_rss),
                page_faults: u64v(u.page_faults),
                major_page_faults: u64v(u.major_page_faults),
                available_bytes: None,
            }),
            network,
            process: usage.map(|u| cri::ProcessUsage { timestamp, process_count: u64v(u.pids) }),
            containers,
        }),
        windows: None,
    })
}

pub async fn pod_stats(s: &Services, req: Request<cri::PodSandboxStatsRequest>) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
    let stats = stats_of(s, &req.into_inner().pod_sandbox_id).await?;
    Ok(Response::new(cri::PodSandboxStatsResponse { stats: Some(stats) }))
}

pub async fn list_pod_stats(
    s: &Services,
    req: Request<cri::ListPodSandboxStatsRequest>,
) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
    let filter = req.into_inner().filter.unwrap_or_default();
    let mut stats = Vec::new();
    for p in s.lifecycle.pods.all().into_iter().map(|e| e.get()) {
        let wanted = p.state == PodState::Ready
            && (filter.id.is_empty() || p.id.starts_with(&filter.id))
            && selector_matches(&p.spec.labels, &filter.label_selector);
        if wanted && let Ok(st) = stats_of(s, &p.id).await {
            stats.push(st);
        }
    }
    Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
}
