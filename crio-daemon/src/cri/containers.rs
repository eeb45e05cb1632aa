//! CreateContainer, StartContainer, StopContainer, RemoveContainer, ContainerStatus,
//! ListContainers, UpdateContainerResources, ReopenContainerLog, CheckpointContainer and
//! GetContainerEvents.

use std::collections::HashMap;

use crate::cri::v1 as cri;
use tonic::Status;
use tracing::{Instrument, info_span, instrument};

use super::container_config::{resources, to_spec};
use super::pods::{selector_matches, to_hash_map};
use super::{Services, container_status as status_of, to_the_end};
use crate::model::{Container, ContainerEvent, ContainerState, EventKind};

pub(super) fn state(c: &Container) -> i32 {
    (match c.state {
        ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
        ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
    }) as i32
}

pub(super) fn metadata(c: &Container) -> cri::ContainerMetadata {
    cri::ContainerMetadata { name: c.spec.name.clone(), attempt: c.spec.attempt }
}

/// The resources a container has now (as created, then as updated).
fn resources_message(r: &crate::model::Resources) -> cri::ContainerResources {
    cri::ContainerResources {
        linux: Some(cri::LinuxContainerResources {
            cpu_period: r.cpu_period as i64,
            cpu_quota: r.cpu_quota,
            cpu_shares: r.cpu_shares as i64,
            memory_limit_in_bytes: r.memory_limit,
            oom_score_adj: r.oom_score_adj,
            cpuset_cpus: r.cpuset_cpus.clone(),
            cpuset_mems: r.cpuset_mems.clone(),
            hugepage_limits: r
                .hugepages
                .iter()
                .map(|(page_size, limit)| cri::HugepageLimit { page_size: page_size.clone(), limit: *limit })
                .collect(),
            unified: r.unified.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            memory_swap_limit_in_bytes: r.memory_swap_limit,
        }),
        windows: None,
    }
}

pub(super) fn status_message(c: &Container) -> cri::ContainerStatus {
    let mounts = c
        .spec
        .mounts
        .iter()
        .map(|m| cri::Mount {
            container_path: m.container_path.display().to_string(),
            host_path: m.host_path.display().to_string(),
            readonly: m.readonly,
            selinux_relabel: m.selinux_relabel,
            propagation: match m.propagation.as_str() {
                "rslave" => cri::MountPropagation::PropagationHostToContainer as i32,
                "rshared" => cri::MountPropagation::PropagationBidirectional as i32,
                _ => cri::MountPropagation::PropagationPrivate as i32,
            },
            recursive_read_only: m.recursive_readonly,
            image: (!m.image.is_empty()).then(|| cri::ImageSpec { image: m.image.clone(), ..Default::default() }),
            image_sub_path: m.image_sub_path.clone(),
            ..Default::default()
        })
        .collect();
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: Some(metadata(c)),
        state: state(c),
        created_at: c.created_at_nanos,
        started_at: c.started_at_nanos,
        finished_at: c.finished_at_nanos,
        exit_code: c.exit_code,
        image: Some(cri::ImageSpec { image: c.spec.image.clone(), ..Default::default() }),
        image_ref: c.image_ref.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: to_hash_map(&c.spec.labels),
        annotations: to_hash_map(&c.spec.annotations),
        mounts,
        log_path: c.log_path.display().to_string(),
        image_id: c.image_id.clone(),
        stop_signal: crate::container::signal_name_of(c.stop_signal)
            .and_then(|n| cri::Signal::from_str_name(&n))
            .map_or(cri::Signal::RuntimeDefault as i32, |s| s as i32),
        resources: Some(resources_message(&c.spec.resources)),
        user: c.user.as_ref().map(|u| cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: i64::from(u.uid),
                gid: i64::from(u.gid),
                supplemental_groups: u.supplemental_groups.iter().map(|g| i64::from(*g)).collect(),
            }),
        }),
    }
}

pub async fn create_container(s: &Services, req: cri::CreateContainerRequest) -> Result<cri::CreateContainerResponse, Status> {
    let config = req.config.ok_or_else(|| Status::invalid_argument("config is required"))?;
    let spec = to_spec(config, s.config.crio.runtime.seccomp_use_default_when_empty)?;
    let span = info_span!("create_container", pod_sandbox_id = %req.pod_sandbox_id, container_name = %spec.name);
    let id = s.containers.create_container_once(&req.pod_sandbox_id, spec).instrument(span).await.map_err(|e| status_of(&e))?;
    Ok(cri::CreateContainerResponse { container_id: id })
}

#[instrument(skip_all, fields(container_id = %req.container_id))]
pub async fn start_container(s: &Services, req: cri::StartContainerRequest) -> Result<cri::StartContainerResponse, Status> {
    let containers = s.containers.clone();
    to_the_end(async move { containers.start_container(&req.container_id).await }).await.map_err(|e| status_of(&e))?;
    Ok(cri::StartContainerResponse {})
}

#[instrument(skip_all, fields(container_id = %req.container_id))]
pub async fn stop_container(s: &Services, req: cri::StopContainerRequest) -> Result<cri::StopContainerResponse, Status> {
    s.containers.stop_container(&req.container_id, super::container_config::timeout_secs(req.timeout)).await.map_err(|e| status_of(&e))?;
    Ok(cri::StopContainerResponse {})
}

#[instrument(skip_all, fields(container_id = %req.container_id))]
pub async fn remove_container(s: &Services, req: cri::RemoveContainerRequest) -> Result<cri::RemoveContainerResponse, Status> {
    let containers = s.containers.clone();
    to_the_end(async move { containers.remove_container(&req.container_id).await }).await.map_err(|e| status_of(&e))?;
    Ok(cri::RemoveContainerResponse {})
}

