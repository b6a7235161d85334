//! The PyTorch checkpoint reader (zip + pickle) on arbitrary bytes: an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = popcosmos_torch_import::read_torch_module_from_bytes("fuzz.pt", data) {
        let _ = popcosmos_torch_import::import_diffusion_module(&m);
        let _ = popcosmos_torch_import::import_photulator_modules(std::slice::from_ref(&m));
    }
});
