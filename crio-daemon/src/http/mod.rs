//! The HTTP status API on the CRI socket, as CRI-O serves it: `GET /info` and `GET /config`.
//! It reads the same services as the CRI handlers and never sees gRPC types.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;

use crate::config::Config;

#[derive(Debug, Serialize)]
pub struct Info {
    pub storage_driver: &'static str,
    pub storage_root: String,
    pub storage_runroot: String,
    pub cgroup_driver: String,
    pub default_runtime: String,
    pub runtimes: Vec<String>,
}

pub fn info(config: &Config) -> Info {
    let c = &config.crio;
    Info {
        storage_driver: "overlay",
        storage_root: c.root.display().to_string(),
        storage_runroot: c.runroot.display().to_string(),
        cgroup_driver: c.runtime.cgroup_manager.clone(),
        default_runtime: c.runtime.default_runtime.clone(),
        runtimes: c.runtime.runtimes.keys().cloned().collect(),
    }
}

/// Routes to merge with the gRPC ones.
pub fn router(config: Arc<Config>) -> Router {
    let for_info = config.clone();
    Router::new().route("/info", get(move || async move { axum::Json(info(&for_info)) })).route(
        "/config",
        get(move || async move {
            match toml::to_string(&*config) {
                Ok(text) => ([(header::CONTENT_TYPE, "application/toml")], text).into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            }
        }),
    )
}

/// Unknown paths: gRPC clients get UNIMPLEMENTED as gRPC expects, everyone else a plain 404.
pub async fn fallback(request: axum::extract::Request) -> axum::response::Response {
    let grpc = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let status = tonic::Status::unimplemented(format!("unknown method {}", request.uri().path()));
        return status.into_http::<axum::body::Body>().into_response();
    }
    (StatusCode::NOT_FOUND, format!("no such endpoint {}\n", request.uri().path())).into_response()
}
