//! CreateContainer, StartContainer, StopContainer, RemoveContainer, ContainerStatus,
//! ListContainers, ReopenContainerLog.

use k8s_cri::v1 as cri;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info_span};

use super::pod::{selector_matches, to_hash_map};
use super::{Services, lifecycle_status};
use crate::container::{Container, ContainerSpec, ContainerState, MountSpec, PidMode, Resources, Security};

#[expect(deprecated, reason = "older kubelets still send seccomp_profile_path")]
fn to_spec(config: cri::ContainerConfig, default_when_empty: bool) -> Result<ContainerSpec, Status> {
    let meta = config.metadata.ok_or_else(|| Status::invalid_argument("config.metadata is required"))?;
    let image = config
        .image
        .map(|i| i.image)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Status::invalid_argument("config.image.image is required"))?;
    let linux = config.linux.unwrap_or_default();
    let sec = linux.security_context.unwrap_or_default();
    let pid_mode = match sec.namespace_options.as_ref().map(|n| (n.pid, n.target_id.clone())) {
        None | Some((0, _)) => PidMode::Pod,
        Some((1, _)) => PidMode::Container,
        Some((2, _)) => PidMode::Node,
        Some((3, target)) if !target.is_empty() => PidMode::Target(target),
        Some((3, _)) => {
            return Err(Status::invalid_argument("config.linux.security_context.namespace_options.target_id is required for TARGET"));
        }
        Some((other, _)) => {
            return Err(Status::invalid_argument(format!("config.linux.security_context.namespace_options.pid: unknown mode {other}")));
        }
    };
    // A group alone names no user to run as (the kubelet refuses it too).
    if sec.run_as_group.is_some() && sec.run_as_user.is_none() && sec.run_as_username.is_empty() {
        return Err(Status::invalid_argument("config.linux.security_context.run_as_group is set without run_as_user or run_as_username"));
    }
    let caps = sec.capabilities.clone().unwrap_or_default();
    let wants_apparmor = sec.apparmor.as_ref().is_some_and(|p| p.profile_type != 1) || !sec.apparmor_profile.is_empty();
    if wants_apparmor && !std::path::Path::new("/sys/kernel/security/apparmor").exists() {
        tracing::info!(container = %meta.name, "AppArmor requested but this host has no AppArmor; running without it");
    }
    if sec.selinux_options.as_ref().is_some_and(|o| !o.r#type.is_empty() || !o.level.is_empty())
        && !std::path::Path::new("/sys/fs/selinux/enforce").exists()
    {
        tracing::info!(container = %meta.name, "SELinux options requested but this host has no SELinux; ignored");
    }
    let res = linux.resources.unwrap_or_default();
    let mounts = config
        .mounts
        .into_iter()
        .map(|m| MountSpec {
            container_path: m.container_path.into(),
            host_path: m.host_path.into(),
            readonly: m.readonly,
            propagation: match m.propagation {
                1 => "rslave",
                2 => "rshared",
                _ => "private",
            }
            .into(),
            selinux_relabel: m.selinux_relabel,
        })
        .collect();
    Ok(ContainerSpec {
        name: meta.name,
        attempt: meta.attempt,
        image,
        command: config.command,
        args: config.args,
        working_dir: config.working_dir,
        envs: config.envs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        mounts,
        devices: config
            .devices
            .into_iter()
            .map(|d| crate::container::DeviceSpec {
                container_path: d.container_path.into(),
                host_path: d.host_path.into(),
                permissions: d.permissions,
            })
            .collect(),
        labels: config.labels.into_iter().collect(),
        annotations: config.annotations.into_iter().collect(),
        log_path: config.log_path,
        tty: config.tty,
        stdin: config.stdin,
        security: Security {
            run_as_user: sec.run_as_user.map(|v| v.value),
            run_as_group: sec.run_as_group.map(|v| v.value),
            run_as_username: sec.run_as_username,
            readonly_rootfs: sec.readonly_rootfs,
            privileged: sec.privileged,
            add_capabilities: caps.add_capabilities,
            drop_capabilities: caps.drop_capabilities,
            no_new_privs: sec.no_new_privs,
            supplemental_groups: sec.supplemental_groups,
            seccomp: seccomp_profile(sec.seccomp, &sec.seccomp_profile_path, default_when_empty)?,
            masked_paths: sec.masked_paths,
            readonly_paths: sec.readonly_paths,
        },
        resources: resources(res),
        pid_mode,
    })
}

