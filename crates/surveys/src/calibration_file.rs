//! Calibration files written by `popcosmos-cli calibrate` and loaded through a manifest
//! (`survey: {calibration_file: calibration.yaml}`).
//!
//! ```yaml
//! survey: kids
//! bands:
//!   - {band: KiDSVIKING_aibn139_u, label: u, zero_point: 0.962, error_floor: 0.05, n_galaxies: 187}
//!   - …
//! provenance:
//!   catalogue: data/kids_calib.csv
//!   truth_column: zspec
//!   n_galaxies: 200
//!   iterations: 3
//! ```
//!
//! Every survey band must appear exactly once (by emulator name or label); `error_floor` is
//! optional (absent = keep the survey's floor).
//!
//! An optional `emission_lines:` list replaces the offsets α_l (line flux × (1 + α_l)) of
//! the lines at the given rest-frame vacuum wavelengths, e.g. as fitted by `calibrate
//! --line-offsets`:
//!
//! ```yaml
//! emission_lines:
//!   - {line: "H-alpha", lambda_aa: 6564.6, offset: 0.12}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use popcosmos_api::{Band, Calibration, Error, Result};
use serde::{Deserialize, Serialize};

/// One band of a calibration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandCalibration {
    /// Emulator band name or label.
    pub band: String,
    /// The band's short label, for the reader (not used to match bands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Multiplicative zero point Z (observed flux ≈ Z × model flux); positive and finite.
    pub zero_point: f64,
    /// Fractional error floor ε (σ_floor = ε f); absent keeps the survey's floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_floor: Option<f64>,
    /// Galaxies whose flux ratio entered the zero point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_galaxies: Option<usize>,
}

/// One emission line's offset in a calibration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineOffset {
    /// The line's name, for the reader (not used to match lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// Rest-frame vacuum wavelength (Å) naming the line (within 1.5 Å).
    pub lambda_aa: f64,
    /// Offset α: the model's line flux is multiplied by 1 + α (finite, ≥ −1).
    pub offset: f64,
}

/// A calibration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationFile {
    /// Survey the file was fitted for (checked against the manifest's survey name).
    pub survey: String,
    /// One entry per survey band (any order; written in survey order).
    pub bands: Vec<BandCalibration>,
    /// Emission-line offsets replacing the SPS model's (absent = keep them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emission_lines: Vec<LineOffset>,
    /// Free-form record of how the file was made.
    #[serde(default)]
    pub provenance: BTreeMap<String, serde_json::Value>,
}

