//! A typed client for OCI runtimes' command line (runc and crun share it): option builders for
//! the flags we use, `state` parsed into named fields, the runtime's own error text in every
//! error, `NOTIFY_SOCKET` never passed on, and a deadline on every call after which the
//! runtime process is killed and reaped.
//!
//! `create` is special: the container's init inherits the runtime's stdio, so the caller hands
//! in the container's stdio and the runtime's own messages go to `--log` in JSON, read back on
//! failure (as containerd's shim does).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

/// How long a runtime call may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("failed to run {runtime} {command}")]
    Spawn {
        runtime: String,
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{runtime} {command} {id} failed ({status}): {message}")]
    Failed { runtime: String, command: &'static str, id: String, status: ExitStatus, message: String },
    #[error("{runtime} {command} {id} did not finish within {timeout:?}; killed")]
    Timeout { runtime: String, command: &'static str, id: String, timeout: Duration },
    #[error("{runtime} start {id}: the container's init exited before it was started")]
    InitExited { runtime: String, id: String },
    #[error("{runtime} start {id}")]
    StartFifo {
        runtime: String,
        id: String,
        #[source]
        source: super::start::FifoError,
    },
    #[error("container {id} does not exist in {runtime}")]
    NotFound { runtime: String, id: String },
    #[error("{runtime} state {id} printed unreadable JSON")]
    BadState {
        runtime: String,
        id: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

/// `<runtime> state` output, as the OCI runtime spec defines it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub id: String,
    pub status: Status,
    #[serde(default)]
    pub pid: i32,
    pub bundle: PathBuf,
}

/// Flags for `create`.
#[derive(Debug, Default)]
pub struct CreateOptions {
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// Where the runtime writes its own messages (JSON lines); read back on failure.
    pub log_file: Option<PathBuf>,
    /// The container init's stdio; `None` is /dev/null.
    pub stdin: Option<Stdio>,
    pub stdout: Option<Stdio>,
    pub stderr: Option<Stdio>,
}

#[derive(Debug, Clone)]
pub struct OciRuntime {
    pub name: String,
    pub path: PathBuf,
    /// The runtime's state directory (`--root`).
    pub root: PathBuf,
    pub timeout: Duration,
    /// `--systemd-cgroup`: cgroups are systemd scopes (cgroupsPath `<slice>:<prefix>:<name>`).
    pub systemd_cgroup: bool,
    /// What it can do on this kernel (probed at start).
    pub features: super::Features,
}

impl OciRuntime {
    pub fn new(name: &str, path: &Path, root: &Path) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            root: root.into(),
            timeout: DEFAULT_TIMEOUT,
            systemd_cgroup: false,
            features: Default::default(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("--root").arg(&self.root).args(self.systemd_cgroup.then_some("--systemd-cgroup")).args(args);
        // A runtime that sees NOTIFY_SOCKET hands it to the container, which then tells systemd
        // it is the daemon that became ready.
        c.env_remove("NOTIFY_SOCKET").stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    /// `exec` for a streaming session; the caller wires its stdio. With `console_socket` the
    /// runtime makes a pty in the container and sends its master there.
    pub fn exec_session(&self, id: &str, args: &[String], console_socket: Option<&Path>) -> Command {
        let mut c = self.command(&["exec"]);
        if let Some(socket) = console_socket {
            c.arg("--tty").arg("--console-socket").arg(socket);
        }
        c.arg(id).args(args).process_group(0);
        c
    }

    /// Runs a short command to completion under the deadline, capturing its output.
    async fn run(&self, command: &'static str, id: &str, args: &[&str]) -> Result<Vec<u8>, OciError> {
        let mut c = self.command(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = c.spawn().map_err(|source| OciError::Spawn { runtime: self.name.clone(), command, source })?;
        // On timeout the future is dropped, and with it the child: kill_on_drop kills it and
        // tokio reaps it.
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| OciError::Timeout { runtime: self.name.clone(), command, id: id.into(), timeout: self.timeout })?
            .map_err(|source| OciError::Spawn { runtime: self.name.clone(), command, source })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if is_not_found(&message) {
            return Err(OciError::NotFound { runtime: self.name.clone(), id: id.into() });
        }
        Err(OciError::Failed { runtime: self.name.clone(), command, id: id.into(), status: out.status, message })
    }

    pub async fn version(&self) -> Result<String, OciError> {
        let out = self.run("--version", "", &["--version"]).await?;
        Ok(String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_string())
    }

    pub async fn create(&self, id: &str, bundle: &Path, opts: CreateOptions) -> Result<(), OciError> {
        let command = "create";
        let mut c = Command::new(&self.path);
        c.arg("--root").arg(&self.root).args(self.systemd_cgroup.then_some("--systemd-cgroup"));
        if let Some(log) = &opts.log_file {
            c.arg("--log").arg(log).arg("--log-format").arg("json");
        }
        c.arg("create").arg("--bundle").arg(bundle);
        if let Some(p) = &opts.pid_file {
            c.arg("--pid-file").arg(p);
        }
        if let Some(s) = &opts.console_socket {
            c.arg("--console-socket").arg(s);
        }
        c.arg(id).env_remove("NOTIFY_SOCKET").kill_on_drop(true);
        c.stdin(opts.stdin.unwrap_or_else(Stdio::null));
        c.stdout(opts.stdout.unwrap_or_else(Stdio::null));
        c.stderr(opts.stderr.unwrap_or_else(Stdio::null));
        let mut child = c.spawn().map_err(|source| OciError::Spawn { runtime: self.name.clone(), command, source })?;
        let status = tokio::time::timeout(self.timeout, child.wait())
            .await
            .map_err(|_| OciError::Timeout { runtime: self.name.clone(), command, id: id.into(), timeout: self.timeout })?
            .map_err(|source| OciError::Spawn { runtime: self.name.clone(), command, source })?;
        if status.success() {
            return Ok(());
        }
        let message = match &opts.log_file {
            Some(log) => last_error(log).await,
            None => String::from("(no runtime log configured)"),
        };
        Err(OciError::Failed { runtime: self.name.clone(), command, id: id.into(), status, message })
    }

    /// Starts created container `id`, whose init is `init`: through the runtime's exec fifo
    /// where it has one (no process to run), else with `<runtime> start`.
    pub async fn start(&self, id: &str, init: i32) -> Result<(), OciError> {
        use super::start::{FifoStart, through_fifo};
        let started = through_fifo(&self.root, id, init, self.timeout).await;
        match started.map_err(|source| OciError::StartFifo { runtime: self.name.clone(), id: id.into(), source })? {
            FifoStart::Started => Ok(()),
            FifoStart::NoFifo => self.run("start", id, &["start", id]).await.map(drop),
            FifoStart::InitGone => Err(OciError::InitExited { runtime: self.name.clone(), id: id.into() }),
            FifoStart::TimedOut => {
                Err(OciError::Timeout { runtime: self.name.clone(), command: "start", id: id.into(), timeout: self.timeout })
            }
        }
    }

    pub async fn state(&self, id: &str) -> Result<ContainerState, OciError> {
        let out = self.run("state", id, &["state", id]).await?;
        serde_json::from_slice(&out).map_err(|source| OciError::BadState { runtime: self.name.clone(), id: id.into(), source })
    }

    /// Sends `signal` to the container's init, or with `all` to every process in it.
    pub async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), OciError> {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, sig.as_str()]);
        self.run("kill", id, &args).await.map(drop)
    }

    /// Dumps a running container with CRIU into `image_path` (`checkpoint --leave-running`),
    /// CRIU's own log and work files in `work_path`.
    pub async fn checkpoint(&self, id: &str, image_path: &Path, work_path: &Path) -> Result<(), OciError> {
        let (image, work) = (image_path.display().to_string(), work_path.display().to_string());
        let args = ["checkpoint", "--image-path", &image, "--work-path", &work, "--leave-running", "--file-locks", "--tcp-established", id];
        self.run("checkpoint", id, &args).await.map(drop)
    }

    /// Applies new resources (`update --resources -`, the runtime spec's LinuxResources JSON).
    pub async fn update(&self, id: &str, resources: &serde_json::Value) -> Result<(), OciError> {
        use tokio::io::AsyncWriteExt;
        let command = "update";
        let mut c = self.command(&["update", "--resources", "-", id]);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|source| OciError::Spawn { runtime: self.name.clone(), command, source })?;
        let mut stdin = child.stdin.take().expect("piped");
        let body = serde_json::to_vec(resources).expect("JSON values serialize");
        let feed = async move {
            let r = stdin.write_all(&body).await;
            drop(stdin);
            r
        };
        let (_, out) = tokio::time::timeout(self.timeout, async { tokio::join!(feed, child.wait_with_output()) })
            .await
            .map_err(|_| OciError::Timeout { runtime: self.name.clone(), command, id: id.into(), timeout: self.timeout })?;
        let out = out.map_err(|source| OciError::Spawn { runtime: self.name.clone(), command, source })?;
        if out.status.success() {
            return Ok(());
        }
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(OciError::Failed { runtime: self.name.clone(), command, id: id.into(), status: out.status, message })
    }

    /// Deletes the container; one that does not exist is already deleted (idempotent).
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), OciError> {
        let args: &[&str] = if force { &["delete", "--force", id] } else { &["delete", id] };
        match self.run("delete", id, args).await {
            Err(OciError::NotFound { .. }) => Ok(()),
            other => other.map(drop),
        }
    }
}

