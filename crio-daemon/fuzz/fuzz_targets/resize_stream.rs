//! The resize stream of an exec or attach session: any bytes, split anywhere, give sizes or
//! nothing, and the decoder's buffer stays bounded.
#![no_main]

use crio::streaming::remotecommand::ResizeDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = ResizeDecoder::default();
    for piece in data.chunks(7) {
        let _ = d.push(piece);
    }
});
