//! The monitor process: one per pod, the subreaper of its containers, the holder of their
//! stdio and the writer of their logs and exit records. It serves the daemon on a unix socket
//! and keeps running when the daemon dies or restarts. Plain threads, no async runtime: it
//! must stay small (it runs once per pod).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::attach::{Attachers, Target};
use super::console::ConsoleSocket;
use super::log_format::Stream;
use super::logs::{LogSink, pump};
use super::protocol::{CreateRequest, ExitRecord, Request, Response, Watched};
use super::reaper::Reaper;

/// After a container's init exits, how long its other processes may keep its output open
/// before the exit is recorded anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

struct Container {
    pid: i32,
    log: Arc<LogSink>,
    exit: Option<ExitRecord>,
    /// The write end of its stdin (or its pty master), held open while it runs.
    stdin: Option<OwnedFd>,
    tty: bool,
    stdin_once: bool,
    attachers: Arc<Attachers>,
}

#[derive(Clone)]
struct Monitor {
    reaper: Reaper,
    containers: Arc<Mutex<HashMap<String, Container>>>,
    /// PID 1 of the pod's shared PID namespace, when the pod has one.
    pid_holder: Option<i32>,
}

/// The pod's namespaces a monitor holds for its containers to join.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holds {
    /// A shared PID namespace, whose PID 1 (the holder) the monitor starts.
    pub pid_namespace: bool,
    /// An IPC namespace: the monitor's own, made at its start.
    pub ipc: bool,
    /// A UTS namespace with this hostname: the monitor's own, made at its start.
    pub uts: Option<String>,
}

