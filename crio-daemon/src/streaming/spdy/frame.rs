//! SPDY/3.1 frames as bytes on the wire (SPDY Protocol Draft 3.1, section 2.2): a pure codec,
//! no I/O, so it can be tested and fuzzed alone. Header blocks stay compressed here (see
//! `headers`); flow control frames are decoded but the kubelet's client (spdystream) never
//! honours windows, so the session does not either.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// Every frame starts with 8 bytes: control bit, version/stream, type, flags, 24-bit length.
pub const HEADER_LEN: usize = 8;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes this server sends.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;
/// GOAWAY status codes.
pub const GOAWAY_OK: u32 = 0;
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        block: Bytes,
    },
    SynReply {
        stream: u32,
        fin: bool,
        block: Bytes,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    /// (flags, id, value) per entry.
    Settings {
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        block: Bytes,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    /// A control frame type this version does not define: the spec says ignore it.
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("control frame of SPDY version {0}; only 3 is spoken")]
    Version(u16),
    #[error("{kind} frame of {len} bytes is malformed")]
    Malformed { kind: &'static str, len: usize },
}

/// Takes one whole frame off the front of `buf`; `None` until all its bytes are there. A frame
/// longer than `max` is refused before any of it is buffered.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let flags = buf[4];
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let mut body = buf.split_to(len).freeze();
    if first & 0x8000_0000 == 0 {
        return Ok(Some(Frame::Data { stream: first & 0x7fff_ffff, fin: flags & FLAG_FIN != 0, data: body }));
    }
    let version = ((first >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = (first & 0xffff) as u16;
    let malformed = |kind| FrameError::Malformed { kind, len };
    let fin = flags & FLAG_FIN != 0;
    let frame = match kind {
        SYN_STREAM => {
            if len < 10 {
                return Err(malformed("SYN_STREAM"));
            }
            let stream = body.get_u32() & 0x7fff_ffff;
            let associated = body.get_u32() & 0x7fff_ffff;
            let priority = body.get_u8() >> 5;
            body.advance(1);
            Frame::SynStream { stream, associated, priority, fin, unidirectional: flags & FLAG_UNIDIRECTIONAL != 0, block: body }
        }
        SYN_REPLY | HEADERS => {
            if len < 4 {
                return Err(malformed(if kind == SYN_REPLY { "SYN_REPLY" } else { "HEADERS" }));
            }
            let stream = body.get_u32() & 0x7fff_ffff;
            if kind == SYN_REPLY { Frame::SynReply { stream, fin, block: body } } else { Frame::Headers { stream, fin, block: body } }
        }
        RST_STREAM => {
            if len != 8 {
                return Err(malformed("RST_STREAM"));
            }
            Frame::RstStream { stream: body.get_u32() & 0x7fff_ffff, status: body.get_u32() }
        }
        SETTINGS => {
            if len < 4 {
                return Err(malformed("SETTINGS"));
            }
            let count = body.get_u32() as usize;
            if body.remaining() != count.saturating_mul(8) {
                return Err(malformed("SETTINGS"));
            }
            let entries = (0..count)
                .map(|_| {
                    let word = body.get_u32();
                    ((word >> 24) as u8, word & 0x00ff_ffff, body.get_u32())
                })
                .collect();
            Frame::Settings { entries }
        }
        PING => {
            if len != 4 {
                return Err(malformed("PING"));
            }
            Frame::Ping { id: body.get_u32() }
        }
        GOAWAY => {
            // SPDY/3 added the status; tolerate the 4-byte form of older peers.
            if len != 8 && len != 4 {
                return Err(malformed("GOAWAY"));
            }
            let last_good = body.get_u32() & 0x7fff_ffff;
            Frame::GoAway { last_good, status: if body.remaining() == 4 { body.get_u32() } else { GOAWAY_OK } }
        }
        WINDOW_UPDATE => {
            if len != 8 {
                return Err(malformed("WINDOW_UPDATE"));
            }
            Frame::WindowUpdate { stream: body.get_u32() & 0x7fff_ffff, delta: body.get_u32() & 0x7fff_ffff }
        }
        kind => Frame::Unknown { kind },
    };
    Ok(Some(frame))
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u32(0x8000_0000 | (u32::from(VERSION) << 16) | u32::from(kind));
    out.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff));
}

