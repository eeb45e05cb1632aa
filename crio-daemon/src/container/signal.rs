//! Signals to a container's init without `<runtime> kill` (a Go process start per stop). The
//! signal goes through a pidfd, and only after `/proc/<pid>/cgroup` shows the process in a
//! cgroup named for the container: a pid the init left behind (reaped, then reused) is never
//! signalled, and the pidfd keeps that check true until the signal is sent.

use std::io;
use std::path::Path;

use rustix::process::{Pid, PidfdFlags, Signal};

#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// The init is gone (or its pid now belongs to a process outside the container).
    Gone,
}

/// Sends `signal` to `pid` if it still is a process of container `id` (its cgroups carry the
/// id, as every container cgroup this daemon makes does); `proc` is the host's /proc.
pub fn signal_init(proc: &Path, pid: i32, id: &str, signal: i32) -> io::Result<Delivery> {
    let Some(p) = Pid::from_raw(pid) else { return Ok(Delivery::Gone) };
    let sig = Signal::from_named_raw(signal).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("signal {signal}")))?;
    let fd = match rustix::process::pidfd_open(p, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(Delivery::Gone),
        Err(e) => return Err(e.into()),
    };
    // Read after the pidfd exists: if this is still the process the pidfd names, its cgroups
    // are the container's; if that process died meanwhile, the signal below finds it gone.
    let cgroups = match std::fs::read_to_string(proc.join(pid.to_string()).join("cgroup")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Delivery::Gone),
        Err(e) => return Err(e),
    };
    if !cgroups.lines().any(|l| l.rsplit(':').next().is_some_and(|path| path.contains(id))) {
        return Ok(Delivery::Gone);
    }
    match rustix::process::pidfd_send_signal(&fd, sig) {
        Ok(()) => Ok(Delivery::Sent),
        Err(rustix::io::Errno::SRCH) => Ok(Delivery::Gone),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A temp /proc where `pid`'s cgroup file says `cgroup_line`.
    fn proc_with(pid: u32, cgroup_line: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join(pid.to_string())).unwrap();
        std::fs::write(t.path().join(pid.to_string()).join("cgroup"), format!("{cgroup_line}\n")).unwrap();
        t
    }

    #[test]
    fn a_process_of_the_container_gets_the_signal() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let proc = proc_with(child.id(), &format!("4:memory:/crio/pod-x/crio-{ID}"));
        assert_eq!(signal_init(proc.path(), child.id() as i32, ID, libc::SIGTERM).unwrap(), Delivery::Sent);
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGTERM));
    }

    #[test]
    fn a_pid_outside_the_container_is_left_alone() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let proc = proc_with(child.id(), "0::/user.slice/other");
        assert_eq!(signal_init(proc.path(), child.id() as i32, ID, libc::SIGKILL).unwrap(), Delivery::Gone);
        assert!(child.try_wait().unwrap().is_none(), "not signalled");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_reaped_init_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let proc = proc_with(pid, &format!("4:memory:/crio-{ID}"));
        // SIGCONT: harmless should the pid have been reused already.
        assert_eq!(signal_init(proc.path(), pid as i32, ID, libc::SIGCONT).unwrap(), Delivery::Gone);
        assert_eq!(signal_init(proc.path(), 0, ID, libc::SIGCONT).unwrap(), Delivery::Gone);
    }
}
