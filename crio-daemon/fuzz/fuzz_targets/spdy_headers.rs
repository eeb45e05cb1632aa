//! SPDY header blocks from a streaming client: raw blocks parse or are refused, compressed
//! ones inflate within the cap or are refused; never a panic. One inflater sees several
//! blocks, as a session's does.
#![no_main]

use crio::streaming::spdy::headers::{Inflater, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data);
    let mut inflater = Inflater::new(1 << 16);
    for block in data.split(|b| *b == 0xff) {
        let _ = inflater.block(block);
    }
});
