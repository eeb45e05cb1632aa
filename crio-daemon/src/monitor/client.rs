//! The daemon's side of a pod monitor: start one, and send it requests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{Request, Response};
use super::server::Holds;

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
    #[error("monitor for {socket} exited at start ({status}); its last words in {log}: {last_line}")]
    Died { socket: PathBuf, status: String, last_line: String, log: PathBuf },
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
    /// The monitor killed a runtime call that ran past its deadline.
    #[error("monitor at {socket}: {message}")]
    RuntimeTimeout { socket: PathBuf, message: String },
    #[error("monitor at {socket} did not answer {op} within {after:?}")]
    Timeout { socket: PathBuf, op: &'static str, after: Duration },
}

/// How long a monitor may take to answer a request that runs nothing: it answers from memory.
const QUICK_REQUEST: Duration = Duration::from_secs(30);
/// Beyond a create's own runtime deadline (which the monitor enforces), for the monitor to
/// kill, reap and answer.
const CREATE_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct MonitorClient {
    pub socket: PathBuf,
    /// Where a connection is taken from and given back; without one, each request connects.
    connections: Option<Arc<Connections>>,
}

/// Idle connections a request takes at most per monitor beyond the one in use: more than
/// requests at once to one pod's monitor is rare.
const IDLE_PER_MONITOR: usize = 2;

/// Connections to monitors kept open between requests. A request on one skips the connect
/// and, in the monitor, the accept and the start of a thread to serve it: wake-ups on the
/// path of every CreateContainer. A pod's first is opened while its network is set up.
#[derive(Debug, Default)]
pub struct Connections {
    idle: Mutex<HashMap<PathBuf, Vec<BufReader<UnixStream>>>>,
}

impl Connections {
    /// A client of the monitor at `socket` that reuses these connections.
    pub fn client(self: &Arc<Self>, socket: &Path) -> MonitorClient {
        MonitorClient { socket: socket.into(), connections: Some(self.clone()) }
    }

    /// Opens a connection to the monitor at `socket` before its first request; failing, the
    /// request connects (and reports why it could not).
    pub async fn open_ahead(&self, socket: &Path) {
        if let Ok(stream) = crate::socket_path::connect_async(socket).await {
            self.put(socket, BufReader::new(stream));
        }
    }

    /// Closes the connections to a monitor that is going away.
    pub fn forget(&self, socket: &Path) {
        self.idle.lock().expect("connections poisoned").remove(socket);
    }

    fn take(&self, socket: &Path) -> Option<BufReader<UnixStream>> {
        self.idle.lock().expect("connections poisoned").get_mut(socket)?.pop()
    }

    fn put(&self, socket: &Path, conn: BufReader<UnixStream>) {
        let mut idle = self.idle.lock().expect("connections poisoned");
        let list = idle.entry(socket.into()).or_default();
        if list.len() < IDLE_PER_MONITOR {
            list.push(conn);
        }
    }
}

