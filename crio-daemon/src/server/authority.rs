//! Accepting any HTTP/2 `:authority` on the CRI socket.
//!
//! Go gRPC clients of the kubelet 1.26 generation (crictl and critest among them), grpc-java
//! and grpc-python send the unix socket's *path* (or its percent-encoding) as `:authority`.
//! The HTTP/2 server under tonic rejects such a request as malformed and resets the stream
//! with PROTOCOL_ERROR, and has no option to relax that. On a unix socket the authority means
//! nothing, so this reader sits between the socket and the server: it follows the client's
//! frames and, in every request header block, replaces an authority the server would refuse
//! with `localhost`.
//!
//! Header blocks are HPACK-compressed against a table each side keeps, so a block cannot be
//! edited in place: the client's blocks are decoded with a decoder that tracks the client's
//! table and re-encoded with an encoder whose table the server's decoder tracks. All other
//! frames pass through untouched, payloads streamed as they arrive. A connection whose first
//! request already has an authority the server takes (tonic, newer Go clients) is passed on
//! as it is from there: a gRPC channel keeps one authority, and decoding every block costs
//! each RPC. Anything that is not HTTP/2 (the status API's HTTP/1.1) passes through as it
//! is. Bytes the decoder cannot make sense of are passed on unchanged and the connection
//! falls back to plain passing, so the server reports the client's error itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The HPACK table size both sides start with (SETTINGS_HEADER_TABLE_SIZE's default, which
/// the server does not change).
const TABLE_SIZE: usize = 4096;
/// The frame size every HTTP/2 peer must accept (SETTINGS_MAX_FRAME_SIZE's default).
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is not ours to buffer: the server refuses far smaller.
const MAX_BLOCK: usize = 1 << 20;
/// What a refused authority is replaced with.
const LOCALHOST: &[u8] = b"localhost";

enum Mode {
    /// Not yet known whether the client speaks HTTP/2.
    Sniffing,
    /// Following frames.
    Frames,
    /// HTTP/1.1, or a connection given up on: bytes pass as they are.
    Passing,
}

/// A header block being collected from HEADERS and CONTINUATION frames.
struct Block {
    stream_id: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
    /// The frames as they came, passed on unchanged if the block cannot be decoded.
    original: BytesMut,
}

/// A connection's read side with its request authorities made acceptable.
pub struct AcceptAnyAuthority<S> {
    inner: S,
    mode: Mode,
    /// Bytes read and not yet looked at.
    input: BytesMut,
    /// Bytes ready for the server.
    output: BytesMut,
    /// Payload bytes of a non-header frame still to pass through.
    passing: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    /// Whether a block went to the server re-encoded: from then on the server's table is our
    /// encoder's, and every block must be.
    rewritten: bool,
    eof: bool,
}

