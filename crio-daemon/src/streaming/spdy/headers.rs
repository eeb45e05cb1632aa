//! SPDY/3 header blocks: a count, then length-prefixed names and values (a value may hold
//! several, NUL-separated), zlib-compressed with the SPDY dictionary. Each direction of a
//! session is one zlib stream flushed after every block, so an `Inflater` and a `Deflater`
//! live as long as their session.

use flate2::{Decompress, FlushDecompress, Status};

use super::dictionary::DICTIONARY;

/// Header names (lowercase) with their values, in the order sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header block is not valid zlib data: {why}")]
    Zlib { why: String },
    #[error("header block inflates past {max} bytes")]
    TooLarge { max: usize },
    #[error("header block is malformed: {why}")]
    Malformed { why: &'static str },
}

pub struct Inflater {
    z: Decompress,
    /// Largest inflated block accepted.
    max: usize,
}

impl Inflater {
    pub fn new(max: usize) -> Self {
        Self { z: Decompress::new(true), max }
    }

    /// Inflates and parses one block.
    pub fn block(&mut self, compressed: &[u8]) -> Result<Headers, HeaderError> {
        let zlib = |e: flate2::DecompressError| HeaderError::Zlib { why: e.to_string() };
        let mut raw = Vec::with_capacity(256);
        let mut input = compressed;
        loop {
            if raw.len() == raw.capacity() {
                if raw.len() >= self.max {
                    return Err(HeaderError::TooLarge { max: self.max });
                }
                raw.reserve((raw.len()).min(self.max - raw.len()).max(256));
            }
            let (before, produced) = (self.z.total_in(), raw.len());
            let result = self.z.decompress_vec(input, &mut raw, FlushDecompress::Sync);
            let consumed = (self.z.total_in() - before) as usize;
            input = &input[consumed..];
            let stuck = consumed == 0 && raw.len() == produced && raw.len() < raw.capacity();
            match result {
                Ok(Status::StreamEnd) => return Err(HeaderError::Malformed { why: "the zlib stream ended" }),
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(_) => {
                        self.z.set_dictionary(&DICTIONARY).map_err(zlib)?;
                        continue;
                    }
                    None => return Err(zlib(e)),
                },
            }
            if input.is_empty() && raw.len() < raw.capacity() {
                break;
            }
            if stuck {
                return Err(HeaderError::Malformed { why: "zlib made no progress" });
            }
        }
        if raw.len() > self.max {
            return Err(HeaderError::TooLarge { max: self.max });
        }
        parse(&raw)
    }
}

/// Our side's header blocks: a zlib stream of *stored* (uncompressed) deflate blocks, which
/// every inflater accepts and which costs no compressor state: a zlib compressor keeps
/// ~256 KiB per stream, more than the rest of an idle session, to shrink the few bytes of
/// a SYN_REPLY. Each block ends with an empty stored block, as a sync flush does: Go's
/// inflater (the kubelet's, crictl's) hands data over only when it meets one.
#[derive(Default)]
pub struct Deflater {
    started: bool,
}

