//! Pod and container records: in memory for lookups, one JSON file each on disk, written
//! atomically before a change is visible, loaded on start. Each entity has its own operation
//! lock (so operations on one pod or container are serialized while different ones run in
//! parallel) and its own record lock, held only to read or swap the record, never across an
//! await, so status calls never wait behind a slow stop.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

mod creations;
mod stores;

pub use creations::Creations;
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

pub struct Entry<T> {
    /// Serializes operations (create, start, stop, remove) on this entity.
    pub op: tokio::sync::Mutex<()>,
    /// Serializes updates: each one changes the record as it is then, persists it and swaps
    /// it in, so concurrent updates (an exit observed while a status marks an OOM kill) never
    /// overwrite each other, and the file on disk follows the same order.
    write: tokio::sync::Mutex<()>,
    /// Shared, so a snapshot for a list or a status is a reference count, not a deep copy.
    record: RwLock<Arc<T>>,
}

impl<T> Entry<T> {
    fn new(rec: T) -> Self {
        Entry { op: tokio::sync::Mutex::new(()), write: tokio::sync::Mutex::new(()), record: RwLock::new(Arc::new(rec)) }
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

/// A directory of `<id>.json` records of one kind.
pub struct Records<T> {
    dir: PathBuf,
    map: RwLock<HashMap<String, Arc<Entry<T>>>>,
    /// Ids whose record could not be read: set aside, never taken for leftovers to clean.
    quarantined: std::collections::HashSet<String>,
}

/// What a record that cannot be read is renamed to, beside where it was.
const QUARANTINE_SUFFIX: &str = ".json.quarantined";

impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> Records<T> {
    /// Loads every record in `dir`. One that cannot be read is renamed aside (`<id>.json` to
    /// `<id>.json.quarantined`) and its id kept as quarantined, so what it describes is left
    /// alone, on this start and the next; they are returned (new path, why) for the caller to log.
    pub fn load(dir: &Path) -> Result<(Self, Vec<(PathBuf, String)>), StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::Read { path: dir.into(), source })?;
        let mut map = HashMap::new();
        let mut bad = Vec::new();
        let mut quarantined = std::collections::HashSet::new();
        for e in fs::read_dir(dir).map_err(|source| StateError::Read { path: dir.into(), source })?.flatten() {
            let path = e.path();
            if let Some(id) = e.file_name().to_str().and_then(|n| n.strip_suffix(QUARANTINE_SUFFIX)) {
                quarantined.insert(id.to_string());
                continue;
            }
            // A write a crash interrupted leaves its temp file (the record itself is whole).
            if e.file_name().to_string_lossy().starts_with(".tmp") && e.file_type().is_ok_and(|t| t.is_file()) {
                let _ = fs::remove_file(&path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match fs::read(&path).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice::<T>(&b).map_err(|e| e.to_string())) {
                Ok(rec) => {
                    let id = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
                    map.insert(id, Arc::new(Entry::new(rec)));
                }
                Err(e) => {
                    let id = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
                    let aside = dir.join(format!("{id}{QUARANTINE_SUFFIX}"));
                    let kept = match fs::rename(&path, &aside) {
                        Ok(()) => aside,
                        Err(why) => {
                            tracing::warn!(path = %path.display(), error = %why, "could not rename an unreadable record aside");
                            path
                        }
                    };
                    quarantined.insert(id);
                    bad.push((kept, e));
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
        self.dir.join(format!("{id}.json"))
    }

    /// Persists a new record, then makes it visible.
    pub async fn insert(&self, id: &str, rec: T) -> Result<Arc<Entry<T>>, StateError> {
        self.persist(id, &rec).await?;
        let entry = Arc::new(Entry::new(rec));
        self.map.write().expect("records lock poisoned").insert(id.into(), entry.clone());
        Ok(entry)
    }

    /// Applies `change` to the record as it is now, persists the result, then swaps it in.
    /// Updates of one entry run one at a time; `change` sees every earlier one.
    pub async fn update(&self, id: &str, entry: &Entry<T>, change: impl FnOnce(&mut T)) -> Result<T, StateError> {
        let _write = entry.write.lock().await;
        let mut next = entry.get();
        change(&mut next);
        self.persist(id, &next).await?;
        *entry.record.write().expect("record lock poisoned") = Arc::new(next.clone());
        Ok(next)
    }

    pub async fn remove(&self, id: &str) -> Result<(), StateError> {
        let path = self.path(id);
        let p = path.clone();
        let res = tokio::task::spawn_blocking(move || match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        res.map_err(|source| StateError::Write { path, source })?;
        self.map.write().expect("records lock poisoned").remove(id);
        Ok(())
    }

    async fn persist(&self, id: &str, rec: &T) -> Result<(), StateError> {
        let path = self.path(id);
        let rec = rec.clone();
        let p = path.clone();
        tokio::task::spawn_blocking(move || crate::durable::write_json(&p, &rec))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|source| StateError::Write { path, source })
    }
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

    #[tokio::test]
    async fn records_persist_and_reload() {
        let t = tempfile::tempdir().unwrap();
        let (r, bad) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert!(bad.is_empty());
        let e = r.insert("abc123", vec![1]).await.unwrap();
        r.update("abc123", &e, |v| v.push(2)).await.unwrap();
        r.insert("abd999", vec![]).await.unwrap();
        fs::write(t.path().join("broken.json"), "{").unwrap();
        let (again, bad) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert_eq!(again.get("abc123").unwrap().get(), vec![1, 2]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, t.path().join("broken.json.quarantined"), "renamed aside");
        assert!(again.is_quarantined("broken") && again.get("broken").is_none());
        // Still known as quarantined on the next start, with nothing more to report.
        let (third, bad) = Records::<Vec<u32>>::load(t.path()).unwrap();
        assert!(bad.is_empty() && third.is_quarantined("broken"));
        assert!(again.resolve("abc").is_some(), "unique prefix");
        assert!(again.resolve("ab").is_none(), "ambiguous prefix");
        again.remove("abc123").await.unwrap();
        again.remove("abc123").await.unwrap();
        assert!(!t.path().join("abc123.json").exists());
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
