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
    let group = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32));
    let (out, err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let run = async { tokio::join!(crate::oci::read_capped(out, cap), crate::oci::read_capped(err, cap), child.wait()) };
    let done = match timeout {
        Some(t) => tokio::time::timeout(t, run).await.ok(),
        None => Some(run.await),
    };
    let Some((stdout, stderr, status)) = done else {
        if let Some(g) = group {
            let _ = rustix::process::kill_process(g, rustix::process::Signal::TERM);
            // Once reaped its pid (and group id) may be reused: killed only while it is ours.
            if tokio::time::timeout(HELPER_GRACE, child.wait()).await.is_err() {
                let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
            }
        }
        return Ok(ExecOutput { stdout: Vec::new(), stderr: Vec::new(), exit_code: -1, timed_out: true });
    };
    let status = status.map_err(|source| ExecError::Spawn { path: helper.into(), source })?;
    use std::os::unix::process::ExitStatusExt;
    let exit_code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(ExecOutput { stdout, stderr, exit_code, timed_out: false })
}
