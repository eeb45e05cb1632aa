//! Manifests and indexes from registries: parse or reject, never panic.
#![no_main]

use crio::image::digest::Digest;
use crio::image::manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let digest = Digest::of(data);
    if let Ok(manifest::Document::Index(entries)) = manifest::parse(data, "", &digest) {
        let _ = manifest::select_platform(&entries, &digest);
    }
});
