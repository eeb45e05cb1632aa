//! What exec, attach and port-forward see of a session, whichever protocol carries it: outputs
//! they write to (a SPDY stream or a WebSocket channel) and the session's end.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

/// What the protocol's writer sends.
#[derive(Debug)]
pub enum Out {
    Data {
        stream: u32,
        data: Bytes,
    },
    /// This side of the stream is done.
    Fin {
        stream: u32,
    },
    /// The stream is abandoned.
    Reset {
        stream: u32,
    },
    /// The session is done: say so to the client, then close.
    GoAway {
        protocol_error: bool,
    },
}

/// Writes to one stream or channel. Writes wait while the writer's queue is full (the
/// client's pace); they fail once the session is gone.
#[derive(Clone, Debug)]
pub struct Output {
    stream: u32,
    tx: mpsc::Sender<Out>,
}

impl Output {
    pub fn new(stream: u32, tx: mpsc::Sender<Out>) -> Self {
        Self { stream, tx }
    }

    pub async fn send(&self, data: Bytes) -> bool {
        data.is_empty() || self.tx.send(Out::Data { stream: self.stream, data }).await.is_ok()
    }

    pub async fn close(&self) {
        let _ = self.tx.send(Out::Fin { stream: self.stream }).await;
    }

    pub async fn reset(&self) {
        let _ = self.tx.send(Out::Reset { stream: self.stream }).await;
    }
}

/// The session's life: `ending` once we said goodbye, `closed` once the connection is gone.
#[derive(Clone, Debug)]
pub struct Session {
    out: mpsc::Sender<Out>,
    ending: Arc<watch::Sender<bool>>,
    closed: Arc<watch::Sender<bool>>,
    sealed: Arc<watch::Sender<bool>>,
}

impl Session {
    pub fn new(out: mpsc::Sender<Out>) -> Self {
        let flag = || Arc::new(watch::channel(false).0);
        Self { out, ending: flag(), closed: flag(), sealed: flag() }
    }

    /// Every stream the session will have is open: the reader may drop what it keeps for
    /// new ones (SPDY's header decompressor, ~40 KiB); a stream opened later ends the session.
    pub fn seal(&self) {
        self.sealed.send_replace(true);
    }

    pub fn sealed(&self) -> watch::Receiver<bool> {
        self.sealed.subscribe()
    }

    pub fn ending(&self) -> watch::Receiver<bool> {
        self.ending.subscribe()
    }

    pub fn end(&self) {
        self.ending.send_replace(true);
    }

    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once the connection is gone.
    pub async fn wait_closed(&self) {
        let mut c = self.closed();
        let _ = c.wait_for(|closed| *closed).await;
    }

    /// Ends the session in order: everything queued is written, then goodbye, then close.
    pub async fn finish(&self) {
        if self.out.send(Out::GoAway { protocol_error: false }).await.is_err() {
            self.close();
        }
        self.wait_closed().await;
    }
}