/// Runs the monitor on `socket` until killed. Before anything else, while it has one thread,
/// it moves into the pod's new IPC and UTS namespaces (`holds`), so that
/// `/proc/<its pid>/ns/{ipc,uts}` are the pod's for as long as it lives: the runtime it starts
/// joins them by that path, and no mount pins them on the host. With `pid_namespace`, it then
/// starts the holder of the pod's shared PID namespace.
pub fn run(socket: &Path, holds: &Holds) -> io::Result<()> {
    // The main thread, before any other exists: the namespaces are the process's, and every
    // thread and child after this one inherits them.
    if holds.ipc {
        crate::sys::unshare(crate::sys::ThreadNamespace::Ipc)?;
    }
    if let Some(hostname) = &holds.uts {
        crate::sys::unshare(crate::sys::ThreadNamespace::Uts)?;
        rustix::system::sethostname(hostname.as_bytes()).map_err(io::Error::from)?;
    }
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(io::Error::from)?;
    // Its own session: signals aimed at the daemon's process group do not reach it.
    let _ = rustix::process::setsid();
    let _ = std::fs::remove_file(socket);
    let listener = crate::socket_path::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    // Tells the daemon it may connect (it waits on our stdout instead of polling the socket).
    let mut out = std::io::stdout();
    let _ = out.write_all(b"ready\n").and_then(|()| out.flush());
    let reaper = Reaper::start();
    // From this thread, which serves until the monitor dies: the holder dies with it.
    let pid_holder = if holds.pid_namespace { Some(crate::sys::spawn_pid_namespace_holder()?) } else { None };
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
        let mut reader = BufReader::new(conn);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let read_at = std::time::Instant::now();
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(Request::Attach { id }) => {
                    let target = self.attach_target(&id);
                    let response = match &target {
                        Ok(_) => Response::default(),
                        Err(error) => Response { error: error.clone(), ..Default::default() },
                    };
                    let mut out = serde_json::to_vec(&response).expect("responses serialize");
                    out.push(b'\n');
                    if writer.write_all(&out).is_ok()
                        && let Ok(target) = target
                    {
                        super::attach::serve(reader, writer, target);
                    }
                    return;
                }
                Ok(req) => self.handle(req),
                Err(e) => Response { error: format!("bad request: {e}"), ..Default::default() },
            };
            let response = Response { handled_us: Some(read_at.elapsed().as_micros() as u64), ..response };
            let mut out = serde_json::to_vec(&response).expect("responses serialize");
            out.push(b'\n');
            if writer.write_all(&out).is_err() {
                return;
            }
        }
    }

    fn handle(&self, req: Request) -> Response {
        let result = match req {
            Request::Create(req) => match self.create(req) {
                Ok(Created { pid, runtime_us, init_cgroup }) => {
                    Ok(Response { pid: Some(pid), runtime_us: Some(runtime_us), init_cgroup, ..Default::default() })
                }
                Err(Failure { error, timed_out }) => Ok(Response { error, timed_out, ..Default::default() }),
            },
            Request::ReopenLog { id } => match self.containers.lock().expect("containers poisoned").get(&id) {
                Some(c) => c.log.reopen().map(|()| Response::default()).map_err(|e| format!("reopening the log of {id}: {e}")),
                None => Err(format!("container {id} is not watched by this monitor")),
            },
            Request::Attach { .. } => Err("attach is served on its own connection".to_string()),
            Request::Forget { id } => {
                // Pumps still draining a leftover process's output keep their own reference to
                // the log; the container's cgroup is gone by now, so they end soon.
                let gone = self.containers.lock().expect("containers poisoned").remove(&id);
                if let Some(c) = gone {
                    c.attachers.end(c.exit.map_or(-1, |e| e.exit_code));
                }
                Ok(Response::default())
            }
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

    /// What an attacher of container `id` reaches.
    fn attach_target(&self, id: &str) -> Result<Target, String> {
        let containers = self.containers.lock().expect("containers poisoned");
        let c = containers.get(id).ok_or_else(|| format!("container {id} is not watched by this monitor"))?;
        let stdin = match &c.stdin {
            Some(fd) => Some(fd.try_clone().map_err(|e| format!("dup of the stdin of {id}: {e}"))?),
            None => None,
        };
        let (m, id, tty, once) = (self.clone(), id.to_string(), c.tty, c.stdin_once);
        let stdin_done = Box::new(move || {
            if !once {
                return;
            }
            if let Some(c) = m.containers.lock().expect("containers poisoned").get_mut(&id) {
                match (&c.stdin, tty) {
                    // A terminal's end of input is ^D; closing the master would hang it up.
                    (Some(master), true) => {
                        let _ = rustix::io::write(master, &[4]);
                    }
                    _ => c.stdin = None,
                }
            }
        });
        Ok(Target { attachers: c.attachers.clone(), stdin, tty: c.tty, exited: c.exit.map(|e| e.exit_code), stdin_done })
    }

    /// The container's pid, how long the runtime ran and where it placed the init.
    fn create(&self, req: CreateRequest) -> Result<Created, Failure> {
        let id = req.id.as_str();
        if self.containers.lock().expect("containers poisoned").contains_key(id) {
            return Err(format!("container {id} already exists in this monitor").into());
        }
        let pid_file = req.pid_file.clone().unwrap_or_else(|| req.bundle.join("pid"));
        let runtime_log = req.bundle.join("runtime.log");
        let mut cmd = runtime_create(&req, &pid_file, &runtime_log);
        let Stdio3 { console, pipes, mut stdin } = stdio(&mut cmd, &req)?;
        cmd.arg(id);
        let receiver = console.clone().map(|c| std::thread::spawn(move || c.receive()));
        let spawned = std::time::Instant::now();
        let runtime = self.reaper.spawn(&mut cmd).map_err(|e| format!("running {}: {e}", req.runtime.display()))?;
        let runtime_pid = runtime.pid;
        // Our copies of the write ends must close, or the pumps would never see EOF.
        drop(cmd);
        // The log is opened and the output pumps started while the runtime runs: a new file's
        // inode and two threads, off the create's path.
        let attachers = Arc::new(Attachers::default());
        let log = match LogSink::open(&req.log_path, req.log_max_size) {
            Ok(log) => log,
            Err(e) => {
                self.abandon(runtime_pid, console.as_deref());
                return Err(format!("opening log {}: {e}", req.log_path.display()).into());
            }
        };
        // The thread that will record the init's exit is started now, while the runtime runs:
        // a thread's start is off the answer's path then. It is handed the init's pid and the
        // output pumps once they are known, and ends at once if the create fails.
        let (hand_over, handed) = std::sync::mpsc::sync_channel(1);
        self.record_exit_when_done(id.to_string(), handed, req.exit_file.clone());
        let mut pumps = match pipes {
            Some((out_r, err_r)) => vec![
                spawn_pump(out_r, Stream::Stdout, log.clone(), attachers.clone()),
                spawn_pump(err_r, Stream::Stderr, log.clone(), attachers.clone()),
            ],
            None => Vec::new(),
        };
        let limit = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms));
        let status = match self.reaper.wait_spawned(&runtime, limit) {
            Some(status) => status,
            None => {
                // A hung runtime: killed and reaped, and the daemon told it was a deadline.
                let limit = limit.expect("only a deadline ends the wait without an exit");
                self.abandon(runtime_pid, console.as_deref());
                let error = format!("{} create {id} did not finish within {limit:?}; killed", req.runtime.display());
                return Err(Failure { error, timed_out: true });
            }
        };
        let runtime_us = spawned.elapsed().as_micros() as u64;
        let master = match (receiver, &console) {
            (Some(receiver), Some(socket)) => {
                if !receiver.is_finished() {
                    ConsoleSocket::wake(socket.path());
                }
                receiver.join().map_err(|_| "console receiver panicked".to_string())?.ok()
            }
            _ => None,
        };
        drop(console);
        let read = (status.code == 0).then(|| std::fs::read_to_string(&pid_file));
        // Read once (or never, after a failed create): nothing else looks at it, and the
        // runroot outlives the container. Removed behind the answer when the create
        // succeeds (an unlink on a disk-backed runroot costs ~0.4 ms on a small VM).
        let ours = req.pid_file.is_some().then(|| pid_file.clone());
        let remove_pid_file = |file: &Option<std::path::PathBuf>| {
            if let Some(file) = file {
                let _ = std::fs::remove_file(file);
            }
        };
        let Some(read) = read else {
            remove_pid_file(&ours);
            let msg = std::fs::read_to_string(&runtime_log).ok().and_then(|t| last_error(&t)).unwrap_or_default();
            return Err(format!("{} create {id} failed (exit {}): {msg}", req.runtime.display(), status.code).into());
        };
        let pid = read
            .map_err(|e| format!("reading {}: {e}", pid_file.display()))
            .and_then(|text| text.trim().parse().map_err(|e| format!("pid file {}: {e}", pid_file.display())));
        let pid: i32 = match pid {
            Ok(pid) => pid,
            Err(e) => {
                remove_pid_file(&ours);
                return Err(e.into());
            }
        };
        self.reaper.watch(pid);
        let tty = master.is_some();
        match master {
            Some(master) => {
                // The container's stdin too: kept open for as long as the container runs.
                let reader = std::fs::File::from(master.try_clone().map_err(|e| format!("dup of the pty master: {e}"))?);
                stdin = Some(master);
                pumps.push(spawn_pump(reader, Stream::Stdout, log.clone(), attachers.clone()));
            }
            None if pumps.is_empty() => {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid).expect("a positive pid"),
                    rustix::process::Signal::KILL,
                );
                remove_pid_file(&ours);
                return Err(format!("{} create {id}: no pty master arrived on the console socket", req.runtime.display()).into());
            }
            None => {}
        }
        let c = Container { pid, log, exit: None, stdin, tty, stdin_once: req.stdin_once, attachers };
        self.containers.lock().expect("containers poisoned").insert(id.into(), c);
        let _ = hand_over.send(Handed { pid, pumps, pid_file: ours });
        // Read here, where the pid is known anyway: the daemon checks it before the start
        // without a trip of its own to a blocking thread.
        let init_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|t| crate::cgroups::unified_path_in(&t).map(str::to_string));
        Ok(Created { pid, runtime_us, init_cgroup })
    }

    /// Kills and reaps a runtime whose create is given up, and wakes the console receiver
    /// waiting for its pty.
    fn abandon(&self, runtime_pid: i32, console: Option<&ConsoleSocket>) {
        if let Some(p) = rustix::process::Pid::from_raw(runtime_pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
        self.reaper.wait(runtime_pid);
        if let Some(c) = console {
            ConsoleSocket::wake(c.path());
        }
    }

    /// Once the container's init exits and its output is drained, its exit record is written
    /// (durably: the daemon reads it, perhaps after a restart). What it needs arrives on
    /// `handed` once the runtime has created the container; nothing arrives if it failed.
    fn record_exit_when_done(&self, id: String, handed: Receiver<Handed>, exit_file: std::path::PathBuf) {
        let m = self.clone();
        std::thread::spawn(move || {
            let Ok(Handed { pid, pumps, pid_file }) = handed.recv() else { return };
            if let Some(file) = pid_file {
                let _ = std::fs::remove_file(file);
            }
            let exit = m.reaper.wait(pid);
            let deadline = std::time::Instant::now() + DRAIN_GRACE;
            for p in pumps {
                // Returns when the pump ends (its sender drops) or the grace is over.
                let _ = p.0.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
            }
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
            let record = ExitRecord { exit_code: exit.code, signal: exit.signal, exited_at_unix_nanos: now };
            // Written under the lock, so a State request never sees the file without the
            // record or the record without the file (the daemon reads either).
            let mut containers = m.containers.lock().expect("containers poisoned");
            if let Err(e) = crate::durable::write_json(&exit_file, &record) {
                eprintln!("crio-monitor: writing exit record {}: {e}", exit_file.display());
            }
            if let Some(c) = containers.get_mut(&id) {
                c.exit = Some(record);
                c.stdin = None;
                c.attachers.end(record.exit_code);
            }
        });
    }
}

