//! The console socket of `<runtime> create --console-socket`: for a tty container the runtime
//! makes the pty inside the container and sends its master over this unix socket (SCM_RIGHTS,
//! with the pty's name as the payload). The monitor keeps the master: it is the container's
//! stdin, stdout and stderr.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

pub struct ConsoleSocket {
    path: PathBuf,
    /// The address the runtime dials (a short alias where `path` is too long for one).
    address: crate::socket_path::SocketPath,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Listens at `path` (a stale socket there is replaced), readable by root only.
    pub fn bind(path: &Path) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let address = crate::socket_path::SocketPath::new(path)?;
        let listener = UnixListener::bind(address.addr())?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self { path: path.into(), address, listener })
    }

    /// What to pass as `--console-socket`: the runtime is our child and may dial through our
    /// descriptor table.
    pub fn address_for_runtime(&self) -> PathBuf {
        self.address.for_child()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for one connection and returns the descriptor it carries.
    pub fn receive(&self) -> io::Result<OwnedFd> {
        let (conn, _) = self.listener.accept()?;
        receive_fd(&conn)
    }

    /// Wakes a `receive` blocked on a runtime that failed before connecting: it then fails
    /// with "no descriptor".
    pub fn wake(path: &Path) {
        let _ = crate::socket_path::connect(path);
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One descriptor sent over `conn` (SCM_RIGHTS), as a runtime sends a pty master.
pub fn receive_fd(conn: &UnixStream) -> io::Result<OwnedFd> {
    let mut name = [0u8; 256];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(&mut name)];
    rustix::net::recvmsg(conn, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let fd = control.drain().find_map(|msg| match msg {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    fd.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the console socket's peer sent no descriptor"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_descriptor_sent_over_the_socket_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let socket = ConsoleSocket::bind(&dir.path().join("c.sock")).unwrap();
        let (mut reader, writer) = std::io::pipe().unwrap();
        let path = socket.path().to_path_buf();
        let sender = std::thread::spawn(move || {
            let conn = UnixStream::connect(&path).unwrap();
            let fds = [writer.as_fd()];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
            assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
            rustix::net::sendmsg(&conn, &[std::io::IoSlice::new(b"/dev/pts/9")], &mut control, rustix::net::SendFlags::empty()).unwrap();
        });
        let fd = socket.receive().unwrap();
        sender.join().unwrap();
        std::fs::File::from(fd).write_all(b"through the passed fd").unwrap();
        let mut got = String::new();
        reader.read_to_string(&mut got).unwrap();
        assert_eq!(got, "through the passed fd");
    }

    #[test]
    fn a_peer_without_a_descriptor_is_an_error_and_the_socket_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let socket = ConsoleSocket::bind(&path).unwrap();
        let waker = std::thread::spawn({
            let path = path.clone();
            move || ConsoleSocket::wake(&path)
        });
        assert_eq!(socket.receive().unwrap_err().kind(), io::ErrorKind::InvalidData);
        waker.join().unwrap();
        drop(socket);
        assert!(!path.exists());
    }
}
