//! Pod and container records: in memory for lookups, one file each on disk, written durably
//! before a change is visible, loaded on start (`records`). Each entity has its own operation
//! lock (so operations on one pod or container are serialized while different ones run in
//! parallel) and its own record lock, held only to read or swap the record, never across an
//! await, so status calls never wait behind a slow stop.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

mod creations;
mod records;
mod stores;

pub use creations::Creations;
pub use records::{Entry, Records, Staged};
pub use stores::Stores;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("failed to write state {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read state directory {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state directory {path} is in use by another crio (pid {holder})")]
    Locked { path: PathBuf, holder: String },
}

/// Holds `<dir>/.lock` for as long as the returned file lives: one daemon per state
/// directory, since a second would recover (and tear down) what the first is running. The
/// kernel drops the lock when its holder dies, even by SIGKILL, so it never goes stale.
///
/// A POSIX record lock, not flock(2): a flock belongs to the open file, which a child shares
/// between fork and exec, so a daemon killed while spawning a plugin left its successor
/// locked out for that moment. A record lock belongs to this process alone. Its catch (closing
/// any descriptor of the file drops it) does not bite: nothing else opens the file.
pub fn lock_dir(dir: &Path) -> Result<fs::File, StateError> {
    use std::io::{Seek, Write};
    fs::create_dir_all(dir).map_err(|source| StateError::Write { path: dir.into(), source })?;
    let path = dir.join(".lock");
    let write_err = |source: io::Error| StateError::Write { path: path.clone(), source };
    let mut f = fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(write_err)?;
    match rustix::fs::fcntl_lock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::ACCESS) => {
            let holder = fs::read_to_string(&path).unwrap_or_default().trim().to_string();
            return Err(StateError::Locked { path: dir.into(), holder });
        }
        Err(e) => return Err(write_err(e.into())),
    }
    f.set_len(0).and_then(|()| f.rewind()).and_then(|_| writeln!(f, "{}", std::process::id())).map_err(write_err)?;
    Ok(f)
}

/// A fresh 64-hex-digit id, as CRI runtimes hand out.
/// Directory names under `dir` (records are `<id>.json` files beside them).
pub fn record_dirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("getrandom failed: {e}"),
        }
    }
    hex::encode(bytes)
}

/// Unique names (pods' and containers' full names) mapped to the id holding them.
#[derive(Default)]
pub struct Names {
    map: std::sync::Mutex<HashMap<String, String>>,
}

impl Names {
    /// Reserves `name` for `id`, or returns the id already holding it.
    pub fn reserve(&self, name: &str, id: &str) -> Result<(), String> {
        let mut map = self.map.lock().expect("names lock poisoned");
        match map.get(name) {
            Some(holder) if holder != id => Err(holder.clone()),
            _ => {
                map.insert(name.into(), id.into());
                Ok(())
            }
        }
    }

    pub fn release(&self, name: &str) {
        self.map.lock().expect("names lock poisoned").remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record lock never conflicts within its own process: a second daemon being refused is
    /// tested across processes in tests/daemon.rs.
    #[test]
    fn the_lock_file_names_its_holder() {
        let t = tempfile::tempdir().unwrap();
        let held = lock_dir(t.path()).unwrap();
        assert_eq!(fs::read_to_string(t.path().join(".lock")).unwrap().trim(), std::process::id().to_string());
        drop(held);
        lock_dir(t.path()).expect("free again once the holder lets go");
    }

    #[test]
    fn names_are_unique() {
        let n = Names::default();
        n.reserve("k8s_a", "1").unwrap();
        n.reserve("k8s_a", "1").unwrap();
        assert_eq!(n.reserve("k8s_a", "2"), Err("1".into()));
        n.release("k8s_a");
        n.reserve("k8s_a", "2").unwrap();
        assert_eq!(new_id().len(), 64);
        assert_ne!(new_id(), new_id());
    }
}