/// What a successful create answers.
struct Created {
    pid: i32,
    /// Microseconds from the runtime's spawn to its exit.
    runtime_us: u64,
    init_cgroup: Option<String>,
}

/// What the exit-record thread of a created container is handed.
struct Handed {
    pid: i32,
    pumps: Vec<PumpDone>,
    /// The runtime's pid file, read and now to be removed.
    pid_file: Option<std::path::PathBuf>,
}

/// Why a create failed, and whether it was the runtime's deadline.
struct Failure {
    error: String,
    timed_out: bool,
}

impl From<String> for Failure {
    fn from(error: String) -> Self {
        Failure { error, timed_out: false }
    }
}

/// `<runtime> create` of the request's bundle, its pid and log files beside it.
fn runtime_create(req: &CreateRequest, pid_file: &Path, runtime_log: &Path) -> Command {
    let mut cmd = Command::new(&req.runtime);
    cmd.arg("--root").arg(&req.runtime_root).args(req.systemd_cgroup.then_some("--systemd-cgroup")).arg("--log").arg(runtime_log).args([
        "--log-format",
        "json",
        "create",
        "--bundle",
    ]);
    cmd.arg(&req.bundle).arg("--pid-file").arg(pid_file);
    cmd.env_remove("NOTIFY_SOCKET");
    cmd
}

