//! The daemon's side of a pod monitor: start one, and send it requests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{Request, Response};

/// How long a monitor may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("failed to start monitor {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("monitor at {socket} did not start listening within {START_TIMEOUT:?}")]
    StartTimeout { socket: PathBuf },
    #[error("monitor at {socket} is unreachable")]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("monitor at {socket} sent a malformed response")]
    Protocol {
        socket: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("monitor at {socket}: {message}")]
    Refused { socket: PathBuf, message: String },
}

#[derive(Debug, Clone)]
pub struct MonitorClient {
    pub socket: PathBuf,
}

/// Starts a monitor serving `socket`; it detaches into its own session and outlives us. Its
/// stderr goes to `log`. With `pid_namespace` it also holds a PID namespace for the pod.
/// Returns its pid.
pub async fn spawn(binary: &Path, socket: &Path, log: &Path, pid_namespace: bool) -> Result<u32, MonitorError> {
    let spawn_err = |source| MonitorError::Spawn { binary: binary.into(), source };
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(spawn_err)?;
    let mut child = tokio::process::Command::new(binary)
        .arg(socket)
        .args(pid_namespace.then_some("--pid-namespace"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(spawn_err)?;
    let pid = child.id().unwrap_or(0);
    let stdout = child.stdout.take().expect("piped");
    // Reap it if it ever exits while we run; after a daemon restart init reaps it.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    // It says "ready" once it listens; end of file first means it died.
    let mut line = String::new();
    match tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await {
        Ok(Ok(_)) if line.trim() == "ready" => Ok(pid),
        _ => Err(MonitorError::StartTimeout { socket: socket.into() }),
    }
}

impl MonitorClient {
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.into() }
    }

    pub async fn request(&self, req: &Request) -> Result<Response, MonitorError> {
        let unreachable = |source| MonitorError::Unreachable { socket: self.socket.clone(), source };
        let mut stream = UnixStream::connect(&self.socket).await.map_err(unreachable)?;
        let mut line = serde_json::to_vec(req).expect("requests serialize");
        line.push(b'\n');
        stream.write_all(&line).await.map_err(unreachable)?;
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).await.map_err(unreachable)?;
        let resp: Response =
            serde_json::from_str(&reply).map_err(|source| MonitorError::Protocol { socket: self.socket.clone(), source })?;
        if !resp.error.is_empty() {
            return Err(MonitorError::Refused { socket: self.socket.clone(), message: resp.error });
        }
        Ok(resp)
    }
}
