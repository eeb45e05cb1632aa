//! What the daemon and a pod's monitor say to each other: one JSON object per line on the
//! monitor's unix socket, a request and its response.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run `<runtime> create` with the monitor holding the container's stdio and reaping it.
    Create(CreateRequest),
    /// Reopen a container's log file (after the kubelet rotated it).
    ReopenLog { id: String },
    /// The containers this monitor watches.
    State,
    /// Join a container's stdio: after the response the connection carries `attach` frames
    /// both ways until the container exits or the daemon hangs up.
    Attach { id: String },
    /// Drop everything kept for a removed container (its log file, stdin, attachers, exit);
    /// unknown ids are already forgotten.
    Forget { id: String },
}

/// Frames on an attach connection: a kind byte, a big-endian u32 length, the payload.
pub mod attach {
    /// Daemon to monitor: bytes for the container's stdin.
    pub const STDIN: u8 = 0;
    /// Monitor to daemon: the container's output.
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    /// Monitor to daemon: the container exited (payload: its exit code, i32 big-endian);
    /// the last frame.
    pub const EXIT: u8 = 3;
    /// Daemon to monitor: this attacher's stdin ended.
    pub const STDIN_CLOSE: u8 = 4;
    /// Daemon to monitor: the terminal's new size (u16 width, u16 height, big-endian).
    pub const RESIZE: u8 = 5;
    /// Largest payload either side sends or accepts.
    pub const MAX_PAYLOAD: usize = 64 * 1024;
    pub const HEADER_LEN: usize = 5;

    pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(HEADER_LEN + payload.len());
        f.push(kind);
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// The kind and payload length of a frame header; `None` for a length over the cap.
    pub fn header(h: [u8; HEADER_LEN]) -> Option<(u8, usize)> {
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        (len <= MAX_PAYLOAD).then_some((h[0], len))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub log_path: PathBuf,
    /// Bytes after which the log is truncated and continues; 0 is no cap.
    pub log_max_size: u64,
    /// Where the exit record is written, atomically, when the container's init exits.
    pub exit_file: PathBuf,
    /// For a tty container: where the runtime sends the pty master (a short path: unix
    /// socket paths are limited to 108 bytes).
    #[serde(default)]
    pub console_socket: Option<PathBuf>,
    /// Pass `--systemd-cgroup` to the runtime.
    #[serde(default)]
    pub systemd_cgroup: bool,
    /// Keep the container's stdin open (a pipe the monitor holds) instead of /dev/null.
    #[serde(default)]
    pub stdin: bool,
    /// Close the container's stdin when its first attacher leaves.
    #[serde(default)]
    pub stdin_once: bool,
    /// Where the runtime writes the container's pid (read once, then removed). runc writes it
    /// with O_SYNC: in the volatile runroot (tmpfs on nodes) that costs nothing, in the bundle
    /// on the state disk a flush. Unset (a daemon of an earlier version): `pid` in the bundle.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// Milliseconds `<runtime> create` may take before it is killed; 0 is no limit.
    #[serde(default)]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Empty on success.
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub containers: Vec<Watched>,
    /// PID 1 of the pod's shared PID namespace (`State`), if the monitor holds one.
    #[serde(default)]
    pub pid_holder: Option<i32>,
    /// How long the runtime's create ran, spawn to exit, as the monitor saw it (`Create`):
    /// what the rest of the round trip costs is the difference.
    #[serde(default)]
    pub runtime_us: Option<u64>,
    /// How long the monitor spent on the request, from reading it to having the answer
    /// (`Create`): the rest of the round trip is the connection and the wake-ups.
    #[serde(default)]
    pub handled_us: Option<u64>,
    /// The unified (v2) cgroup the created init is in, as its /proc/<pid>/cgroup's `0::`
    /// line names it (`Create`; none on a v1-only host): the daemon moves it only when it is
    /// not the container's.
    #[serde(default)]
    pub init_cgroup: Option<String>,
    /// The error is a runtime call that did not finish in time (and was killed).
    #[serde(default)]
    pub timed_out: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watched {
    pub id: String,
    pub pid: i32,
    pub exit: Option<ExitRecord>,
}

/// How a container's init ended. The code is 128 + signal for a signal, as shells report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub exited_at_unix_nanos: u64,
}
