//! The manifest parser and its checks on arbitrary text: an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = popcosmos_inference::Manifest::from_yaml(text, "fuzz.yaml");
    }
});
