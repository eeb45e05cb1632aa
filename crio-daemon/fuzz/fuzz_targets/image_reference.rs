//! Image references from the request: parse or reject, never panic; what parses prints back
//! to something that parses to the same reference.
#![no_main]

use crio::image::reference::ImageName;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(ImageName::Qualified(r)) = ImageName::parse(text) {
        let again = ImageName::parse(&r.to_string()).expect("a printed reference parses");
        assert_eq!(again, ImageName::Qualified(r));
    }
});