/// What an `exec` printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    pub timed_out: bool,
}

impl OciRuntime {
    /// Runs `args` in the container and collects its output, at most `cap` bytes per stream
    /// (the rest is read and dropped). On `timeout` the exec'd process itself is killed, not
    /// just the runtime, so nothing is left running in the container.
    pub async fn exec_sync(
        &self,
        id: &str,
        args: &[String],
        timeout: Option<Duration>,
        cap: usize,
        scratch: &Path,
    ) -> Result<ExecOutput, OciError> {
        let command = "exec";
        let pid_file = scratch.join(format!("exec-{}.pid", crate::state::new_id()));
        let mut c = self.command(&["exec", "--pid-file"]);
        c.arg(&pid_file).arg(id).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|source| OciError::Spawn { runtime: self.name.clone(), command, source })?;
        let (out, err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let run = async { tokio::join!(read_capped(out, cap), read_capped(err, cap), child.wait()) };
        let (timed_out, result) = match timeout {
            Some(t) => match tokio::time::timeout(t, run).await {
                Ok(r) => (false, Some(r)),
                Err(_) => (true, None),
            },
            None => (false, Some(run.await)),
        };
        let result = match result {
            Some(r) => r,
            None => {
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                    .and_then(rustix::process::Pid::from_raw)
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                let _ = std::fs::remove_file(&pid_file);
                return Ok(ExecOutput { stdout: Vec::new(), stderr: Vec::new(), exit_code: -1, timed_out: true });
            }
        };
        let _ = std::fs::remove_file(&pid_file);
        let (stdout, stderr, status) = result;
        let status = status.map_err(|source| OciError::Spawn { runtime: self.name.clone(), command, source })?;
        use std::os::unix::process::ExitStatusExt;
        let exit_code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Ok(ExecOutput { stdout, stderr, exit_code, timed_out })
    }
}

/// Reads `r` to its end, keeping at most `cap` bytes.
pub(crate) async fn read_capped(mut r: impl tokio::io::AsyncRead + Unpin, cap: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// runc says "container does not exist", crun "... No such file or directory".
fn is_not_found(stderr: &str) -> bool {
    stderr.contains("does not exist") || stderr.contains("container not found") || stderr.contains("No such file or directory")
}

/// The last `error` entry of a runtime's JSON log, or its last line.
async fn last_error(log: &Path) -> String {
    let Ok(text) = tokio::fs::read_to_string(log).await else { return format!("(runtime log {} unreadable)", log.display()) };
    #[derive(Deserialize)]
    struct Line {
        #[serde(default)]
        level: String,
        #[serde(default)]
        msg: String,
    }
    let lines: Vec<Line> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    lines
        .iter()
        .rev()
        .find(|l| l.level == "error")
        .or(lines.last())
        .map(|l| l.msg.clone())
        .unwrap_or_else(|| text.lines().last().unwrap_or_default().to_string())
}