/// Starts a monitor serving `socket`; it detaches into its own session and outlives us. Its
/// stderr goes to `log`. It holds the pod's namespaces that `holds` names (see
/// `server::run`). Returns its pid.
pub async fn spawn(binary: &Path, socket: &Path, log: &Path, holds: &Holds) -> Result<u32, MonitorError> {
    let spawn_err = |source| MonitorError::Spawn { binary: binary.into(), source };
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(spawn_err)?;
    let log_start = log_file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut child = tokio::process::Command::new(binary)
        .arg(socket)
        .args(holds.pid_namespace.then_some("--pid-namespace"))
        .args(holds.ipc.then_some("--ipc"))
        .args(holds.uts.iter().flat_map(|hostname| ["--uts", hostname.as_str()]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(spawn_err)?;
    let pid = child.id().unwrap_or(0);
    let stdout = child.stdout.take().expect("piped");
    // It says "ready" once it listens; end of file first means it died.
    let mut line = String::new();
    let ready = tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
    let outcome = match ready {
        Ok(Ok(_)) if line.trim() == "ready" => Ok(pid),
        Err(_) => Err(MonitorError::StartTimeout { socket: socket.into() }),
        Ok(_) => {
            // Its stdout closed without "ready": it is exiting; say how, and what it said.
            let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            let status = match status {
                Ok(Ok(s)) => s.to_string(),
                _ => "closed its stdout without exiting".to_string(),
            };
            let last = last_line_after(log, log_start).await.unwrap_or_else(|| "nothing".into());
            Err(MonitorError::Died { socket: socket.into(), status, last_line: last, log: log.into() })
        }
    };
    // Reap it if it ever exits while we run; after a daemon restart init reaps it.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    outcome
}

/// The last non-empty line written to `log` past `offset`.
async fn last_line_after(log: &Path, offset: u64) -> Option<String> {
    let text = tokio::fs::read(log).await.ok()?;
    let tail = text.get(offset as usize..)?;
    let line = String::from_utf8_lossy(tail).lines().rev().find(|l| !l.trim().is_empty())?.trim().to_string();
    // A log line is the monitor's own; bounded all the same.
    Some(line.chars().take(512).collect())
}

impl MonitorClient {
    /// A client that connects for each request.
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.into(), connections: None }
    }

    /// Joins container `id`'s stdio: the connection then carries `protocol::attach` frames.
    /// The reader is returned buffered, as it was used for the response.
    pub async fn attach(
        &self,
        id: &str,
    ) -> Result<(BufReader<tokio::net::unix::OwnedReadHalf>, tokio::net::unix::OwnedWriteHalf), MonitorError> {
        let unreachable = |source| MonitorError::Unreachable { socket: self.socket.clone(), source };
        let stream = crate::socket_path::connect_async(&self.socket).await.map_err(unreachable)?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(&Request::Attach { id: id.to_string() }).expect("requests serialize");
        line.push(b'\n');
        write.write_all(&line).await.map_err(unreachable)?;
        let mut read = BufReader::new(read);
        let mut reply = String::new();
        read.read_line(&mut reply).await.map_err(unreachable)?;
        let resp: Response =
            serde_json::from_str(&reply).map_err(|source| MonitorError::Protocol { socket: self.socket.clone(), source })?;
        if !resp.error.is_empty() {
            return Err(MonitorError::Refused { socket: self.socket.clone(), message: resp.error });
        }
        Ok((read, write))
    }

    /// Sends `req` and waits for the answer, never longer than the request's deadline: a
    /// monitor that hangs fails this call, not the pod's lock holder forever.
    pub async fn request(&self, req: &Request) -> Result<Response, MonitorError> {
        let (op, after) = match req {
            Request::Create(c) if c.timeout_ms == 0 => ("create", Duration::MAX),
            Request::Create(c) => ("create", Duration::from_millis(c.timeout_ms) + CREATE_GRACE),
            Request::ReopenLog { .. } => ("reopen_log", QUICK_REQUEST),
            Request::State => ("state", QUICK_REQUEST),
            Request::Attach { .. } => ("attach", QUICK_REQUEST),
            Request::Forget { .. } => ("forget", QUICK_REQUEST),
        };
        if after == Duration::MAX {
            return self.exchange(req).await;
        }
        tokio::time::timeout(after, self.exchange(req)).await.map_err(|_| MonitorError::Timeout {
            socket: self.socket.clone(),
            op,
            after,
        })?
    }

    async fn exchange(&self, req: &Request) -> Result<Response, MonitorError> {
        let unreachable = |source| MonitorError::Unreachable { socket: self.socket.clone(), source };
        let mut line = serde_json::to_vec(req).expect("requests serialize");
        line.push(b'\n');
        // A kept connection the monitor has closed is replaced by a new one, once.
        let kept = self.connections.as_ref().and_then(|c| c.take(&self.socket));
        let answered = match kept {
            Some(mut conn) => exchange_on(&mut conn, &line).await.map_err(unreachable)?.map(|reply| (reply, conn)),
            None => None,
        };
        let (reply, conn) = match answered {
            Some(answered) => answered,
            None => {
                let mut conn = BufReader::new(crate::socket_path::connect_async(&self.socket).await.map_err(unreachable)?);
                let reply = exchange_on(&mut conn, &line).await.map_err(unreachable)?.ok_or_else(|| {
                    unreachable(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the monitor closed the connection without answering",
                    ))
                })?;
                (reply, conn)
            }
        };
        if let Some(connections) = &self.connections {
            connections.put(&self.socket, conn);
        }
        let resp: Response =
            serde_json::from_str(&reply).map_err(|source| MonitorError::Protocol { socket: self.socket.clone(), source })?;
        if resp.timed_out {
            return Err(MonitorError::RuntimeTimeout { socket: self.socket.clone(), message: resp.error });
        }
        if !resp.error.is_empty() {
            return Err(MonitorError::Refused { socket: self.socket.clone(), message: resp.error });
        }
        Ok(resp)
    }
}

