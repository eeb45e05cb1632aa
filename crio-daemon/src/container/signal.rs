//! Signals to a container's init without `<runtime> kill` (a Go process start per stop). The
//! signal goes through a pidfd, and only after `/proc/<pid>/cgroup` shows the process in a
//! cgroup named for the container: a pid the init left behind (reaped, then reused) is never
//! signalled, and the pidfd keeps that check true until the signal is sent.

use std::io;
use std::path::Path;

use rustix::process::{Pid, PidfdFlags, Signal};

/// Linux signal numbers by name (without `SIG`), as images' `StopSignal` and the CRI name them.
const NAMES: &[(&str, i32)] = &[
    ("ABRT", 6),
    ("ALRM", 14),
    ("BUS", 7),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("FPE", 8),
    ("HUP", 1),
    ("ILL", 4),
    ("INT", 2),
    ("IO", 29),
    ("IOT", 6),
    ("KILL", 9),
    ("PIPE", 13),
    ("POLL", 29),
    ("PROF", 27),
    ("PWR", 30),
    ("QUIT", 3),
    ("SEGV", 11),
    ("STKFLT", 16),
    ("STOP", 19),
    ("SYS", 31),
    ("TERM", 15),
    ("TRAP", 5),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("USR1", 10),
    ("USR2", 12),
    ("VTALRM", 26),
    ("WINCH", 28),
    ("XCPU", 24),
    ("XFSZ", 25),
];

/// The C library's real-time range (glibc keeps 32 and 33 for itself), as Docker and CRI-O.
const RTMIN: i32 = 34;
const RTMAX: i32 = 64;

/// The number of a signal named as images and the CRI do: `SIGTERM`, `TERM`, `15`,
/// `SIGRTMIN+3`, `RTMAX-1`, or the CRI's `SIGRTMINPLUS3` / `SIGRTMAXMINUS1`.
pub fn number(name: &str) -> Option<i32> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("SIG").unwrap_or(&n);
    if let Ok(v) = n.parse::<i32>() {
        return (1..=RTMAX).contains(&v).then_some(v);
    }
    let rt = |base: i32, rest: &str, sign: i32| -> Option<i32> {
        let off: i32 = if rest.is_empty() { 0 } else { rest.parse().ok()? };
        let v = base + sign * off;
        (RTMIN..=RTMAX).contains(&v).then_some(v)
    };
    if let Some(rest) = n.strip_prefix("RTMIN") {
        let rest = rest.strip_prefix('+').or_else(|| rest.strip_prefix("PLUS")).unwrap_or(rest);
        return rt(RTMIN, rest, 1);
    }
    if let Some(rest) = n.strip_prefix("RTMAX") {
        let rest = rest.strip_prefix('-').or_else(|| rest.strip_prefix("MINUS")).unwrap_or(rest);
        return rt(RTMAX, rest, -1);
    }
    NAMES.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
}

/// The CRI's name of signal `n` (`SIGTERM`, `SIGRTMINPLUS3`, `SIGRTMAXMINUS1`).
pub fn cri_name(n: i32) -> Option<String> {
    if let Some((name, _)) = NAMES.iter().find(|(_, v)| *v == n) {
        return Some(format!("SIG{name}"));
    }
    match n {
        RTMIN => Some("SIGRTMIN".into()),
        RTMAX => Some("SIGRTMAX".into()),
        n if (RTMIN..=RTMIN + 15).contains(&n) => Some(format!("SIGRTMINPLUS{}", n - RTMIN)),
        n if (RTMAX - 14..RTMAX).contains(&n) => Some(format!("SIGRTMAXMINUS{}", RTMAX - n)),
        _ => None,
    }
}

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
