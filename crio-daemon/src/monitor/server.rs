//! The monitor process: one per pod, the subreaper of its containers, the holder of their
//! stdio and the writer of their logs and exit records. It serves the daemon on a unix socket
//! and keeps running when the daemon dies or restarts. Plain threads, no async runtime: it
//! must stay small (it runs once per pod).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::log_format::Stream;
use super::logs::{LogSink, pump};
use super::protocol::{ExitRecord, Request, Response, Watched};
use super::reaper::Reaper;

/// After a container's init exits, how long its other processes may keep its output open
/// before the exit is recorded anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

struct Container {
    pid: i32,
    log: Arc<LogSink>,
    exit: Option<ExitRecord>,
}

#[derive(Clone)]
struct Monitor {
    reaper: Reaper,
    containers: Arc<Mutex<HashMap<String, Container>>>,
    /// PID 1 of the pod's shared PID namespace, when the pod has one.
    pid_holder: Option<i32>,
}

/// Runs the monitor on `socket` until killed; with `pid_namespace`, it first starts the holder
/// of the pod's shared PID namespace.
pub fn run(socket: &Path, pid_namespace: bool) -> io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(io::Error::from)?;
    // Its own session: signals aimed at the daemon's process group do not reach it.
    let _ = rustix::process::setsid();
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let reaper = Reaper::start();
    // From this thread, which serves until the monitor dies: the holder dies with it.
    let pid_holder = if pid_namespace { Some(crate::sys::spawn_pid_namespace_holder()?) } else { None };
    let monitor = Monitor { reaper, containers: Arc::default(), pid_holder };
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let m = monitor.clone();
        std::thread::spawn(move || m.serve(conn));
    }
    Ok(())
}

impl Monitor {
    fn serve(&self, conn: UnixStream) {
        let Ok(mut writer) = conn.try_clone() else { return };
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { return };
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(req) => self.handle(req),
                Err(e) => Response { error: format!("bad request: {e}"), ..Default::default() },
            };
            let mut out = serde_json::to_vec(&response).expect("responses serialize");
            out.push(b'\n');
            if writer.write_all(&out).is_err() {
                return;
            }
        }
    }

    fn handle(&self, req: Request) -> Response {
        let result = match req {
            Request::Create { id, bundle, runtime, runtime_root, log_path, log_max_size, exit_file } => self
                .create(&id, &bundle, &runtime, &runtime_root, &log_path, log_max_size, exit_file)
                .map(|pid| Response { pid: Some(pid), ..Default::default() }),
            Request::ReopenLog { id } => match self.containers.lock().expect("containers poisoned").get(&id) {
                Some(c) => c.log.reopen().map(|()| Response::default()).map_err(|e| format!("reopening the log of {id}: {e}")),
                None => Err(format!("container {id} is not watched by this monitor")),
            },
            Request::State => {
                let containers = self.containers.lock().expect("containers poisoned");
                let mut list: Vec<Watched> =
                    containers.iter().map(|(id, c)| Watched { id: id.clone(), pid: c.pid, exit: c.exit }).collect();
                list.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(Response { containers: list, pid_holder: self.pid_holder, ..Default::default() })
            }
        };
        result.unwrap_or_else(|error| Response { error, ..Default::default() })
    }

    #[allow(clippy::too_many_arguments, reason = "the fields of one request")]
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        runtime: &Path,
        root: &Path,
        log_path: &Path,
        log_max: u64,
        exit_file: PathBuf,
    ) -> Result<i32, String> {
        if self.containers.lock().expect("containers poisoned").contains_key(id) {
            return Err(format!("container {id} already exists in this monitor"));
        }
        let log = LogSink::open(log_path, log_max).map_err(|e| format!("opening log {}: {e}", log_path.display()))?;
        let (out_r, out_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (err_r, err_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
        let pid_file = bundle.join("pid");
        let runtime_log = bundle.join("runtime.log");
        let mut cmd = Command::new(runtime);
        cmd.arg("--root").arg(root).arg("--log").arg(&runtime_log).args(["--log-format", "json", "create", "--bundle"]);
        cmd.arg(bundle).arg("--pid-file").arg(&pid_file).arg(id);
        cmd.env_remove("NOTIFY_SOCKET").stdin(Stdio::null()).stdout(out_w).stderr(err_w);
        let runtime_pid = self.reaper.spawn(&mut cmd).map_err(|e| format!("running {}: {e}", runtime.display()))?;
        // Our copies of the write ends must close, or the pumps would never see EOF.
        drop(cmd);
        let status = self.reaper.wait(runtime_pid);
        if status.code != 0 {
            let msg = std::fs::read_to_string(&runtime_log).ok().and_then(|t| last_error(&t)).unwrap_or_default();
            return Err(format!("{} create {id} failed (exit {}): {msg}", runtime.display(), status.code));
        }
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("reading {}: {e}", pid_file.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("pid file {}: {e}", pid_file.display()))?;
        self.reaper.watch(pid);
        let pumps = [spawn_pump(out_r, Stream::Stdout, log.clone()), spawn_pump(err_r, Stream::Stderr, log.clone())];
        self.containers.lock().expect("containers poisoned").insert(id.into(), Container { pid, log, exit: None });
        let m = self.clone();
        let id = id.to_string();
        std::thread::spawn(move || {
            let exit = m.reaper.wait(pid);
            let deadline = std::time::Instant::now() + DRAIN_GRACE;
            for p in pumps {
                while !p.is_finished() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
            let record = ExitRecord { exit_code: exit.code, signal: exit.signal, exited_at_unix_nanos: now };
            if let Err(e) = crate::storage::write_json(&exit_file, &record) {
                eprintln!("crio-monitor: writing exit record {}: {e}", exit_file.display());
            }
            if let Some(c) = m.containers.lock().expect("containers poisoned").get_mut(&id) {
                c.exit = Some(record);
            }
        });
        Ok(pid)
    }
}

fn spawn_pump(from: std::io::PipeReader, stream: Stream, log: Arc<LogSink>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || pump(from, stream, log))
}

/// The runtime's last error message from its JSON log.
fn last_error(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(str::to_string))
}
