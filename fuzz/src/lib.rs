//! Shared fuzz-target code: the catalogue readers on arbitrary bytes.

use popcosmos_catalog::{CatalogueReader, CatalogueSpec, FluxUnit, UpperLimitConvention};

/// Write `data` to a temporary `.{extension}` file and read it as a catalogue with bands g
/// and r: any outcome but a panic is a pass (errors must name the file).
pub fn read_catalogue(data: &[u8], extension: &str) {
    let path = std::env::temp_dir().join(format!(
        "popcosmos-fuzz-{}.{extension}",
        std::process::id()
    ));
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
}
