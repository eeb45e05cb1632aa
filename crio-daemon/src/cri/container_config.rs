//! A CreateContainer or UpdateContainerResources request as the domain's ContainerSpec and
//! Resources: every field checked here, and a refusal names the field.

use crate::cri::v1 as cri;
use tonic::Status;

use crate::container::lsm::{AppArmorRequest, SeLinuxOptions};
use crate::model::{ContainerSpec, MountSpec, PidMode, Resources, Security};

/// One of `config.mounts`: a host path or an image volume, checked as the CRI asks.
fn mount(i: usize, m: cri::Mount) -> Result<MountSpec, Status> {
    let field = |name: &str| format!("config.mounts[{i}].{name}");
    // ID-mapped mounts belong to pods with user namespaces, which this runtime does not make.
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(Status::failed_precondition(format!(
            "{}: ID-mapped mounts need user namespaces, which this runtime does not support",
            field("uidMappings")
        )));
    }
    let image = m.image.map(|i| i.image).unwrap_or_default();
    match (image.is_empty(), m.host_path.is_empty()) {
        (false, false) => return Err(Status::invalid_argument(format!("{}: an image volume has no host_path", field("image")))),
        (true, true) => {
            return Err(Status::invalid_argument(format!("{} is required (or image, for an image volume)", field("host_path"))));
        }
        _ => {}
    }
    if image.is_empty() && !m.image_sub_path.is_empty() {
        return Err(Status::invalid_argument(format!("{}: only an image volume has a sub path", field("image_sub_path"))));
    }
    let sub = std::path::Path::new(&m.image_sub_path);
    if sub.is_absolute() || sub.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(Status::invalid_argument(format!("{}: {:?} must stay inside the image", field("image_sub_path"), m.image_sub_path)));
    }
    // The proto's rule: recursive read-only only on read-only, private mounts.
    if m.recursive_read_only && (!m.readonly || m.propagation != cri::MountPropagation::PropagationPrivate as i32) {
        return Err(Status::invalid_argument(format!("{}: needs readonly and private propagation", field("recursive_read_only"))));
    }
    Ok(MountSpec {
        container_path: m.container_path.into(),
        host_path: m.host_path.into(),
        // Image volumes are read-only by definition.
        readonly: m.readonly || !image.is_empty(),
        propagation: match m.propagation {
            1 => "rslave",
            2 => "rshared",
            _ => "private",
        }
        .into(),
        selinux_relabel: m.selinux_relabel,
        recursive_readonly: m.recursive_read_only,
        image,
        image_sub_path: m.image_sub_path,
    })
}

