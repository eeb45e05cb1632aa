//! The CRI edge: tonic services that convert CRI messages to domain calls and back. Only this
//! module sees protobuf types.

mod container;
mod error;
mod image;
mod pod;
mod runtime;

use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;

pub use error::{image_code, lifecycle_status, status, store_code};

use crate::config::Config;
use crate::image::ImageService;
use crate::sandbox::Lifecycle;

/// What the handlers reach: shared services, passed in, no globals.
#[derive(Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub images: Arc<ImageService>,
    pub lifecycle: Arc<Lifecycle>,
}

/// The CRI RuntimeService and ImageService as one tonic route set.
pub fn routes(services: &Services) -> tonic::service::Routes {
    let api = &services.config.crio.api;
    let runtime = RuntimeServiceServer::new(runtime::Runtime::new(services.clone()))
        .max_decoding_message_size(api.grpc_max_recv_msg_size)
        .max_encoding_message_size(api.grpc_max_send_msg_size);
    let images = ImageServiceServer::new(image::Images::new(services.clone()))
        .max_decoding_message_size(api.grpc_max_recv_msg_size)
        .max_encoding_message_size(api.grpc_max_send_msg_size);
    tonic::service::Routes::new(runtime).add_service(images).add_service(crate::api::kernel::server(services.lifecycle.kernel.clone()))
}
