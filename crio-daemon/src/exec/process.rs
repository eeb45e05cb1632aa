//! An exec session's process, however it was started: a child we spawned (`<runtime> exec`),
//! or a command the exec helper started in the container and handed over before exiting. The
//! daemon is a child subreaper, so the handed-over command becomes its child; it is watched
//! through a pidfd (opened while it cannot have been reaped: nothing else waits for it), so
//! its pid can never be mistaken for another process's.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use tokio::io::unix::AsyncFd;

pub enum Process {
    Child(tokio::process::Child),
    Adopted { pid: Pid, fd: AsyncFd<OwnedFd> },
}

impl Process {
    /// Takes over `pid`, a child of ours (reparented to us) not yet reaped.
    pub fn adopt(pid: Pid) -> io::Result<Process> {
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
        Ok(Process::Adopted { pid, fd: crate::sys::async_readable(fd)? })
    }

    /// Waits for the exit; the shell's view of it (128 + n for signal n).
    pub async fn wait(&mut self) -> io::Result<i32> {
        match self {
            Process::Child(c) => c.wait().await.map(super::exit_code),
            Process::Adopted { fd, .. } => loop {
                let mut ready = fd.readable().await?;
                match rustix::process::waitid(WaitId::PidFd(fd.get_ref().as_fd()), WaitIdOptions::EXITED | WaitIdOptions::NOHANG) {
                    Ok(Some(st)) => {
                        return Ok(st.exit_status().or_else(|| st.terminating_signal().map(|s| 128 + s)).unwrap_or(-1));
                    }
                    Ok(None) => ready.clear_ready(),
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            },
        }
    }

    /// Ends the process and its process group, and reaps it.
    pub async fn stop(&mut self) {
        match self {
            Process::Child(c) => super::stop(c).await,
            Process::Adopted { pid, fd } => {
                // Not reaped yet, so neither the pid nor the group id can have been reused.
                let _ = rustix::process::kill_process_group(*pid, Signal::KILL);
                let _ = rustix::process::pidfd_send_signal(fd.get_ref(), Signal::KILL);
                let _ = self.wait().await;
            }
        }
    }
}