impl CalibrationFile {
    /// Read a calibration file (errors name the file).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_saphyr::from_str(&text).map_err(|e| Error::Format {
            file: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// YAML text (a header comment, then the bands in survey order, then provenance).
    pub fn to_yaml(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).expect("strings serialise");
        let mut out = String::from(
            "# Zero points (observed ≈ Z × model) and fractional error floors per band.\n\
             # Load with `survey: {calibration_file: THIS_FILE}` in a run manifest.\n",
        );
        out += &format!("survey: {}\nbands:\n", q(&self.survey));
        for b in &self.bands {
            out += &format!("  - {{band: {}", q(&b.band));
            if let Some(l) = &b.label {
                out += &format!(", label: {}", q(l));
            }
            out += &format!(", zero_point: {}", b.zero_point);
            if let Some(e) = b.error_floor {
                out += &format!(", error_floor: {e}");
            }
            if let Some(n) = b.n_galaxies {
                out += &format!(", n_galaxies: {n}");
            }
            out += "}\n";
        }
        if !self.emission_lines.is_empty() {
            out += "emission_lines:\n";
            for l in &self.emission_lines {
                out += "  - {";
                if let Some(name) = &l.line {
                    out += &format!("line: {}, ", q(name));
                }
                out += &format!("lambda_aa: {}, offset: {}}}\n", l.lambda_aa, l.offset);
            }
        }
        if !self.provenance.is_empty() {
            out += "provenance:\n";
            for (k, v) in &self.provenance {
                // JSON scalars and flow collections are valid YAML flow values.
                out += &format!("  {k}: {v}\n");
            }
        }
        out
    }

    /// Write atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, self.to_yaml()).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    /// The checked emission-line offsets as (rest λ Å, α); `source` names the file in errors.
    pub fn line_offsets(&self, source: &str) -> Result<Vec<(f64, f64)>> {
        self.emission_lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let bad = |key: &str, msg: String| {
                    Error::config(
                        "survey.calibration_file",
                        format!("{source}: emission_lines[{i}].{key}: {msg}"),
                    )
                };
                if !(l.lambda_aa.is_finite() && l.lambda_aa > 0.0) {
                    return Err(bad(
                        "lambda_aa",
                        format!("must be a positive wavelength in Å, got {}", l.lambda_aa),
                    ));
                }
                if !(l.offset.is_finite() && l.offset >= -1.0) {
                    return Err(bad(
                        "offset",
                        format!("must be finite and ≥ −1, got {}", l.offset),
                    ));
                }
                Ok((l.lambda_aa, l.offset))
            })
            .collect()
    }

    /// Overwrite `calibration`'s zero points (and given floors) for `bands`; `source` names
    /// the file in errors. Every survey band must be listed once; unknown bands are errors.
    pub fn apply(
        &self,
        survey_name: &str,
        bands: &[Band],
        calibration: &mut Calibration,
        source: &str,
    ) -> Result<()> {
        let bad =
            |msg: String| Error::config("survey.calibration_file", format!("{source}: {msg}"));
        if !self.survey.eq_ignore_ascii_case(survey_name) {
            return Err(bad(format!(
                "fitted for survey '{}', but the manifest's survey is '{survey_name}'",
                self.survey
            )));
        }
        let mut seen = vec![None; bands.len()];
        for (i, b) in self.bands.iter().enumerate() {
            let Some(k) = bands
                .iter()
                .position(|s| s.name == b.band)
                .or_else(|| bands.iter().position(|s| s.label == b.band))
            else {
                let names: Vec<&str> = bands.iter().map(|s| s.name.as_str()).collect();
                return Err(bad(format!(
                    "bands[{i}].band: '{}' is not a band of survey '{survey_name}' (bands: {})",
                    b.band,
                    names.join(", ")
                )));
            };
            if let Some(j) = seen[k] {
                return Err(bad(format!(
                    "bands[{i}].band: '{}' repeats bands[{j}]",
                    b.band
                )));
            }
            seen[k] = Some(i);
            if !(b.zero_point.is_finite() && b.zero_point > 0.0) {
                return Err(bad(format!(
                    "bands[{i}].zero_point: must be a positive finite number, got {}",
                    b.zero_point
                )));
            }
            if let Some(e) = b.error_floor
                && !(e.is_finite() && e >= 0.0)
            {
                return Err(bad(format!(
                    "bands[{i}].error_floor: must be a non-negative number, got {e}"
                )));
            }
        }
        if let Some(k) = seen.iter().position(Option::is_none) {
            return Err(bad(format!(
                "bands: survey band '{}' ({}) is missing",
                bands[k].name, bands[k].label
            )));
        }
        for (k, i) in seen.iter().enumerate() {
            let b = &self.bands[i.expect("checked above")];
            calibration.zero_points[k] = b.zero_point;
            if let Some(e) = b.error_floor {
                calibration.error_floors[k] = e;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bands() -> Vec<Band> {
        ["g", "r"]
            .iter()
            .map(|l| Band {
                name: format!("hsc_{l}"),
                label: l.to_string(),
                flux_softening_nmgy: 0.01,
            })
            .collect()
    }

    fn cal() -> Calibration {
        Calibration {
            zero_points: vec![1.0, 1.0],
            error_floors: vec![0.02, 0.02],
        }
    }

    #[test]
    fn yaml_round_trip_and_apply() {
        let mut prov = BTreeMap::new();
        prov.insert("catalogue".into(), serde_json::json!("a b: c.csv"));
        prov.insert("iterations".into(), serde_json::json!(3));
        let f = CalibrationFile {
            survey: "t".into(),
            bands: vec![
                BandCalibration {
                    band: "r".into(),
                    label: None,
                    zero_point: 0.91,
                    error_floor: Some(0.05),
                    n_galaxies: Some(10),
                },
                BandCalibration {
                    band: "hsc_g".into(),
                    label: Some("g".into()),
                    zero_point: 1.125,
                    error_floor: None,
                    n_galaxies: None,
                },
            ],
            emission_lines: vec![
                LineOffset {
                    line: Some("H-alpha".into()),
                    lambda_aa: 6564.6,
                    offset: 0.125,
                },
                LineOffset {
                    line: None,
                    lambda_aa: 6585.3,
                    offset: -1.0,
                },
            ],
            provenance: prov,
        };
        let back: CalibrationFile = serde_saphyr::from_str(&f.to_yaml()).unwrap();
        assert_eq!(back, f);
        assert_eq!(
            f.line_offsets("c.yaml").unwrap(),
            vec![(6564.6, 0.125), (6585.3, -1.0)]
        );
        let mut c = cal();
        f.apply("t", &bands(), &mut c, "c.yaml").unwrap();
        assert_eq!(c.zero_points, vec![1.125, 0.91]);
        assert_eq!(c.error_floors, vec![0.02, 0.05]);
    }

    #[test]
    fn apply_errors_name_the_band() {
        let one = |band: &str, zp: f64| BandCalibration {
            band: band.into(),
            label: None,
            zero_point: zp,
            error_floor: None,
            n_galaxies: None,
        };
        let file = |b: Vec<BandCalibration>| CalibrationFile {
            survey: "t".into(),
            bands: b,
            emission_lines: Vec::new(),
            provenance: Default::default(),
        };
        let cases = [
            (file(vec![one("g", 1.0)]), "'hsc_r' (r) is missing"),
            (
                file(vec![one("g", 1.0), one("i", 1.0)]),
                "bands[1].band: 'i'",
            ),
            (
                file(vec![one("g", 1.0), one("hsc_g", 1.0)]),
                "repeats bands[0]",
            ),
            (
                file(vec![one("g", 1.0), one("r", 0.0)]),
                "bands[1].zero_point",
            ),
        ];
        for (f, want) in cases {
            let e = f
                .apply("t", &bands(), &mut cal(), "c.yaml")
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("c.yaml") && e.contains(want), "{want}: {e}");
        }
        let e = file(vec![one("g", 1.0), one("r", 1.0)])
            .apply("other", &bands(), &mut cal(), "c.yaml")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("'other'"), "{e}");
    }

    #[test]
    fn line_offset_errors_name_the_entry() {
        let file = |lambda_aa: f64, offset: f64| CalibrationFile {
            survey: "t".into(),
            bands: Vec::new(),
            emission_lines: vec![
                LineOffset {
                    line: None,
                    lambda_aa: 4862.7,
                    offset: 0.0,
                },
                LineOffset {
                    line: None,
                    lambda_aa,
                    offset,
                },
            ],
            provenance: Default::default(),
        };
        for (f, want) in [
            (file(6564.6, -1.5), "emission_lines[1].offset"),
            (file(6564.6, f64::NAN), "emission_lines[1].offset"),
            (file(-3.0, 0.1), "emission_lines[1].lambda_aa"),
        ] {
            let e = f.line_offsets("c.yaml").err().unwrap().to_string();
            assert!(e.contains("c.yaml") && e.contains(want), "{want}: {e}");
        }
    }
}