/// Writes one request line on `conn` and reads its answer line; `None` when the monitor had
/// closed the connection (it is gone: a new connection finds it or fails to connect).
async fn exchange_on(conn: &mut BufReader<UnixStream>, line: &[u8]) -> std::io::Result<Option<String>> {
    let closed = |e: &std::io::Error| matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset);
    match conn.get_mut().write_all(line).await {
        Ok(()) => {}
        Err(e) if closed(&e) => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut reply = String::new();
    match conn.read_line(&mut reply).await {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(reply)),
        Err(e) if closed(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A monitor stand-in answering every request line with an empty response; it counts the
    /// connections it accepts, and hangs up each after `per_connection` answers.
    fn answering(socket: &Path, per_connection: usize) -> Arc<AtomicUsize> {
        let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let conn = conn.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut writer = conn.try_clone().unwrap();
                    let mut lines = std::io::BufReader::new(conn).lines();
                    for _ in 0..per_connection {
                        let Some(Ok(_)) = lines.next() else { return };
                        writer.write_all(b"{}\n").unwrap();
                    }
                });
            }
        });
        accepted
    }

    #[tokio::test]
    async fn a_kept_connection_serves_the_next_request_and_one_closed_by_the_monitor_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("monitor.sock");
        let accepted = answering(&socket, 2);
        let connections = Arc::new(Connections::default());
        connections.open_ahead(&socket).await;
        let client = connections.client(&socket);
        client.request(&Request::State).await.expect("first request, on the connection opened ahead");
        client.request(&Request::State).await.expect("second request, on the same connection");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "both requests went over the connection opened ahead");
        // The stand-in hung up after two answers: the third finds the kept connection closed
        // and connects again, without an error.
        client.request(&Request::State).await.expect("third request, on a new connection");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        connections.forget(&socket);
        assert!(connections.take(&socket).is_none(), "a forgotten monitor's connections are closed");
        MonitorClient::new(&socket).request(&Request::State).await.expect("a client without kept connections connects");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_monitor_that_dies_at_start_is_reported_with_its_status_and_last_words() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("monitor.log");
        std::fs::write(&log, "an earlier monitor's line\n").unwrap();
        // `sh <socket>` fails at once, as a monitor that cannot bind does: it prints why and exits.
        let socket = dir.path().join("no-such-dir/monitor.sock");
        let err = spawn(Path::new("/bin/sh"), &socket, &log, &Holds::default()).await.expect_err("it died");
        let MonitorError::Died { status, last_line, .. } = &err else { panic!("not reported as a death: {err:?}") };
        assert!(status.starts_with("exit status"), "the status it exited with: {status}");
        assert!(last_line.contains("no-such-dir/monitor.sock"), "its own last line, not an earlier one: {last_line}");
        assert!(err.to_string().contains("exited at start"), "{err}");
    }
}
