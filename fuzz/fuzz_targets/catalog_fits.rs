//! The fits catalogue reader on arbitrary bytes: an error naming the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| popcosmos_fuzz::read_catalogue(data, "fits"));
