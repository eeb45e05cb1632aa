//! Exec and attach sessions once their streams are open, whichever protocol carries them:
//! copy stdin in, stdout and stderr out, apply resizes to the terminal, and end with the
//! status on the error stream (the kubelet's remotecommand protocols, versions 1 to 5).

use bytes::Bytes;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::channel::{Output, Session};
use super::tokens::Pending;
use crate::container::{Attachment, Wants};
use crate::monitor::protocol::attach as frames;
use crate::services::Services;

/// After the process exits, how long what it started may keep its output open before the
/// session ends anyway (output already written is never lost: it is in the pipe).
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The remotecommand protocol version the client and we agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io`
    V1,
    V2,
    /// Adds the resize stream.
    V3,
    /// The error stream carries a JSON status, exit codes included.
    V4,
    /// WebSocket only: adds closing stdin by a message.
    V5,
}

impl Version {
    pub const ALL: [(&'static str, Version); 5] = [
        ("v5.channel.k8s.io", Version::V5),
        ("v4.channel.k8s.io", Version::V4),
        ("v3.channel.k8s.io", Version::V3),
        ("v2.channel.k8s.io", Version::V2),
        ("channel.k8s.io", Version::V1),
    ];

    pub fn has_resize(self) -> bool {
        self >= Version::V3
    }
}

/// A session's streams, as the client opened them.
pub struct Streams {
    pub error: Output,
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<Output>,
    pub stderr: Option<Output>,
    pub resize: Option<mpsc::Receiver<Bytes>>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    ExitCode { cmd: Vec<String>, code: i32 },
    Error(String),
}

/// What the error stream carries for `outcome`: a JSON status on v4 and later, else text,
/// and only for a failure.
pub fn status(version: Version, outcome: &Outcome) -> Option<Bytes> {
    let message = match outcome {
        Outcome::Success => None,
        Outcome::ExitCode { cmd, code } => {
            Some(format!("command terminated with non-zero exit code: error executing command {cmd:?}, exit code {code}"))
        }
        Outcome::Error(why) => Some(why.clone()),
    };
    if version < Version::V4 {
        return message.map(Bytes::from);
    }
    let json = match (outcome, message) {
        (Outcome::ExitCode { code, .. }, Some(message)) => serde_json::json!({
            "metadata": {}, "status": "Failure", "message": message, "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
        }),
        (_, Some(message)) => serde_json::json!({
            "metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500
        }),
        (_, None) => serde_json::json!({"metadata": {}, "status": "Success"}),
    };
    Some(Bytes::from(serde_json::to_vec(&json).expect("statuses serialize")))
}

/// The streams a session's client opens for `pending` (a tty has no stderr); `None` for a
/// port-forward.
pub fn wants(pending: &Pending) -> Option<Wants> {
    match pending {
        Pending::Exec { tty, stdin, stdout, stderr, .. } | Pending::Attach { tty, stdin, stdout, stderr, .. } => {
            Some(Wants { tty: *tty, stdin: *stdin, stdout: *stdout, stderr: *stderr && !*tty })
        }
        Pending::PortForward { .. } => None,
    }
}

/// Runs an exec or attach session on its streams.
pub async fn run(services: &Services, pending: Pending, wants: Wants, streams: Streams, version: Version, session: Session) {
    match pending {
        Pending::Exec { container_id, cmd, .. } => exec(services, &container_id, &cmd, wants, streams, version, session).await,
        Pending::Attach { container_id, .. } => attach(services, &container_id, streams, version, session).await,
        Pending::PortForward { .. } => {}
    }
}

/// Writes the status and closes every output: the client's cue that the session is over.
async fn end(streams: &Streams, version: Version, outcome: Outcome, session: &Session) {
    if let Some(s) = status(version, &outcome) {
        streams.error.send(s).await;
    }
    for o in [&streams.stdout, &streams.stderr].into_iter().flatten() {
        o.close().await;
    }
    streams.error.close().await;
    session.finish().await;
}

/// Runs an exec session: `cmd` in `container_id`, streamed until it exits or the client goes.
pub async fn exec(
    services: &Services,
    container_id: &str,
    cmd: &[String],
    wants: Wants,
    mut s: Streams,
    version: Version,
    session: Session,
) {
    let mut proc = match services.containers.exec_session(container_id, cmd, wants).await {
        Ok(p) => p,
        Err(e) => {
            let why = format!("exec in container {container_id}: {}", crate::error_chain(&e));
            tracing::info!(container_id, error = %why, "exec session could not start");
            return end(&s, version, Outcome::Error(why), &session).await;
        }
    };
    let stdin = match (s.stdin.take(), proc.stdin.take()) {
        (Some(rx), Some(w)) => Some(tokio::spawn(copy_in(rx, w))),
        _ => None,
    };
    let resize = match (s.resize.take(), proc.pty.clone()) {
        (Some(rx), Some(pty)) => Some(tokio::spawn(resizes(rx, move |w, h| {
            let _ = pty.resize(w, h);
        }))),
        _ => None,
    };
    let mut outputs: Vec<_> = [(proc.stdout.take(), s.stdout.clone()), (proc.stderr.take(), s.stderr.clone())]
        .into_iter()
        .filter_map(|(r, o)| Some(tokio::spawn(copy_out(r?, o?))))
        .collect();
    let status = tokio::select! {
        st = proc.process.wait() => Some(st),
        () = session.wait_closed() => None,
    };
    let Some(status) = status else {
        // The client went away: the command goes with it.
        proc.process.stop().await;
        abort_all(stdin, resize, outputs);
        return;
    };
    let drain = futures::future::join_all(outputs.iter_mut());
    if tokio::time::timeout(DRAIN_GRACE, drain).await.is_err() {
        tracing::debug!(container_id, "exec session: output still open after the command exited; ending");
    }
    abort_all(stdin, resize, outputs);
    let outcome = match status {
        Ok(0) => Outcome::Success,
        Ok(code) => Outcome::ExitCode { cmd: cmd.to_vec(), code },
        Err(e) => Outcome::Error(format!("waiting for the command in container {container_id}: {e}")),
    };
    end(&s, version, outcome, &session).await;
}

/// Runs an attach session: the container's stdio until it exits or the client goes.
pub async fn attach(services: &Services, container_id: &str, mut s: Streams, version: Version, session: Session) {
    let Attachment { mut output, mut input } = match services.containers.attach(container_id).await {
        Ok(a) => a,
        Err(e) => {
            let why = format!("attach to container {container_id}: {}", crate::error_chain(&e));
            tracing::info!(container_id, error = %why, "attach session could not start");
            return end(&s, version, Outcome::Error(why), &session).await;
        }
    };
    let (mut stdin, mut resize) = (s.stdin.take(), s.resize.take());
    let to_monitor = tokio::spawn(async move {
        let mut decoder = ResizeDecoder::default();
        loop {
            let frame = tokio::select! {
                d = recv_or_pending(&mut stdin), if stdin.is_some() => match d {
                    Some(d) => frames::frame(frames::STDIN, &d),
                    None => { stdin = None; frames::frame(frames::STDIN_CLOSE, &[]) }
                },
                r = recv_or_pending(&mut resize), if resize.is_some() => match r {
                    Some(r) => decoder.push(&r).iter().flat_map(|(w, h)| {
                        let mut p = w.to_be_bytes().to_vec();
                        p.extend(h.to_be_bytes());
                        frames::frame(frames::RESIZE, &p)
                    }).collect(),
                    None => { resize = None; continue }
                },
                else => break,
            };
            if input.write_all(&frame).await.is_err() {
                return;
            }
        }
        // Dropping the write half would shut it down, which the monitor takes for this
        // attacher leaving: it is held until the session ends (and this task is aborted).
        std::future::pending::<()>().await;
        drop(input);
    });
    let (stdout, stderr) = (s.stdout.clone(), s.stderr.clone());
    let from_monitor = async move {
        loop {
            let mut h = [0u8; frames::HEADER_LEN];
            if output.read_exact(&mut h).await.is_err() {
                return;
            }
            let Some((kind, len)) = frames::header(h) else { return };
            let mut payload = vec![0u8; len];
            if output.read_exact(&mut payload).await.is_err() {
                return;
            }
            let to = match kind {
                frames::STDOUT => &stdout,
                frames::STDERR => &stderr,
                _ => return,
            };
            if let Some(o) = to
                && !o.send(Bytes::from(payload)).await
            {
                return;
            }
        }
    };
    tokio::select! {
        () = from_monitor => {}
        () = session.wait_closed() => {
            to_monitor.abort();
            return;
        }
    }
    to_monitor.abort();
    end(&s, version, Outcome::Success, &session).await;
}

async fn recv_or_pending(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn abort_all(
    stdin: Option<tokio::task::JoinHandle<()>>,
    resize: Option<tokio::task::JoinHandle<()>>,
    outputs: Vec<tokio::task::JoinHandle<()>>,
) {
    stdin.into_iter().chain(resize).chain(outputs).for_each(|t| t.abort());
}

/// Client to process; the end of the client's stdin closes the process's.
async fn copy_in(mut rx: mpsc::Receiver<Bytes>, mut w: crate::container::ExecWriter) {
    while let Some(d) = rx.recv().await {
        if w.write_all(&d).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// Process to client, until the process closes its end or the client goes.
async fn copy_out(r: crate::container::ExecReader, o: Output) {
    // Pipes hand over at most a page or a few per read; a small buffer keeps idle sessions small.
    let mut r = tokio::io::BufReader::with_capacity(8 * 1024, r);
    loop {
        let chunk = match r.fill_buf().await {
            Ok([]) | Err(_) => return,
            Ok(c) => Bytes::copy_from_slice(c),
        };
        r.consume(chunk.len());
        if !o.send(chunk).await {
            return;
        }
    }
}

async fn resizes(mut rx: mpsc::Receiver<Bytes>, apply: impl Fn(u16, u16)) {
    let mut decoder = ResizeDecoder::default();
    while let Some(d) = rx.recv().await {
        for (w, h) in decoder.push(&d) {
            apply(w, h);
        }
    }
}

/// The resize stream: JSON objects `{"Width":w,"Height":h}` one after another, split
/// anywhere by the transport.
#[derive(Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

#[derive(Deserialize)]
struct Size {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// More than any honest resize message: a stream that never completes one is dropped.
const RESIZE_BUFFER: usize = 4096;

impl ResizeDecoder {
    pub fn push(&mut self, data: &[u8]) -> Vec<(u16, u16)> {
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Size>();
        let mut consumed = 0;
        loop {
            match it.next() {
                Some(Ok(s)) => {
                    consumed = it.byte_offset();
                    sizes.push((s.width, s.height));
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    // Not a size: skip what was sent so far.
                    consumed = self.buf.len();
                    break;
                }
                None => {
                    consumed = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..consumed);
        if self.buf.len() > RESIZE_BUFFER {
            self.buf.clear();
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_split_anywhere() {
        let mut d = ResizeDecoder::default();
        assert_eq!(d.push(br#"{"Width":80,"Hei"#), []);
        assert_eq!(d.push(br#"ght":24}{"Width":100,"Height":40}"#), [(80, 24), (100, 40)]);
        assert_eq!(d.push(b"garbage"), []);
        assert_eq!(d.push(br#"{"Width":1,"Height":2}"#), [(1, 2)]);
    }

    #[test]
    fn statuses_per_version() {
        assert_eq!(status(Version::V3, &Outcome::Success), None);
        let text = status(Version::V2, &Outcome::ExitCode { cmd: vec!["sh".into()], code: 42 }).unwrap();
        assert!(String::from_utf8_lossy(&text).contains("exit code 42"));
        let ok: serde_json::Value = serde_json::from_slice(&status(Version::V4, &Outcome::Success).unwrap()).unwrap();
        assert_eq!(ok["status"], "Success");
        let failed: serde_json::Value =
            serde_json::from_slice(&status(Version::V4, &Outcome::ExitCode { cmd: vec!["sh".into()], code: 42 }).unwrap()).unwrap();
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0], serde_json::json!({"reason": "ExitCode", "message": "42"}));
    }
}
