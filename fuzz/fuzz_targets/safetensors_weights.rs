//! The safetensors weight reader on arbitrary bytes: an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ =
        popcosmos_sps::WeightFile::from_bytes(data, "fuzz.safetensors", &candle_core::Device::Cpu);
});
