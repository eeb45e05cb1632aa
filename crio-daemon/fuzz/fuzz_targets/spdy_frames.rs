//! SPDY frames from a streaming client: decode or refuse, never panic, never buffer past the
//! cap; what decodes encodes back to the same frame.
#![no_main]

use bytes::BytesMut;
use crio::streaming::spdy::frame::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(f)) = decode(&mut buf, 1 << 16) {
        let mut out = BytesMut::new();
        encode(&f, &mut out);
        assert_eq!(decode(&mut out, 1 << 24), Ok(Some(f)), "a decoded frame roundtrips");
    }
});
