//! One SPDY/3.1 session, server side, over an upgraded connection: a reader task that decodes
//! frames, answers each SYN_STREAM with a SYN_REPLY and hands the stream to the handler, and a
//! writer task that owns the socket's write half and the header compressor. The client opens
//! every stream (the kubelet's protocols never have the server open one).
//!
//! Bounds: frames and header blocks are capped, so are the streams open at once; a stream's
//! incoming data waits in a small queue (a handler that does not read holds the session up, as
//! the kubelet's own server does); a write that stalls past the idle timeout ends the session.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::frame::{self, Frame};
use super::headers::{Deflater, Headers, Inflater};
use crate::streaming::channel::{Out, Output, Session};

/// Largest frame accepted (the Go client writes data in 32 KiB pieces).
const MAX_FRAME: usize = 1 << 20;
/// Largest inflated header block accepted.
const MAX_HEADERS: usize = 64 * 1024;
/// Streams a client may hold open at once.
const MAX_STREAMS: usize = 1024;
/// Data frames we send are cut to this size.
const DATA_CHUNK: usize = 32 * 1024;
/// What a session's reader holds while idle.
const READ_BUFFER: usize = 2048;
/// After GOAWAY, how long the client may take to close its end before we do.
const LINGER: Duration = Duration::from_secs(2);

/// A stream the client opened.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    /// Its data; `None` once the client finished (FIN) or reset it.
    pub data: mpsc::Receiver<Bytes>,
    pub output: Output,
}

enum Control {
    Reply { stream: u32 },
    Ping { id: u32 },
    Reset { stream: u32, status: u32 },
}

/// Starts the session's tasks; new streams arrive on the receiver.
pub fn start<IO>(io: IO, idle: Duration) -> (mpsc::Receiver<IncomingStream>, Session)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel::<Out>(64);
    let (ctl_tx, ctl_rx) = mpsc::channel::<Control>(64);
    let (streams_tx, streams_rx) = mpsc::channel(16);
    let session = Session::new(out_tx.clone());
    let activity = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let reader = Reader {
        inflater: Some(Inflater::new(MAX_HEADERS)),
        streams: HashMap::new(),
        new_streams: streams_tx,
        control: ctl_tx,
        out: out_tx,
        session: session.clone(),
        last_good: 0,
    };
    tokio::spawn(reader.run(read, idle, activity.clone(), epoch));
    tokio::spawn(write_loop(write, out_rx, ctl_rx, session.clone(), idle, activity, epoch));
    (streams_rx, session)
}

