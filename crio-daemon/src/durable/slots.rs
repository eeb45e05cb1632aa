//! A record's file: two slots of one fixed size, each a header and a JSON payload. An update
//! overwrites the slot that does not hold the current record and syncs its data alone: the
//! file keeps its size and its blocks, so there is no inode to allocate, no rename and no
//! directory to sync (one data write and a flush, where a temp file, fsync, rename and
//! directory fsync cost four). A crash in the middle leaves the other slot whole, and loading
//! takes the valid slot with the higher sequence number. A new file, or a record that
//! outgrows its slots, is written whole to a temp file and renamed in, so a file under its
//! final name always has a valid slot.
//!
//! A version may be written without its flush (`update_unflushed`) when losing it to a power
//! failure loses nothing the node still has (a container's start: the failure ends the
//! container too). The two-slot promise then rests on the next write, which flushes that
//! version before it overwrites the only other whole one.
//!
//! Slot header (32 bytes, little endian): magic `CRIOREC1`, sequence (u64), payload length
//! (u32), flags (u32), CRC-32 of sequence, length, flags and payload (u32), four zero bytes.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: &[u8; 8] = b"CRIOREC1";
const HEADER: usize = 32;
/// The smallest slot: one page, so the two slots never share a block.
const MIN_SLOT: u64 = 4096;
/// The largest slot a file may claim: a record is a pod's or a container's, never megabytes.
const MAX_SLOT: u64 = 16 << 20;

/// A version written before what it describes is whole: the create that wrote it has not
/// finished (see `Records::stage`).
pub const STAGED: u32 = 1;

/// Where a record stands in its file: the slot size and the sequence number of the slot
/// holding it (the next write goes to the other one), and whether that slot awaits its flush.
/// Starts at `Slots::default()`, which makes the first `update` write a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slots {
    size: u64,
    seq: u64,
    unflushed: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotError {
    #[error("{len} bytes is not two slots of a power-of-two size between {MIN_SLOT} and {MAX_SLOT}")]
    Size { len: u64 },
    #[error("neither slot holds a whole record (damaged, or not a record file)")]
    NoValidSlot,
}

/// The slot size for a payload of `len` bytes, with room for it to grow by half.
fn slot_size(len: usize) -> u64 {
    let want = (HEADER + len + len / 2) as u64;
    want.next_power_of_two().max(MIN_SLOT)
}

/// A slot's bytes: header and payload.
fn encode(seq: u64, flags: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a record under 4 GiB");
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&checksum(seq, len, flags, payload).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
    out
}

fn checksum(seq: u64, len: u32, flags: u32, payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(&len.to_le_bytes());
    crc.update(&flags.to_le_bytes());
    crc.update(payload);
    crc.finalize()
}

/// One slot's record as read.
#[derive(Debug, PartialEq, Eq)]
pub struct Version<'a> {
    pub payload: &'a [u8],
    pub flags: u32,
    pub at: Slots,
}

/// One slot's record (of a file of slots of `size`), if it holds a whole one.
fn decode(slot: &[u8], size: u64) -> Option<Version<'_>> {
    let header = slot.get(..HEADER)?;
    if &header[..8] != MAGIC {
        return None;
    }
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let (len, flags, want) = (word(16), word(20), word(24));
    let payload = slot.get(HEADER..HEADER.checked_add(len as usize)?)?;
    (checksum(seq, len, flags, payload) == want).then_some(Version { payload, flags, at: Slots { size, seq, unflushed: false } })
}

/// The current record of a record file's bytes.
pub fn read(bytes: &[u8]) -> Result<Version<'_>, SlotError> {
    let len = bytes.len() as u64;
    let size = len / 2;
    if !len.is_multiple_of(2) || !size.is_power_of_two() || !(MIN_SLOT..=MAX_SLOT).contains(&size) {
        return Err(SlotError::Size { len });
    }
    let (a, b) = bytes.split_at(size as usize);
    match (decode(a, size), decode(b, size)) {
        (Some(x), Some(y)) => Ok(if x.at.seq >= y.at.seq { x } else { y }),
        (Some(x), None) | (None, Some(x)) => Ok(x),
        (None, None) => Err(SlotError::NoValidSlot),
    }
}

/// Writes a new record file for `payload`, whole: temp file, fsync, rename, directory fsync.
/// Replaces whatever `path` held.
pub fn create(path: &Path, payload: &[u8], seq: u64, flags: u32) -> io::Result<Slots> {
    let slots = Slots { size: slot_size(payload.len()), seq, unflushed: false };
    let mut bytes = vec![0u8; 2 * slots.size as usize];
    let at = slots.offset(seq) as usize;
    let slot = encode(seq, flags, payload);
    bytes[at..at + slot.len()].copy_from_slice(&slot);
    let dir = path.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(slots)
}

/// Writes `payload` as the record's next version: into the other slot and synced, or, when
/// it does not fit, as a new file with bigger slots.
pub fn update(path: &Path, at: &mut Slots, payload: &[u8], flags: u32) -> io::Result<()> {
    write(path, at, payload, flags, true)
}

/// As `update`, without waiting for the version to reach the disk (a new file is still
/// written whole and synced). A crash of the process keeps it (the page cache does); a power
/// failure may lose it, leaving the version before.
pub fn update_unflushed(path: &Path, at: &mut Slots, payload: &[u8], flags: u32) -> io::Result<()> {
    write(path, at, payload, flags, false)
}

