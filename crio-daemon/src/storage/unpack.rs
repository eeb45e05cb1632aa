//! Unpacking one layer tar into its own directory, safe against hostile archives:
//! every entry path is made relative to the layer root (absolute paths are contained, `..` may
//! not climb above the root), every parent directory is resolved inside the root the way
//! securejoin does (symlinks are followed but clamped to the root, never to the host), hard
//! links must name an entry inside the layer, device nodes are refused, and overlong paths are
//! rejected. Docker whiteouts become overlayfs whiteouts (0:0 character devices) and opaque
//! markers become `trusted.overlay.opaque=y`. Ownership, modes, xattrs and times are kept.
//! The uncompressed stream is hashed on the way through and must match the config's diff id.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};
use sha2::{Digest as _, Sha256};

use super::digest::Digest;

const MAX_PATH: usize = 4096;
const MAX_COMPONENT: usize = 255;
const MAX_DEPTH: usize = 256;
const MAX_SYMLINK_HOPS: usize = 40;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("failed to read layer {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {entry:?}: {why}")]
    Hostile { entry: String, why: &'static str },
    #[error("failed to write layer entry {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer's uncompressed content has digest {actual}, the image config says {expected}")]
    DiffId { expected: Digest, actual: Digest },
    #[error("{what} passes its cap of {cap} (config key {key})")]
    Cap { what: &'static str, cap: u64, key: &'static str },
}

/// What one layer and the image being pulled may unpack to. The image's counters are shared
/// by its layers' unpacks (they run in parallel).
#[derive(Debug, Clone)]
pub struct Limits {
    pub layer_bytes: u64,
    pub layer_entries: u64,
    pub image_bytes: u64,
    pub image_entries: u64,
    pub image_used: std::sync::Arc<Used>,
}

/// Uncompressed bytes and entries unpacked so far for one image.
#[derive(Debug, Default)]
pub struct Used {
    pub bytes: std::sync::atomic::AtomicU64,
    pub entries: std::sync::atomic::AtomicU64,
}

impl Limits {
    /// No caps (tests and layers already trusted).
    pub fn none() -> Limits {
        Limits {
            layer_bytes: u64::MAX,
            layer_entries: u64::MAX,
            image_bytes: u64::MAX,
            image_entries: u64::MAX,
            image_used: Default::default(),
        }
    }

    fn count(&self, bytes: u64, entries: u64, layer: (u64, u64)) -> Result<(), UnpackError> {
        use std::sync::atomic::Ordering::Relaxed;
        let cap = |what, cap, key| Err(UnpackError::Cap { what, cap, key });
        if layer.0 > self.layer_bytes {
            return cap("layer's uncompressed size", self.layer_bytes, "max_layer_bytes");
        }
        if layer.1 > self.layer_entries {
            return cap("layer's entry count", self.layer_entries, "max_layer_entries");
        }
        if self.image_used.bytes.fetch_add(bytes, Relaxed) + bytes > self.image_bytes {
            return cap("image's uncompressed size", self.image_bytes, "max_image_bytes");
        }
        if self.image_used.entries.fetch_add(entries, Relaxed) + entries > self.image_entries {
            return cap("image's entry count", self.image_entries, "max_image_entries");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerStats {
    /// Bytes of the uncompressed tar stream (what CRI-O reports as a layer's size).
    pub tar_size: u64,
    /// Bytes of regular file content written.
    pub disk_bytes: u64,
    pub inodes: u64,
    /// Device nodes refused; reported so a pull's log can say what was left out.
    pub skipped_devices: u64,
}

/// Counts and hashes everything read through it, and stops the stream at the caps: a bomb
/// is cut off as it inflates, not after it filled the disk.
struct Hashing<'a, R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limits: &'a Limits,
    tripped: Option<UnpackError>,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if let Err(e) = self.limits.count(n as u64, 0, (self.count, 0)) {
            self.tripped = Some(e);
            return Err(io::Error::other("unpack cap reached"));
        }
        Ok(n)
    }
}

/// Opens `blob` (gzip, zstd or plain tar, told apart by magic bytes) and unpacks it into `root`,
/// which must exist and be empty.
pub fn unpack_layer(blob: &Path, root: &Path, diff_id: &Digest, limits: &Limits) -> Result<LayerStats, UnpackError> {
    let read_err = |source| UnpackError::Read { path: blob.to_path_buf(), source };
    let mut file = BufReader::with_capacity(256 * 1024, fs::File::open(blob).map_err(read_err)?);
    let magic = {
        let buf = io::BufRead::fill_buf(&mut file).map_err(read_err)?;
        buf.get(..4).map(<[u8]>::to_vec).unwrap_or_default()
    };
    let decoded: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::with_buffer(file).map_err(read_err)?)
    } else {
        Box::new(file)
    };
    let mut hashing = Hashing { inner: decoded, hasher: Sha256::new(), count: 0, limits, tripped: None };
    let unpacked = unpack_tar(&mut hashing, root, limits).map_err(|e| match e {
        UnpackError::Read { source, .. } => read_err(source),
        other => other,
    });
    // The diff id covers the whole stream, including the tar's end blocks and any padding.
    let unpacked = unpacked.and_then(|s| io::copy(&mut hashing, &mut io::sink()).map(|_| s).map_err(read_err));
    if let Some(tripped) = hashing.tripped.take() {
        return Err(tripped);
    }
    let mut stats = unpacked?;
    stats.tar_size = hashing.count;
    let actual = Digest::from_hasher(hashing.hasher);
    if &actual != diff_id {
        return Err(UnpackError::DiffId { expected: diff_id.clone(), actual });
    }
    Ok(stats)
}

