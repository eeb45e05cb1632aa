//! Reading files an image supplies, as the image sees them: every path is resolved inside the
//! root filesystem by the kernel (`openat2` with `RESOLVE_IN_ROOT`), so a symlink such as
//! `/etc/passwd -> /etc/shadow` or `/etc -> /` names the image's own file, never the host's.
//! Only regular files are read (a FIFO or `/dev/zero` would hang or never end), and never more
//! than the caller's cap. These calls block: callers run them off the async workers.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

#[derive(Debug, thiserror::Error)]
pub enum RootfsReadError {
    #[error("cannot open {path} inside the root filesystem {root}")]
    Open {
        root: PathBuf,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} inside the root filesystem {root} is not a regular file")]
    NotRegular { root: PathBuf, path: String },
    #[error("{path} inside the root filesystem {root} is larger than {cap} bytes")]
    TooLarge { root: PathBuf, path: String, cap: u64 },
    #[error("cannot read {path} inside the root filesystem {root}")]
    Read {
        root: PathBuf,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn open_in_root(root: &Path, path: &str) -> Result<OwnedFd, std::io::Error> {
    let dir = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    // NONBLOCK: opening a FIFO for reading would otherwise wait for a writer that never comes.
    let fd = rustix::fs::openat2(
        &dir,
        path.trim_start_matches('/'),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    )?;
    Ok(fd)
}

/// The contents of `path` as seen from inside `root`, at most `cap` bytes.
pub fn read_in_root(root: &Path, path: &str, cap: u64) -> Result<Vec<u8>, RootfsReadError> {
    let fd = open_in_root(root, path).map_err(|source| RootfsReadError::Open { root: root.into(), path: path.into(), source })?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(|source| RootfsReadError::Read { root: root.into(), path: path.into(), source })?;
    if !meta.is_file() {
        return Err(RootfsReadError::NotRegular { root: root.into(), path: path.into() });
    }
    if meta.len() > cap {
        return Err(RootfsReadError::TooLarge { root: root.into(), path: path.into(), cap });
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    // The size may grow between fstat and read; the take keeps the cap true regardless.
    file.take(cap + 1).read_to_end(&mut out).map_err(|source| RootfsReadError::Read { root: root.into(), path: path.into(), source })?;
    if out.len() as u64 > cap {
        return Err(RootfsReadError::TooLarge { root: root.into(), path: path.into(), cap });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), "host secret").unwrap();
        let root = host.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("secret"), "image file").unwrap();
        // Absolute and climbing links both land inside the root.
        symlink("/secret", root.join("etc/abs")).unwrap();
        symlink("../../../../secret", root.join("etc/climb")).unwrap();
        assert_eq!(read_in_root(&root, "/etc/abs", 1024).unwrap(), b"image file");
        assert_eq!(read_in_root(&root, "etc/climb", 1024).unwrap(), b"image file");
        // A host path through an absolute link to a directory: the image's /, not the host's.
        std::fs::create_dir(root.join("d")).unwrap();
        symlink("/", root.join("d/up")).unwrap();
        assert_eq!(read_in_root(&root, "/d/up/secret", 1024).unwrap(), b"image file");
    }

    #[test]
    fn devices_fifos_and_large_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        symlink("/dev/zero", root.join("etc/zero")).unwrap();
        // Inside the root /dev/zero does not exist.
        assert!(matches!(read_in_root(root, "/etc/zero", 1024), Err(RootfsReadError::Open { .. })));
        rustix::fs::mkfifoat(rustix::fs::CWD, root.join("etc/fifo"), Mode::from_raw_mode(0o600)).unwrap();
        assert!(matches!(read_in_root(root, "/etc/fifo", 1024), Err(RootfsReadError::NotRegular { .. })));
        std::fs::write(root.join("etc/big"), vec![b'x'; 2048]).unwrap();
        assert!(matches!(read_in_root(root, "/etc/big", 1024), Err(RootfsReadError::TooLarge { .. })));
        assert_eq!(read_in_root(root, "/etc/big", 2048).unwrap().len(), 2048);
    }
}
