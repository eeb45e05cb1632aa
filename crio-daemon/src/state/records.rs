//! Records of one kind (pods or containers): in memory for lookups, one `<id>.record` file
//! each on disk (two slots, `durable::slots`), written before a change is visible and loaded
//! on start. An update overwrites one slot and syncs its data; a new record is written whole
//! and renamed in.
//!
//! A create may *stage* its record while it makes what the record describes, and *publish*
//! it (one slot write) when that is done. A staged record that a crash left unpublished is
//! dropped at load: what it describes is half-made, and the owner cleans it up as it does
//! what has no record at all.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StateError;
use crate::durable::slots::{self, STAGED, Slots};

pub struct Entry<T> {
    /// Serializes operations (create, start, stop, remove) on this entity.
    pub op: tokio::sync::Mutex<()>,
    /// Serializes updates: each one changes the record as it is then, persists it and swaps
    /// it in, so concurrent updates (an exit observed while a status marks an OOM kill) never
    /// overwrite each other, and the file on disk follows the same order. Holds where the
    /// record stands in its file.
    write: tokio::sync::Mutex<Slots>,
    /// Shared, so a snapshot for a list or a status is a reference count, not a deep copy.
    record: RwLock<Arc<T>>,
}

impl<T> Entry<T> {
    fn new(rec: T, at: Slots) -> Self {
        Entry { op: tokio::sync::Mutex::new(()), write: tokio::sync::Mutex::new(at), record: RwLock::new(Arc::new(rec)) }
    }
}

impl<T: Clone> Entry<T> {
    pub fn get(&self) -> T {
        T::clone(&self.record.read().expect("record lock poisoned"))
    }

    /// The current record, shared: cheap, for readers that only look.
    pub fn snapshot(&self) -> Arc<T> {
        self.record.read().expect("record lock poisoned").clone()
    }
}

/// A record on disk that is not visible yet: see [`Records::stage`].
#[must_use = "a staged record is published or discarded"]
pub struct Staged {
    id: String,
    at: Slots,
}

/// A directory of `<id>.record` files of one kind.
pub struct Records<T> {
    dir: PathBuf,
    map: RwLock<HashMap<String, Arc<Entry<T>>>>,
    /// Ids whose record could not be read: set aside, never taken for leftovers to clean.
    quarantined: HashSet<String>,
}

const SUFFIX: &str = ".record";
/// What a record that cannot be read is renamed to, beside where it was.
const QUARANTINE_SUFFIX: &str = ".record.quarantined";
/// Records of earlier versions: whole JSON files, converted at load.
const LEGACY_SUFFIX: &str = ".json";
const LEGACY_QUARANTINE_SUFFIX: &str = ".json.quarantined";

/// What one file in a records directory is.
enum Found<T> {
    Record(T, Slots),
    Legacy(T),
    Staged,
    Bad(String),
}

impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> Records<T> {
    /// Loads every record in `dir`. One that cannot be read is renamed aside (to
    /// `<id>.record.quarantined`) and its id kept as quarantined, so what it describes is left
    /// alone, on this start and the next; they are returned (new path, why) for the caller to
    /// log. Staged records are removed; records of earlier versions are converted.
    pub fn load(dir: &Path) -> Result<(Self, Vec<(PathBuf, String)>), StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::Read { path: dir.into(), source })?;
        let mut found: HashMap<String, Found<T>> = HashMap::new();
        let mut quarantined = HashSet::new();
        for e in fs::read_dir(dir).map_err(|source| StateError::Read { path: dir.into(), source })?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if let Some(id) = name.strip_suffix(QUARANTINE_SUFFIX).or_else(|| name.strip_suffix(LEGACY_QUARANTINE_SUFFIX)) {
                quarantined.insert(id.to_string());
            } else if name.starts_with(".tmp") && e.file_type().is_ok_and(|t| t.is_file()) {
                // A write a crash interrupted leaves its temp file (the record itself is whole).
                let _ = fs::remove_file(&path);
            } else if let Some(id) = name.strip_suffix(SUFFIX) {
                found.insert(id.to_string(), read_record(&path));
            } else if let Some(id) = name.strip_suffix(LEGACY_SUFFIX) {
                // A record of this version under the same id was written later.
                let legacy = fs::read(&path).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
                found.entry(id.to_string()).or_insert(match legacy {
                    Ok(rec) => Found::Legacy(rec),
                    Err(why) => Found::Bad(why),
                });
            }
        }
        let mut map = HashMap::new();
        let mut bad = Vec::new();
        for (id, f) in found {
            let (path, legacy) = (dir.join(format!("{id}{SUFFIX}")), dir.join(format!("{id}{LEGACY_SUFFIX}")));
            match f {
                Found::Record(rec, at) => {
                    let _ = fs::remove_file(&legacy);
                    map.insert(id, Arc::new(Entry::new(rec, at)));
                }
                Found::Legacy(rec) => {
                    let bytes =
                        serde_json::to_vec(&rec).map_err(|e| StateError::Write { path: path.clone(), source: io::Error::other(e) })?;
                    let at = slots::create(&path, &bytes, 1, 0).map_err(|source| StateError::Write { path: path.clone(), source })?;
                    fs::remove_file(&legacy).map_err(|source| StateError::Write { path: legacy, source })?;
                    map.insert(id, Arc::new(Entry::new(rec, at)));
                }
                Found::Staged => {
                    tracing::info!(path = %path.display(), "dropping a record whose create never finished");
                    fs::remove_file(&path).map_err(|source| StateError::Write { path: path.clone(), source })?;
                }
                Found::Bad(why) => {
                    let from = if path.exists() {
                        // An earlier version's file of the same id is older still: aside too.
                        let _ = fs::rename(&legacy, dir.join(format!("{id}{LEGACY_QUARANTINE_SUFFIX}")));
                        path
                    } else {
                        legacy
                    };
                    let aside = dir.join(format!("{id}{QUARANTINE_SUFFIX}"));
                    let kept = match fs::rename(&from, &aside) {
                        Ok(()) => aside,
                        Err(e) => {
                            tracing::warn!(path = %from.display(), error = %e, "could not rename an unreadable record aside");
                            from
                        }
                    };
                    quarantined.insert(id);
                    bad.push((kept, why));
                }
            }
        }
        Ok((Self { dir: dir.into(), map: RwLock::new(map), quarantined }, bad))
    }

    /// Whether `id`'s record was unreadable and set aside.
    pub fn is_quarantined(&self, id: &str) -> bool {
        self.quarantined.contains(id)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Entry<T>>> {
        self.map.read().expect("records lock poisoned").get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Entry<T>>> {
        self.map.read().expect("records lock poisoned").values().cloned().collect()
    }

    /// Ids starting with `prefix` (CRI accepts unique id prefixes).
    pub fn resolve(&self, prefix: &str) -> Option<Arc<Entry<T>>> {
        let map = self.map.read().expect("records lock poisoned");
        if let Some(e) = map.get(prefix) {
            return Some(e.clone());
        }
        let mut hits = map.iter().filter(|(id, _)| id.starts_with(prefix));
        match (hits.next(), hits.next()) {
            (Some((_, e)), None) if !prefix.is_empty() => Some(e.clone()),
            _ => None,
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    /// Persists a new record, then makes it visible.
    pub async fn insert(&self, id: &str, rec: T) -> Result<Arc<Entry<T>>, StateError> {
        let mut at = Slots::default();
        self.write(id, &rec, &mut at, 0).await?;
        Ok(self.show(id, rec, at))
    }

    /// Persists a new record marked as staged, not visible: its create is still making what
    /// it describes. A crash before [`Records::publish`] leaves it to be dropped at load.
    pub async fn stage(&self, id: &str, rec: &T) -> Result<Staged, StateError> {
        let mut at = Slots::default();
        self.write(id, rec, &mut at, STAGED).await?;
        Ok(Staged { id: id.into(), at })
    }

    /// Persists `rec` (the finished record) over its staged version, then makes it visible.
    pub async fn publish(&self, staged: Staged, rec: T) -> Result<Arc<Entry<T>>, StateError> {
        let Staged { id, mut at } = staged;
        self.write(&id, &rec, &mut at, 0).await?;
        Ok(self.show(&id, rec, at))
    }

    /// As `publish`, without waiting for the disk: for a record whose create ends by changing
    /// nothing more on the host, so a power failure that loses it (the staged version stays,
    /// and is dropped at load with what it describes torn down) ends what it describes too.
    /// The next write flushes it before it overwrites the staged slot.
    pub async fn publish_unflushed(&self, staged: Staged, rec: T) -> Result<Arc<Entry<T>>, StateError> {
        let Staged { id, mut at } = staged;
        self.write_with(&id, &rec, &mut at, 0, Flush::Later).await?;
        Ok(self.show(&id, rec, at))
    }

    /// As `publish_unflushed`, with the flush done behind the caller: the create answers while
    /// the disk catches up, and the next write waits for the flush (both hold the entry's
    /// write lock) instead of paying it. A flush that fails is left to that next write.
    pub async fn publish_flushed_behind(&self, staged: Staged, rec: T) -> Result<Arc<Entry<T>>, StateError> {
        let path = self.path(&staged.id);
        let entry = self.publish_unflushed(staged, rec).await?;
        let behind = entry.clone();
        tokio::spawn(async move {
            let mut at = behind.write.lock().await;
            let (p, mut next) = (path.clone(), *at);
            match tokio::task::spawn_blocking(move || slots::flush(&p, &mut next).map(|()| next)).await {
                Ok(Ok(flushed)) => *at = flushed,
                Ok(Err(e)) => tracing::warn!(path = %path.display(), error = %e, "flushing a record failed; its next write retries"),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "flushing a record did not run; its next write does it"),
            }
        });
        Ok(entry)
    }

    /// Removes a staged record whose create failed.
    pub async fn discard(&self, staged: Staged) -> Result<(), StateError> {
        self.remove_file(&staged.id).await
    }

    fn show(&self, id: &str, rec: T, at: Slots) -> Arc<Entry<T>> {
        let entry = Arc::new(Entry::new(rec, at));
        self.map.write().expect("records lock poisoned").insert(id.into(), entry.clone());
        entry
    }

    /// Applies `change` to the record as it is now, persists the result, then swaps it in.
    /// Updates of one entry run one at a time; `change` sees every earlier one.
    pub async fn update(&self, id: &str, entry: &Entry<T>, change: impl FnOnce(&mut T)) -> Result<T, StateError> {
        self.update_with(id, entry, change, Flush::Now).await
    }

    /// As `update`, without waiting for the disk: for a change that a power failure may undo
    /// because the failure undoes what it records too (see `slots::update_unflushed`).
    pub async fn update_unflushed(&self, id: &str, entry: &Entry<T>, change: impl FnOnce(&mut T)) -> Result<T, StateError> {
        self.update_with(id, entry, change, Flush::Later).await
    }

    async fn update_with(&self, id: &str, entry: &Entry<T>, change: impl FnOnce(&mut T), flush: Flush) -> Result<T, StateError> {
        let mut at = entry.write.lock().await;
        let mut next = entry.get();
        change(&mut next);
        self.write_with(id, &next, &mut at, 0, flush).await?;
        *entry.record.write().expect("record lock poisoned") = Arc::new(next.clone());
        Ok(next)
    }

    pub async fn remove(&self, id: &str) -> Result<(), StateError> {
        self.remove_file(id).await?;
        self.map.write().expect("records lock poisoned").remove(id);
        Ok(())
    }

    async fn remove_file(&self, id: &str) -> Result<(), StateError> {
        let path = self.path(id);
        let p = path.clone();
        let res = tokio::task::spawn_blocking(move || match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        res.map_err(|source| StateError::Write { path, source })
    }

    /// Writes `rec` as the next version after `at` (a new file from `Slots::default()`) and
    /// moves `at` along, also when the write fails (a file replaced by bigger slots whose sync
    /// then failed is made again by the next write, never written at the old offsets).
    async fn write(&self, id: &str, rec: &T, at: &mut Slots, flags: u32) -> Result<(), StateError> {
        self.write_with(id, rec, at, flags, Flush::Now).await
    }

    async fn write_with(&self, id: &str, rec: &T, at: &mut Slots, flags: u32, flush: Flush) -> Result<(), StateError> {
        let path = self.path(id);
        let bytes = serde_json::to_vec(rec).map_err(|e| StateError::Write { path: path.clone(), source: io::Error::other(e) })?;
        let (p, mut next) = (path.clone(), *at);
        let write = match flush {
            Flush::Now => slots::update,
            Flush::Later => slots::update_unflushed,
        };
        let (written, next) = match flush {
            // Waits for the disk (milliseconds): on the blocking pool.
            Flush::Now => tokio::task::spawn_blocking(move || (write(&p, &mut next, &bytes, flags), next))
                .await
                .map_err(|e| StateError::Write { path: path.clone(), source: io::Error::other(e) })?,
            // One write to the page cache: shorter than a pool thread's wake-up.
            Flush::Later => crate::blocking(move || (write(&p, &mut next, &bytes, flags), next)),
        };
        *at = next;
        written.map_err(|source| StateError::Write { path, source })
    }
}

/// Whether a write waits for the disk.
#[derive(Clone, Copy)]
enum Flush {
    Now,
    Later,
}

/// A record file, as far as it can be read.
fn read_record<T: DeserializeOwned>(path: &Path) -> Found<T> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => return Found::Bad(e.to_string()),
    };
    match slots::read(&bytes) {
        Ok(v) if v.flags & STAGED != 0 => Found::Staged,
        Ok(v) => serde_json::from_slice(v.payload).map_or_else(|e| Found::Bad(e.to_string()), |rec| Found::Record(rec, v.at)),
        Err(e) => Found::Bad(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_persist_and_reload() {
        let t = tempfile::tempdir().unwrap();
        let (r, bad) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert!(bad.is_empty());
        let e = r.insert("abc123", vec![1]).await.unwrap();
        r.update("abc123", &e, |v| v.push(2)).await.unwrap();
        r.insert("abd999", vec![]).await.unwrap();
        fs::write(t.path().join("broken.record"), "{").unwrap();
        let (again, bad) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert_eq!(again.get("abc123").unwrap().get(), vec![1, 2]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, t.path().join("broken.record.quarantined"), "renamed aside");
        assert!(again.is_quarantined("broken") && again.get("broken").is_none());
        // Still known as quarantined on the next start, with nothing more to report.
        let (third, bad) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert!(bad.is_empty() && third.is_quarantined("broken"));
        assert!(again.resolve("abc").is_some(), "unique prefix");
        assert!(again.resolve("ab").is_none(), "ambiguous prefix");
        again.remove("abc123").await.unwrap();
        again.remove("abc123").await.unwrap();
        assert!(!t.path().join("abc123.record").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_updates_are_never_lost() {
        let t = tempfile::tempdir().unwrap();
        let (r, _) = Records::<Vec<u32>>::load(t.path()).unwrap();
        let r = Arc::new(r);
        let e = r.insert("rec", vec![]).await.unwrap();
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let (r, e) = (r.clone(), e.clone());
                tokio::spawn(async move { r.update("rec", &e, |v| v.push(i)).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut got = e.get();
        got.sort();
        assert_eq!(got, (0..32).collect::<Vec<_>>(), "every update applied to its predecessor's result");
        let (again, _) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert_eq!(again.get("rec").unwrap().get().len(), 32, "the file holds the last update");
    }

    #[tokio::test]
    async fn a_staged_record_is_invisible_until_published_and_dropped_if_never() {
        let t = tempfile::tempdir().unwrap();
        let (r, _) = Records::<Vec<u32>>::load(t.path()).unwrap();
        let staged = r.stage("made", &vec![1]).await.unwrap();
        assert!(r.get("made").is_none(), "not visible while staged");
        let entry = r.publish(staged, vec![1, 2]).await.unwrap();
        assert_eq!(entry.get(), vec![1, 2]);
        let abandoned = r.stage("half", &vec![9]).await.unwrap();
        let discarded = r.stage("failed", &vec![8]).await.unwrap();
        r.discard(discarded).await.unwrap();
        assert!(!t.path().join("failed.record").exists());
        // A crash here: "half" was never published.
        drop(abandoned);
        let (again, bad) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert!(bad.is_empty());
        assert_eq!(again.get("made").unwrap().get(), vec![1, 2], "published: whole and loaded");
        assert!(again.get("half").is_none(), "a create that never finished leaves no record");
        assert!(!t.path().join("half.record").exists(), "and its file is gone");
    }

    #[tokio::test]
    async fn a_record_published_unflushed_is_flushed_by_the_next_write() {
        let t = tempfile::tempdir().unwrap();
        let (r, _) = Records::<Vec<u32>>::load(t.path()).unwrap();
        let staged = r.stage("pod", &vec![1]).await.unwrap();
        let entry = r.publish_unflushed(staged, vec![1, 2]).await.unwrap();
        assert!(entry.write.lock().await.is_unflushed(), "the published version is not waited for");
        let (seen, _) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert_eq!(seen.get("pod").unwrap().get(), vec![1, 2], "a restart without a power failure reads it");
        r.update("pod", &entry, |v| v.push(3)).await.unwrap();
        assert!(!entry.write.lock().await.is_unflushed(), "the next write flushed it and itself");
        let (again, _) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert_eq!(again.get("pod").unwrap().get(), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_record_flushed_behind_is_flushed_without_another_write() {
        let t = tempfile::tempdir().unwrap();
        let (r, _) = Records::<Vec<u32>>::load(t.path()).unwrap();
        let staged = r.stage("ct", &vec![1]).await.unwrap();
        let entry = r.publish_flushed_behind(staged, vec![1, 2]).await.unwrap();
        let flushed = async {
            while entry.write.lock().await.is_unflushed() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), flushed).await.expect("the flush behind the publish ran");
        let (again, _) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert_eq!(again.get("ct").unwrap().get(), vec![1, 2]);
        // The next write finds nothing to flush first, and keeps the two slots' order.
        r.update_unflushed("ct", &entry, |v| v.push(3)).await.unwrap();
        let (third, _) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert_eq!(third.get("ct").unwrap().get(), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn records_of_the_earlier_json_format_are_converted() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("old.json"), "[1,2,3]").unwrap();
        fs::write(t.path().join("gone.json.quarantined"), "{").unwrap();
        let (r, bad) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert!(bad.is_empty() && r.is_quarantined("gone"));
        let e = r.get("old").unwrap();
        assert_eq!(e.get(), vec![1, 2, 3]);
        assert!(!t.path().join("old.json").exists() && t.path().join("old.record").exists());
        r.update("old", &e, |v| v.push(4)).await.unwrap();
        let (again, _) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert_eq!(again.get("old").unwrap().get(), vec![1, 2, 3, 4]);
    }
}