struct Reader {
    /// `None` once the session is sealed.
    inflater: Option<Inflater>,
    streams: HashMap<u32, mpsc::Sender<Bytes>>,
    new_streams: mpsc::Sender<IncomingStream>,
    control: mpsc::Sender<Control>,
    out: mpsc::Sender<Out>,
    session: Session,
    last_good: u32,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, mut read: R, idle: Duration, activity: Arc<AtomicU64>, epoch: Instant) {
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        let mut ending = self.session.ending();
        let mut sealed = self.session.sealed();
        let mut linger: Option<Instant> = None;
        loop {
            loop {
                match frame::decode(&mut buf, MAX_FRAME) {
                    Ok(Some(f)) => {
                        if !self.handle(f).await {
                            self.session.close();
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "SPDY session ends on a bad frame");
                        let _ = self.out.send(Out::GoAway { protocol_error: true }).await;
                        self.session.close();
                        return;
                    }
                }
            }
            // Small while idle (most sessions are), grown while data flows.
            if buf.is_empty() && buf.capacity() > 4 * READ_BUFFER {
                buf = BytesMut::with_capacity(READ_BUFFER);
            } else if buf.capacity() - buf.len() < READ_BUFFER / 2 {
                buf.reserve(4 * READ_BUFFER);
            }
            let wait = match linger {
                Some(until) => until.saturating_duration_since(Instant::now()),
                None => idle,
            };
            let read_more = tokio::select! {
                r = tokio::time::timeout(wait, read.read_buf(&mut buf)) => r,
                _ = ending.changed(), if linger.is_none() => {
                    linger = Some(Instant::now() + LINGER);
                    continue;
                }
                _ = sealed.changed(), if self.inflater.is_some() => {
                    self.inflater = None;
                    continue;
                }
            };
            match read_more {
                Ok(Ok(n)) if n > 0 => activity.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed),
                Ok(_) => break,
                Err(_) if linger.is_some() => break,
                Err(_) => {
                    let quiet = epoch.elapsed().as_millis() as u64 - activity.load(Ordering::Relaxed);
                    if quiet >= idle.as_millis() as u64 {
                        tracing::debug!(idle = ?idle, "SPDY session idle: closed");
                        break;
                    }
                }
            }
        }
        self.session.close();
    }

    /// Acts on one frame; false ends the session.
    async fn handle(&mut self, f: Frame) -> bool {
        match f {
            Frame::SynStream { stream, fin, block, .. } => {
                let Some(inflater) = self.inflater.as_mut() else {
                    tracing::debug!(stream, "SPDY session ends: a stream opened after the session's set was complete");
                    let _ = self.out.send(Out::GoAway { protocol_error: true }).await;
                    return false;
                };
                let headers = match inflater.block(&block) {
                    Ok(h) => h,
                    Err(e) => {
                        // The compression context is shared by the session: it cannot go on.
                        tracing::debug!(stream, error = %e, "SPDY session ends on a bad header block");
                        let _ = self.out.send(Out::GoAway { protocol_error: true }).await;
                        return false;
                    }
                };
                if stream == 0 || stream % 2 == 0 || stream <= self.last_good || self.streams.len() >= MAX_STREAMS {
                    return self.control.send(Control::Reset { stream, status: frame::RST_REFUSED_STREAM }).await.is_ok();
                }
                self.last_good = stream;
                let (tx, rx) = mpsc::channel(8);
                if !fin {
                    self.streams.insert(stream, tx);
                }
                if self.control.send(Control::Reply { stream }).await.is_err() {
                    return false;
                }
                let output = Output::new(stream, self.out.clone());
                self.new_streams.send(IncomingStream { id: stream, headers, data: rx, output }).await.is_ok()
            }
            Frame::Data { stream, fin, data } => {
                if let Some(tx) = self.streams.get(&stream)
                    && !data.is_empty()
                    && tx.send(data).await.is_err()
                {
                    // The handler is done with it; what else arrives is dropped.
                    self.streams.remove(&stream);
                }
                if fin {
                    self.streams.remove(&stream);
                }
                true
            }
            Frame::Headers { block, .. } => self.inflater.as_mut().is_some_and(|i| i.block(&block).is_ok()),
            Frame::RstStream { stream, .. } => {
                self.streams.remove(&stream);
                true
            }
            Frame::Ping { id } => self.control.send(Control::Ping { id }).await.is_ok(),
            Frame::GoAway { .. } => false,
            Frame::SynReply { .. } | Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => true,
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut out: mpsc::Receiver<Out>,
    mut control: mpsc::Receiver<Control>,
    session: Session,
    stall: Duration,
    activity: Arc<AtomicU64>,
    epoch: Instant,
) {
    let mut deflater = Deflater::default();
    let mut closed = session.closed();
    let mut buf = BytesMut::new();
    let mut last_good = 0;
    loop {
        let mut done = false;
        tokio::select! {
            biased;
            _ = closed.changed() => break,
            Some(c) = control.recv() => match c {
                Control::Reply { stream } => {
                    last_good = stream;
                    let block = Bytes::from(deflater.block(&[]));
                    frame::encode(&Frame::SynReply { stream, fin: false, block }, &mut buf);
                }
                Control::Ping { id } => frame::encode(&Frame::Ping { id }, &mut buf),
                Control::Reset { stream, status } => frame::encode(&Frame::RstStream { stream, status }, &mut buf),
            },
            o = out.recv() => match o {
                Some(Out::Data { stream, mut data }) => {
                    while !data.is_empty() {
                        let piece = data.split_to(data.len().min(DATA_CHUNK));
                        frame::encode(&Frame::Data { stream, fin: false, data: piece }, &mut buf);
                    }
                }
                Some(Out::Fin { stream }) => frame::encode(&Frame::Data { stream, fin: true, data: Bytes::new() }, &mut buf),
                Some(Out::Reset { stream }) => frame::encode(&Frame::RstStream { stream, status: frame::RST_CANCEL }, &mut buf),
                Some(Out::GoAway { protocol_error }) => {
                    let status = if protocol_error { frame::GOAWAY_PROTOCOL_ERROR } else { frame::GOAWAY_OK };
                    frame::encode(&Frame::GoAway { last_good, status }, &mut buf);
                    done = true;
                }
                None => done = true,
            },
        }
        if !buf.is_empty() {
            match tokio::time::timeout(stall, write.write_all(&buf)).await {
                Ok(Ok(())) => activity.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed),
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::debug!(stall = ?stall, "SPDY peer stopped reading: session reset");
                    break;
                }
            }
            buf.clear();
            // An idle session keeps no output-sized buffer.
            if buf.capacity() > 8 * 1024 {
                buf = BytesMut::new();
            }
        }
        if done {
            session.end();
            let _ = tokio::time::timeout(LINGER, write.shutdown()).await;
            // The reader lingers for the client's close, then closes the session.
            let _ = closed.changed().await;
            return;
        }
    }
    session.close();
}

