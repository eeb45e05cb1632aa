//! The only place with `unsafe`: thin wrappers over syscalls that rustix marks unsafe, each
//! with the argument for why our use is sound.
#![allow(unsafe_code, reason = "this module is where the crate's unsafe lives")]

use std::io;

/// Namespaces a thread may leave on its own without affecting the rest of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadNamespace {
    Net,
    Ipc,
    Uts,
}

/// Moves the calling thread (only) into a new namespace of `kind`.
pub fn unshare(kind: ThreadNamespace) -> io::Result<()> {
    use rustix::thread::UnshareFlags;
    let flags = match kind {
        ThreadNamespace::Net => UnshareFlags::NEWNET,
        ThreadNamespace::Ipc => UnshareFlags::NEWIPC,
        ThreadNamespace::Uts => UnshareFlags::NEWUTS,
    };
    // SAFETY: rustix marks unshare unsafe because CLONE_FILES can leave other threads holding
    // descriptors this thread no longer shares. We pass only one of CLONE_NEWNET, NEWIPC or
    // NEWUTS, which change this thread's namespace and leave its file table, memory and
    // filesystem state shared with the process.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(io::Error::from)
}

/// Blocks until some child has exited and returns its pid, leaving it unreaped (`WNOWAIT`), so
/// the one reaper can decide who gets its status. `None` when there are no children.
pub fn wait_any_exited() -> io::Result<Option<i32>> {
    // SAFETY: an all-zero siginfo_t is a valid value (plain C struct of integers and unions).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `info` is a valid, writable siginfo_t for the call's duration; P_ALL ignores
        // the id argument; the flags only ask to wait for exits without reaping.
        let r = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 {
            // SAFETY: waitid succeeded with WEXITED, so the kernel filled the SIGCHLD fields
            // of `info`, which si_pid reads.
            return Ok(Some(unsafe { info.si_pid() }));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(None),
            _ => return Err(err),
        }
    }
}
