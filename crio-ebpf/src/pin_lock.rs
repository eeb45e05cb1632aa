//! One daemon per pin directory. The pinned maps outlive the daemon on purpose (a restarted
//! daemon finds its containers' entries there), so a second daemon pointed at the same
//! directory would reuse them and, reconciling against its own records, drop the first one's
//! entries. The bpffs holds no regular files, so the lock is a `flock` on the directory itself.
//!
//! A flock belongs to the open file, which a child shares between fork and exec (the fd is
//! close-on-exec): a daemon killed while spawning a helper leaves the lock held for that
//! moment, so a successor waits a little before it calls the directory taken.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

/// How long a successor waits for a lock held across a predecessor's fork.
pub const WAIT: Duration = Duration::from_secs(2);

/// Held while the daemon uses the pin directory; released when dropped (or the process dies).
#[derive(Debug)]
pub struct PinLock {
    _dir: File,
}

#[derive(Debug)]
pub enum Acquire {
    Locked(PinLock),
    /// Another process holds it; its pid when /proc/locks names one.
    Busy {
        holder: Option<u32>,
    },
}

/// Takes the lock on `dir`, waiting up to `wait` for a holder to let go; `proc_locks` is
/// /proc/locks, read to name the holder.
pub fn acquire(dir: &Path, proc_locks: &Path, wait: Duration) -> io::Result<Acquire> {
    let file = File::open(dir)?;
    let until = Instant::now() + wait;
    loop {
        match rustix::fs::flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Acquire::Locked(PinLock { _dir: file })),
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let meta = file.metadata()?;
                let text = std::fs::read_to_string(proc_locks).unwrap_or_default();
                return Ok(Acquire::Busy { holder: flock_holder(&text, meta.dev(), meta.ino()) });
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The pid /proc/locks gives for an exclusive flock on the inode `ino` of device `dev`
/// (lines such as `3: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF`).
fn flock_holder(proc_locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let file = format!("{:02x}:{:02x}:{ino}", rustix::fs::major(dev), rustix::fs::minor(dev));
    proc_locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // A blocked waiter's line starts with "->" and shifts the columns by one.
        (f.len() >= 6 && f[1] == "FLOCK" && f[3] == "WRITE" && f[5] == file).then(|| f[4].parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_found_by_device_and_inode() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 00:1f:42 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 1234 00:1f:42 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 99 00:1f:43 0 EOF\n";
        let dev = rustix::fs::makedev(0, 0x1f);
        assert_eq!(flock_holder(locks, dev, 42), Some(1234));
        assert_eq!(flock_holder(locks, dev, 44), None);
        assert_eq!(flock_holder(locks, rustix::fs::makedev(0, 0x20), 42), None);
    }

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let Acquire::Locked(first) = acquire(dir.path(), Path::new("/proc/locks"), Duration::ZERO).unwrap() else {
            panic!("first lock refused")
        };
        // The same process opening the directory again gets a separate open file, so flock
        // refuses it as it would another daemon.
        match acquire(dir.path(), Path::new("/proc/locks"), Duration::ZERO).unwrap() {
            Acquire::Busy { holder } => assert_eq!(holder, Some(std::process::id())),
            Acquire::Locked(_) => panic!("second lock granted while the first is held"),
        }
        drop(first);
        assert!(matches!(acquire(dir.path(), Path::new("/proc/locks"), Duration::ZERO).unwrap(), Acquire::Locked(_)));
    }
}
