//! RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox.

use std::collections::{BTreeMap, HashMap};

use crate::cri::v1 as cri;
use tonic::Status;
use tracing::{Instrument, info_span, instrument};

use super::{Services, pod_status, to_the_end};
use crate::model::{Dns, PodSandbox, PodSpec, PodState};
use crate::network::cni::PortMapping;

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
        .map(|p| {
            let port = |field: &str, v: i32| {
                u16::try_from(v)
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| Status::invalid_argument(format!("config.port_mappings.{field}: {v} is not a port (1..=65535)")))
            };
            Ok(PortMapping {
                host_port: port("host_port", p.host_port)?,
                container_port: port("container_port", p.container_port)?,
                protocol: match p.protocol {
                    1 => "udp",
                    2 => "sctp",
                    _ => "tcp",
                }
                .into(),
                host_ip: p.host_ip,
            })
        })
        .collect::<Result<_, Status>>()?;
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
        resources: linux.resources.map(|r| super::container_config::resources(r, "config.linux.resources")).transpose()?,
        runtime_handler: req.runtime_handler,
        sysctls: linux.sysctls.into_iter().collect(),
    })
}

pub(super) fn metadata(p: &PodSandbox) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: p.spec.name.clone(),
        uid: p.spec.uid.clone(),
        namespace: p.spec.namespace.clone(),
        attempt: p.spec.attempt,
    }
}

pub(super) fn state(p: &PodSandbox) -> i32 {
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

pub async fn run_pod_sandbox(s: &Services, req: cri::RunPodSandboxRequest) -> Result<cri::RunPodSandboxResponse, Status> {
    let spec = to_spec(req)?;
    let span =
        info_span!("run_pod_sandbox", pod_name = %spec.name, pod_namespace = %spec.namespace, runtime_handler = %spec.runtime_handler);
    let id = s.pods.run_pod_once(spec).instrument(span).await.map_err(|e| pod_status(&e))?;
    Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
}

#[instrument(skip_all, fields(pod_sandbox_id = %req.pod_sandbox_id))]
pub async fn update_pod_sandbox_resources(
    s: &Services,
    req: cri::UpdatePodSandboxResourcesRequest,
) -> Result<cri::UpdatePodSandboxResourcesResponse, Status> {
    let convert = |r: Option<cri::LinuxContainerResources>, at: &str| r.map(|r| super::container_config::resources(r, at)).transpose();
    let resources = convert(req.resources, "resources")?;
    let overhead = convert(req.overhead, "overhead")?;
    let pods = s.pods.clone();
    to_the_end(async move { pods.update_resources(&req.pod_sandbox_id, resources, overhead).await }).await.map_err(|e| pod_status(&e))?;
    Ok(cri::UpdatePodSandboxResourcesResponse {})
}

#[instrument(skip_all, fields(pod_sandbox_id = %req.pod_sandbox_id))]
pub async fn stop_pod_sandbox(s: &Services, req: cri::StopPodSandboxRequest) -> Result<cri::StopPodSandboxResponse, Status> {
    let pods = s.pods.clone();
    to_the_end(async move { pods.stop_pod(&req.pod_sandbox_id).await }).await.map_err(|e| pod_status(&e))?;
    Ok(cri::StopPodSandboxResponse {})
}

#[instrument(skip_all, fields(pod_sandbox_id = %req.pod_sandbox_id))]
pub async fn remove_pod_sandbox(s: &Services, req: cri::RemovePodSandboxRequest) -> Result<cri::RemovePodSandboxResponse, Status> {
    let pods = s.pods.clone();
    to_the_end(async move { pods.remove_pod(&req.pod_sandbox_id).await }).await.map_err(|e| pod_status(&e))?;
    Ok(cri::RemovePodSandboxResponse {})
}

pub async fn pod_sandbox_status(s: &Services, req: cri::PodSandboxStatusRequest) -> Result<cri::PodSandboxStatusResponse, Status> {
    let p = s.pods.pod(&req.pod_sandbox_id).map_err(|e| pod_status(&e))?;
    let status = status_message(&p);
    let mut info = HashMap::new();
    let (mut containers_statuses, mut timestamp) = (Vec::new(), 0);
    if req.verbose {
        info.insert("info".to_string(), serde_json::to_string(&p).unwrap_or_default());
        // What the kubelet's evented PLEG reads: the pod's containers as of `timestamp`.
        timestamp = crate::model::now_nanos();
        let mut cs: Vec<_> = s.containers.list_records().into_iter().filter(|c| c.pod_id == p.id).collect();
        cs.sort_by_key(|c| c.created_at_nanos);
        containers_statuses = cs.iter().map(|c| super::containers::status_message(c)).collect();
    }
    Ok(cri::PodSandboxStatusResponse { status: Some(status), info, containers_statuses, timestamp })
}

/// The pods a filter selects, oldest first.
pub(super) fn listed_pods(s: &Services, filter: Option<cri::PodSandboxFilter>) -> Vec<PodSandbox> {
    let filter = filter.unwrap_or_default();
    let mut listed: Vec<_> = s
        .pods
        .list_pods()
        .into_iter()
        .filter(|p| filter.id.is_empty() || p.id.starts_with(&filter.id))
        .filter(|p| filter.state.as_ref().is_none_or(|st| st.state == state(p)))
        .filter(|p| selector_matches(&p.spec.labels, &filter.label_selector))
        .collect();
    listed.sort_by_key(|p| p.created_at_nanos);
    listed
}

/// A pod as ListPodSandbox lists it.
pub(super) fn listed(p: &PodSandbox) -> cri::PodSandbox {
    cri::PodSandbox {
        id: p.id.clone(),
        metadata: Some(metadata(p)),
        state: state(p),
        created_at: p.created_at_nanos,
        labels: to_hash_map(&p.spec.labels),
        annotations: to_hash_map(&p.spec.annotations),
        runtime_handler: p.spec.runtime_handler.clone(),
    }
}

pub async fn list_pod_sandbox(s: &Services, req: cri::ListPodSandboxRequest) -> Result<cri::ListPodSandboxResponse, Status> {
    let items = listed_pods(s, req.filter).iter().map(listed).collect();
    Ok(cri::ListPodSandboxResponse { items })
}
