//! The calls the exec helper needs that no safe wrapper offers: fork, waiting for signals,
//! and loading a seccomp program.
#![allow(unsafe_code, reason = "this module is where the crate's unsafe lives")]

use std::io;

/// Threads of the calling process, from procfs.
fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads line in /proc/self/status"))
}

/// Proof that the process had one thread when it was made. Checked early, because after
/// joining a container's mount namespace our own `/proc/self` may no longer resolve.
pub struct SingleThreaded(std::marker::PhantomData<*const ()>);

/// `SingleThreaded` when the process has one thread, else an error.
pub fn single_threaded() -> io::Result<SingleThreaded> {
    match thread_count()? {
        1 => Ok(SingleThreaded(std::marker::PhantomData)),
        n => Err(io::Error::other(format!("the process has {n} threads; fork needs one"))),
    }
}

/// Forks. `None` in the child, the child's pid in the parent.
pub fn fork(_proof: SingleThreaded) -> io::Result<Option<i32>> {
    // SAFETY: the process had exactly one thread when `_proof` was made, and the helper
    // (the only caller) starts none, so no lock can be held by a thread that does not exist
    // in the child; the child then only makes syscalls and execs or exits.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// The signals the helper takes synchronously: the daemon's request to end the command
/// (SIGTERM) and the command's exit (SIGCHLD).
fn helper_signals() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value for sigemptyset to initialise; the pointer
    // is to a live local, and SIGTERM / SIGCHLD are valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// Blocks (`block`) or unblocks SIGTERM and SIGCHLD for the calling single-threaded process,
/// so they wait for `wait_signal` instead of acting. A blocked mask survives exec, so the
/// command's process unblocks them before it execs.
pub fn block_helper_signals(block: bool) -> io::Result<()> {
    let set = helper_signals();
    let how = if block { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
    // SAFETY: `set` is an initialised signal set that outlives the call; the old mask is not
    // asked for (null is allowed).
    match unsafe { libc::sigprocmask(how, &set, std::ptr::null_mut()) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Waits until SIGTERM or SIGCHLD (blocked beforehand) is pending and takes it; returns it.
pub fn wait_signal() -> io::Result<i32> {
    let set = helper_signals();
    loop {
        // SAFETY: `set` is an initialised signal set that outlives the call; the siginfo
        // pointer may be null.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if sig >= 0 {
            return Ok(sig);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Loads `program` (an array of `struct sock_filter`, as libseccomp exports it) as a seccomp
/// filter of the calling thread, with `seccomp(2)` `flags`.
pub fn load_seccomp_filter(program: &[u8], flags: u32) -> io::Result<()> {
    const INSTRUCTION: usize = std::mem::size_of::<libc::sock_filter>();
    if program.is_empty() || !program.len().is_multiple_of(INSTRUCTION) || program.len() / INSTRUCTION > u16::MAX as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a seccomp program of {} bytes", program.len())));
    }
    // Copied into properly aligned instructions: the bytes come from a file.
    let instructions: Vec<libc::sock_filter> = program
        .chunks_exact(INSTRUCTION)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog { len: instructions.len() as u16, filter: instructions.as_ptr() as *mut libc::sock_filter };
    // SAFETY: `prog` points at `instructions`, which outlives the call; the kernel copies the
    // program and validates every instruction itself, so a malformed one is an error, not UB.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags, &prog as *const libc::sock_fprog) };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}
