//! Attach, monitor side: several attachers may join a container's stdio at once. Output goes
//! to each through a bounded queue and a writer thread of its own, so an attacher that stops
//! reading is dropped instead of stalling the container (or its log); input from any of
//! them goes to the container's stdin.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use super::protocol::attach::{self, EXIT, HEADER_LEN, RESIZE, STDIN, STDIN_CLOSE};

/// Output chunks (up to 32 KiB each) queued per attacher before it is dropped.
const QUEUE: usize = 64;

type Chunk = (u8, Vec<u8>);

#[derive(Default)]
pub struct Attachers {
    next: AtomicU64,
    list: Mutex<HashMap<u64, SyncSender<Chunk>>>,
}

impl Attachers {
    /// Sends output to every attacher; those whose queue is full are dropped.
    pub fn publish(&self, kind: u8, data: &[u8]) {
        let mut list = self.list.lock().expect("attachers poisoned");
        if list.is_empty() {
            return;
        }
        list.retain(|_, tx| match tx.try_send((kind, data.to_vec())) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// The container exited: every attacher gets the code, then its connection ends.
    pub fn end(&self, exit_code: i32) {
        let list = std::mem::take(&mut *self.list.lock().expect("attachers poisoned"));
        for tx in list.into_values() {
            let _ = tx.try_send((EXIT, exit_code.to_be_bytes().to_vec()));
        }
    }

    fn add(&self) -> (u64, Receiver<Chunk>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = sync_channel(QUEUE);
        self.list.lock().expect("attachers poisoned").insert(id, tx);
        (id, rx)
    }

    fn remove(&self, id: u64) {
        self.list.lock().expect("attachers poisoned").remove(&id);
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.list.lock().expect("attachers poisoned").len()
    }
}

/// What an attacher reaches of its container.
pub struct Target {
    pub attachers: Arc<Attachers>,
    /// A duplicate of the container's stdin (pipe or pty master), if it has one open.
    pub stdin: Option<OwnedFd>,
    pub tty: bool,
    /// The container already exited with this code.
    pub exited: Option<i32>,
    /// Called when this attacher's stdin ends or it leaves: closes the container's stdin
    /// if the container asked for `stdin_once`.
    pub stdin_done: Box<dyn Fn() + Send>,
}

/// Serves one attacher until it leaves or the container exits. `input` is the connection's
/// read side (the request line already consumed), `conn` its write side.
pub fn serve(mut input: impl Read, conn: UnixStream, target: Target) {
    if let Some(code) = target.exited {
        let _ = (&conn).write_all(&attach::frame(EXIT, &code.to_be_bytes()));
        let _ = conn.shutdown(std::net::Shutdown::Both);
        return;
    }
    let (id, rx) = target.attachers.add();
    let writer = match conn.try_clone() {
        Ok(w) => std::thread::spawn(move || write_out(w, rx)),
        Err(_) => {
            target.attachers.remove(id);
            return;
        }
    };
    let mut stdin = target.stdin;
    let mut stdin_ended = false;
    loop {
        let mut h = [0u8; HEADER_LEN];
        if input.read_exact(&mut h).is_err() {
            break;
        }
        let Some((kind, len)) = attach::header(h) else { break };
        let mut payload = vec![0u8; len];
        if input.read_exact(&mut payload).is_err() {
            break;
        }
        match kind {
            STDIN => {
                if let Some(fd) = &stdin
                    && write_all(fd, &payload).is_err()
                {
                    stdin = None;
                }
            }
            STDIN_CLOSE => {
                stdin = None;
                stdin_ended = true;
                (target.stdin_done)();
            }
            RESIZE if len == 4 && target.tty => {
                if let Some(fd) = &stdin {
                    let size = rustix::termios::Winsize {
                        ws_col: u16::from_be_bytes([payload[0], payload[1]]),
                        ws_row: u16::from_be_bytes([payload[2], payload[3]]),
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    let _ = rustix::termios::tcsetwinsize(fd, size);
                }
            }
            _ => {}
        }
    }
    drop(stdin);
    if !stdin_ended {
        (target.stdin_done)();
    }
    target.attachers.remove(id);
    let _ = conn.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
}

fn write_out(mut conn: UnixStream, rx: Receiver<Chunk>) {
    for (kind, data) in rx {
        if conn.write_all(&attach::frame(kind, &data)).is_err() {
            break;
        }
        if kind == EXIT {
            break;
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attacher_that_does_not_read_is_dropped_not_waited_for() {
        let a = Attachers::default();
        let (_id, rx) = a.add();
        for _ in 0..QUEUE {
            a.publish(1, b"x");
        }
        assert_eq!(a.count(), 1);
        a.publish(1, b"one too many");
        assert_eq!(a.count(), 0, "dropped once its queue is full");
        assert_eq!(rx.iter().count(), QUEUE, "what was queued is still delivered");
    }

    #[test]
    fn an_attacher_sees_output_and_the_exit_then_its_connection_ends() {
        let a = Arc::new(Attachers::default());
        let (daemon, monitor) = UnixStream::pair().unwrap();
        let (in_r, in_w) = std::io::pipe().unwrap();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = closed.clone();
        let target = Target {
            attachers: a.clone(),
            stdin: Some(OwnedFd::from(in_w)),
            tty: false,
            exited: None,
            stdin_done: Box::new(move || flag.store(true, Ordering::SeqCst)),
        };
        let reader = monitor.try_clone().unwrap();
        let server = std::thread::spawn(move || serve(reader, monitor, target));
        (&daemon).write_all(&attach::frame(STDIN, b"echo hi\n")).unwrap();
        (&daemon).write_all(&attach::frame(STDIN_CLOSE, b"")).unwrap();
        let mut got = [0u8; 8];
        let mut in_r = in_r;
        in_r.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"echo hi\n");
        while a.count() == 0 {
            std::thread::yield_now();
        }
        a.publish(attach::STDOUT, b"hi\n");
        a.end(3);
        let mut all = Vec::new();
        (&daemon).read_to_end(&mut all).unwrap();
        let mut expected = attach::frame(attach::STDOUT, b"hi\n");
        expected.extend(attach::frame(EXIT, &3i32.to_be_bytes()));
        assert_eq!(all, expected);
        drop(daemon);
        server.join().unwrap();
        assert!(closed.load(Ordering::SeqCst), "stdin's end was passed on");
    }
}