/// Appends `frame` to `out`. Data and header blocks must fit the 24-bit length (the session
/// splits data into smaller frames).
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let fin = |f: bool| if f { FLAG_FIN } else { 0 };
    match frame {
        Frame::Data { stream, fin: f, data } => {
            out.put_u32(stream & 0x7fff_ffff);
            out.put_u32((u32::from(fin(*f)) << 24) | (data.len() as u32 & 0x00ff_ffff));
            out.put_slice(data);
        }
        Frame::SynStream { stream, associated, priority, fin: f, unidirectional, block } => {
            let flags = fin(*f) | if *unidirectional { FLAG_UNIDIRECTIONAL } else { 0 };
            control(out, SYN_STREAM, flags, 10 + block.len());
            out.put_u32(*stream);
            out.put_u32(*associated);
            out.put_u8(priority << 5);
            out.put_u8(0);
            out.put_slice(block);
        }
        Frame::SynReply { stream, fin: f, block } => {
            control(out, SYN_REPLY, fin(*f), 4 + block.len());
            out.put_u32(*stream);
            out.put_slice(block);
        }
        Frame::Headers { stream, fin: f, block } => {
            control(out, HEADERS, fin(*f), 4 + block.len());
            out.put_u32(*stream);
            out.put_slice(block);
        }
        Frame::RstStream { stream, status } => {
            control(out, RST_STREAM, 0, 8);
            out.put_u32(*stream);
            out.put_u32(*status);
        }
        Frame::Settings { entries } => {
            control(out, SETTINGS, 0, 4 + 8 * entries.len());
            out.put_u32(entries.len() as u32);
            for (flags, id, value) in entries {
                out.put_u32((u32::from(*flags) << 24) | (id & 0x00ff_ffff));
                out.put_u32(*value);
            }
        }
        Frame::Ping { id } => {
            control(out, PING, 0, 4);
            out.put_u32(*id);
        }
        Frame::GoAway { last_good, status } => {
            control(out, GOAWAY, 0, 8);
            out.put_u32(*last_good);
            out.put_u32(*status);
        }
        Frame::WindowUpdate { stream, delta } => {
            control(out, WINDOW_UPDATE, 0, 8);
            out.put_u32(*stream);
            out.put_u32(*delta);
        }
        Frame::Unknown { kind } => control(out, *kind, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(f: Frame) {
        let mut buf = BytesMut::new();
        encode(&f, &mut buf);
        let whole = buf.clone();
        // Every strict prefix asks for more bytes and consumes nothing.
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(decode(&mut part, 1 << 20), Ok(None), "prefix of {cut} bytes of {f:?}");
            assert_eq!(part.len(), cut);
        }
        assert_eq!(decode(&mut buf, 1 << 20), Ok(Some(f)));
        assert!(buf.is_empty());
    }

    #[test]
    fn every_frame_type_roundtrips() {
        roundtrip(Frame::Data { stream: 7, fin: true, data: Bytes::from_static(b"hello") });
        roundtrip(Frame::SynStream {
            stream: 1,
            associated: 0,
            priority: 7,
            fin: false,
            unidirectional: true,
            block: Bytes::from_static(b"\x01\x02"),
        });
        roundtrip(Frame::SynReply { stream: 3, fin: false, block: Bytes::new() });
        roundtrip(Frame::Headers { stream: 3, fin: true, block: Bytes::from_static(b"x") });
        roundtrip(Frame::RstStream { stream: 5, status: RST_CANCEL });
        roundtrip(Frame::Settings { entries: vec![(1, 7, 65536), (0, 4, 100)] });
        roundtrip(Frame::Ping { id: 2 });
        roundtrip(Frame::GoAway { last_good: 9, status: GOAWAY_OK });
        roundtrip(Frame::WindowUpdate { stream: 1, delta: 1 << 20 });
        roundtrip(Frame::Unknown { kind: 0x55 });
    }

    #[test]
    fn bytes_as_spdystream_writes_them() {
        // A PING with id 1 and a FIN-only data frame on stream 3, as the Go framer encodes them.
        let mut ping = BytesMut::from(&[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1][..]);
        assert_eq!(decode(&mut ping, 64), Ok(Some(Frame::Ping { id: 1 })));
        let mut fin = BytesMut::from(&[0, 0, 0, 3, 0x01, 0, 0, 0][..]);
        assert_eq!(decode(&mut fin, 64), Ok(Some(Frame::Data { stream: 3, fin: true, data: Bytes::new() })));
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let mut big = BytesMut::from(&[0, 0, 0, 1, 0, 0x10, 0, 0][..]);
        assert_eq!(decode(&mut big, 4096), Err(FrameError::TooLarge { len: 0x100000, max: 4096 }));
        let mut v2 = BytesMut::from(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert_eq!(decode(&mut v2, 64), Err(FrameError::Version(2)));
        let mut short_rst = BytesMut::from(&[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(decode(&mut short_rst, 64), Err(FrameError::Malformed { kind: "RST_STREAM", .. })));
        let mut lying_settings = BytesMut::from(&[0x80, 0x03, 0x00, 0x04, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(decode(&mut lying_settings, 64), Err(FrameError::Malformed { kind: "SETTINGS", .. })));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut buf, 128) {}
        }
    }
}