/// How a new container's stdio is wired: a console socket the runtime sends the pty to, or
/// pipes (the read ends of stdout and stderr, the write end of stdin when asked for).
struct Stdio3 {
    console: Option<Arc<ConsoleSocket>>,
    pipes: Option<(std::io::PipeReader, std::io::PipeReader)>,
    stdin: Option<OwnedFd>,
}

/// A tty container's stdio is the pty the runtime sends us; others get pipes.
fn stdio(cmd: &mut Command, req: &CreateRequest) -> Result<Stdio3, String> {
    if let Some(path) = &req.console_socket {
        let socket = ConsoleSocket::bind(path).map_err(|e| format!("console socket {}: {e}", path.display()))?;
        cmd.arg("--console-socket").arg(socket.address_for_runtime());
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        return Ok(Stdio3 { console: Some(Arc::new(socket)), pipes: None, stdin: None });
    }
    let (out_r, out_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let mut stdin = None;
    if req.stdin {
        let (in_r, in_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
        cmd.stdin(in_r);
        stdin = Some(OwnedFd::from(in_w));
    } else {
        cmd.stdin(Stdio::null());
    }
    cmd.stdout(out_w).stderr(err_w);
    Ok(Stdio3 { console: None, pipes: Some((out_r, err_r)), stdin })
}

/// A pump's end, to wait for with a deadline: its thread holds the sender until it finishes.
struct PumpDone(std::sync::mpsc::Receiver<()>);

fn spawn_pump(from: impl std::io::Read + Send + 'static, stream: Stream, log: Arc<LogSink>, attachers: Arc<Attachers>) -> PumpDone {
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        pump(from, stream, log, &attachers);
        drop(done);
    });
    PumpDone(ended)
}

/// The runtime's last error message from its JSON log.
fn last_error(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(str::to_string))
}
