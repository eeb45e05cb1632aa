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
