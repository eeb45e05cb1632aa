//! Arbitrary tar streams: unpacking may fail, but never panics and never writes outside the
//! layer directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let _ = crio::storage::unpack::unpack_tar(data, &root, &crio::storage::unpack::Limits::none());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "wrote outside the layer");
});
