//! The image and layer store under `root`:
//!
//! ```text
//! layers/<diff-id hex>/diff        one unpacked layer, shared by every image that has it
//! layers/<diff-id hex>/layer.json  its record, written before the directory is renamed in
//! l/<short id> -> ../layers/<hex>/diff   short names for mount(2) on older kernels
//! images/<id>/{manifest,config}.json
//! index.record                     images and container root filesystems: the truth on restart
//!                                  (a two-slot file; earlier versions' index.json is converted)
//! containers/<id>/{upper,work}     a container's writable layer (`ready`: made ahead, see ready.rs)
//! tmp/                             downloads and layers being unpacked; emptied on start
//! ```
//! Every commit is a rename or an atomic rewrite, so a daemon killed at any point leaves either
//! the old state or the new one, and `open` clears what a dead pull left half-done.
//! Methods block: callers run them on the blocking pool.

mod ahead;
mod containers;
pub mod digest;
mod holds;
mod layers;
pub mod overlay;
mod ready;
pub mod unpack;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::durable::slots::{self, Slots};
use crate::durable::write_atomic;
use digest::Digest;
pub use layers::{LayerLease, LayerRecord, diff_dir, short_link};
pub use unpack::LayerStats;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O failed on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt store record {path}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("damaged store index {path}")]
    DamagedIndex {
        path: PathBuf,
        #[source]
        source: crate::durable::slots::SlotError,
    },
    #[error("image {id} not found in the store")]
    ImageNotFound { id: String },
    #[error("image {id} is in use by container(s) {containers:?}")]
    ImageInUse { id: String, containers: Vec<String> },
    #[error("layer {diff_id} needed by image {image} is not in the store")]
    LayerMissing { image: String, diff_id: Digest },
    #[error("container root filesystem {id} already exists")]
    ContainerExists { id: String },
    #[error("container root filesystem {id} not found")]
    ContainerNotFound { id: String },
    #[error(transparent)]
    Unpack(#[from] unpack::UnpackError),
    #[error(transparent)]
    Overlay(#[from] overlay::OverlayError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The config digest's hex, as CRI-O and containerd name images.
    pub id: String,
    pub config_digest: Digest,
    pub manifest_digest: Digest,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Diff ids, base layer first.
    pub layers: Vec<Digest>,
    pub size: u64,
    /// The config's `User`, for ImageStatus's uid/username.
    pub user: String,
    pub pulled_at_unix: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    pub id: String,
    pub image_id: String,
    /// The images mounted as its image volumes, in the order of their mounts: in use, like
    /// `image_id`, until the container is removed.
    #[serde(default)]
    pub volume_images: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Index {
    pub images: BTreeMap<String, ImageRecord>,
    pub containers: BTreeMap<String, ContainerRecord>,
}

pub struct Store {
    root: PathBuf,
    runroot: PathBuf,
    /// Readers take a snapshot; writers copy, persist, then swap, so reads never wait on fsync
    /// (a container's create swaps first and persists beside its mount: see `apply`).
    index: RwLock<Arc<Index>>,
    /// Serializes index writers.
    writer: Mutex<()>,
    /// Serializes writes of the index file; where the index stands in it. Taken after
    /// `writer`, and a writer swaps its index in before letting go, so whoever writes next
    /// writes a snapshot that holds every change already persisted.
    disk: Mutex<Slots>,
    layers: RwLock<BTreeMap<Digest, LayerRecord>>,
    layer_locks: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// Layers pulls in flight will commit.
    leases: holds::Holds<Digest>,
    /// Images whose directory is being written ahead of their record (pulls in flight, by
    /// image id, counted): a collection leaves those directories alone.
    committing: holds::Holds<String>,
    /// The next container's root filesystem, mounted ahead (see `ready`).
    ready: Mutex<Option<ready::Ready>>,
    /// Making one failed in the kernel: no more are tried.
    ready_unsupported: std::sync::atomic::AtomicBool,
}

const INDEX: &str = "index.record";
const LEGACY_INDEX: &str = "index.json";

/// The index under `root` and where it stands in its file: this version's two-slot file, else
/// an earlier version's whole JSON file (replaced at the first update), else an empty one.
fn load_index(root: &Path) -> Result<(Index, Slots), StoreError> {
    let path = root.join(INDEX);
    match fs::read(&path) {
        Ok(bytes) => {
            let v = slots::read(&bytes).map_err(|source| StoreError::DamagedIndex { path: path.clone(), source })?;
            let index = serde_json::from_slice(v.payload).map_err(|source| StoreError::Corrupt { path: path.clone(), source })?;
            let _ = fs::remove_file(root.join(LEGACY_INDEX));
            return Ok((index, v.at));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(StoreError::Io { path, source }),
    }
    let legacy = root.join(LEGACY_INDEX);
    match fs::read(&legacy) {
        Ok(bytes) => Ok((serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { path: legacy, source })?, Slots::default())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((Index::default(), Slots::default())),
        Err(source) => Err(StoreError::Io { path: legacy, source }),
    }
}

impl Store {
    pub fn open(root: &Path, runroot: &Path) -> Result<Self, StoreError> {
        for dir in ["layers", "l", "images", "containers", "tmp"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        fs::create_dir_all(runroot).map_err(io_err(runroot))?;
        // What a dead pull left: partial downloads and half-unpacked layers.
        let tmp = root.join("tmp");
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        let (index, at) = load_index(root)?;
        let layers = layers::load_all(root)?;
        let store = Self {
            root: root.into(),
            runroot: runroot.into(),
            index: RwLock::new(Arc::new(index)),
            writer: Mutex::new(()),
            disk: Mutex::new(at),
            layers: RwLock::new(layers),
            layer_locks: Mutex::new(HashMap::new()),
            leases: holds::Holds::new(),
            committing: holds::Holds::new(),
            ready: Mutex::new(None),
            ready_unsupported: Default::default(),
        };
        store.collect_garbage()?;
        if let Err(e) = store.make_dirs_ahead() {
            tracing::warn!(error = %crate::error_chain(&e), "could not make a container's directories ahead; each create makes its own");
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn snapshot(&self) -> Arc<Index> {
        self.index.read().expect("index lock poisoned").clone()
    }

    /// A private directory under `tmp/` for a download or an unpack in progress.
    pub fn temp_dir(&self) -> Result<tempfile::TempDir, StoreError> {
        let tmp = self.root.join("tmp");
        tempfile::tempdir_in(&tmp).map_err(io_err(&tmp))
    }

    pub fn image_config(&self, id: &str) -> Result<Vec<u8>, StoreError> {
        let p = self.root.join("images").join(id).join("config.json");
        fs::read(&p).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StoreError::ImageNotFound { id: id.into() },
            _ => StoreError::Io { path: p.clone(), source },
        })
    }

    /// Records a pulled image. Its layers must be committed already. Tags it takes are removed
    /// from any other image (a tag names one image); tags and digests it had are kept.
    pub fn commit_image(&self, mut record: ImageRecord, manifest: &[u8], config: &[u8]) -> Result<ImageRecord, StoreError> {
        {
            let layers = self.layers.read().expect("layers lock poisoned");
            if let Some(missing) = record.layers.iter().find(|d| !layers.contains_key(*d)) {
                return Err(StoreError::LayerMissing { image: record.id.clone(), diff_id: missing.clone() });
            }
        }
        // A re-pull of what is already recorded changes nothing: no writes, no fsync.
        if let Some(existing) = self.unchanged(&record) {
            return Ok(existing);
        }
        // Until the record is in the index, a collection (RemoveImage of another image) would
        // take the directory for an orphan and delete it under this commit.
        let _committing = Committing::new(self, &record.id);
        let dir = self.root.join("images").join(&record.id);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        for (name, bytes) in [("manifest.json", manifest), ("config.json", config)] {
            let p = dir.join(name);
            write_atomic(&p, bytes).map_err(io_err(&p))?;
        }
        self.update(|index| {
            for other in index.images.values_mut().filter(|i| i.id != record.id) {
                other.repo_tags.retain(|t| !record.repo_tags.contains(t));
            }
            if let Some(old) = index.images.get(&record.id) {
                record.repo_tags = union(&old.repo_tags, &record.repo_tags);
                record.repo_digests = union(&old.repo_digests, &record.repo_digests);
                record.pulled_at_unix = old.pulled_at_unix;
            }
            index.images.insert(record.id.clone(), record.clone());
            Ok(())
        })?;
        Ok(record)
    }

    fn unchanged(&self, record: &ImageRecord) -> Option<ImageRecord> {
        let index = self.snapshot();
        let old = index.images.get(&record.id)?;
        let has_all =
            record.repo_tags.iter().all(|t| old.repo_tags.contains(t)) && record.repo_digests.iter().all(|d| old.repo_digests.contains(d));
        (has_all && old.layers == record.layers).then(|| old.clone())
    }

    /// Removes an image and every layer no other image needs. Refused while a container uses it.
    pub fn remove_image(&self, id: &str) -> Result<(), StoreError> {
        self.update(|index| {
            let users: Vec<String> = index
                .containers
                .values()
                .filter(|c| c.image_id == id || c.volume_images.iter().any(|v| v == id))
                .map(|c| c.id.clone())
                .collect();
            if !users.is_empty() {
                return Err(StoreError::ImageInUse { id: id.into(), containers: users });
            }
            index.images.remove(id).ok_or_else(|| StoreError::ImageNotFound { id: id.into() })?;
            Ok(())
        })?;
        // A root filesystem made ready would hold the image's layers. Dropped after the image
        // left the index: a set being made now is not published (see `make_ready`).
        self.drop_ready_of(id);
        self.collect_garbage()
    }

    /// (bytes, inodes) the image layers take.
    pub fn layers_usage(&self) -> (u64, u64) {
        let layers = self.layers.read().expect("layers lock poisoned");
        layers.values().fold((0, 0), |(b, i), l| (b + l.stats.disk_bytes, i + l.stats.inodes))
    }

    pub fn layer(&self, diff_id: &Digest) -> Option<LayerRecord> {
        self.layers.read().expect("layers lock poisoned").get(diff_id).cloned()
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layers.read().expect("layers lock poisoned").contains_key(diff_id)
    }

    /// Copy-on-write update of the index, persisted before readers see it.
    fn update(&self, change: impl FnOnce(&mut Index) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let _writer = self.writer.lock().expect("index writer lock poisoned");
        let mut next = (*self.snapshot()).clone();
        change(&mut next)?;
        let mut at = self.disk.lock().expect("index file lock poisoned");
        self.write_index(&next, &mut at, true)?;
        *self.index.write().expect("index lock poisoned") = Arc::new(next);
        Ok(())
    }

    /// Copy-on-write update of the index, seen by readers at once and not yet persisted: the
    /// caller persists it with [`Store::persist`] before it tells anyone the change was made.
    fn apply(&self, change: impl FnOnce(&mut Index) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let _writer = self.writer.lock().expect("index writer lock poisoned");
        let mut next = (*self.snapshot()).clone();
        change(&mut next)?;
        *self.index.write().expect("index lock poisoned") = Arc::new(next);
        Ok(())
    }

    /// Writes the index as it is now, without waiting for the disk: only a new container's
    /// root filesystem is persisted so. A power failure that loses it ends the container too,
    /// and the store opening after it collects the directories its index no longer names; the
    /// next flushed write (an image's, a removal's) flushes it first.
    fn persist_unflushed(&self) -> Result<(), StoreError> {
        let mut at = self.disk.lock().expect("index file lock poisoned");
        self.write_index(&self.snapshot(), &mut at, false)
    }

    fn write_index(&self, index: &Index, at: &mut Slots, flush: bool) -> Result<(), StoreError> {
        let p = self.root.join(INDEX);
        let bytes = serde_json::to_vec(index).map_err(|e| StoreError::Io { path: p.clone(), source: e.into() })?;
        let write = if flush { slots::update } else { slots::update_unflushed };
        write(&p, at, &bytes, 0).map_err(io_err(&p))?;
        // The first write of this version's index retires an earlier version's.
        if at.is_new() {
            let _ = fs::remove_file(self.root.join(LEGACY_INDEX));
        }
        Ok(())
    }

    /// Deletes image directories no record names and layers no image uses.
    fn collect_garbage(&self) -> Result<(), StoreError> {
        let _writer = self.writer.lock().expect("index writer lock poisoned");
        let index = self.snapshot();
        let committing = self.committing.held();
        let images_dir = self.root.join("images");
        for entry in fs::read_dir(&images_dir).map_err(io_err(&images_dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !index.images.contains_key(&name) && !committing.contains(&name) {
                let p = entry.path();
                fs::remove_dir_all(&p).map_err(io_err(&p))?;
            }
        }
        // A create persists its record beside making its directories: a crash between leaves
        // directories the index does not name.
        let mut orphans = BTreeSet::new();
        for dir in [self.root.join("containers"), self.runroot.join("overlay")] {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if !index.containers.contains_key(&id) && !self.is_ready_id(&id) {
                    orphans.insert(id);
                }
            }
        }
        for id in orphans {
            let ready = self.root.join("containers").join(&id).join(ready::READY_MARK).exists();
            if !ahead::is_ahead(&id) && !ready {
                tracing::warn!(container_id = %id, "removing a root filesystem the store index does not name (a create cut short)");
            }
            self.remove_container_dirs(&id)?;
        }
        let leased = self.leases.held();
        let mut used: BTreeSet<&Digest> = index.images.values().flat_map(|i| &i.layers).collect();
        used.extend(&leased);
        let mut layers = self.layers.write().expect("layers lock poisoned");
        let unused: Vec<Digest> = layers.keys().filter(|d| !used.contains(d)).cloned().collect();
        for d in unused {
            layers::remove(&self.root, &d)?;
            layers.remove(&d);
        }
        Ok(())
    }
}

/// An image id in [`Store::committing`] while it lives.
struct Committing<'a> {
    store: &'a Store,
    id: String,
}

impl<'a> Committing<'a> {
    fn new(store: &'a Store, id: &str) -> Self {
        let id = id.to_string();
        store.committing.take([&id]);
        Committing { store, id }
    }
}

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.store.committing.release([&self.id]);
    }
}

/// `a` then what `b` adds, in order, without duplicates.
fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = a.to_vec();
    out.extend(b.iter().filter(|x| !a.contains(x)).cloned());
    out
}

#[cfg(test)]
mod tests;
