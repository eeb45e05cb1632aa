//! Pod network namespaces: pinned (see `crate::namespace`), removable, enterable; a few made
//! ahead of the pods that will take them (`NetNsPool`).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::namespace::{self, Kind};

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
    /// Creates a fresh namespace pinned at `path` (its parent must exist), its loopback up: what
    /// the CNI loopback plugin would do, without a process start per pod.
    pub fn create(path: &Path) -> Result<NetNs, NetNsError> {
        namespace::pin_new(Kind::Net, path, crate::sys::set_loopback_up)
            .map_err(|source| NetNsError::Create { path: path.into(), source })?;
        Ok(NetNs { path: path.to_path_buf() })
    }

    /// Unpins and deletes; a namespace already gone is success.
    pub fn remove(path: &Path) -> Result<(), NetNsError> {
        namespace::unpin(path).map_err(|source| NetNsError::Remove { path: path.into(), source })
    }

    pub fn is_pinned(path: &Path) -> bool {
        namespace::is_pinned(path)
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetNsError> {
        namespace::run_in_net(&self.path, f).map_err(|source| NetNsError::Enter { path: self.path.clone(), source })
    }
}

/// Network namespaces made ahead, loopback up, so that a pod's network set-up starts with
/// one: the kernel's creation of a namespace (here 0.5 ms alone, more behind the cleanup of
/// the ones torn down before it) leaves RunPodSandbox's path and is refilled beside it.
/// Held by fds, not pinned: nothing is mounted for them, and a crash leaves nothing behind.
pub struct NetNsPool {
    ready: Mutex<Vec<OwnedFd>>,
    size: usize,
    filling: AtomicBool,
}

impl NetNsPool {
    /// An empty pool that keeps up to `size` namespaces once filled (0: none, every pod's is
    /// made when asked for).
    pub fn new(size: usize) -> NetNsPool {
        NetNsPool { ready: Mutex::new(Vec::new()), size, filling: AtomicBool::new(false) }
    }

    /// A fresh namespace pinned at `path`: one made ahead when there is one, else made now.
    /// Blocking.
    pub fn take(&self, path: &Path) -> Result<NetNs, NetNsError> {
        let began = std::time::Instant::now();
        let ready = self.ready.lock().expect("netns pool poisoned").pop();
        if let Some(fd) = ready {
            match namespace::pin_held(fd.as_fd(), path) {
                Ok(()) => {
                    tracing::debug!(pin_us = began.elapsed().as_micros() as u64, "network namespace made ahead taken");
                    return Ok(NetNs { path: path.to_path_buf() });
                }
                // Dropped with its fd; a new one is made instead.
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "pinning a namespace made ahead failed; making one"),
            }
        }
        let made = NetNs::create(path);
        tracing::debug!(create_us = began.elapsed().as_micros() as u64, "network namespace made (none ready)");
        made
    }

    /// Makes namespaces until the pool is full; one filler at a time. Blocking.
    pub fn fill(&self) {
        if self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        while self.ready.lock().expect("netns pool poisoned").len() < self.size {
            match namespace::new_held(Kind::Net, crate::sys::set_loopback_up) {
                Ok(fd) => self.ready.lock().expect("netns pool poisoned").push(fd),
                Err(e) => {
                    tracing::debug!(error = %e, "making a network namespace ahead failed; pods make their own");
                    break;
                }
            }
        }
        self.filling.store(false, Ordering::Release);
    }

    /// How many are ready.
    pub fn ready(&self) -> usize {
        self.ready.lock().expect("netns pool poisoned").len()
    }
}