/// Unpacks an uncompressed tar stream into `root`, at most `limits`' entries.
pub fn unpack_tar(reader: impl Read, root: &Path, limits: &Limits) -> Result<LayerStats, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = LayerStats::default();
    let mut dirs = Vec::new();
    let read_err = |source| UnpackError::Read { path: root.to_path_buf(), source };
    let mut entries = 0u64;
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        entries += 1;
        limits.count(0, 1, (0, entries))?;
        let raw = entry.path_bytes().into_owned();
        let entry_name = String::from_utf8_lossy(&raw).into_owned();
        let hostile = |why| UnpackError::Hostile { entry: entry_name.clone(), why };
        let mut parts = sanitize(&raw).map_err(hostile)?;
        let Some(name) = parts.pop() else { continue };
        let parent = resolve(root, &parts, true).map_err(|e| e.into_unpack(&entry_name, root))?;
        let name_str = name.to_string_lossy();
        if name_str == OPAQUE_MARKER {
            set_xattr(&parent, "trusted.overlay.opaque", b"y")?;
            continue;
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(hostile("malformed whiteout"));
            }
            let path = parent.join(hidden);
            remove_existing(&path)?;
            let dev = rustix::fs::makedev(0, 0);
            rustix::fs::mknodat(CWD, &path, FileType::CharacterDevice, Mode::empty(), dev)
                .map_err(|e| UnpackError::Write { path: path.clone(), source: e.into() })?;
            stats.inodes += 1;
            continue;
        }
        let path = parent.join(&name);
        let header = entry.header().clone();
        match make_entry(&mut entry, root, &path, &entry_name, &mut stats)? {
            Made::Nothing => continue,
            Made::Link => {
                stats.inodes += 1;
                continue;
            }
            Made::Inode => {}
        }
        if header.entry_type() == tar::EntryType::Directory {
            dirs.push((path.clone(), header.clone()));
        }
        stats.inodes += 1;
        apply_metadata(&mut entry, &path, &header)?;
    }
    // Directory times last: creating their children moved them.
    for (path, header) in dirs.iter().rev() {
        set_mtime(path, header)?;
    }
    Ok(stats)
}

/// What `make_entry` made of an entry.
enum Made {
    /// A new inode, whose owner, mode, xattrs and times come next.
    Inode,
    /// A hard link to an inode already made.
    Link,
    /// Nothing: device nodes and entry types an image has no business shipping.
    Nothing,
}

