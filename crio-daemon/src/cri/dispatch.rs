//! The tonic service traits: every RPC handed, unchanged, to its handler of the same name in
//! the file of its group (`pods`, `containers`, `streaming`, `stats`, `pod_metrics`, `images`,
//! `runtime_status`), so `grep -rn "fn <rpc>" src/cri/` finds both.

use crate::cri::v1 as cri;
use crate::cri::v1::image_service_server::ImageService;
use crate::cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::list_streams::{self, ItemStream};
use super::{Services, containers, images, pod_metrics, pods, runtime_status, stats, streaming};

pub struct Runtime(pub Services);

pub struct Images(pub Services);

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(&self, r: Request<cri::VersionRequest>) -> Result<Response<cri::VersionResponse>, Status> {
        runtime_status::version(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn run_pod_sandbox(&self, r: Request<cri::RunPodSandboxRequest>) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        pods::run_pod_sandbox(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn stop_pod_sandbox(&self, r: Request<cri::StopPodSandboxRequest>) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        pods::stop_pod_sandbox(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        pods::remove_pod_sandbox(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        pods::pod_sandbox_status(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_pod_sandbox(&self, r: Request<cri::ListPodSandboxRequest>) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        pods::list_pod_sandbox(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn create_container(&self, r: Request<cri::CreateContainerRequest>) -> Result<Response<cri::CreateContainerResponse>, Status> {
        containers::create_container(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn start_container(&self, r: Request<cri::StartContainerRequest>) -> Result<Response<cri::StartContainerResponse>, Status> {
        containers::start_container(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn stop_container(&self, r: Request<cri::StopContainerRequest>) -> Result<Response<cri::StopContainerResponse>, Status> {
        containers::stop_container(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn remove_container(&self, r: Request<cri::RemoveContainerRequest>) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        containers::remove_container(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_containers(&self, r: Request<cri::ListContainersRequest>) -> Result<Response<cri::ListContainersResponse>, Status> {
        containers::list_containers(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn container_status(&self, r: Request<cri::ContainerStatusRequest>) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        containers::container_status(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn update_container_resources(
        &self,
        r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        containers::update_container_resources(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        containers::reopen_container_log(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn checkpoint_container(
        &self,
        r: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        containers::checkpoint_container(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn exec_sync(&self, r: Request<cri::ExecSyncRequest>) -> Result<Response<cri::ExecSyncResponse>, Status> {
        streaming::exec_sync(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn exec(&self, r: Request<cri::ExecRequest>) -> Result<Response<cri::ExecResponse>, Status> {
        streaming::exec(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn attach(&self, r: Request<cri::AttachRequest>) -> Result<Response<cri::AttachResponse>, Status> {
        streaming::attach(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn port_forward(&self, r: Request<cri::PortForwardRequest>) -> Result<Response<cri::PortForwardResponse>, Status> {
        streaming::port_forward(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn container_stats(&self, r: Request<cri::ContainerStatsRequest>) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        stats::container_stats(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_container_stats(
        &self,
        r: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        stats::list_container_stats(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn pod_sandbox_stats(&self, r: Request<cri::PodSandboxStatsRequest>) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        stats::pod_sandbox_stats(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        stats::list_pod_sandbox_stats(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_metric_descriptors(
        &self,
        r: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        pod_metrics::list_metric_descriptors(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_pod_sandbox_metrics(
        &self,
        r: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        pod_metrics::list_pod_sandbox_metrics(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn update_runtime_config(
        &self,
        r: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        runtime_status::update_runtime_config(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn status(&self, r: Request<cri::StatusRequest>) -> Result<Response<cri::StatusResponse>, Status> {
        runtime_status::status(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn runtime_config(&self, r: Request<cri::RuntimeConfigRequest>) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        runtime_status::runtime_config(&self.0, r.into_inner()).await.map(Response::new)
    }

    type StreamPodSandboxesStream = ItemStream<cri::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        r: Request<cri::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        list_streams::stream_pod_sandboxes(&self.0, r.into_inner()).await.map(Response::new)
    }

    type StreamContainersStream = ItemStream<cri::StreamContainersResponse>;

    async fn stream_containers(&self, r: Request<cri::StreamContainersRequest>) -> Result<Response<Self::StreamContainersStream>, Status> {
        list_streams::stream_containers(&self.0, r.into_inner()).await.map(Response::new)
    }

    type StreamContainerStatsStream = ItemStream<cri::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        r: Request<cri::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        list_streams::stream_container_stats(&self.0, r.into_inner()).await.map(Response::new)
    }

    type StreamPodSandboxStatsStream = ItemStream<cri::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        r: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        list_streams::stream_pod_sandbox_stats(&self.0, r.into_inner()).await.map(Response::new)
    }

    type StreamPodSandboxMetricsStream = ItemStream<cri::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        r: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        list_streams::stream_pod_sandbox_metrics(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn update_pod_sandbox_resources(
        &self,
        r: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<cri::UpdatePodSandboxResourcesResponse>, Status> {
        pods::update_pod_sandbox_resources(&self.0, r.into_inner()).await.map(Response::new)
    }

    type GetContainerEventsStream = containers::EventStream;

    async fn get_container_events(&self, r: Request<cri::GetEventsRequest>) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Ok(Response::new(containers::get_container_events(&self.0, r.into_inner())))
    }
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(&self, r: Request<cri::ListImagesRequest>) -> Result<Response<cri::ListImagesResponse>, Status> {
        images::list_images(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn image_status(&self, r: Request<cri::ImageStatusRequest>) -> Result<Response<cri::ImageStatusResponse>, Status> {
        images::image_status(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn pull_image(&self, r: Request<cri::PullImageRequest>) -> Result<Response<cri::PullImageResponse>, Status> {
        images::pull_image(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn remove_image(&self, r: Request<cri::RemoveImageRequest>) -> Result<Response<cri::RemoveImageResponse>, Status> {
        images::remove_image(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn image_fs_info(&self, r: Request<cri::ImageFsInfoRequest>) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        images::image_fs_info(&self.0, r.into_inner()).await.map(Response::new)
    }

    type StreamImagesStream = ItemStream<cri::StreamImagesResponse>;

    async fn stream_images(&self, r: Request<cri::StreamImagesRequest>) -> Result<Response<Self::StreamImagesStream>, Status> {
        list_streams::stream_images(&self.0, r.into_inner()).await.map(Response::new)
    }
}
