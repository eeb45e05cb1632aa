//! A small SPDY/3.1 client for tests that open sessions by the thousand (crictl covers the
//! protocol as the kubelet speaks it; this drives volume and abandonment). It uses the
//! daemon's own frame and header codec.

use bytes::{Bytes, BytesMut};
use crio::streaming::spdy::frame::{self, Frame};
use crio::streaming::spdy::headers::{Deflater, Inflater};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Client {
    pub conn: TcpStream,
    deflate: Deflater,
    inflate: Inflater,
    buf: BytesMut,
    next_id: u32,
}

/// Upgrades `url` (an absolute http URL from Exec/Attach/PortForward) offering `protocols`;
/// the status line and the negotiated protocol, and the client if it switched.
pub async fn connect(url: &str, protocols: &[&str]) -> (String, Option<String>, Option<Client>) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut conn = TcpStream::connect(host).await.expect("connecting to the streaming server");
    let mut req = format!("POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n");
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if conn.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head.lines().next().unwrap_or("").to_string();
    let chosen = head.lines().find_map(|l| {
        l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("x-stream-protocol-version")).map(|(_, v)| v.trim().to_string())
    });
    if !status.contains(" 101 ") {
        return (status, chosen, None);
    }
    let client = Client { conn, deflate: Deflater::default(), inflate: Inflater::new(1 << 16), buf: BytesMut::new(), next_id: 1 };
    (status, chosen, Some(client))
}

impl Client {
    /// Opens a stream with these headers; its id.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let block = Bytes::from(self.deflate.block(headers));
        self.write(Frame::SynStream { stream: id, associated: 0, priority: 0, fin: false, unidirectional: false, block }).await;
        id
    }

    pub async fn send(&mut self, stream: u32, data: &[u8], fin: bool) {
        self.write(Frame::Data { stream, fin, data: Bytes::copy_from_slice(data) }).await;
    }

    pub async fn write(&mut self, f: Frame) {
        let mut out = BytesMut::new();
        frame::encode(&f, &mut out);
        self.conn.write_all(&out).await.expect("writing a frame");
    }

    /// The next frame; `None` when the server closed the connection.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = frame::decode(&mut self.buf, 1 << 24).expect("the server sends valid frames") {
                if let Frame::SynReply { block, .. } | Frame::Headers { block, .. } = &f {
                    self.inflate.block(block).expect("the server's header blocks inflate");
                }
                return Some(f);
            }
            if self.conn.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    /// Everything until the server closes: data per stream, in order.
    pub async fn collect(&mut self) -> std::collections::HashMap<u32, Vec<u8>> {
        let mut data: std::collections::HashMap<u32, Vec<u8>> = std::collections::HashMap::new();
        while let Some(f) = self.next().await {
            if let Frame::Data { stream, data: d, .. } = f {
                data.entry(stream).or_default().extend_from_slice(&d);
            }
        }
        data
    }
}