// Long by design: one arm per tar entry type, each checked where it is made.
/// Makes the file, directory, link or FIFO of one entry at `path` (already resolved inside
/// `root`), replacing what a lower layer had there.
fn make_entry(
    entry: &mut tar::Entry<'_, impl Read>,
    root: &Path,
    path: &Path,
    entry_name: &str,
    stats: &mut LayerStats,
) -> Result<Made, UnpackError> {
    let hostile = |why| UnpackError::Hostile { entry: entry_name.to_string(), why };
    let write_err = |source: io::Error| UnpackError::Write { path: path.to_path_buf(), source };
    match entry.header().entry_type() {
        tar::EntryType::Directory => match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                remove_existing(path)?;
                fs::create_dir(path).map_err(write_err)?;
            }
            Err(_) => fs::create_dir(path).map_err(write_err)?,
        },
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            remove_existing(path)?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(write_err)?;
            stats.disk_bytes += io::copy(entry, &mut file).map_err(write_err)?;
        }
        tar::EntryType::Symlink => {
            let target = entry.link_name_bytes().ok_or_else(|| hostile("symlink without a target"))?.into_owned();
            remove_existing(path)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), path).map_err(write_err)?;
        }
        tar::EntryType::Link => {
            let target = entry.link_name_bytes().ok_or_else(|| hostile("hard link without a target"))?.into_owned();
            let mut tparts = sanitize(&target).map_err(hostile)?;
            let tname = tparts.pop().ok_or_else(|| hostile("hard link to the layer root"))?;
            let tparent = resolve(root, &tparts, false).map_err(|e| e.into_unpack(entry_name, root))?;
            let tpath = tparent.join(tname);
            match fs::symlink_metadata(&tpath) {
                Ok(m) if m.is_dir() => return Err(hostile("hard link to a directory")),
                Ok(_) => {}
                Err(_) => return Err(hostile("hard link to an entry that is not in the layer")),
            }
            if tpath != path {
                remove_existing(path)?;
                fs::hard_link(&tpath, path).map_err(write_err)?;
            }
            return Ok(Made::Link);
        }
        tar::EntryType::Fifo => {
            remove_existing(path)?;
            rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0).map_err(|e| write_err(e.into()))?;
        }
        tar::EntryType::Char | tar::EntryType::Block => {
            // A container's /dev comes from the runtime; an image has no business shipping nodes.
            stats.skipped_devices += 1;
            return Ok(Made::Nothing);
        }
        _ => return Ok(Made::Nothing),
    }
    Ok(Made::Inode)
}

/// The entry's owner, mode (after chown, which clears set-id bits), xattrs and, for all but
/// directories (whose times are set last), its modification time.
fn apply_metadata(entry: &mut tar::Entry<'_, impl Read>, path: &Path, header: &tar::Header) -> Result<(), UnpackError> {
    let read_err = |source| UnpackError::Read { path: path.to_path_buf(), source };
    let write_err = |source: io::Error| UnpackError::Write { path: path.to_path_buf(), source };
    let kind = header.entry_type();
    let mode = header.mode().map_err(read_err)? & 0o7777;
    let uid = header.uid().map_err(read_err)?;
    let gid = header.gid().map_err(read_err)?;
    let owner = (rustix::fs::Uid::from_raw(uid as u32), rustix::fs::Gid::from_raw(gid as u32));
    rustix::fs::chownat(CWD, path, Some(owner.0), Some(owner.1), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| write_err(e.into()))?;
    if kind != tar::EntryType::Symlink {
        rustix::fs::chmod(path, Mode::from_raw_mode(mode)).map_err(|e| write_err(e.into()))?;
    }
    if let Some(exts) = entry.pax_extensions().map_err(read_err)? {
        for ext in exts {
            let ext = ext.map_err(read_err)?;
            if let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                set_xattr(path, &String::from_utf8_lossy(key), ext.value_bytes())?;
            }
        }
    }
    if kind != tar::EntryType::Directory {
        set_mtime(path, header)?;
    }
    Ok(())
}

