//! Network namespaces pinned by a bind mount of their nsfs file, so they outlive every process
//! in them (and the daemon), and can be entered by path. A namespace is made on a short-lived
//! thread of its own: unshare, pin, exit; no runtime thread ever changes namespace.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::mount::UnmountFlags;

#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("failed to create network namespace at {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to remove network namespace at {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to enter network namespace {path}")]
    Enter {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    pub path: PathBuf,
}

impl NetNs {
    /// Creates a fresh namespace pinned at `path` (its parent must exist).
    pub fn create(path: &Path) -> Result<NetNs, NetNsError> {
        let err = |source| NetNsError::Create { path: path.to_path_buf(), source };
        fs::File::create(path).map_err(err)?;
        let target = path.to_path_buf();
        let pinned = std::thread::spawn(move || -> io::Result<()> {
            crate::sys::unshare_network()?;
            rustix::mount::mount_bind("/proc/thread-self/ns/net", &target).map_err(io::Error::from)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
        if let Err(e) = pinned {
            let _ = fs::remove_file(path);
            return Err(err(e));
        }
        Ok(NetNs { path: path.to_path_buf() })
    }

    /// Unpins and deletes; a namespace already gone is success.
    pub fn remove(path: &Path) -> Result<(), NetNsError> {
        let err = |source| NetNsError::Remove { path: path.to_path_buf(), source };
        match rustix::mount::unmount(path, UnmountFlags::DETACH) {
            Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(err(e.into())),
        }
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// Whether `path` still holds a pinned namespace (after a restart, say).
    pub fn is_pinned(path: &Path) -> bool {
        let Ok(f) = fs::File::open(path) else { return false };
        rustix::fs::fstatfs(&f).is_ok_and(|s| s.f_type == NSFS_MAGIC)
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetNsError> {
        let path = self.path.clone();
        let file = fs::File::open(&path).map_err(|source| NetNsError::Enter { path: path.clone(), source })?;
        std::thread::spawn(move || -> io::Result<T> {
            rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("thread in namespace panicked")))
        .map_err(|source| NetNsError::Enter { path, source })
    }
}

/// `NSFS_MAGIC` from linux/magic.h.
const NSFS_MAGIC: rustix::fs::FsWord = 0x6e73_6673;