#[cfg(test)]
mod tests {
    use super::super::headers::Deflater;
    use super::*;

    async fn client_frame(c: &mut (impl AsyncRead + Unpin), buf: &mut BytesMut) -> Frame {
        loop {
            if let Some(f) = frame::decode(buf, MAX_FRAME).unwrap() {
                return f;
            }
            assert!(c.read_buf(buf).await.unwrap() > 0, "session closed early");
        }
    }

    #[tokio::test]
    async fn streams_are_replied_to_and_data_flows_both_ways() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let (mut streams, session) = start(server, Duration::from_secs(30));
        let mut deflate = Deflater::default();
        let mut out = BytesMut::new();
        let block = Bytes::from(deflate.block(&[("streamtype", "stdin")]));
        frame::encode(&Frame::SynStream { stream: 1, associated: 0, priority: 0, fin: false, unidirectional: false, block }, &mut out);
        frame::encode(&Frame::Data { stream: 1, fin: true, data: Bytes::from_static(b"hi") }, &mut out);
        frame::encode(&Frame::Ping { id: 1 }, &mut out);
        client.write_all(&out).await.unwrap();

        let mut s = streams.recv().await.expect("a stream");
        assert_eq!((s.id, s.headers.get("streamtype")), (1, Some("stdin")));
        assert_eq!(s.data.recv().await.as_deref(), Some(&b"hi"[..]));
        assert_eq!(s.data.recv().await, None, "FIN ends its data");
        assert!(s.output.send(Bytes::from_static(b"back")).await);
        s.output.close().await;
        session.finish().await;

        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        loop {
            let f = client_frame(&mut client, &mut buf).await;
            let last = matches!(f, Frame::GoAway { .. });
            frames.push(f);
            if last {
                break;
            }
        }
        let Frame::SynReply { stream: 1, block, .. } = &frames[0] else { panic!("no reply first: {frames:?}") };
        Inflater::new(MAX_HEADERS).block(block).expect("our reply's headers inflate");
        assert!(frames.contains(&Frame::Ping { id: 1 }), "the ping is echoed: {frames:?}");
        let data: Vec<&Frame> = frames.iter().filter(|f| matches!(f, Frame::Data { .. })).collect();
        assert_eq!(
            data,
            [
                &Frame::Data { stream: 1, fin: false, data: Bytes::from_static(b"back") },
                &Frame::Data { stream: 1, fin: true, data: Bytes::new() }
            ]
        );
        assert!(matches!(frames.last(), Some(Frame::GoAway { last_good: 1, status: 0 })));
    }

    #[tokio::test]
    async fn a_bad_frame_ends_only_its_session() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let (mut streams, session) = start(server, Duration::from_secs(30));
        client.write_all(&[0x80, 0x02, 0, 1, 0, 0, 0, 0]).await.unwrap();
        assert!(streams.recv().await.is_none());
        let mut closed = session.closed();
        let _ = closed.wait_for(|c| *c).await;
        let mut buf = BytesMut::new();
        assert!(matches!(client_frame(&mut client, &mut buf).await, Frame::GoAway { status: 1, .. }));
    }
}