fn write(path: &Path, at: &mut Slots, payload: &[u8], flags: u32, flush: bool) -> io::Result<()> {
    let seq = at.seq + 1;
    if (HEADER + payload.len()) as u64 > at.size {
        // Until the new file is known whole, the next write makes one again.
        at.size = 0;
        *at = create(path, payload, seq, flags)?;
        return Ok(());
    }
    let file = fs::OpenOptions::new().write(true).open(path)?;
    if at.unflushed {
        // The slot about to be overwritten holds the only flushed version.
        file.sync_data()?;
        at.unflushed = false;
    }
    file.write_all_at(&encode(seq, flags, payload), at.offset(seq))?;
    if flush {
        file.sync_data()?;
    }
    *at = Slots { seq, unflushed: !flush, ..*at };
    Ok(())
}

/// Flushes the version last written, if it was written without its flush (a record whose
/// flush is done behind its writer: see `Records::publish_flushed_behind`).
pub fn flush(path: &Path, at: &mut Slots) -> io::Result<()> {
    if at.unflushed {
        fs::File::open(path)?.sync_data()?;
        at.unflushed = false;
    }
    Ok(())
}

impl Slots {
    /// Whether the file holds its first version.
    pub fn is_new(&self) -> bool {
        self.seq == 1
    }

    /// Whether the version last written may not have reached the disk yet (the tests' view of
    /// a flush behind the answer).
    #[cfg(test)]
    pub fn is_unflushed(&self) -> bool {
        self.unflushed
    }

    /// Where the slot of sequence number `seq` starts.
    fn offset(&self, seq: u64) -> u64 {
        (seq % 2) * self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(path: &Path) -> Vec<u8> {
        let bytes = fs::read(path).unwrap();
        read(&bytes).unwrap().payload.to_vec()
    }

    #[test]
    fn updates_alternate_slots_in_place() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("r.record");
        let mut at = create(&p, b"one", 1, STAGED).unwrap();
        assert_eq!(read(&fs::read(&p).unwrap()).unwrap().flags, STAGED);
        assert_eq!(fs::metadata(&p).unwrap().len(), 2 * MIN_SLOT);
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap());
        update(&p, &mut at, b"two", 0).unwrap();
        assert_eq!(payload(&p), b"two");
        assert_eq!(read(&fs::read(&p).unwrap()).unwrap().flags, 0);
        update(&p, &mut at, b"three", 0).unwrap();
        assert_eq!(payload(&p), b"three");
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap()), inode, "written in place");
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1, "no temp files left");
    }

    #[test]
    fn a_torn_write_leaves_the_previous_version() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("r.record");
        let mut at = create(&p, b"first", 1, 0).unwrap();
        update(&p, &mut at, b"second", 0).unwrap();
        // Damage in the current slot falls back to the other one.
        let mut bytes = fs::read(&p).unwrap();
        let cur = at.offset(at.seq) as usize;
        bytes[cur + 9] ^= 0xff;
        assert_eq!(read(&bytes).unwrap().payload, b"first");
        // The next write, to the slot holding "first", torn halfway through its payload.
        let next = encode(at.seq + 1, 0, b"third version");
        let file = fs::OpenOptions::new().write(true).open(&p).unwrap();
        file.write_all_at(&next[..HEADER + 4], at.offset(at.seq + 1)).unwrap();
        assert_eq!(payload(&p), b"second");
    }

    #[test]
    fn an_unflushed_version_is_flushed_before_the_other_slot_is_overwritten() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("r.record");
        let mut at = create(&p, b"created", 1, 0).unwrap();
        update_unflushed(&p, &mut at, b"running", 0).unwrap();
        assert_eq!(payload(&p), b"running", "the process reads its own unflushed write");
        assert!(at.unflushed, "the slot of \"running\" awaits its flush");
        // The next write goes over "created", the only flushed version: "running" first.
        update(&p, &mut at, b"exited", 0).unwrap();
        assert_eq!(payload(&p), b"exited");
        assert!(!at.unflushed);
        assert_eq!(at.seq, 3);
        update_unflushed(&p, &mut at, b"stopped", 0).unwrap();
        flush(&p, &mut at).unwrap();
        assert!(!at.unflushed, "flushed on its own");
        // An unflushed write that outgrows its slots makes a new file, which is synced whole.
        update_unflushed(&p, &mut at, &vec![b'x'; 10_000], 0).unwrap();
        assert!(!at.unflushed);
    }

    #[test]
    fn a_first_update_from_nothing_makes_the_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("r.record");
        let mut at = Slots::default();
        update(&p, &mut at, b"made", 0).unwrap();
        assert_eq!(payload(&p), b"made");
        assert_eq!(at.seq, 1);
    }

    #[test]
    fn a_record_outgrowing_its_slots_moves_to_bigger_ones() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("r.record");
        let mut at = create(&p, b"small", 7, 0).unwrap();
        let big = vec![b'x'; 10_000];
        update(&p, &mut at, &big, 0).unwrap();
        assert_eq!(payload(&p), big);
        assert_eq!(at.seq, 8);
        assert!(fs::metadata(&p).unwrap().len() >= 2 * 16384);
        update(&p, &mut at, b"small again", 0).unwrap();
        assert_eq!(payload(&p), b"small again");
    }

    #[test]
    fn what_is_not_a_record_file_is_refused() {
        assert_eq!(read(b"{\"json\": true}").unwrap_err(), SlotError::Size { len: 14 });
        assert_eq!(read(&vec![0u8; 8192]).unwrap_err(), SlotError::NoValidSlot);
        let mut bytes = vec![0u8; 8192];
        let slot = encode(3, 0, b"ok");
        bytes[4096..4096 + slot.len()].copy_from_slice(&slot);
        assert_eq!(read(&bytes).unwrap(), Version { payload: b"ok", flags: 0, at: Slots { size: 4096, seq: 3, unflushed: false } });
        // A length past the slot's end is damage, not a read past it.
        bytes[4096 + 16..4096 + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read(&bytes).unwrap_err(), SlotError::NoValidSlot);
    }
}
