//! The csv catalogue reader on arbitrary bytes: an error naming the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popcosmos_catalog::{CatalogueReader, CatalogueSpec, FluxUnit, UpperLimitConvention};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("popcosmos-fuzz-{}.csv", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let spec = CatalogueSpec {
        path: path.clone(),
        format: None,
        id_column: "id".into(),
        units: FluxUnit::Nanomaggies,
        bands: None,
        flux_pattern: Some("flux_{band}".into()),
        error_pattern: Some("fluxerr_{band}".into()),
        upper_limits: UpperLimitConvention::NegativeError,
        missing_values: popcosmos_catalog::default_missing_values(),
        truth_columns: vec!["z".into()],
    };
    if let Ok(mut r) = CatalogueReader::open(&spec, &["g".to_string(), "r".to_string()]) {
        while let Ok(Some(_)) = r.next_chunk(7) {}
    }
});
