//! The next container's directories, made ahead: its writable layer's (`upper`, `work`) and
//! its mount point, as `containers/.ahead` and `overlay/.ahead`. A create renames them to its
//! id instead of making five directories while the kubelet waits; new directories cost a
//! new inode each, 0.2-0.4 ms apiece on a file system without a journal, which skips every
//! inode deleted in the last minutes when it allocates one. They are made again after each
//! create, off its path. Two creates at once: one takes them, the other makes its own. They
//! are empty and named by no record, so a store opening after a crash removes them with
//! whatever else the index does not name.

use std::fs;
use std::io;
use std::path::Path;

use rustix::fs::{CWD, RenameFlags};

use super::{Store, StoreError, io_err};

/// The name of a set of directories made ahead, and the prefix of one being made.
pub(super) const AHEAD: &str = ".ahead";

impl Store {
    /// Makes the next container's directories unless they are there; safe to call at once
    /// from several threads (each builds its own under a temporary name, one is kept).
    pub fn make_dirs_ahead(&self) -> Result<(), StoreError> {
        for (parent, inner) in [(self.root.join("containers"), &["upper", "work"][..]), (self.runroot.join("overlay"), &["merged"][..])] {
            if parent.join(AHEAD).exists() {
                continue;
            }
            fs::create_dir_all(&parent).map_err(io_err(&parent))?;
            let tmp = tempfile::Builder::new().prefix(&format!("{AHEAD}-")).tempdir_in(&parent).map_err(io_err(&parent))?;
            for d in inner {
                let p = tmp.path().join(d);
                fs::create_dir(&p).map_err(io_err(&p))?;
            }
            match rustix::fs::renameat_with(CWD, tmp.path(), CWD, parent.join(AHEAD), RenameFlags::NOREPLACE) {
                // Kept: no longer a temporary directory to delete.
                Ok(()) => drop(tmp.keep()),
                // Another thread's set got there first; ours goes with `tmp`.
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(StoreError::Io { path: parent.join(AHEAD), source: e.into() }),
            }
        }
        Ok(())
    }

    /// Gives the directories made ahead to container `id` (each of the two sets that is
    /// there); what is missing, its create makes. Returns whether both were taken: then the
    /// container's directories are all there, and nothing is mounted on them.
    pub(super) fn take_dirs_ahead(&self, id: &str) -> bool {
        let take = |parent: &Path| match fs::rename(parent.join(AHEAD), parent.join(id)) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::debug!(container_id = %id, error = %e, "directories made ahead not taken");
                false
            }
        };
        take(&self.root.join("containers")) & take(&self.runroot.join("overlay"))
    }
}

/// Whether a name under `containers/` or `overlay/` is a set made ahead (or one being made).
pub(super) fn is_ahead(name: &str) -> bool {
    name.starts_with(AHEAD)
}