// Long by design: one check or field per part of the CRI ContainerConfig, read top to bottom.
#[expect(deprecated, reason = "older kubelets still send seccomp_profile_path")]
pub(super) fn to_spec(config: cri::ContainerConfig, default_when_empty: bool) -> Result<ContainerSpec, Status> {
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
    // Ids are 32-bit in the kernel; a negative or larger one would wrap into another user.
    let ids = sec.run_as_user.iter().map(|v| ("run_as_user", v.value)).chain(sec.run_as_group.iter().map(|v| ("run_as_group", v.value)));
    for (field, id) in ids.chain(sec.supplemental_groups.iter().map(|g| ("supplemental_groups", *g))) {
        if !(0..=i64::from(u32::MAX - 1)).contains(&id) {
            return Err(Status::invalid_argument(format!("config.linux.security_context.{field}: {id} is not a valid id")));
        }
    }
    let caps = sec.capabilities.clone().unwrap_or_default();
    let apparmor = apparmor_profile(sec.apparmor.clone(), &sec.apparmor_profile)?;
    let selinux = sec
        .selinux_options
        .clone()
        .map(|o| SeLinuxOptions { user: o.user, role: o.role, typ: o.r#type, level: o.level })
        .unwrap_or_default();
    let res = linux.resources.unwrap_or_default();
    // Values are bytes since the 1.36 API; the OCI spec's environment is text.
    let envs = config
        .envs
        .into_iter()
        .map(|kv| match String::from_utf8(kv.value) {
            Ok(v) => Ok((kv.key, v)),
            Err(_) => Err(Status::invalid_argument(format!("config.envs: the value of {:?} is not UTF-8", kv.key))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mounts = config.mounts.into_iter().enumerate().map(|(i, m)| mount(i, m)).collect::<Result<Vec<_>, _>>()?;
    let cdi_devices: Vec<String> = config.cdi_devices.into_iter().map(|d| d.name).collect();
    for (i, name) in cdi_devices.iter().enumerate() {
        crate::cdi::check_name(name).map_err(|e| Status::invalid_argument(format!("config.CDI_devices[{i}]: {e}")))?;
    }
    Ok(ContainerSpec {
        name: meta.name,
        attempt: meta.attempt,
        image,
        command: config.command,
        args: config.args,
        working_dir: config.working_dir,
        envs,
        mounts,
        devices: config
            .devices
            .into_iter()
            .map(|d| crate::model::DeviceSpec {
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
        stdin_once: config.stdin_once,
        stop_signal: match cri::Signal::try_from(config.stop_signal) {
            Ok(cri::Signal::RuntimeDefault) => 0,
            Ok(sig) => crate::container::signal_number_of(sig.as_str_name())
                .ok_or_else(|| Status::invalid_argument(format!("config.stop_signal: {} is not a Linux signal", sig.as_str_name())))?,
            Err(_) => return Err(Status::invalid_argument(format!("config.stop_signal: unknown signal {}", config.stop_signal))),
        },
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
            apparmor,
            selinux,
        },
        resources: resources(res, "config.linux.resources")?,
        pid_mode,
        cdi_devices,
    })
}

/// CRI's AppArmor request: the structured field, else the deprecated string
/// (`runtime/default`, `unconfined`, `localhost/<name>`).
fn apparmor_profile(profile: Option<cri::SecurityProfile>, legacy: &str) -> Result<AppArmorRequest, Status> {
    if let Some(p) = profile {
        return match p.profile_type {
            0 => Ok(AppArmorRequest::RuntimeDefault),
            1 => Ok(AppArmorRequest::Unconfined),
            2 => Ok(AppArmorRequest::Localhost(p.localhost_ref.trim_start_matches("localhost/").to_string())),
            other => Err(Status::invalid_argument(format!("config.linux.security_context.apparmor: unknown profile type {other}"))),
        };
    }
    Ok(match legacy {
        "" => AppArmorRequest::Unset,
        "runtime/default" => AppArmorRequest::RuntimeDefault,
        "unconfined" => AppArmorRequest::Unconfined,
        other => match other.strip_prefix("localhost/") {
            Some(name) if !name.is_empty() => AppArmorRequest::Localhost(name.into()),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "config.linux.security_context.apparmor_profile: {other:?} is not a known profile"
                )));
            }
        },
    })
}

/// CRI's seccomp request: the structured field, else the deprecated path string
/// (`runtime/default`, `docker/default`, `unconfined`, `localhost/<path>`); nothing at all is
/// RuntimeDefault or unconfined as `seccomp_use_default_when_empty` says.
fn seccomp_profile(
    profile: Option<cri::SecurityProfile>,
    legacy: &str,
    default_when_empty: bool,
) -> Result<crate::seccomp::Profile, Status> {
    use crate::seccomp::Profile;
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

/// Longest wait a request may ask for (StopContainer, ExecSync): more is "forever" to anyone,
/// and clamping keeps deadline arithmetic from overflowing.
pub(super) const MAX_TIMEOUT_SECS: i64 = 10 * 365 * 24 * 3600;

/// A request's timeout in seconds, clamped to `0..=MAX_TIMEOUT_SECS`.
pub(super) fn timeout_secs(requested: i64) -> i64 {
    requested.clamp(0, MAX_TIMEOUT_SECS)
}

/// CRI resources to ours, for CreateContainer and UpdateContainerResources alike. Values the
/// kernel would refuse (or that would overflow what is computed from them) are refused here,
/// naming the field under `at`.
pub(super) fn resources(r: cri::LinuxContainerResources, at: &str) -> Result<Resources, Status> {
    let bad = |field: &str, why: String| Err(Status::invalid_argument(format!("{at}.{field}: {why}")));
    // The kernel's ranges: cpu.shares up to 262144 (below 2 it reads 2), a CFS period of 1 ms..1 s, a
    // quota of at least 1 ms (-1 or 0: none), oom_score_adj -1000..=1000.
    if !(0..=262_144).contains(&r.cpu_shares) {
        return bad("cpu_shares", format!("{} is outside 0..=262144", r.cpu_shares));
    }
    if !(r.cpu_period == 0 || (1000..=1_000_000).contains(&r.cpu_period)) {
        return bad("cpu_period", format!("{} is outside 1000..=1000000 microseconds", r.cpu_period));
    }
    if !(r.cpu_quota == 0 || r.cpu_quota == -1 || (1000..=i64::MAX / 1000).contains(&r.cpu_quota)) {
        return bad("cpu_quota", format!("{} is neither -1 nor at least 1000 microseconds", r.cpu_quota));
    }
    if r.memory_limit_in_bytes < 0 {
        return bad("memory_limit_in_bytes", format!("{} is negative", r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes < -1 {
        return bad("memory_swap_limit_in_bytes", format!("{} is below -1 (unlimited)", r.memory_swap_limit_in_bytes));
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return bad("oom_score_adj", format!("{} is outside -1000..=1000", r.oom_score_adj));
    }
    for h in &r.hugepage_limits {
        if h.page_size.is_empty() || !h.page_size.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return bad("hugepage_limits", format!("page size {:?} is not a size such as 2MB", h.page_size));
        }
    }
    Ok(Resources {
        cpu_shares: r.cpu_shares as u64,
        cpu_quota: r.cpu_quota,
        cpu_period: r.cpu_period as u64,
        memory_limit: r.memory_limit_in_bytes,
        cpuset_cpus: r.cpuset_cpus,
        cpuset_mems: r.cpuset_mems,
        oom_score_adj: r.oom_score_adj,
        memory_swap_limit: r.memory_swap_limit_in_bytes,
        hugepages: r.hugepage_limits.into_iter().map(|h| (h.page_size, h.limit)).collect(),
        unified: r.unified.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::Profile;

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
