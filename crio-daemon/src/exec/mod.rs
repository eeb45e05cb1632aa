//! ExecSync without the OCI runtime. `runc exec` costs two Go process starts, a JSON parse of
//! the bundle and a seccomp compile per probe; a kubelet probing every container every few
//! seconds pays that all day. We do what it does for an exec with one small helper
//! (`crio-exec`, no async runtime): join the container's cgroups and, through a pidfd, all its
//! namespaces at once; fork into its PID namespace; take the container's rlimits, user,
//! capabilities, no_new_privs and seccomp filter; exec.
//!
//! What varies per container is decided once, at CreateContainer, from the OCI spec the
//! runtime gets: `exec.json` (the process profile, `profile`) and `seccomp.bpf` (the filter
//! compiled by libseccomp as runc compiles it, `filter`), both in the bundle. A container
//! whose spec asks for what the helper does not do (AppArmor or SELinux labels, user
//! namespaces) gets no profile, and its execs go through the runtime as before.

pub mod filter;
pub mod helper;
mod process;
pub mod profile;
mod run;

pub use process::Process;
pub use profile::ExecProfile;
pub use run::{Session, SessionStdio, exec_sync, exit_code, spawn_session, stop};

/// The profile's file in a bundle: the profile as one line of JSON and, for a container with a
/// seccomp filter, a newline and the compiled program (raw `struct sock_filter` array). One
/// file per container, not two: each new file is an inode and a directory entry on the
/// state disk at every create.
pub const PROFILE_FILE: &str = "exec.json";
/// Where earlier versions kept the compiled filter; read for their containers, whose profile
/// file carries no program.
pub const FILTER_FILE: &str = "seccomp.bpf";

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("seccomp profile cannot be compiled: {why}")]
    Filter { why: String },
    #[error("failed to write {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no pty for the exec session: {why}")]
    Pty { why: String },
    #[error("the exec helper failed (exit {status}): {why}")]
    Helper { status: i32, why: String },
    #[error("failed to run the exec helper {path}")]
    Spawn {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
