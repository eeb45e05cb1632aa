//! SPDY/3.1, the transport the kubelet (through Kubernetes 1.36) and crictl use for exec,
//! attach and port-forward: the frame codec (`frame`), header blocks (`headers`), a server
//! session (`session`), and here the two ways its streams are put together: one set of typed
//! streams per exec/attach session, and data+error pairs per forwarded connection.

pub mod dictionary;
pub mod frame;
pub mod headers;
pub mod session;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use super::remotecommand::{self, Streams, Version};
use super::tokens::Pending;
use crate::container::Wants;
use crate::services::Services;
use session::IncomingStream;

/// How long a client may take to open the streams of a session or of a port pair.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves an exec or attach session on an upgraded connection.
pub async fn remotecommand<IO>(io: IO, services: Services, pending: Pending, version: Version, idle: Duration)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let Some(wants) = remotecommand::wants(&pending) else { return };
    let (mut incoming, session) = session::start(io, idle);
    let mut got = Collected::default();
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while !got.complete(wants, version) {
        tokio::select! {
            s = incoming.recv() => match s {
                Some(s) => got.add(s).await,
                None => return,
            },
            () = &mut deadline => {
                tracing::debug!("streaming session: the client did not open its streams in time");
                return session.finish().await;
            }
        }
    }
    // Streams opened past the expected set end the session (see `Session::seal`).
    session.seal();
    tokio::spawn(async move { while incoming.recv().await.is_some() {} });
    let streams =
        Streams { error: got.error.expect("complete"), stdin: got.stdin, stdout: got.stdout, stderr: got.stderr, resize: got.resize };
    remotecommand::run(&services, pending, wants, streams, version, session).await;
}

#[derive(Default)]
struct Collected {
    error: Option<super::channel::Output>,
    stdin: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
    stdout: Option<super::channel::Output>,
    stderr: Option<super::channel::Output>,
    resize: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
}

impl Collected {
    async fn add(&mut self, s: IncomingStream) {
        match s.headers.get("streamtype") {
            Some("error") if self.error.is_none() => self.error = Some(s.output),
            Some("stdin") if self.stdin.is_none() => self.stdin = Some(s.data),
            Some("stdout") if self.stdout.is_none() => self.stdout = Some(s.output),
            Some("stderr") if self.stderr.is_none() => self.stderr = Some(s.output),
            Some("resize") if self.resize.is_none() => self.resize = Some(s.data),
            other => {
                tracing::debug!(stream_type = ?other, "streaming session: unexpected stream refused");
                s.output.reset().await;
            }
        }
    }

    fn complete(&self, w: Wants, v: Version) -> bool {
        self.error.is_some()
            && (!w.stdin || self.stdin.is_some())
            && (!w.stdout || self.stdout.is_some())
            && (!w.stderr || self.stderr.is_some())
            && (!(w.tty && v.has_resize()) || self.resize.is_some())
    }
}

/// One forwarded connection's streams, as they arrive.
struct Pair {
    port: u16,
    data: Option<IncomingStream>,
    error: Option<IncomingStream>,
    opened: Instant,
}

/// Serves a port-forward session: any number of connections, each a data and an error
/// stream with the same `requestID`.
pub async fn portforward<IO>(io: IO, services: Services, pod_id: String, idle: Duration)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut incoming, session) = session::start(io, idle);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        let s = tokio::select! {
            s = incoming.recv() => match s {
                Some(s) => s,
                None => break,
            },
            _ = sweep.tick() => {
                // Pairs whose second stream never came are given up.
                let now = Instant::now();
                let stale: Vec<String> = pairs.iter().filter(|(_, p)| now - p.opened > STREAM_CREATION_TIMEOUT).map(|(k, _)| k.clone()).collect();
                for k in stale {
                    let p = pairs.remove(&k).expect("listed");
                    for s in [p.data, p.error].into_iter().flatten() {
                        s.output.reset().await;
                    }
                }
                continue;
            }
        };
        let port = s.headers.get("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
        let kind = s.headers.get("streamtype").map(str::to_string);
        let (Some(port), Some(kind @ ("data" | "error"))) = (port, kind.as_deref()) else {
            tracing::debug!(port = ?s.headers.get("port"), stream_type = ?kind, "port forward: stream refused");
            if let Some("error") = kind.as_deref() {
                let why = format!("invalid port {:?}: must be within 1..65535", s.headers.get("port").unwrap_or(""));
                s.output.send(bytes::Bytes::from(why)).await;
                s.output.close().await;
            } else {
                s.output.reset().await;
            }
            continue;
        };
        // Clients before Kubernetes 1.6 sent no request id: the pair is told by stream ids.
        let id = match s.headers.get("requestid") {
            Some(id) => id.to_string(),
            None if kind == "error" => s.id.to_string(),
            None => s.id.saturating_sub(2).to_string(),
        };
        let pair = pairs.entry(id.clone()).or_insert_with(|| Pair { port, data: None, error: None, opened: Instant::now() });
        let slot = if kind == "data" { &mut pair.data } else { &mut pair.error };
        if slot.is_some() || pair.port != port {
            s.output.reset().await;
            continue;
        }
        *slot = Some(s);
        if pair.data.is_some() && pair.error.is_some() {
            let p = pairs.remove(&id).expect("present");
            let (data, error) = (p.data.expect("present"), p.error.expect("present"));
            let (services, pod_id, session) = (services.clone(), pod_id.clone(), session.clone());
            tokio::spawn(async move {
                super::portforward::forward(&services, &pod_id, p.port, data.data, data.output, Some(error.output), &session).await;
            });
        }
    }
    session.close();
}