/// CRI's seccomp request: the structured field, else the deprecated path string
/// (`runtime/default`, `docker/default`, `unconfined`, `localhost/<path>`); nothing at all is
/// RuntimeDefault or unconfined as `seccomp_use_default_when_empty` says.
fn seccomp_profile(
    profile: Option<cri::SecurityProfile>,
    legacy: &str,
    default_when_empty: bool,
) -> Result<crate::container::seccomp::Profile, Status> {
    use crate::container::seccomp::Profile;
    if let Some(p) = profile {
        return match p.profile_type {
            0 => Ok(Profile::RuntimeDefault),
            1 => Ok(Profile::Unconfined),
            2 => Ok(Profile::Localhost(p.localhost_ref)),
            other => Err(Status::invalid_argument(format!("config.linux.security_context.seccomp: unknown profile type {other}"))),
        };
    }
    Ok(match legacy {
        "" if default_when_empty => Profile::RuntimeDefault,
        "" => Profile::Unconfined,
        "runtime/default" | "docker/default" => Profile::RuntimeDefault,
        "unconfined" => Profile::Unconfined,
        other => match other.strip_prefix("localhost/") {
            Some(path) => Profile::Localhost(path.into()),
            None => {
                return Err(Status::invalid_argument(format!(
                    "config.linux.security_context.seccomp_profile_path: {other:?} is not a known profile"
                )));
            }
        },
    })
}

/// CRI resources to ours, for CreateContainer and UpdateContainerResources alike.
pub(super) fn resources(r: cri::LinuxContainerResources) -> Resources {
    Resources {
        cpu_shares: r.cpu_shares.max(0) as u64,
        cpu_quota: r.cpu_quota,
        cpu_period: r.cpu_period.max(0) as u64,
        memory_limit: r.memory_limit_in_bytes,
        cpuset_cpus: r.cpuset_cpus,
        cpuset_mems: r.cpuset_mems,
        oom_score_adj: r.oom_score_adj,
        memory_swap_limit: r.memory_swap_limit_in_bytes,
        hugepages: r.hugepage_limits.into_iter().map(|h| (h.page_size, h.limit)).collect(),
        unified: r.unified.into_iter().collect(),
    }
}

fn state(c: &Container) -> i32 {
    (match c.state {
        ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
        ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
    }) as i32
}

fn metadata(c: &Container) -> cri::ContainerMetadata {
    cri::ContainerMetadata { name: c.spec.name.clone(), attempt: c.spec.attempt }
}

pub async fn create(s: &Services, req: Request<cri::CreateContainerRequest>) -> Result<Response<cri::CreateContainerResponse>, Status> {
    let req = req.into_inner();
    let config = req.config.ok_or_else(|| Status::invalid_argument("config is required"))?;
    let spec = to_spec(config, s.config.crio.runtime.seccomp_use_default_when_empty)?;
    let span = info_span!("create_container", pod_sandbox_id = %req.pod_sandbox_id, container_name = %spec.name);
    let id = s.lifecycle.create_container_once(&req.pod_sandbox_id, spec).instrument(span).await.map_err(|e| lifecycle_status(&e))?;
    Ok(Response::new(cri::CreateContainerResponse { container_id: id }))
}

pub async fn start(s: &Services, req: Request<cri::StartContainerRequest>) -> Result<Response<cri::StartContainerResponse>, Status> {
    let id = req.into_inner().container_id;
    s.lifecycle
        .start_container(&id)
        .instrument(info_span!("start_container", container_id = %id))
        .await
        .map_err(|e| lifecycle_status(&e))?;
    Ok(Response::new(cri::StartContainerResponse {}))
}

pub async fn stop(s: &Services, req: Request<cri::StopContainerRequest>) -> Result<Response<cri::StopContainerResponse>, Status> {
    let req = req.into_inner();
    let span = info_span!("stop_container", container_id = %req.container_id);
    s.lifecycle.stop_container(&req.container_id, req.timeout).instrument(span).await.map_err(|e| lifecycle_status(&e))?;
    Ok(Response::new(cri::StopContainerResponse {}))
}

pub async fn remove(s: &Services, req: Request<cri::RemoveContainerRequest>) -> Result<Response<cri::RemoveContainerResponse>, Status> {
    let id = req.into_inner().container_id;
    s.lifecycle
        .remove_container(&id)
        .instrument(info_span!("remove_container", container_id = %id))
        .await
        .map_err(|e| lifecycle_status(&e))?;
    Ok(Response::new(cri::RemoveContainerResponse {}))
}

