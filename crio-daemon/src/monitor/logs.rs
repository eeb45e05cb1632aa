//! A container's CRI log file: both streams framed into one file, reopened on request (after
//! the kubelet rotates it), truncated and continued when it passes its size cap.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::log_format::{DEFAULT_MAX_LINE, Stream, frame};

pub struct LogSink {
    path: PathBuf,
    max_size: u64,
    state: Mutex<(File, u64)>,
}

fn open(path: &Path) -> io::Result<(File, u64)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // What a container prints may be secret; the kubelet reads logs as root (CRI-O: 0600).
    let f = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    let len = f.metadata()?.len();
    Ok((f, len))
}

impl LogSink {
    pub fn open(path: &Path, max_size: u64) -> io::Result<Arc<LogSink>> {
        Ok(Arc::new(LogSink { path: path.into(), max_size, state: Mutex::new(open(path)?) }))
    }

    pub fn reopen(&self) -> io::Result<()> {
        let fresh = open(&self.path)?;
        *self.state.lock().expect("log sink poisoned") = fresh;
        Ok(())
    }

    fn write(&self, stream: Stream, chunk: &[u8], buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        frame(SystemTime::now(), stream, chunk, DEFAULT_MAX_LINE, buf);
        let mut state = self.state.lock().expect("log sink poisoned");
        let (file, written) = &mut *state;
        let mut out: &[u8] = buf;
        if self.max_size > 0 && *written + out.len() as u64 > self.max_size {
            file.set_len(0)?;
            file.rewind()?;
            *written = 0;
            // A burst bigger than the cap keeps its newest whole entries.
            while out.len() as u64 > self.max_size {
                match out.iter().position(|b| *b == b'\n') {
                    Some(i) => out = &out[i + 1..],
                    None => out = &[],
                }
            }
        }
        file.write_all(out)?;
        *written += out.len() as u64;
        Ok(())
    }
}

/// Copies one stream of the container into the log, and to its attachers, until the
/// container closes it.
pub fn pump(mut from: impl Read, stream: Stream, sink: Arc<LogSink>, attachers: &super::attach::Attachers) {
    let mut chunk = vec![0u8; 32 * 1024];
    let mut framed = Vec::with_capacity(chunk.len() + 256);
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if let Err(e) = sink.write(stream, &chunk[..n], &mut framed) {
            eprintln!("crio-monitor: writing {}: {e}", sink.path.display());
        }
        let kind = match stream {
            Stream::Stdout => super::protocol::attach::STDOUT,
            Stream::Stderr => super::protocol::attach::STDERR,
        };
        attachers.publish(kind, &chunk[..n]);
    }
}
