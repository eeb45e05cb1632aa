//! The CRI edge: one file per RPC group, each RPC one function that converts the request,
//! calls a service, and converts the answer back; `dispatch` hands tonic's calls to them. Only
//! this module sees protobuf types.

mod container_config;
mod containers;
mod dispatch;
mod error;
mod images;
mod list_streams;
mod pod_metrics;
mod pods;
mod runtime_status;
mod stats;
mod streaming;

/// The CRI itself, generated from proto/runtime/v1/api.proto (Kubernetes 1.36).
#[allow(clippy::all, clippy::pedantic, missing_docs, reason = "generated code")]
pub mod v1 {
    tonic::include_proto!("runtime.v1");

    /// The CRI asks for credentials to be redacted in debug output.
    impl std::fmt::Debug for AuthConfig {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let redacted = |s: &str| if s.is_empty() { "" } else { "[redacted]" };
            f.debug_struct("AuthConfig")
                .field("username", &self.username)
                .field("password", &redacted(&self.password))
                .field("auth", &redacted(&self.auth))
                .field("server_address", &self.server_address)
                .field("identity_token", &redacted(&self.identity_token))
                .field("registry_token", &redacted(&self.registry_token))
                .finish()
        }
    }
}

use v1::image_service_server::ImageServiceServer;
use v1::runtime_service_server::RuntimeServiceServer;

pub use error::{container_status, image_code, pod_status, status, store_code};
pub use runtime_status::RUNTIME_NAME;

pub use crate::services::Services;

/// Runs a call that changes the host to its end even when its client goes away (a deadline
/// passed, a connection closed), which drops the handler's future. Dropped halfway, a
/// teardown can leave what no retry removes: a CNI plugin killed between two of its steps
/// (the bridge plugin's masquerade chain, once its link is gone, is skipped by every later
/// DEL). A retry waits on the object's lock and finds the work done.
async fn to_the_end<T, E>(work: impl std::future::Future<Output = Result<T, E>> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<tokio::task::JoinError> + Send + 'static,
{
    use tracing::Instrument;
    tokio::spawn(work.in_current_span()).await?
}

/// The CRI RuntimeService and ImageService as one tonic route set.
pub fn routes(services: &Services) -> tonic::service::Routes {
    let api = &services.config.crio.api;
    let runtime = RuntimeServiceServer::new(dispatch::Runtime(services.clone()))
        .max_decoding_message_size(api.grpc_max_recv_msg_size)
        .max_encoding_message_size(api.grpc_max_send_msg_size);
    let images = ImageServiceServer::new(dispatch::Images(services.clone()))
        .max_decoding_message_size(api.grpc_max_recv_msg_size)
        .max_encoding_message_size(api.grpc_max_send_msg_size);
    tonic::service::Routes::new(runtime).add_service(images).add_service(crate::api::kernel::server(services.kernel.clone()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::to_the_end;

    #[tokio::test]
    async fn work_whose_caller_went_away_still_ends() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let call = to_the_end(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
            Ok::<_, tokio::task::JoinError>(())
        });
        assert!(tokio::time::timeout(Duration::from_millis(5), call).await.is_err(), "the caller gives up first");
        for _ in 0..200 {
            if done.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the work was dropped with its caller");
    }

    #[tokio::test]
    async fn a_panic_in_the_work_is_an_error_not_a_lost_call() {
        let r = to_the_end(async { if true { panic!("the work failed") } else { Ok::<(), tokio::task::JoinError>(()) } }).await;
        assert!(r.expect_err("a panic is reported").is_panic());
    }
}
