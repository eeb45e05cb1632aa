//! The unix socket: created safely (a live daemon's socket is never stolen, a stale one is
//! replaced, a non-socket file is never deleted), mode 0660, serving gRPC (HTTP/2) and the
//! status API (HTTP/1.1) on one listener, with graceful shutdown. Requests with any
//! `:authority` are served (see `authority`).

mod authority;

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::UnixListener;

/// How long in-flight requests get after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("socket {path} is in use by a running process")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("failed to set up socket {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds `path`, replacing a stale socket left by a dead daemon.
pub async fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let err = |source| ServerError::Socket { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(err)?;
    }
    match tokio::fs::symlink_metadata(path).await {
        Ok(m) if m.file_type().is_socket() => {
            if crate::socket_path::connect_async(path).await.is_ok() {
                return Err(ServerError::InUse { path: path.into() });
            }
            tokio::fs::remove_file(path).await.map_err(err)?;
        }
        Ok(_) => return Err(ServerError::NotASocket { path: path.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener =
        crate::socket_path::bind(path).and_then(|l| l.set_nonblocking(true).map(|()| l)).and_then(UnixListener::from_std).map_err(err)?;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).await.map_err(err)?;
    Ok(listener)
}

/// Serves `router` until `shutdown` resolves, then drains open connections.
pub async fn serve(listener: UnixListener, router: axum::Router, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let builder = Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let service = TowerToHyperService::new(router.clone());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(authority::AcceptAnyAuthority::new(stream)), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "connections still open after the drain timeout; closing them");
    }
}