pub async fn reopen_log(
    s: &Services,
    req: Request<cri::ReopenContainerLogRequest>,
) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
    let id = req.into_inner().container_id;
    s.lifecycle.reopen_log(&id).await.map_err(|e| lifecycle_status(&e))?;
    Ok(Response::new(cri::ReopenContainerLogResponse {}))
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
        ..Default::default()
    }
}

pub async fn status(s: &Services, req: Request<cri::ContainerStatusRequest>) -> Result<Response<cri::ContainerStatusResponse>, Status> {
    let req = req.into_inner();
    let c = s.lifecycle.container(&req.container_id).await.map_err(|e| lifecycle_status(&e))?;
    let status = status_message(&c);
    let mut info = std::collections::HashMap::new();
    if req.verbose {
        info.insert("info".to_string(), serde_json::to_string(&c).unwrap_or_default());
        if let Some(p) = s.lifecycle.pressure(&c) {
            info.insert("pressure".to_string(), serde_json::to_string(&p).unwrap_or_default());
        }
        if let Some(p) = &c.placement {
            info.insert("placement".to_string(), serde_json::to_string(p).unwrap_or_default());
        }
    }
    Ok(Response::new(cri::ContainerStatusResponse { status: Some(status), info }))
}

pub async fn list(s: &Services, req: Request<cri::ListContainersRequest>) -> Result<Response<cri::ListContainersResponse>, Status> {
    let filter = req.into_inner().filter.unwrap_or_default();
    let mut containers: Vec<cri::Container> = s
        .lifecycle
        .list_containers()
        .await
        .into_iter()
        .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
        .filter(|c| filter.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&filter.pod_sandbox_id))
        .filter(|c| filter.state.as_ref().is_none_or(|st| st.state == state(c)))
        .filter(|c| selector_matches(&c.spec.labels, &filter.label_selector))
        // Shared snapshots: only what the answer carries is copied.
        .map(|c| cri::Container {
            metadata: Some(metadata(&c)),
            state: state(&c),
            id: c.id.clone(),
            pod_sandbox_id: c.pod_id.clone(),
            image: Some(cri::ImageSpec { image: c.spec.image.clone(), ..Default::default() }),
            image_ref: c.image_ref.clone(),
            created_at: c.created_at_nanos,
            labels: c.spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            annotations: c.spec.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            image_id: c.image_id.clone(),
        })
        .collect();
    containers.sort_by_key(|c| c.created_at);
    Ok(Response::new(cri::ListContainersResponse { containers }))
}

pub async fn exec_sync(s: &Services, req: Request<cri::ExecSyncRequest>) -> Result<Response<cri::ExecSyncResponse>, Status> {
    let req = req.into_inner();
    let timeout = (req.timeout > 0).then(|| std::time::Duration::from_secs(req.timeout as u64));
    let span = info_span!("exec_sync", container_id = %req.container_id);
    let out = s.lifecycle.exec_sync(&req.container_id, &req.cmd, timeout).instrument(span).await.map_err(|e| lifecycle_status(&e))?;
    if out.timed_out {
        return Err(Status::deadline_exceeded(format!(
            "command {:?} in container {} timed out after {}s",
            req.cmd, req.container_id, req.timeout
        )));
    }
    Ok(Response::new(cri::ExecSyncResponse { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code }))
}

pub(super) fn u64v(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

pub(super) async fn stats_of(s: &Services, id: &str) -> Result<cri::ContainerStats, Status> {
    let (c, usage, nano_cores) = s.lifecycle.container_stats(id).await.map_err(|e| lifecycle_status(&e))?;
    let timestamp = crate::sandbox::now_nanos();
    let upper = s.images.store().container_upper(&c.id);
    let (used_bytes, inodes) = tokio::task::spawn_blocking(move || crate::storage::unpack::tree_usage(&upper)).await.unwrap_or_default();
    let mountpoint = s.images.store().root().display().to_string();
    Ok(cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(metadata(&c)),
            labels: to_hash_map(&c.spec.labels),
            annotations: to_hash_map(&c.spec.annotations),
        }),
        cpu: usage.map(|u| cri::CpuUsage {
            timestamp,
            usage_core_nano_seconds: u64v(u.cpu_nanos),
            usage_nano_cores: nano_cores.and_then(u64v),
        }),
        memory: usage.map(|u| cri::MemoryUsage {
            timestamp,
            working_set_bytes: u64v(u.memory_working_set),
            available_bytes: u.memory_limit.and_then(|l| u64v(l.saturating_sub(u.memory_working_set))),
            usage_bytes: u64v(u.memory_usage),
            rss_bytes: u64v(u.memory_rss),
            page_faults: u64v(u.page_faults),
            major_page_faults: u64v(u.major_page_faults),
        }),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp,
            fs_id: Some(cri::FilesystemIdentifier { mountpoint }),
            used_bytes: u64v(used_bytes),
            inodes_used: u64v(inodes),
        }),
        ..Default::default()
    })
}

