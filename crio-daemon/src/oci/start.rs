//! Starting a created container without running `<runtime> start`. runc and crun park a
//! created container's init in an open for writing of `<root>/<id>/exec.fifo`; their `start`
//! opens the fifo for reading (which lets the init go on to exec the container's process),
//! reads the byte the init writes, then removes the fifo, whose absence is how both tell
//! "running" from "created". Doing those three steps here saves a Go process start, most of
//! StartContainer's time and CPU. Where there is no fifo (a runtime that works otherwise), the
//! caller falls back to `<runtime> start`.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FileType, Mode, OFlags};

/// The name runc and crun give the fifo in a container's state directory.
const EXEC_FIFO: &str = "exec.fifo";

#[derive(Debug)]
pub enum FifoStart {
    /// The init was released and confirmed it.
    Started,
    /// No exec fifo where runc and crun keep it: start through the runtime's command.
    NoFifo,
    /// The init exited without taking the start (killed, or died while parked).
    InitGone,
    /// Nothing from the init within the deadline.
    TimedOut,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to start the container through {path}")]
pub struct FifoError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Releases the init (pid `init`) of container `id` parked on its exec fifo under the
/// runtime's `root`.
pub async fn through_fifo(root: &Path, id: &str, init: i32, timeout: Duration) -> Result<FifoStart, FifoError> {
    // Without the init's pid its death could not be told from its silence.
    let Some(init) = rustix::process::Pid::from_raw(init) else { return Ok(FifoStart::NoFifo) };
    let path = root.join(id).join(EXEC_FIFO);
    let err = |source: io::Error| FifoError { path: path.clone(), source };
    // Non-blocking: a reader's open never waits for a writer, and the init parked in its
    // blocking open for writing goes on as soon as this one exists.
    let fifo: OwnedFd = match rustix::fs::open(&path, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(FifoStart::NoFifo),
        Err(e) => return Err(err(e.into())),
    };
    if FileType::from_raw_mode(rustix::fs::fstat(&fifo).map_err(|e| err(e.into()))?.st_mode) != FileType::Fifo {
        return Ok(FifoStart::NoFifo);
    }
    let init_exit = match rustix::process::pidfd_open(init, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => Some(crate::sys::async_readable(fd).map_err(err)?),
        // Already gone: only what it left in the fifo tells whether it was started.
        Err(rustix::io::Errno::SRCH) => None,
        Err(e) => return Err(err(e.into())),
    };
    let fifo = crate::sys::async_readable(fifo).map_err(err)?;
    let waited = tokio::time::timeout(timeout, async {
        match &init_exit {
            Some(exit) => {
                tokio::select! {
                    r = fifo.readable() => r.map(|mut g| g.clear_ready()),
                    r = exit.readable() => r.map(drop),
                }
            }
            None => Ok(()),
        }
    })
    .await;
    match waited {
        Err(_) => return Ok(FifoStart::TimedOut),
        Ok(r) => r.map_err(err)?,
    }
    let mut byte = [0u8; 1];
    match rustix::io::read(fifo.get_ref(), &mut byte) {
        // Removed only now, as the runtimes' own start does: an init that opens the fifo by
        // its path must still find it.
        Ok(1) => rustix::fs::unlink(&path).map(|()| FifoStart::Started).map_err(|e| err(e.into())),
        // End of file (the init opened and closed it without a word) or nothing yet while the
        // init is gone: it will never start.
        Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(FifoStart::InitGone),
        Err(e) => Err(err(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo_in(dir: &Path, id: &str) -> PathBuf {
        let d = dir.join(id);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(EXEC_FIFO);
        rustix::fs::mknodat(rustix::fs::CWD, &p, FileType::Fifo, Mode::from_raw_mode(0o622), 0).unwrap();
        p
    }

    #[tokio::test]
    async fn a_parked_writer_is_released_and_the_fifo_removed() {
        let t = tempfile::tempdir().unwrap();
        let p = fifo_in(t.path(), "c1");
        // The init's side, late: a blocking open of the path for writing, then one byte.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::write(&p, b"0")
        });
        let me = std::process::id() as i32;
        let r = through_fifo(t.path(), "c1", me, Duration::from_secs(10)).await.unwrap();
        assert!(matches!(r, FifoStart::Started), "{r:?}");
        writer.join().unwrap().unwrap();
        assert!(!t.path().join("c1").join(EXEC_FIFO).exists(), "the runtime must see it running");
    }

    #[tokio::test]
    async fn no_fifo_means_the_runtime_starts_it() {
        let t = tempfile::tempdir().unwrap();
        let r = through_fifo(t.path(), "absent", 1, Duration::from_secs(1)).await.unwrap();
        assert!(matches!(r, FifoStart::NoFifo), "{r:?}");
        std::fs::create_dir_all(t.path().join("plain")).unwrap();
        std::fs::write(t.path().join("plain").join(EXEC_FIFO), b"").unwrap();
        let r = through_fifo(t.path(), "plain", 1, Duration::from_secs(1)).await.unwrap();
        assert!(matches!(r, FifoStart::NoFifo), "a regular file is not the protocol: {r:?}");
    }

    #[tokio::test]
    async fn an_init_that_died_parked_is_reported_not_waited_for() {
        let t = tempfile::tempdir().unwrap();
        fifo_in(t.path(), "c2");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Exited but not reaped: its pidfd reads as exited.
        std::thread::sleep(Duration::from_millis(50));
        let r = through_fifo(t.path(), "c2", pid, Duration::from_secs(10)).await.unwrap();
        child.wait().unwrap();
        assert!(matches!(r, FifoStart::InitGone), "{r:?}");
    }

    #[tokio::test]
    async fn silence_until_the_deadline_times_out() {
        let t = tempfile::tempdir().unwrap();
        fifo_in(t.path(), "c3");
        let me = std::process::id() as i32;
        let r = through_fifo(t.path(), "c3", me, Duration::from_millis(50)).await.unwrap();
        assert!(matches!(r, FifoStart::TimedOut), "{r:?}");
    }
}
