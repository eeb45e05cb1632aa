//! Layer records: one directory per diff id, committed by a rename so it is whole or absent.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::{LayerStats, Store, StoreError, io_err};
use crate::durable::write_json;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    pub diff_id: Digest,
    /// The blob it came from, for re-pulls that name the compressed digest.
    pub compressed_digest: Digest,
    pub stats: LayerStats,
}

/// Where a layer's files live.
pub fn diff_dir(root: &Path, diff_id: &Digest) -> PathBuf {
    root.join("layers").join(diff_id.hex()).join("diff")
}

/// Short link for mount(2)'s one-page option string: `l/<20 hex>`.
pub fn short_link(root: &Path, diff_id: &Digest) -> PathBuf {
    root.join("l").join(&diff_id.hex()[..20])
}

pub(super) fn load_all(root: &Path) -> Result<BTreeMap<Digest, LayerRecord>, StoreError> {
    let dir = root.join("layers");
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
        let record_path = entry.path().join("layer.json");
        let bytes = match fs::read(&record_path) {
            Ok(b) => b,
            // Not ours or not whole: a layer is committed only with its record inside.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let p = entry.path();
                fs::remove_dir_all(&p).map_err(io_err(&p))?;
                continue;
            }
            Err(source) => return Err(StoreError::Io { path: record_path, source }),
        };
        let record: LayerRecord =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { path: record_path.clone(), source })?;
        out.insert(record.diff_id.clone(), record);
    }
    Ok(out)
}

pub(super) fn remove(root: &Path, diff_id: &Digest) -> Result<(), StoreError> {
    let link = short_link(root, diff_id);
    match fs::remove_file(&link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(StoreError::Io { path: link, source }),
    }
    let dir = root.join("layers").join(diff_id.hex());
    // Rename first so a crash mid-delete leaves no half layer under its real name.
    let doomed = root.join("tmp").join(format!("rm-{}", diff_id.hex()));
    match fs::rename(&dir, &doomed) {
        Ok(()) => fs::remove_dir_all(&doomed).map_err(io_err(&doomed)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io { path: dir, source }),
    }
}

impl Store {
    /// Moves an unpacked layer (`staging/diff`) into place. The data is synced first, so after
    /// the rename the layer survives a power loss, not just a daemon crash.
    pub fn commit_layer(&self, staging: &Path, record: LayerRecord) -> Result<(), StoreError> {
        write_json(&staging.join("layer.json"), &record).map_err(io_err(staging))?;
        let f = fs::File::open(staging).map_err(io_err(staging))?;
        rustix::fs::syncfs(&f).map_err(|e| StoreError::Io { path: staging.into(), source: e.into() })?;
        let dest = self.root.join("layers").join(record.diff_id.hex());
        match fs::rename(staging, &dest) {
            Ok(()) => {}
            // Someone else committed the same layer: theirs is as good as ours.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {}
            Err(source) => return Err(StoreError::Io { path: dest, source }),
        }
        let link = short_link(&self.root, &record.diff_id);
        let target = Path::new("..").join("layers").join(record.diff_id.hex()).join("diff");
        match std::os::unix::fs::symlink(&target, &link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(StoreError::Io { path: link, source }),
        }
        self.layers.write().expect("layers lock poisoned").insert(record.diff_id.clone(), record);
        Ok(())
    }

    /// Serializes work on one layer across concurrent pulls of different images.
    pub fn layer_lock(&self, diff_id: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.layer_locks.lock().expect("layer locks poisoned");
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(diff_id.clone()).or_default().clone()
    }

    /// Keeps layers from garbage collection while a pull that needs them is in flight.
    pub fn lease_layers(self: &Arc<Self>, diff_ids: &[Digest]) -> LayerLease {
        self.leases.take(diff_ids);
        LayerLease { store: self.clone(), diff_ids: diff_ids.to_vec() }
    }
}

pub struct LayerLease {
    store: Arc<Store>,
    diff_ids: Vec<Digest>,
}

impl Drop for LayerLease {
    fn drop(&mut self) {
        self.store.leases.release(&self.diff_ids);
    }
}