pub async fn container_status(s: &Services, req: cri::ContainerStatusRequest) -> Result<cri::ContainerStatusResponse, Status> {
    let c = s.containers.container(&req.container_id).await.map_err(|e| status_of(&e))?;
    let status = status_message(&c);
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("info".to_string(), serde_json::to_string(&c).unwrap_or_default());
        if let Some(p) = s.containers.pressure(&c) {
            info.insert("pressure".to_string(), serde_json::to_string(&p).unwrap_or_default());
        }
        if let Some(p) = &c.placement {
            info.insert("placement".to_string(), serde_json::to_string(p).unwrap_or_default());
        }
        if let Some(r) = s.kernel.sched_report(&c.id) {
            info.insert("scheduling".to_string(), serde_json::to_string(&r).unwrap_or_default());
        }
    }
    Ok(cri::ContainerStatusResponse { status: Some(status), info })
}

/// The containers a filter selects, oldest first (shared snapshots).
pub(super) async fn listed_containers(s: &Services, filter: Option<cri::ContainerFilter>) -> Vec<std::sync::Arc<Container>> {
    let filter = filter.unwrap_or_default();
    let mut listed: Vec<_> = s
        .containers
        .list_containers()
        .await
        .into_iter()
        .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
        .filter(|c| filter.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&filter.pod_sandbox_id))
        .filter(|c| filter.state.as_ref().is_none_or(|st| st.state == state(c)))
        .filter(|c| selector_matches(&c.spec.labels, &filter.label_selector))
        .collect();
    listed.sort_by_key(|c| c.created_at_nanos);
    listed
}

/// A container as ListContainers lists it: only what the answer carries is copied.
pub(super) fn listed(c: &Container) -> cri::Container {
    cri::Container {
        metadata: Some(metadata(c)),
        state: state(c),
        id: c.id.clone(),
        pod_sandbox_id: c.pod_id.clone(),
        image: Some(cri::ImageSpec { image: c.spec.image.clone(), ..Default::default() }),
        image_ref: c.image_ref.clone(),
        created_at: c.created_at_nanos,
        labels: to_hash_map(&c.spec.labels),
        annotations: to_hash_map(&c.spec.annotations),
        image_id: c.image_id.clone(),
    }
}

pub async fn list_containers(s: &Services, req: cri::ListContainersRequest) -> Result<cri::ListContainersResponse, Status> {
    let containers = listed_containers(s, req.filter).await.iter().map(|c| listed(c)).collect();
    Ok(cri::ListContainersResponse { containers })
}

#[instrument(skip_all, fields(container_id = %req.container_id))]
pub async fn update_container_resources(
    s: &Services,
    req: cri::UpdateContainerResourcesRequest,
) -> Result<cri::UpdateContainerResourcesResponse, Status> {
    let r = req.linux.ok_or_else(|| Status::invalid_argument("linux resources are required"))?;
    let (containers, resources) = (s.containers.clone(), resources(r, "linux")?);
    to_the_end(async move { containers.update_resources(&req.container_id, &resources).await }).await.map_err(|e| status_of(&e))?;
    Ok(cri::UpdateContainerResourcesResponse {})
}

#[instrument(skip_all, fields(container_id = %req.container_id))]
pub async fn reopen_container_log(s: &Services, req: cri::ReopenContainerLogRequest) -> Result<cri::ReopenContainerLogResponse, Status> {
    s.containers.reopen_log(&req.container_id).await.map_err(|e| status_of(&e))?;
    Ok(cri::ReopenContainerLogResponse {})
}

/// CRIU must be installed and work on this kernel; when it does not, FailedPrecondition says
/// what is missing. The archive holds CRIU's images, `spec.dump` and `config.dump`.
#[instrument(skip_all, fields(container_id = %req.container_id))]
pub async fn checkpoint_container(s: &Services, req: cri::CheckpointContainerRequest) -> Result<cri::CheckpointContainerResponse, Status> {
    s.containers.checkpoint(&req.container_id, &req.location).await.map_err(|e| status_of(&e))?;
    Ok(cri::CheckpointContainerResponse {})
}

pub fn get_container_events(s: &Services, _req: cri::GetEventsRequest) -> EventStream {
    events(s)
}

pub type EventStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send + 'static>>;

async fn event_message(s: &Services, ev: ContainerEvent) -> cri::ContainerEventResponse {
    let kind = match ev.kind {
        EventKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
        EventKind::Started => cri::ContainerEventType::ContainerStartedEvent,
        EventKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent,
        EventKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent,
    };
    let pod_sandbox_status = s.pods.pod(&ev.pod_id).ok().map(|p| super::pods::status_message(&p));
    let containers_statuses = s.pods.containers_of(&ev.pod_id).iter().map(status_message).collect();
    cri::ContainerEventResponse {
        container_id: ev.container_id,
        container_event_type: kind as i32,
        created_at: ev.at_nanos,
        pod_sandbox_status,
        containers_statuses,
    }
}

/// Every container event from now on. A subscriber that falls behind by more than the buffer
/// gets RESOURCE_EXHAUSTED naming how many it lost, and its stream ends; others go on.
fn events(s: &Services) -> EventStream {
    let rx = s.containers.subscribe();
    Box::pin(futures::stream::unfold(Some((rx, s.clone())), |state| async move {
        let (mut rx, s) = state?;
        match rx.recv().await {
            Ok(ev) => Some((Ok(event_message(&s, ev).await), Some((rx, s)))),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(dropped = n, "a container event subscriber fell behind");
                Some((Err(Status::resource_exhausted(format!("subscriber too slow: {n} container events dropped; subscribe again"))), None))
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    }))
}