impl<S> AcceptAnyAuthority<S> {
    pub fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            inner,
            mode: Mode::Sniffing,
            input: BytesMut::new(),
            output: BytesMut::new(),
            passing: 0,
            block: None,
            decoder,
            encoder: loona_hpack::Encoder::new(),
            rewritten: false,
            eof: false,
        }
    }

    /// Moves what can be handled from `input` to `output`.
    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::Passing => {
                    let all = self.input.split();
                    self.output.unsplit(all);
                    return;
                }
                Mode::Sniffing => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::Passing;
                    } else if n == PREFACE.len() {
                        let preface = self.input.split_to(n);
                        self.output.unsplit(preface);
                        self.mode = Mode::Frames;
                    } else {
                        return;
                    }
                }
                Mode::Frames => {
                    if !self.next_frame() {
                        return;
                    }
                }
            }
        }
    }

    /// Handles one frame (or the part of a passing payload that has arrived). False when more
    /// input is needed.
    fn next_frame(&mut self) -> bool {
        if self.passing > 0 {
            let n = self.passing.min(self.input.len());
            if n == 0 {
                return false;
            }
            let part = self.input.split_to(n);
            self.output.unsplit(part);
            self.passing -= n;
            return true;
        }
        if self.input.len() < FRAME_HEADER_LEN {
            return false;
        }
        let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
        let (kind, flags) = (self.input[3], self.input[4]);
        let stream_id = u32::from_be_bytes([self.input[5], self.input[6], self.input[7], self.input[8]]) & 0x7fff_ffff;
        if kind != HEADERS && kind != CONTINUATION {
            if self.block.is_some() {
                // Only CONTINUATION may follow an unfinished block: the server will say so.
                self.give_up();
                return true;
            }
            let header = self.input.split_to(FRAME_HEADER_LEN);
            self.output.unsplit(header);
            self.passing = len;
            return true;
        }
        if len > MAX_BLOCK {
            self.give_up();
            return true;
        }
        if self.input.len() < FRAME_HEADER_LEN + len {
            return false;
        }
        let frame = self.input.split_to(FRAME_HEADER_LEN + len);
        if self.collect(kind, flags, stream_id, frame).is_none() {
            self.give_up();
        }
        true
    }

    /// Adds a HEADERS or CONTINUATION frame to the current block and emits the block when it
    /// ends. `None` when the frames are not a well-formed block.
    fn collect(&mut self, kind: u8, flags: u8, stream_id: u32, frame: BytesMut) -> Option<()> {
        let mut payload = &frame[FRAME_HEADER_LEN..];
        match (kind, &mut self.block) {
            (HEADERS, None) => {
                let pad = if flags & PADDED != 0 {
                    let p = *payload.first()? as usize;
                    payload = &payload[1..];
                    p
                } else {
                    0
                };
                let priority = if flags & PRIORITY != 0 {
                    let p: [u8; 5] = payload.get(..5)?.try_into().ok()?;
                    payload = &payload[5..];
                    Some(p)
                } else {
                    None
                };
                let fragment = payload.get(..payload.len().checked_sub(pad)?)?;
                self.block = Some(Block { stream_id, flags, priority, fragment: fragment.into(), original: BytesMut::new() });
            }
            (CONTINUATION, Some(b)) if b.stream_id == stream_id && b.fragment.len() + payload.len() <= MAX_BLOCK => {
                b.fragment.extend_from_slice(payload);
            }
            _ => return None,
        }
        let block = self.block.as_mut().expect("set above");
        block.original.extend_from_slice(&frame);
        if flags & END_HEADERS != 0 {
            let block = self.block.take().expect("set above");
            self.emit(block)?;
        }
        Some(())
    }

    /// Re-encodes a complete block, its authority fixed, as HEADERS and CONTINUATION frames.
    fn emit(&mut self, block: Block) -> Option<()> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if self.decoder.decode_with_cb(&block.fragment, |n, v| fields.push((n.into_owned(), v.into_owned()))).is_err() {
            // The server decodes the same bytes and reports the compression error itself.
            self.output.unsplit(block.original);
            self.mode = Mode::Passing;
            return Some(());
        }
        let mut replaced = false;
        for (name, value) in &mut fields {
            if name == b":authority" && !acceptable(value) {
                tracing::trace!(authority = %String::from_utf8_lossy(value), "request authority replaced with localhost");
                *value = LOCALHOST.to_vec();
                replaced = true;
            }
        }
        if !replaced && !self.rewritten {
            // The server's table is still the client's: the block goes as it came, and once a
            // request's authority was fine, so is the connection.
            self.output.unsplit(block.original);
            if fields.iter().any(|(n, _)| n == b":authority") {
                self.mode = Mode::Passing;
            }
            return Some(());
        }
        self.rewritten = true;
        let encoded = self.encoder.encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut first = Vec::with_capacity(5 + encoded.len().min(MAX_FRAME));
        if let Some(p) = block.priority {
            first.extend_from_slice(&p);
        }
        let room = MAX_FRAME - first.len();
        let (head, mut rest) = encoded.split_at(encoded.len().min(room));
        first.extend_from_slice(head);
        let last = rest.is_empty();
        let flags = (block.flags & (END_STREAM | PRIORITY)) | if last { END_HEADERS } else { 0 };
        self.put_frame(HEADERS, flags, block.stream_id, &first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = tail;
            self.put_frame(CONTINUATION, if rest.is_empty() { END_HEADERS } else { 0 }, block.stream_id, chunk);
        }
        Some(())
    }

    fn put_frame(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        self.output.put_slice(&len.to_be_bytes()[1..]);
        self.output.put_u8(kind);
        self.output.put_u8(flags);
        self.output.put_u32(stream_id);
        self.output.put_slice(payload);
    }

    /// Passes everything on unchanged from here: what is held, what is left, what comes.
    fn give_up(&mut self) {
        if let Some(b) = self.block.take() {
            self.output.unsplit(b.original);
        }
        self.mode = Mode::Passing;
    }
}