impl Deflater {
    /// Builds one block and frames it as the next piece of the zlib stream.
    pub fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let raw = build(headers);
        let mut out = Vec::with_capacity(raw.len() + 16);
        if !self.started {
            self.started = true;
            // CMF: deflate, 32 KiB window; FLG: a preset dictionary, check bits so that
            // CMF * 256 + FLG is a multiple of 31; then the dictionary's Adler-32.
            let (cmf, flg) = (0x78u16, 0x20u16);
            let flg = flg + (31 - (cmf * 256 + flg) % 31) % 31;
            out.extend_from_slice(&[cmf as u8, flg as u8]);
            out.extend_from_slice(&adler32(&DICTIONARY).to_be_bytes());
        }
        // Stored blocks carry at most 65535 bytes; the empty one last is the sync flush.
        for chunk in raw.chunks(0xffff).chain([&[][..]]) {
            let len = chunk.len() as u16;
            out.push(0x00); // BFINAL = 0, BTYPE = 00 (stored), padding to the byte boundary
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn take_u32(raw: &mut &[u8]) -> Result<usize, HeaderError> {
    let (n, rest) = raw.split_first_chunk::<4>().ok_or(HeaderError::Malformed { why: "truncated length" })?;
    *raw = rest;
    Ok(u32::from_be_bytes(*n) as usize)
}

fn take_str(raw: &mut &[u8]) -> Result<String, HeaderError> {
    let len = take_u32(raw)?;
    if len > raw.len() {
        return Err(HeaderError::Malformed { why: "a name or value runs past the block" });
    }
    let (s, rest) = raw.split_at(len);
    *raw = rest;
    String::from_utf8(s.to_vec()).map_err(|_| HeaderError::Malformed { why: "a name or value is not UTF-8" })
}

/// Parses an inflated block; a value with NULs becomes one entry per value.
pub fn parse(mut raw: &[u8]) -> Result<Headers, HeaderError> {
    let count = take_u32(&mut raw)?;
    // Each pair takes at least 8 bytes: a count beyond that is a lie.
    if count > raw.len() / 8 {
        return Err(HeaderError::Malformed { why: "more pairs announced than bytes" });
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let name = take_str(&mut raw)?.to_ascii_lowercase();
        if name.is_empty() {
            return Err(HeaderError::Malformed { why: "an empty header name" });
        }
        let value = take_str(&mut raw)?;
        out.extend(value.split('\0').map(|v| (name.clone(), v.to_string())));
    }
    Ok(Headers(out))
}

fn build(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (n, v) in headers {
        raw.extend_from_slice(&(n.len() as u32).to_be_bytes());
        raw.extend(n.bytes().map(|b| b.to_ascii_lowercase()));
        raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
        raw.extend_from_slice(v.as_bytes());
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blocks_roundtrip_through_one_context_per_direction() {
        let (mut out, mut inp) = (Deflater::default(), Inflater::new(4096));
        for i in 0..5 {
            let port = i.to_string();
            let block = out.block(&[("streamType", "data"), ("port", &port), ("requestID", "0")]);
            let h = inp.block(&block).expect("inflates");
            assert_eq!(h.get("streamtype"), Some("data"));
            assert_eq!(h.get("port"), Some(port.as_str()));
            assert_eq!(h.get("requestid"), Some("0"));
        }
    }

    #[test]
    fn our_stream_is_zlib_with_the_spdy_dictionary() {
        let block = Deflater::default().block(&[("a", "b")]);
        assert_eq!(block[0], 0x78);
        assert_eq!((u16::from(block[0]) * 256 + u16::from(block[1])) % 31, 0, "a valid zlib header check");
        assert_ne!(block[1] & 0x20, 0, "a preset dictionary");
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        assert!(block.ends_with(&[0, 0, 0, 0xff, 0xff]), "each block ends with a sync flush");
    }

    #[test]
    fn values_with_nuls_are_several_values() {
        let h = parse(&build(&[("x-a", "1\u{0}2")])).unwrap();
        assert_eq!(h.0, [("x-a".to_string(), "1".to_string()), ("x-a".to_string(), "2".to_string())]);
    }

    #[test]
    fn a_block_that_inflates_too_far_is_refused() {
        let big = "v".repeat(70_000);
        let block = Deflater::default().block(&[("a", &big)]);
        assert_eq!(Inflater::new(1024).block(&block), Err(HeaderError::TooLarge { max: 1024 }));
    }

    #[test]
    fn lies_about_lengths_are_refused() {
        assert!(parse(&[0, 0, 0, 9]).is_err());
        assert!(parse(&[0, 0, 0, 1, 0, 0, 0, 200, b'a', 0, 0, 0, 0]).is_err());
        assert!(Inflater::new(1024).block(b"not zlib at all").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_blocks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
            let _ = Inflater::new(4096).block(&bytes);
        }
    }
}
