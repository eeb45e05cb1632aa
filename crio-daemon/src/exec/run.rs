//! The daemon's side: start the helper for one ExecSync, collect its output, and on timeout
//! end the command before answering: the helper, asked with SIGTERM, kills the command's
//! process group and reaps the command (a process of the container's PID namespace whose
//! parent died would stay there as a zombie its init may never reap). A helper that does not
//! finish in time is killed with its process group; the command then dies through its
//! parent-death signal.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::ExecError;
use crate::oci::ExecOutput;

/// How long the helper gets to kill and reap a timed-out command.
const HELPER_GRACE: Duration = Duration::from_secs(2);

/// Runs `cmd` in container `id` (init `pid`, bundle `bundle`) through the helper at `helper`,
/// keeping at most `cap` bytes of each output stream.
pub async fn exec_sync(
    helper: &Path,
    bundle: &Path,
    id: &str,
    pid: i32,
    cmd: &[String],
    timeout: Option<Duration>,
    cap: usize,
) -> Result<ExecOutput, ExecError> {
    let mut c = tokio::process::Command::new(helper);
    c.arg(bundle).arg(id).arg(pid.to_string()).arg("--").args(cmd);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    c.env_remove("NOTIFY_SOCKET");
    let mut child = c.spawn().map_err(|source| ExecError::Spawn { path: helper.into(), source })?;
    let (out, err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let run = async { tokio::join!(crate::oci::read_capped(out, cap), crate::oci::read_capped(err, cap), child.wait()) };
    let done = match timeout {
        Some(t) => tokio::time::timeout(t, run).await.ok(),
        None => Some(run.await),
    };
    let Some((stdout, stderr, status)) = done else {
        stop(&mut child).await;
        return Ok(ExecOutput { stdout: Vec::new(), stderr: Vec::new(), exit_code: -1, timed_out: true });
    };
    let status = status.map_err(|source| ExecError::Spawn { path: helper.into(), source })?;
    Ok(ExecOutput { stdout, stderr, exit_code: exit_code(status), timed_out: false })
}

/// The shell's view of how a process ended: its code, or 128 + the signal that killed it.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Ends a helper (started in its own process group) and its command: SIGTERM makes the
/// helper kill and reap the command; a helper that does not finish in time is killed with
/// its group, and the command dies through its parent-death signal.
pub async fn stop(child: &mut tokio::process::Child) {
    let Some(group) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) else { return };
    let _ = rustix::process::kill_process(group, rustix::process::Signal::TERM);
    // Once reaped its pid (and group id) may be reused: killed only while it is ours.
    if tokio::time::timeout(HELPER_GRACE, child.wait()).await.is_err() {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = child.wait().await;
    }
}

/// An exec session's command, started in the container and handed over by the helper.
pub struct Session {
    pub process: super::Process,
    pub stdin: Option<tokio::process::ChildStdin>,
    pub stdout: Option<tokio::process::ChildStdout>,
    pub stderr: Option<tokio::process::ChildStderr>,
    /// With a tty: the pty's master, made inside the container.
    pub master: Option<std::os::fd::OwnedFd>,
}

/// Starts `cmd` in container `id` for an exec session, its stdio wired as asked. The helper
/// starts the command, tells us its pid and exits; we (a child subreaper) adopt the command,
/// so no process waits per open session. With a tty, the helper makes the pty inside the
/// container and sends its master back over a socket on its stdin.
pub async fn spawn_session(
    helper: &Path,
    bundle: &Path,
    id: &str,
    pid: i32,
    cmd: &[String],
    stdio: SessionStdio,
) -> Result<Session, ExecError> {
    let mut c = tokio::process::Command::new(helper);
    let spawn_err = |source| ExecError::Spawn { path: helper.into(), source };
    let socket = match stdio {
        SessionStdio::Tty => {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(spawn_err)?;
            c.arg("--tty").stdin(std::os::fd::OwnedFd::from(theirs)).stdout(Stdio::null()).stderr(Stdio::piped());
            Some(ours)
        }
        SessionStdio::Pipes { stdin, stdout, stderr } => {
            let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
            // A helper's own failure is told on stderr, when the client reads it.
            c.stdin(pipe(stdin)).stdout(pipe(stdout)).stderr(if stderr { Stdio::piped() } else { Stdio::null() });
            None
        }
    };
    let pid_file = bundle.join(format!("exec-{}.pid", &crate::state::new_id()[..16]));
    c.arg("--detach").arg(&pid_file).arg(bundle).arg(id).arg(pid.to_string()).arg("--").args(cmd);
    c.process_group(0).kill_on_drop(true).env_remove("NOTIFY_SOCKET");
    let mut child = c.spawn().map_err(spawn_err)?;
    // Our copy of the helper's end must go, or a helper that dies before sending would
    // leave the receive below waiting.
    drop(c);
    let master = match socket {
        None => None,
        Some(socket) => {
            let received = tokio::task::spawn_blocking(move || {
                socket.set_read_timeout(Some(PTY_TIMEOUT))?;
                crate::monitor::console::receive_fd(&socket)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
            match received {
                Ok(m) => Some(m),
                Err(e) => {
                    stop(&mut child).await;
                    let _ = std::fs::remove_file(&pid_file);
                    return Err(ExecError::Pty { why: format!("{e}; the helper said: {}", helper_words(&mut child).await) });
                }
            }
        }
    };
    // Taken first: waiting would close the stdin we hold for the command.
    let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
    let status = tokio::time::timeout(PTY_TIMEOUT, child.wait()).await;
    let adopted = match status {
        Ok(Ok(s)) if s.success() => std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
            .map(super::Process::adopt),
        Ok(Ok(s)) => {
            let _ = std::fs::remove_file(&pid_file);
            return Err(ExecError::Helper { status: exit_code(s), why: helper_words(&mut child).await });
        }
        _ => None,
    };
    let _ = std::fs::remove_file(&pid_file);
    match adopted {
        Some(Ok(process)) => Ok(Session { process, stdin, stdout, stderr: child.stderr.take(), master }),
        Some(Err(source)) => Err(ExecError::Spawn { path: helper.into(), source }),
        None => {
            stop(&mut child).await;
            Err(ExecError::Helper { status: -1, why: "the helper did not hand the command over".into() })
        }
    }
}

/// What a failed helper wrote on its stderr (the command never started, so it is all ours).
async fn helper_words(child: &mut tokio::process::Child) -> String {
    let mut why = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(1), tokio::io::AsyncReadExt::read_to_string(&mut err, &mut why)).await;
    }
    why.trim().chars().take(1024).collect()
}

/// How long the helper may take to send the pty it made.
const PTY_TIMEOUT: Duration = Duration::from_secs(10);

/// How an exec session's process is wired.
pub enum SessionStdio {
    /// A pty made in the container as stdin, stdout and stderr.
    Tty,
    /// A pipe for each stream asked for, /dev/null for the others.
    Pipes { stdin: bool, stdout: bool, stderr: bool },
}