/// Whether the server takes `value` as an authority as it is.
fn acceptable(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

impl<S: AsyncRead + Unpin> AsyncRead for AcceptAnyAuthority<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // A truncated frame or block at the end goes to the server as it came.
                this.give_up();
                this.process();
                if this.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.input.reserve(16 * 1024);
            if ready!(tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.input))? == 0 {
                this.eof = true;
            } else {
                this.process();
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AcceptAnyAuthority<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Frames a header block as one HEADERS frame.
    fn headers_frame(stream_id: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        let mut f = (block.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([HEADERS, flags | END_HEADERS]);
        f.extend(stream_id.to_be_bytes());
        f.extend(block);
        f
    }

    fn request(authority: &[u8]) -> Vec<(&'static [u8], Vec<u8>)> {
        vec![
            (b":method", b"POST".to_vec()),
            (b":scheme", b"http".to_vec()),
            (b":path", b"/runtime.v1.RuntimeService/Version".to_vec()),
            (b":authority", authority.to_vec()),
            (b"content-type", b"application/grpc".to_vec()),
            (b"te", b"trailers".to_vec()),
        ]
    }

    /// Runs `input` through the reader in chunks of `chunk` bytes and returns what it passes on.
    async fn through(input: Vec<u8>, chunk: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            for part in input.chunks(chunk) {
                tokio::io::AsyncWriteExt::write_all(&mut client, part).await.unwrap();
            }
        });
        let mut out = Vec::new();
        let mut reader = AcceptAnyAuthority::new(server);
        let reading = reader.read_to_end(&mut out);
        let (read, written) = tokio::join!(reading, writer);
        read.unwrap();
        written.unwrap();
        out
    }

    /// Splits passed-on bytes after the preface into (type, flags, stream, payload) frames.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert!(bytes.starts_with(PREFACE), "the preface passes first");
        bytes = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            let id = u32::from_be_bytes(bytes[5..9].try_into().unwrap());
            out.push((bytes[3], bytes[4], id, bytes[9..9 + len].to_vec()));
            bytes = &bytes[9 + len..];
        }
        out
    }

    /// What the server's decoder makes of the passed-on HEADERS frames, in order.
    fn decoded(frames: &[(u8, u8, u32, Vec<u8>)]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut server = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut block = Vec::new();
        for (kind, flags, _, payload) in frames {
            if *kind == HEADERS || *kind == CONTINUATION {
                let skip = if *kind == HEADERS && flags & PRIORITY != 0 { 5 } else { 0 };
                block.extend_from_slice(&payload[skip..]);
                if flags & END_HEADERS != 0 {
                    blocks.push(server.decode(&block).expect("the server decodes what we pass on"));
                    block.clear();
                }
            }
        }
        blocks
    }

    fn authority_of(block: &[(Vec<u8>, Vec<u8>)]) -> String {
        let (_, v) = block.iter().find(|(n, _)| n == b":authority").expect("an authority");
        String::from_utf8(v.clone()).unwrap()
    }

    #[tokio::test]
    async fn a_path_authority_becomes_localhost_and_a_valid_one_stays() {
        let mut client = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        // A SETTINGS frame passes untouched.
        input.extend([0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 0x3, 0, 0, 0, 100]);
        let mut stream = 1;
        let sent: [&[u8]; 5] = [b"/run/crio-ci/crio.sock", b"%2Frun%2Fcrio.sock", b"", b"node.example:10250", b"/run/crio-ci/crio.sock"];
        for authority in sent {
            let fields = request(authority);
            let block = client.encode(fields.iter().map(|(n, v)| (*n, v.as_slice())));
            input.extend(headers_frame(stream, 0, &block));
            stream += 2;
        }
        for chunk in [1, 7, 4096] {
            let out = frames(&through(input.clone(), chunk).await);
            assert_eq!(out[0], (0x4, 0, 0, vec![0, 0x3, 0, 0, 0, 100]), "SETTINGS unchanged (chunk {chunk})");
            let blocks = decoded(&out);
            let authorities: Vec<String> = blocks.iter().map(|b| authority_of(b)).collect();
            assert_eq!(authorities, ["localhost", "localhost", "localhost", "node.example:10250", "localhost"]);
            // Everything else arrives as the client sent it, in order, over a shared table.
            for (block, authority) in blocks.iter().zip(&authorities) {
                let expected = request(authority.as_bytes());
                let got: Vec<(&[u8], &[u8])> = block.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect();
                let want: Vec<(&[u8], &[u8])> = expected.iter().map(|(n, v)| (*n, v.as_slice())).collect();
                assert_eq!(got, want);
            }
        }
    }

    #[tokio::test]
    async fn a_connection_whose_first_authority_is_fine_passes_as_it_came() {
        let mut client = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        for (stream, authority) in [(1u32, &b"localhost"[..]), (3, b"/run/later/path.sock")] {
            let fields = request(authority);
            input.extend(headers_frame(stream, 0, &client.encode(fields.iter().map(|(n, v)| (*n, v.as_slice())))));
        }
        for chunk in [1, 4096] {
            assert_eq!(through(input.clone(), chunk).await, input, "byte for byte (chunk {chunk})");
        }
    }

    #[tokio::test]
    async fn a_block_split_over_continuations_with_padding_and_priority_is_rebuilt() {
        let mut client = loona_hpack::Encoder::new();
        let mut fields = request(b"/a/very/long/socket/path.sock");
        let big = vec![b'x'; 40_000];
        fields.push((b"x-big", big.clone()));
        let block = client.encode(fields.iter().map(|(n, v)| (*n, v.as_slice())));
        let mut input = PREFACE.to_vec();
        // HEADERS with padding, priority and END_STREAM, then two CONTINUATIONs.
        let (first, rest) = block.split_at(100);
        let mut payload = vec![3u8];
        payload.extend([0, 0, 0, 0, 16]);
        payload.extend(first);
        payload.extend([0, 0, 0]);
        input.extend((payload.len() as u32).to_be_bytes()[1..].iter());
        input.extend([HEADERS, PADDED | PRIORITY | END_STREAM]);
        input.extend(3u32.to_be_bytes());
        input.extend(&payload);
        let (second, third) = rest.split_at(rest.len() / 2);
        for (part, flags) in [(second, 0), (third, END_HEADERS)] {
            input.extend((part.len() as u32).to_be_bytes()[1..].iter());
            input.extend([CONTINUATION, flags]);
            input.extend(3u32.to_be_bytes());
            input.extend(part);
        }
        // A DATA frame after it passes as it is.
        input.extend([0, 0, 2, 0, 1, 0, 0, 0, 3, b'h', b'i']);
        let out = frames(&through(input, 1000).await);
        let (kind, flags, id, payload) = &out[0];
        assert_eq!((*kind, *id), (HEADERS, 3));
        assert_eq!(flags & (END_STREAM | PRIORITY | PADDED), END_STREAM | PRIORITY, "padding dropped, the rest kept");
        assert_eq!(&payload[..5], &[0, 0, 0, 0, 16], "the priority fields are kept");
        assert!(out.iter().all(|(_, _, _, p)| p.len() <= MAX_FRAME));
        let blocks = decoded(&out);
        assert_eq!(authority_of(&blocks[0]), "localhost");
        assert!(blocks[0].iter().any(|(n, v)| n == b"x-big" && *v == big));
        assert_eq!(out.last().unwrap(), &(0x0, 1, 3, b"hi".to_vec()));
    }

    #[tokio::test]
    async fn http1_passes_unchanged() {
        let input = b"GET /info HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
        assert_eq!(through(input.clone(), 3).await, input);
    }

    #[tokio::test]
    async fn an_undecodable_block_passes_unchanged_for_the_server_to_refuse() {
        let mut input = PREFACE.to_vec();
        // Index 127 is in neither table.
        let bad = headers_frame(1, 0, &[0xff, 0x40]);
        input.extend(&bad);
        let out = through(input.clone(), 5).await;
        assert_eq!(out, input);
    }

    #[tokio::test]
    async fn a_truncated_frame_at_the_end_is_passed_on() {
        let mut input = PREFACE.to_vec();
        input.extend([0, 0, 50, HEADERS, END_HEADERS, 0, 0, 0, 1, 0x82]);
        assert_eq!(through(input.clone(), 4).await, input);
    }
}
