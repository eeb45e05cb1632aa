//! RuntimeService: Version, Status and RuntimeConfig here; pod and container RPCs delegate to
//! `pod` and `container`. What is not implemented yet answers UNIMPLEMENTED.

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::Services;

pub const RUNTIME_NAME: &str = "crio";
/// The kubelet's CRI version handshake value.
const KUBELET_API_VERSION: &str = "0.1.0";

pub struct Runtime {
    services: Services,
}

impl Runtime {
    pub fn new(services: Services) -> Self {
        Self { services }
    }

    fn runtime_condition(&self) -> cri::RuntimeCondition {
        let rt = &self.services.config.crio.runtime;
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
    fn kernel_condition(&self) -> cri::RuntimeCondition {
        let kernel = &self.services.lifecycle.kernel;
        let ready = kernel.enabled() && kernel.off.is_empty();
        cri::RuntimeCondition {
            r#type: "KernelTracingReady".into(),
            status: ready,
            reason: if ready { String::new() } else { "EBPFFeaturesOff".into() },
            message: if ready {
                String::new()
            } else {
                format!("eBPF features off, cgroup-file fallbacks in use: {}", kernel.off.join("; "))
            },
        }
    }

    fn network_condition(&self) -> cri::RuntimeCondition {
        let ready = self.services.lifecycle.network_name().is_some();
        let dir = &self.services.config.crio.network.network_dir;
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
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn unimplemented<T>(rpc: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!("{rpc} is not implemented by this runtime yet")))
}

/// The RuntimeService impl: the RPCs written out below, plus pod and container RPCs that answer
/// UNIMPLEMENTED for now. One macro around the whole impl so `async_trait` sees every method.
macro_rules! runtime_service {
    ({ $($body:tt)* } $($name:ident($req:ident) -> $resp:ident;)*) => {
        #[tonic::async_trait]
        impl RuntimeService for Runtime {
            $($body)*
            $(
                async fn $name(&self, _request: Request<cri::$req>) -> Result<Response<cri::$resp>, Status> {
                    unimplemented(stringify!($req).trim_end_matches("Request"))
                }
            )*
        }
    };
}

runtime_service! {
{
    #[instrument(skip_all)]
    async fn version(&self, _request: Request<cri::VersionRequest>) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: KUBELET_API_VERSION.into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }))
    }

    #[instrument(skip_all)]
    async fn status(&self, request: Request<cri::StatusRequest>) -> Result<Response<cri::StatusResponse>, Status> {
        let conditions = vec![self.runtime_condition(), self.network_condition(), self.kernel_condition()];
        let mut info = HashMap::new();
        if request.get_ref().verbose {
            let config = serde_json::to_string(&*self.services.config).map_err(|e| super::status(tonic::Code::Internal, &e))?;
            info.insert("config".to_string(), config);
        }
        let runtime_handlers = self
            .services
            .config
            .crio
            .runtime
            .runtimes
            .keys()
            .map(|name| cri::RuntimeHandler {
                name: name.clone(),
                features: Some(cri::RuntimeHandlerFeatures { recursive_read_only_mounts: false, user_namespaces: false }),
            })
            .collect();
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            runtime_handlers,
            features: Some(cri::RuntimeFeatures { supplemental_groups_policy: false }),
        }))
    }

    #[instrument(skip_all)]
    async fn runtime_config(&self, _request: Request<cri::RuntimeConfigRequest>) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        let driver = match self.services.config.crio.runtime.cgroup_manager.as_str() {
            "systemd" => cri::CgroupDriver::Systemd,
            _ => cri::CgroupDriver::Cgroupfs,
        };
        Ok(Response::new(cri::RuntimeConfigResponse { linux: Some(cri::LinuxRuntimeConfiguration { cgroup_driver: driver as i32 }) }))
    }

    async fn run_pod_sandbox(&self, request: Request<cri::RunPodSandboxRequest>) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        super::pod::run(&self.services, request).await
    }

    async fn stop_pod_sandbox(&self, request: Request<cri::StopPodSandboxRequest>) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        super::pod::stop(&self.services, request).await
    }

    async fn remove_pod_sandbox(&self, request: Request<cri::RemovePodSandboxRequest>) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        super::pod::remove(&self.services, request).await
    }

    async fn pod_sandbox_status(&self, request: Request<cri::PodSandboxStatusRequest>) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        super::pod::status(&self.services, request).await
    }

    async fn list_pod_sandbox(&self, request: Request<cri::ListPodSandboxRequest>) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        super::pod::list(&self.services, request).await
    }

    async fn create_container(&self, request: Request<cri::CreateContainerRequest>) -> Result<Response<cri::CreateContainerResponse>, Status> {
        super::container::create(&self.services, request).await
    }

    async fn start_container(&self, request: Request<cri::StartContainerRequest>) -> Result<Response<cri::StartContainerResponse>, Status> {
        super::container::start(&self.services, request).await
    }

    async fn stop_container(&self, request: Request<cri::StopContainerRequest>) -> Result<Response<cri::StopContainerResponse>, Status> {
        super::container::stop(&self.services, request).await
    }

    async fn remove_container(&self, request: Request<cri::RemoveContainerRequest>) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        super::container::remove(&self.services, request).await
    }

    async fn list_containers(&self, request: Request<cri::ListContainersRequest>) -> Result<Response<cri::ListContainersResponse>, Status> {
        super::container::list(&self.services, request).await
    }

    async fn container_status(&self, request: Request<cri::ContainerStatusRequest>) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        super::container::status(&self.services, request).await
    }

    async fn reopen_container_log(&self, request: Request<cri::ReopenContainerLogRequest>) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        super::container::reopen_log(&self.services, request).await
    }

    async fn exec_sync(&self, request: Request<cri::ExecSyncRequest>) -> Result<Response<cri::ExecSyncResponse>, Status> {
        super::container::exec_sync(&self.services, request).await
    }

    async fn container_stats(&self, request: Request<cri::ContainerStatsRequest>) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        super::container::stats(&self.services, request).await
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        super::container::list_stats(&self.services, request).await
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        super::container::update_resources(&self.services, request).await
    }

    async fn pod_sandbox_stats(&self, request: Request<cri::PodSandboxStatsRequest>) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        super::pod::pod_stats(&self.services, request).await
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        super::pod::list_pod_stats(&self.services, request).await
    }

    type GetContainerEventsStream = super::container::EventStream;

    async fn get_container_events(&self, _request: Request<cri::GetEventsRequest>) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Ok(Response::new(super::container::events(&self.services)))
    }
}
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
}
