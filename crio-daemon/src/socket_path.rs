//! Unix socket paths of any length. A socket address holds at most 107 bytes of path
//! (`sun_path`), but the runroot an operator picks may be deep, and every socket the runtime
//! makes lives under it (the CRI socket, pod monitors, console sockets). A path too long for
//! the address is reached through the directory's descriptor instead:
//! `/proc/self/fd/<dir>/<name>` is short, and the kernel resolves the directory through the
//! open descriptor, so a socket can be bound or dialled under any directory up to PATH_MAX.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// Bytes of path a unix socket address carries (108 less the terminating NUL).
pub const SUN_PATH_MAX: usize = 107;

/// A socket path made usable as an address: the path itself when it fits, else a short alias
/// through an open descriptor of its directory (held as long as this value lives).
#[derive(Debug)]
pub struct SocketPath {
    addr: PathBuf,
    dir: Option<OwnedFd>,
}

impl SocketPath {
    pub fn new(path: &Path) -> io::Result<Self> {
        if path.as_os_str().len() <= SUN_PATH_MAX {
            return Ok(Self { addr: path.into(), dir: None });
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a socket path needs a directory and a file name"));
        };
        let dir = rustix::fs::open(parent, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        let mut addr = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        addr.push(name);
        if addr.as_os_str().len() > SUN_PATH_MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the socket's file name alone is too long for a unix address"));
        }
        Ok(Self { addr, dir: Some(dir) })
    }

    /// The address this process binds or dials.
    pub fn addr(&self) -> &Path {
        &self.addr
    }

    /// The address another process of ours (a child runtime) dials while this value lives:
    /// through this process's descriptor table, which it may read as the same user.
    pub fn for_child(&self) -> PathBuf {
        match &self.dir {
            None => self.addr.clone(),
            Some(_) => {
                let rest = self.addr.strip_prefix("/proc/self").expect("aliases start with /proc/self");
                Path::new("/proc").join(std::process::id().to_string()).join(rest)
            }
        }
    }
}

/// Binds a listener at `path`, whatever its length.
pub fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    std::os::unix::net::UnixListener::bind(SocketPath::new(path)?.addr())
}

/// Connects to the socket at `path`, whatever its length.
pub fn connect(path: &Path) -> io::Result<std::os::unix::net::UnixStream> {
    std::os::unix::net::UnixStream::connect(SocketPath::new(path)?.addr())
}

/// Connects to the socket at `path` from async code, whatever its length.
pub async fn connect_async(path: &Path) -> io::Result<tokio::net::UnixStream> {
    let short = SocketPath::new(path)?;
    tokio::net::UnixStream::connect(short.addr()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn deep_dir(root: &Path) -> PathBuf {
        let dir = root.join("a-runroot-as-long-as-real-nodes-have".repeat(4)).join("pods").join("f".repeat(64));
        std::fs::create_dir_all(&dir).expect("creating a deep directory");
        dir
    }

    #[test]
    fn a_short_path_is_used_as_it_is() {
        let p = SocketPath::new(Path::new("/run/crio/crio.sock")).unwrap();
        assert_eq!(p.addr(), Path::new("/run/crio/crio.sock"));
        assert_eq!(p.for_child(), Path::new("/run/crio/crio.sock"));
    }

    #[test]
    fn a_socket_under_a_deep_directory_is_bound_and_dialled() {
        let root = tempfile::tempdir().unwrap();
        let path = deep_dir(root.path()).join("monitor.sock");
        assert!(path.as_os_str().len() > 200, "the test path must be too long for sun_path");
        let listener = bind(&path).expect("binding a socket under a long path");
        assert!(path.exists(), "the socket is made at the real path");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.write_all(b"hello").unwrap();
        });
        let mut got = String::new();
        connect(&path).expect("dialling a socket under a long path").read_to_string(&mut got).unwrap();
        server.join().unwrap();
        assert_eq!(got, "hello");
    }

    #[test]
    fn a_child_reaches_it_through_our_descriptor_table() {
        let root = tempfile::tempdir().unwrap();
        let path = deep_dir(root.path()).join("tty.sock");
        let short = SocketPath::new(&path).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(short.addr()).unwrap();
        let alias = short.for_child();
        assert!(alias.starts_with(format!("/proc/{}/fd/", std::process::id())));
        assert!(alias.as_os_str().len() <= SUN_PATH_MAX);
        std::os::unix::net::UnixStream::connect(&alias).expect("dialling through /proc/<pid>/fd");
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let long = PathBuf::from("/nonexistent").join("x".repeat(120)).join("s.sock");
        assert_eq!(SocketPath::new(&long).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
