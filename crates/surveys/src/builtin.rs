//! Built-in KiDS+VIKING and LSST survey definitions.
//!
//! Band names are the filter-file stems (the names of the emulator sets
//! `builtin:photulator_kids9` / `builtin:photulator_lsst6`); labels are the catalogue band
//! letters, so the default column map is `flux_{label}` / `fluxerr_{label}`.
//!
//! Softening: b = √(2.5 log10 e) σ₁ from the published 5σ point-source depths
//! ([`crate::definition::softening_from_depth`]):
//! * KiDS DR4 (Kuijken et al. 2019, Table 1; 2″ apertures): u 24.23, g 25.12, r 25.02,
//!   i 23.68; VIKING as used in KV450 (Wright et al. 2019, Table 1): Z 23.1, Y 22.3,
//!   J 22.1, H 21.5, Ks 21.2.
//! * LSST ten-year coadd (Ivezić et al. 2019, Table 1): u 25.6, g 26.9, r 26.9, i 26.4,
//!   z 25.6, y 24.8.
//!
//! Nominal calibration: zero points 1 (run `popcosmos-cli calibrate` to fit them); fractional
//! error floors = absolute calibration uncertainty of the survey plus ~1 % emulator error:
//! * KiDS: u 0.05 (stellar-locus u calibration scatter ≈ 0.05 mag), g r i 0.02 (Gaia-based
//!   zero points ≈ 0.01–0.02 mag, Kuijken+19), VIKING 0.03 (2MASS-tied ≈ 0.02–0.03 mag).
//! * LSST: 0.02 in g r i z (SRD zero-point repeatability 10 mmag, + emulator), 0.03 in u and y.

use std::path::Path;

use popcosmos_api::{Error, FilterCurve, Result};

use crate::definition::{BandDefinition, ColumnPatterns, DefinedSurvey, SurveyDefinition};

macro_rules! curve {
    ($dir:literal, $stem:literal) => {
        (
            $stem,
            include_str!(concat!(
                "../../../assets/filters/",
                $dir,
                "/",
                $stem,
                ".txt"
            )),
        )
    };
}

/// (stem, file text) of the bundled KiDS+VIKING curves (lephare-data, KiDS team throughputs).
const KIDS_CURVES: &[(&str, &str)] = &[
    curve!("kids", "KiDSVIKING_aibn139_u"),
    curve!("kids", "KiDSVIKING_aibn139_g"),
    curve!("kids", "KiDSVIKING_aibn139_r"),
    curve!("kids", "KiDSVIKING_aibn139_i"),
    curve!("kids", "KiDSVIKING_aibn139_Z"),
    curve!("kids", "KiDSVIKING_aibn139_Y"),
    curve!("kids", "KiDSVIKING_aibn139_J"),
    curve!("kids", "KiDSVIKING_aibn139_H"),
    curve!("kids", "KiDSVIKING_aibn139_Ks"),
];

/// LSST baseline v1.9 total throughputs (via sedpy).
const LSST_CURVES: &[(&str, &str)] = &[
    curve!("lsst", "lsst_baseline_1_9_u"),
    curve!("lsst", "lsst_baseline_1_9_g"),
    curve!("lsst", "lsst_baseline_1_9_r"),
    curve!("lsst", "lsst_baseline_1_9_i"),
    curve!("lsst", "lsst_baseline_1_9_z"),
    curve!("lsst", "lsst_baseline_1_9_y"),
];

/// (label, 5σ depth AB, error floor) per band, in curve order.
const KIDS_BANDS: [(&str, f64, f64); 9] = [
    ("u", 24.23, 0.05),
    ("g", 25.12, 0.02),
    ("r", 25.02, 0.02),
    ("i", 23.68, 0.02),
    ("Z", 23.1, 0.03),
    ("Y", 22.3, 0.03),
    ("J", 22.1, 0.03),
    ("H", 21.5, 0.03),
    ("Ks", 21.2, 0.03),
];

const LSST_BANDS: [(&str, f64, f64); 6] = [
    ("u", 25.6, 0.03),
    ("g", 26.9, 0.02),
    ("r", 26.9, 0.02),
    ("i", 26.4, 0.02),
    ("z", 25.6, 0.02),
    ("y", 24.8, 0.03),
];

fn build(
    name: &str,
    dir: &str,
    curves: &[(&str, &str)],
    table: &[(&str, f64, f64)],
) -> DefinedSurvey {
    let def = SurveyDefinition {
        name: name.into(),
        description: None,
        columns: Some(ColumnPatterns {
            flux: "flux_{label}".into(),
            error: "fluxerr_{label}".into(),
        }),
        bands: curves
            .iter()
            .zip(table)
            .map(|((stem, _), (label, depth, floor))| BandDefinition {
                name: stem.to_string(),
                label: Some(label.to_string()),
                filter: format!("{stem}.txt").into(),
                softening_nmgy: None,
                depth_5sigma_ab: Some(*depth),
                zero_point: 1.0,
                error_floor: *floor,
                flux_column: None,
                error_column: None,
            })
            .collect(),
    };
    let read = |p: &Path| -> Result<FilterCurve> {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let (n, text) = curves
            .iter()
            .find(|(n, _)| *n == stem)
            .ok_or_else(|| Error::Invalid(format!("no bundled filter curve '{stem}'")))?;
        FilterCurve::parse(n, text, &format!("assets/filters/{dir}/{n}.txt"))
    };
    def.build(&format!("built-in survey '{name}'"), &read)
        .expect("bundled survey definitions are valid")
}

/// KiDS-1000 / KV450 u g r i + VIKING Z Y J H Ks.
pub fn kids() -> DefinedSurvey {
    build("kids", "kids", KIDS_CURVES, &KIDS_BANDS)
}

/// Rubin LSST u g r i z y (baseline v1.9 throughputs).
pub fn lsst() -> DefinedSurvey {
    build("lsst", "lsst", LSST_CURVES, &LSST_BANDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kids_and_lsst_bands_are_in_wavelength_order() {
        for (s, n, labels) in [
            (kids(), 9, "u g r i Z Y J H Ks"),
            (lsst(), 6, "u g r i z y"),
        ] {
            assert_eq!(s.bands.len(), n);
            let l: Vec<&str> = s.bands.iter().map(|b| b.label.as_str()).collect();
            assert_eq!(l.join(" "), labels);
            let pivots: Vec<f64> = s.filters.iter().map(|f| f.pivot_wavelength_aa()).collect();
            assert!(pivots.windows(2).all(|w| w[0] < w[1]), "{pivots:?}");
            assert!(s.calibration.zero_points.iter().all(|z| *z == 1.0));
            let cols = s.columns.as_ref().unwrap();
            assert_eq!(cols[0].flux, "flux_u");
        }
        // KiDS Ks pivot ≈ 2.15 µm, LSST y ≈ 0.97 µm.
        let ks = kids().filters[8].pivot_wavelength_aa();
        assert!((21000.0..22000.0).contains(&ks), "{ks}");
        let y = lsst().filters[5].pivot_wavelength_aa();
        assert!((9500.0..10000.0).contains(&y), "{y}");
        // Softening from the depth: KiDS r 25.02 → σ₁ = 10^(−0.4·2.52)/5 nmgy.
        let b = kids().bands[2].flux_softening_nmgy;
        let expect = 10f64.powf(-0.4 * 2.52) / 5.0 * 1.085_736_204_758_129_4f64.sqrt();
        assert!((b - expect).abs() < 1e-12, "{b}");
    }
}
