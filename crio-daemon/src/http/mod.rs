//! The HTTP status API on the CRI socket, as CRI-O serves it: `GET /info`, `GET /config` and
//! `GET /containers/:id`.
//! It reads the same services as the CRI handlers and never sees gRPC types.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;

use crate::config::Config;
use crate::services::Services;

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

/// What `GET /containers/:id` says of a container, in CRI-O's field names.
#[derive(Debug, Serialize)]
pub struct ContainerInfo {
    pub name: String,
    pub pid: i32,
    pub image: String,
    pub image_ref: String,
    pub created_time: i64,
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    pub log_path: String,
    pub root: String,
    pub sandbox: String,
    pub ip_addresses: Vec<String>,
    pub state: String,
    pub exit_code: i32,
    /// PSI of its cgroup, where the kernel exposes it.
    pub pressure: Option<crate::cgroups::pressure::Pressure>,
    /// Its CPUs and memory nodes, where NUMA placement or the shared pool decided them.
    pub placement: Option<crio_hooks::placement::Placement>,
    /// Its wait for a CPU, intrusions on its isolated CPUs and CFS throttling, where the
    /// kernel programs count them.
    pub scheduling: Option<crate::kernel::SchedReport>,
}

async fn container(s: &Services, id: &str) -> axum::response::Response {
    let ct = match s.containers.container(id).await {
        Ok(ct) => ct,
        Err(e) => return (StatusCode::NOT_FOUND, format!("{}\n", crate::error_chain(&e))).into_response(),
    };
    let ips = s.pods.pod(&ct.pod_id).map(|p| p.ips).unwrap_or_default();
    axum::Json(ContainerInfo {
        name: ct.full_name.clone(),
        pid: ct.pid,
        image: ct.spec.image.clone(),
        image_ref: ct.image_ref.clone(),
        created_time: ct.created_at_nanos,
        labels: ct.spec.labels.clone(),
        annotations: ct.spec.annotations.clone(),
        log_path: ct.log_path.display().to_string(),
        root: s.containers.rootfs_of(&ct.id).display().to_string(),
        sandbox: ct.pod_id.clone(),
        ip_addresses: ips,
        state: format!("{:?}", ct.state),
        exit_code: ct.exit_code,
        pressure: s.containers.pressure(&ct),
        placement: ct.placement.clone(),
        scheduling: s.kernel.sched_report(&ct.id),
    })
    .into_response()
}

/// Routes to merge with the gRPC ones.
pub fn router(services: Services) -> Router {
    let config = services.config.clone();
    let for_info = config.clone();
    Router::new()
        .route(
            "/containers/{id}",
            get(move |axum::extract::Path(id): axum::extract::Path<String>| async move { container(&services, &id).await }),
        )
        .route("/info", get(move || async move { axum::Json(info(&for_info)) }))
        .route(
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
