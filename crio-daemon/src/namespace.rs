//! Namespaces pinned by a bind mount of their nsfs file, so they outlive every process in
//! them (and the daemon) and can be joined by path. Each is made on a short-lived thread of
//! its own: unshare, set up, pin, exit; no runtime thread ever changes namespace.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::mount::UnmountFlags;

pub use crate::sys::ThreadNamespace as Kind;

fn proc_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Net => "net",
        Kind::Ipc => "ipc",
        Kind::Uts => "uts",
    }
}

/// Creates a namespace of `kind` pinned at `path` (its parent must exist); `setup` runs inside
/// it first (to set a hostname, say).
pub fn pin_new(kind: Kind, path: &Path, setup: impl FnOnce() -> io::Result<()> + Send + 'static) -> io::Result<()> {
    fs::File::create(path)?;
    let target = path.to_path_buf();
    let pinned = std::thread::spawn(move || -> io::Result<()> {
        crate::sys::unshare(kind)?;
        setup()?;
        let source = format!("/proc/thread-self/ns/{}", proc_name(kind));
        rustix::mount::mount_bind(source.as_str(), &target).map_err(io::Error::from)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
    if pinned.is_err() {
        let _ = fs::remove_file(path);
    }
    pinned
}

/// Creates a namespace of `kind`, `setup` run inside it first, held by the returned fd alone
/// (no pin, no mount: it goes with the fd, or with the process that holds it).
pub fn new_held(kind: Kind, setup: impl FnOnce() -> io::Result<()> + Send + 'static) -> io::Result<std::os::fd::OwnedFd> {
    std::thread::spawn(move || -> io::Result<std::os::fd::OwnedFd> {
        crate::sys::unshare(kind)?;
        setup()?;
        Ok(fs::File::open(format!("/proc/thread-self/ns/{}", proc_name(kind)))?.into())
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
}

/// Pins the namespace held by `fd` (from `new_held`) at `path`.
pub fn pin_held(fd: std::os::fd::BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    pin_existing(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())), path)
}

/// Pins the namespace that `source` (a `/proc/<pid>/ns/<kind>` file) refers to at `path`.
pub fn pin_existing(source: &Path, path: &Path) -> io::Result<()> {
    fs::File::create(path)?;
    let pinned = rustix::mount::mount_bind(source, path).map_err(io::Error::from);
    if pinned.is_err() {
        let _ = fs::remove_file(path);
    }
    pinned
}

/// Whether `a` and `b` are the same namespace (both nsfs files: /proc links or pins).
pub fn same(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.dev() == b.dev() && a.ino() == b.ino()
        }
        _ => false,
    }
}

/// Unpins and deletes; a namespace already gone is success.
pub fn unpin(path: &Path) -> io::Result<()> {
    match rustix::mount::unmount(path, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `NSFS_MAGIC` from linux/magic.h.
const NSFS_MAGIC: rustix::fs::FsWord = 0x6e73_6673;

/// Whether `path` still holds a pinned namespace.
pub fn is_pinned(path: &Path) -> bool {
    let Ok(f) = fs::File::open(path) else { return false };
    rustix::fs::fstatfs(&f).is_ok_and(|s| s.f_type == NSFS_MAGIC)
}

/// Runs `f` on a thread inside the network namespace at `path`.
pub fn run_in_net<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let file = fs::File::open(path)?;
    std::thread::spawn(move || -> io::Result<T> {
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))?;
        Ok(f())
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("thread in namespace panicked")))
}