pub async fn stats(s: &Services, req: Request<cri::ContainerStatsRequest>) -> Result<Response<cri::ContainerStatsResponse>, Status> {
    let stats = stats_of(s, &req.into_inner().container_id).await?;
    Ok(Response::new(cri::ContainerStatsResponse { stats: Some(stats) }))
}

pub async fn list_stats(
    s: &Services,
    req: Request<cri::ListContainerStatsRequest>,
) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
    let filter = req.into_inner().filter.unwrap_or_default();
    let mut out = Vec::new();
    for c in s.lifecycle.list_containers().await {
        let wanted = (filter.id.is_empty() || c.id.starts_with(&filter.id))
            && (filter.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&filter.pod_sandbox_id))
            && selector_matches(&c.spec.labels, &filter.label_selector)
            && c.state == ContainerState::Running;
        if wanted {
            // A container removed meanwhile is simply not listed.
            if let Ok(st) = stats_of(s, &c.id).await {
                out.push(st);
            }
        }
    }
    Ok(Response::new(cri::ListContainerStatsResponse { stats: out }))
}

pub async fn update_resources(
    s: &Services,
    req: Request<cri::UpdateContainerResourcesRequest>,
) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
    let req = req.into_inner();
    let r = req.linux.ok_or_else(|| Status::invalid_argument("linux resources are required"))?;
    let resources = resources(r);
    let span = info_span!("update_container_resources", container_id = %req.container_id);
    s.lifecycle.update_resources(&req.container_id, &resources).instrument(span).await.map_err(|e| lifecycle_status(&e))?;
    Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
}

pub type EventStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send + 'static>>;

async fn event_message(s: &Services, ev: crate::container::ContainerEvent) -> cri::ContainerEventResponse {
    use crate::container::EventKind;
    let kind = match ev.kind {
        EventKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
        EventKind::Started => cri::ContainerEventType::ContainerStartedEvent,
        EventKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent,
        EventKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent,
    };
    let pod_sandbox_status = s.lifecycle.pod(&ev.pod_id).ok().map(|p| super::pod::status_message(&p));
    let containers_statuses = s.lifecycle.containers_of(&ev.pod_id).iter().map(status_message).collect();
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
pub fn events(s: &Services) -> EventStream {
    let rx = s.lifecycle.subscribe();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::seccomp::Profile;

    #[test]
    fn an_empty_seccomp_request_follows_seccomp_use_default_when_empty() {
        assert_eq!(seccomp_profile(None, "", false).unwrap(), Profile::Unconfined);
        assert_eq!(seccomp_profile(None, "", true).unwrap(), Profile::RuntimeDefault);
        for legacy in ["runtime/default", "docker/default"] {
            assert_eq!(seccomp_profile(None, legacy, false).unwrap(), Profile::RuntimeDefault, "{legacy}");
        }
        let structured = cri::SecurityProfile { profile_type: 0, ..Default::default() };
        assert_eq!(seccomp_profile(Some(structured), "", false).unwrap(), Profile::RuntimeDefault, "an explicit RuntimeDefault");
        assert_eq!(seccomp_profile(None, "bogus", false).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    fn config(sec: cri::LinuxContainerSecurityContext) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: "c".into(), attempt: 0 }),
            image: Some(cri::ImageSpec { image: "busybox".into(), ..Default::default() }),
            linux: Some(cri::LinuxContainerConfig { security_context: Some(sec), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn a_group_without_a_user_is_refused() {
        let group = Some(cri::Int64Value { value: 1000 });
        let err = to_spec(config(cri::LinuxContainerSecurityContext { run_as_group: group, ..Default::default() }), false).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("run_as_group"), "{}", err.message());
        let with_user = cri::LinuxContainerSecurityContext {
            run_as_group: group,
            run_as_user: Some(cri::Int64Value { value: 0 }),
            ..Default::default()
        };
        assert!(to_spec(config(with_user), false).is_ok());
        let with_name =
            cri::LinuxContainerSecurityContext { run_as_group: group, run_as_username: "www-data".into(), ..Default::default() };
        assert!(to_spec(config(with_name), false).is_ok());
    }
}
