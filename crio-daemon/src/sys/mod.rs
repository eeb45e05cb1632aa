//! The only place with `unsafe`: thin wrappers over syscalls that rustix marks unsafe, each
//! with the argument for why our use is sound.
#![allow(unsafe_code, reason = "this module is where the crate's unsafe lives")]

pub mod exec;

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

/// Brings the loopback interface of the calling thread's network namespace up (the kernel
/// then gives it 127.0.0.1 and ::1), as the CNI loopback plugin does, without starting it.
pub fn set_loopback_up() -> io::Result<()> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let sock = rustix::net::socket_with(AddressFamily::INET, SocketType::DGRAM, SocketFlags::CLOEXEC, None)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: an all-zero ifreq is a valid value (a name array and a union of integers).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `fd` is an open socket for the whole call and `req` a valid, writable ifreq
    // naming an interface with a NUL-terminated name, which SIOCGIFFLAGS reads and fills.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so the flags member of the union is the one written.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the kernel runs x32-ABI system calls: `getpid` by its x32 number (the x86_64 number
/// with bit 30 set) answers a pid there and ENOSYS on a kernel built or booted without x32.
/// Only for a caller under no seccomp filter: a filter without the x32 ABI kills the caller.
#[cfg(target_arch = "x86_64")]
pub fn x32_syscalls_run() -> bool {
    const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
    // SAFETY: getpid takes no arguments, reads and writes no memory and cannot fail; under the
    // x32 ABI it is the same call. On a kernel without x32 the number is simply unknown.
    unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) >= 0 }
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

/// Starts the holder of a new PID namespace: a copy of the calling process (a fork without
/// exec, so it costs a few pages) that is PID 1 of a fresh namespace, reaps whatever is
/// orphaned there and does nothing else. Returns its pid as we see it.
///
/// Call it from a thread that lives as long as the holder should: the holder is killed when
/// that thread exits (`PR_SET_PDEATHSIG`), and so is everything in its namespace.
pub fn spawn_pid_namespace_holder() -> io::Result<i32> {
    // The holder checks through this that we still live once its death signal is armed: a
    // parent killed in between would otherwise leave it running forever.
    let parent = rustix::process::pidfd_open(rustix::process::getpid(), rustix::process::PidfdFlags::empty())?;
    let parent_fd = std::os::fd::AsRawFd::as_raw_fd(&parent);
    let flags = (libc::CLONE_NEWPID | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: clone with a null stack and no CLONE_VM/CLONE_THREAD behaves as fork: the child
    // gets a private copy of this thread's stack and the address space. In a multi-threaded
    // process the child may only make async-signal-safe calls, which `holder_main` honours:
    // it never returns into Rust code that could allocate or take a lock held by a thread
    // that does not exist in the child.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => holder_main(parent_fd),
        pid => Ok(pid as i32),
    }
}

/// The holder's whole life: plain syscalls on stack values, never returning.
fn holder_main(parent: i32) -> ! {
    // SAFETY: every call below is async-signal-safe and only reads or writes the stack
    // values passed to it (zeroed sigset_t is a valid empty set to fill); nothing allocates.
    // `parent` is this process's copy of the pidfd the parent held open across the clone.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        // A pidfd turns readable when its process has exited (and works across PID
        // namespaces, unlike signalling through it).
        let mut pfd = libc::pollfd { fd: parent, events: libc::POLLIN, revents: 0 };
        if libc::poll(&mut pfd, 1, 0) != 0 {
            libc::_exit(0);
        }
        libc::prctl(libc::PR_SET_NAME, c"crio-pidns".as_ptr());
        // The monitor's sockets, logs and pipes stay with the monitor.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        // Reap first, then wait: a child that exits in between leaves SIGCHLD pending (it is
        // blocked), so sigwaitinfo returns at once and no zombie is left behind.
        loop {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            libc::sigwaitinfo(&chld, std::ptr::null_mut());
        }
    }
}

/// `fd` (a fifo, a pidfd) watched for readability by the tokio reactor.
pub fn async_readable(fd: std::os::fd::OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of the OwnedFd, which is open, is closed only when
    // dropped, and reports the same descriptor from as_raw_fd for its whole life.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.map_err(io::Error::from)
}

/// `fd` (a pty master) watched for readability and writability by the tokio reactor.
pub fn async_read_write(fd: std::os::fd::OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: as for `async_readable`: the AsyncFd owns the OwnedFd for its whole life.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(io::Error::from)
}