fn set_mtime(path: &Path, header: &tar::Header) -> Result<(), UnpackError> {
    let secs = header.mtime().unwrap_or(0) as i64;
    let t = Timespec { tv_sec: secs, tv_nsec: 0 };
    let times = Timestamps { last_access: t, last_modification: t };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| UnpackError::Write { path: path.to_path_buf(), source: e.into() })
}

fn set_xattr(path: &Path, key: &str, value: &[u8]) -> Result<(), UnpackError> {
    match rustix::fs::lsetxattr(path, key, value, rustix::fs::XattrFlags::empty()) {
        Ok(()) => Ok(()),
        // A filesystem without that namespace loses the attribute, as tar itself would.
        Err(rustix::io::Errno::NOTSUP) => Ok(()),
        Err(e) => Err(UnpackError::Write { path: path.to_path_buf(), source: e.into() }),
    }
}

/// Removes whatever is at `path` (a later entry replaces an earlier one, as tar does).
fn remove_existing(path: &Path) -> Result<(), UnpackError> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(|source| UnpackError::Write { path: path.to_path_buf(), source })
}

/// Splits an entry path into normal components, relative to the layer root. Leading `/` and
/// `.` are dropped (contained); `..` pops, and popping past the root is refused.
fn sanitize(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
    if raw.len() > MAX_PATH {
        return Err("path longer than 4096 bytes");
    }
    if raw.contains(&0) {
        return Err("NUL byte in path");
    }
    let mut out: Vec<OsString> = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                out.pop().ok_or("path climbs above the layer root")?;
            }
            c if c.len() > MAX_COMPONENT => return Err("path component longer than 255 bytes"),
            c => out.push(OsStr::from_bytes(c).to_os_string()),
        }
        if out.len() > MAX_DEPTH {
            return Err("path deeper than 256 directories");
        }
    }
    Ok(out)
}

enum ResolveError {
    Hostile(&'static str),
    Io(PathBuf, io::Error),
}

impl ResolveError {
    fn into_unpack(self, entry: &str, _root: &Path) -> UnpackError {
        match self {
            ResolveError::Hostile(why) => UnpackError::Hostile { entry: entry.into(), why },
            ResolveError::Io(path, source) => UnpackError::Write { path, source },
        }
    }
}

/// Resolves directory components inside `root`, following symlinks the way the container will
/// see them (absolute targets start at `root`, `..` stops at `root`), and optionally creating
/// missing directories. The result is a real directory under `root`.
fn resolve(root: &Path, parts: &[OsString], create: bool) -> Result<PathBuf, ResolveError> {
    let mut pending: VecDeque<OsString> = parts.iter().cloned().collect();
    let mut done: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(comp) = pending.pop_front() {
        if comp == ".." {
            done.pop();
            continue;
        }
        if comp.is_empty() || comp == "." {
            continue;
        }
        let mut path = root.to_path_buf();
        path.extend(&done);
        path.push(&comp);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ResolveError::Hostile("too many symlinks in path"));
                }
                let target = fs::read_link(&path).map_err(|e| ResolveError::Io(path.clone(), e))?;
                let bytes = target.as_os_str().as_bytes();
                if bytes.starts_with(b"/") {
                    done.clear();
                }
                for c in bytes.split(|b| *b == b'/').rev() {
                    pending.push_front(OsStr::from_bytes(c).to_os_string());
                }
            }
            Ok(m) if m.is_dir() => done.push(comp),
            Ok(_) => return Err(ResolveError::Hostile("a parent of the entry is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&path).map_err(|e| ResolveError::Io(path.clone(), e))?;
                done.push(comp);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ResolveError::Hostile("link target is not in the layer")),
            Err(e) => return Err(ResolveError::Io(path, e)),
        }
        if done.len() > MAX_DEPTH {
            return Err(ResolveError::Hostile("path deeper than 256 directories"));
        }
    }
    let mut path = root.to_path_buf();
    path.extend(&done);
    Ok(path)
}

/// Disk usage of a tree: (bytes of regular files, inodes), for layers unpacked before stats existed.
pub fn tree_usage(root: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                bytes += m.size();
            }
        }
    }
    (bytes, inodes)
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
