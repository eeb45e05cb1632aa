//! Version, Status, RuntimeConfig and UpdateRuntimeConfig: what the runtime is, and whether it
//! is ready (runtime, network and kernel conditions).

use std::collections::HashMap;
use std::path::Path;

use crate::cri::v1 as cri;
use tonic::Status;

use super::Services;

pub const RUNTIME_NAME: &str = "crio";
/// The kubelet's CRI version handshake value.
const KUBELET_API_VERSION: &str = "0.1.0";

pub async fn version(_s: &Services, _req: cri::VersionRequest) -> Result<cri::VersionResponse, Status> {
    Ok(cri::VersionResponse {
        version: KUBELET_API_VERSION.into(),
        runtime_name: RUNTIME_NAME.into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: "v1".into(),
    })
}

pub async fn status(s: &Services, req: cri::StatusRequest) -> Result<cri::StatusResponse, Status> {
    let conditions = vec![runtime_condition(s), network_condition(s), kernel_condition(s)];
    let mut info = HashMap::new();
    if req.verbose {
        let config = serde_json::to_string(&*s.config).map_err(|e| super::status(tonic::Code::Internal, &e))?;
        info.insert("config".to_string(), config);
        info.insert("podCIDR".to_string(), s.node.pod_cidr());
    }
    // Recursive read-only mounts where the handler's runtime and the kernel have them; user
    // namespaces are not implemented, so no handler claims them.
    let runtime_handlers = s
        .node
        .handler_features()
        .into_iter()
        .map(|(name, f)| cri::RuntimeHandler {
            name,
            features: Some(cri::RuntimeHandlerFeatures { recursive_read_only_mounts: f.recursive_read_only, user_namespaces: false }),
        })
        .collect();
    Ok(cri::StatusResponse {
        status: Some(cri::RuntimeStatus { conditions }),
        info,
        runtime_handlers,
        features: Some(cri::RuntimeFeatures { supplemental_groups_policy: false, user_namespaces_host_network: false }),
    })
}

pub async fn runtime_config(s: &Services, _req: cri::RuntimeConfigRequest) -> Result<cri::RuntimeConfigResponse, Status> {
    let driver = match s.config.crio.runtime.cgroup_manager.as_str() {
        "systemd" => cri::CgroupDriver::Systemd,
        _ => cri::CgroupDriver::Cgroupfs,
    };
    Ok(cri::RuntimeConfigResponse { linux: Some(cri::LinuxRuntimeConfiguration { cgroup_driver: driver as i32 }) })
}

/// The kubelet sends the node's pod CIDR whenever it is set; CRI-O keeps it (CNI plugins are
/// configured on their own), and so do we: verbose Status shows it.
pub async fn update_runtime_config(s: &Services, req: cri::UpdateRuntimeConfigRequest) -> Result<cri::UpdateRuntimeConfigResponse, Status> {
    let cidr = req.runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr).unwrap_or_default();
    if !cidr.is_empty() {
        for part in cidr.split(',') {
            if part.trim().parse::<ipnet_like::Cidr>().is_err() {
                return Err(Status::invalid_argument(format!("runtime_config.network_config.pod_cidr: {part:?} is not a CIDR")));
            }
        }
        let before = s.node.set_pod_cidr(&cidr);
        if before != cidr {
            tracing::info!(pod_cidr = %cidr, "pod CIDR from the kubelet");
        }
    }
    Ok(cri::UpdateRuntimeConfigResponse {})
}

/// Just enough CIDR parsing to refuse what is not one (`addr/len`, v4 or v6).
mod ipnet_like {
    pub struct Cidr;

    impl std::str::FromStr for Cidr {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let (addr, len) = s.split_once('/').ok_or(())?;
            let addr: std::net::IpAddr = addr.parse().map_err(|_| ())?;
            let len: u8 = len.parse().map_err(|_| ())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            (len <= max).then_some(Cidr).ok_or(())
        }
    }
}

fn runtime_condition(s: &Services) -> cri::RuntimeCondition {
    let rt = &s.config.crio.runtime;
    let handler = &rt.runtimes[&rt.default_runtime];
    let ready = is_executable(&handler.runtime_path);
    cri::RuntimeCondition {
        r#type: "RuntimeReady".into(),
        status: ready,
        reason: if ready { String::new() } else { "RuntimeNotReady".into() },
        message: if ready {
            String::new()
        } else {
            format!("default runtime {} at {} is not an executable file", rt.default_runtime, handler.runtime_path.display())
        },
    }
}

/// Whether the kernel programs run in full; the message names what is off and why.
fn kernel_condition(s: &Services) -> cri::RuntimeCondition {
    let kernel = &s.kernel;
    let ready = kernel.enabled() && kernel.off.is_empty();
    cri::RuntimeCondition {
        r#type: "KernelTracingReady".into(),
        status: ready,
        reason: if ready { String::new() } else { "EBPFFeaturesOff".into() },
        message: if ready { String::new() } else { format!("eBPF features off, cgroup-file fallbacks in use: {}", kernel.off.join("; ")) },
    }
}

fn network_condition(s: &Services) -> cri::RuntimeCondition {
    let ready = s.node.network_name().is_some();
    let dir = &s.config.crio.network.network_dir;
    cri::RuntimeCondition {
        r#type: "NetworkReady".into(),
        status: ready,
        reason: if ready { String::new() } else { "NetworkPluginNotReady".into() },
        message: if ready {
            String::new()
        } else {
            format!("no usable CNI network: cni_default_network is not among the configurations in {}", dir.display())
        },
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
