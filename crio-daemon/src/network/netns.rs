//! Pod network namespaces: pinned (see `crate::namespace`), removable, enterable.

use std::io;
use std::path::{Path, PathBuf};

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
