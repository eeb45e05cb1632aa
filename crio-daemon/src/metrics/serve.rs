//! Serving the metrics (TCP `metrics_host:metrics_port`, or the unix `metrics_socket`), and the
//! middleware that times every CRI call.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::Metrics;
use crate::services::Services;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("failed to listen for metrics on {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// Times a gRPC call (to its response headers: a stream counts until it starts) and counts
/// it, as an error when the status in the headers is not OK.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let Some(op) = super::operation(request.uri().path()).map(str::to_string) else { return next.run(request).await };
    let started = Instant::now();
    let response = next.run(request).await;
    let ok = response.status().is_success() && response.headers().get("grpc-status").is_none_or(|s| s.as_bytes() == b"0");
    metrics.observe(&op, started.elapsed().as_secs_f64(), ok);
    response
}

/// Binds the metrics listener now (so a bad address fails start-up) and returns the server to
/// run.
pub async fn bind(
    config: &crate::config::Metrics,
    metrics: Arc<Metrics>,
    services: Services,
) -> Result<impl std::future::Future<Output = ()> + Send + use<>, MetricsError> {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (m, l) = (metrics.clone(), services.clone());
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], super::render(&m, &l)) }
        }),
    );
    let socket = config.metrics_socket.clone();
    let served: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>> = if socket.as_os_str().is_empty() {
        let address = format!("{}:{}", config.metrics_host, config.metrics_port);
        let tcp =
            tokio::net::TcpListener::bind(&address).await.map_err(|source| MetricsError::Bind { address: address.clone(), source })?;
        // The bound address, so port 0 (the kernel's pick) tells where it went.
        let bound = tcp.local_addr().map_or(address, |a| a.to_string());
        tracing::info!(address = %bound, "serving metrics");
        Box::pin(async move { axum::serve(tcp, router).await })
    } else {
        let _ = std::fs::remove_file(&socket);
        let unix = crate::socket_path::bind(&socket)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::UnixListener::from_std)
            .map_err(|source| MetricsError::Bind { address: socket.display().to_string(), source })?;
        tracing::info!(socket = %socket.display(), "serving metrics");
        Box::pin(async move { axum::serve(unix, router).await })
    };
    Ok(async move {
        if let Err(e) = served.await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    })
}
