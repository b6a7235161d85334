//! Surveys defined by data: the built-in KiDS / LSST tables and YAML survey files.
//!
//! A [`DefinedSurvey`] carries, per band: the emulator band name, a short label, the filter
//! curve, the asinh softening, the nominal zero point and error floor, and the catalogue
//! columns. A YAML survey file (`survey: {file: my-survey.yaml}` in a manifest) describes
//! all of this without code; filter paths are relative to the YAML file:
//!
//! ```yaml
//! name: clauds-hsc-ugrizy
//! columns: {flux: "flux_{label}", error: "fluxerr_{label}"}   # optional default column map
//! bands:
//!   - name: u_megaprime_sagem      # band of the emulator set (sps.weights)
//!     label: u
//!     filter: filters/u_megaprime_sagem.txt
//!     depth_5sigma_ab: 27.1        # or softening_nmgy: …
//!     zero_point: 1.0              # optional (default 1)
//!     error_floor: 0.03            # optional (default 0)
//!     flux_column: FLUX_U          # optional, overrides `columns`
//!     error_column: FLUXERR_U
//! ```

use std::path::{Path, PathBuf};

use popcosmos_api::{Band, Calibration, Error, FilterCurve, Result, Survey};
use serde::Deserialize;

/// 2.5 log10(e): Pogson's ratio in natural-log form.
const POGSON_A: f64 = 1.085_736_204_758_129_4;

/// Asinh softening from a 5σ point-source depth (AB): the 1σ flux noise
/// σ₁ = 10^(−0.4 (m₅ − 22.5)) / 5 nmgy scaled by √a (a = 2.5 log10 e), Lupton et al. (1999)'s
/// choice b = √a σ₁ that minimises the asinh-magnitude error at the noise level.
pub fn softening_from_depth(depth_5sigma_ab: f64) -> f64 {
    let sigma1 = 10f64.powf(-0.4 * (depth_5sigma_ab - 22.5)) / 5.0;
    POGSON_A.sqrt() * sigma1
}

/// Catalogue columns of one band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandColumnNames {
    /// Emulator band name.
    pub band: String,
    /// Flux column.
    pub flux: String,
    /// Flux-error (1σ) column.
    pub error: String,
}

/// A survey given by a table of bands (built-in KiDS / LSST, or a YAML file).
#[derive(Debug, Clone)]
pub struct DefinedSurvey {
    /// The survey's name in manifests and calibration files.
    pub name: String,
    /// Bands in catalogue order (emulator name, label, asinh softening in nmgy).
    pub bands: Vec<Band>,
    /// One curve per band, in band order (empty for a plugin survey that gives no curves).
    pub filters: Vec<FilterCurve>,
    /// The survey's nominal calibration (zero points / floors of its definition).
    pub calibration: Calibration,
    /// Catalogue columns per band, when the definition gives a column map.
    pub columns: Option<Vec<BandColumnNames>>,
    /// Emission-line terms a survey plugin gives, replacing the SPS model's own (Leistedt+23);
    /// empty for every other survey.
    pub emission_lines: Vec<popcosmos_plugin_host::LineValues>,
    /// Offsets α of single lines, (rest λ Å, α), from `survey.calibration_file`'s
    /// `emission_lines:`; applied to the SPS model over the emission-line terms above.
    pub line_offsets: Vec<(f64, f64)>,
}

impl Survey for DefinedSurvey {
    fn name(&self) -> &str {
        &self.name
    }
    fn bands(&self) -> &[Band] {
        &self.bands
    }
    fn calibration(&self) -> &Calibration {
        &self.calibration
    }
}

impl DefinedSurvey {
    /// Index of a band by emulator name or label.
    pub fn band_index(&self, name_or_label: &str) -> Option<usize> {
        self.bands
            .iter()
            .position(|b| b.name == name_or_label)
            .or_else(|| self.bands.iter().position(|b| b.label == name_or_label))
    }
}

/// Column patterns with `{band}` (emulator band name) or `{label}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnPatterns {
    /// Flux column pattern, e.g. `"flux_{label}"`.
    pub flux: String,
    /// Flux-error column pattern, e.g. `"fluxerr_{label}"`.
    pub error: String,
}

impl ColumnPatterns {
    /// Expand for one band.
    pub fn expand(&self, band: &Band) -> (String, String) {
        let f = |p: &str| {
            p.replace("{band}", &band.name)
                .replace("{label}", &band.label)
        };
        (f(&self.flux), f(&self.error))
    }
}

/// One band of a YAML survey file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandDefinition {
    /// Emulator band name (must be a band of the manifest's emulator set).
    pub name: String,
    /// Short label (default: `name`).
    #[serde(default)]
    pub label: Option<String>,
    /// Filter curve file (two columns: wavelength Å, response), relative to the YAML file.
    pub filter: PathBuf,
    /// Asinh softening b (nmgy); give this or `depth_5sigma_ab`.
    #[serde(default)]
    pub softening_nmgy: Option<f64>,
    /// 5σ point-source depth (AB), from which the softening follows ([`softening_from_depth`]).
    #[serde(default)]
    pub depth_5sigma_ab: Option<f64>,
    /// Nominal multiplicative zero point (observed ≈ Z × model; default 1).
    #[serde(default = "one")]
    pub zero_point: f64,
    /// Nominal fractional error floor (σ_floor = ε f; default 0).
    #[serde(default)]
    pub error_floor: f64,
    /// Flux column of this band, overriding the file's `columns` (give with `error_column`).
    #[serde(default)]
    pub flux_column: Option<String>,
    /// Flux-error column of this band (give with `flux_column`).
    #[serde(default)]
    pub error_column: Option<String>,
}

fn one() -> f64 {
    1.0
}

/// A YAML survey file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurveyDefinition {
    /// The survey's name (matched against calibration files).
    pub name: String,
    /// Free-text description (not used by popcosmos).
    #[serde(default)]
    pub description: Option<String>,
    /// Default catalogue columns for every band (`{band}` / `{label}` placeholders).
    #[serde(default)]
    pub columns: Option<ColumnPatterns>,
    /// The bands, in catalogue order.
    pub bands: Vec<BandDefinition>,
}

impl SurveyDefinition {
    /// Read and validate a YAML survey file; errors name the file and the key.
    pub fn load(path: &Path) -> Result<DefinedSurvey> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let source = path.display().to_string();
        let def: SurveyDefinition = serde_saphyr::from_str(&text).map_err(|e| Error::Format {
            file: source.clone(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        def.build(&source, &|p: &Path| {
            let full = if p.is_relative() {
                base.join(p)
            } else {
                p.to_path_buf()
            };
            FilterCurve::from_path(&full)
        })
    }

    /// Validate and build; `source` names the file in errors and `read_filter` loads curves.
    pub fn build(
        &self,
        source: &str,
        read_filter: &dyn Fn(&Path) -> Result<FilterCurve>,
    ) -> Result<DefinedSurvey> {
        let bad = |key: String, msg: String| Error::Invalid(format!("{source}: {key}: {msg}"));
        if self.name.trim().is_empty() {
            return Err(bad("name".into(), "must not be empty".into()));
        }
        if self.bands.is_empty() {
            return Err(bad("bands".into(), "at least one band is needed".into()));
        }
        let mut bands = Vec::new();
        let mut filters = Vec::new();
        let mut zero_points = Vec::new();
        let mut error_floors = Vec::new();
        let mut columns = Vec::new();
        for (i, b) in self.bands.iter().enumerate() {
            let key = |k: &str| format!("bands[{i}].{k}");
            if b.name.trim().is_empty() {
                return Err(bad(key("name"), "must not be empty".into()));
            }
            let label = b.label.clone().unwrap_or_else(|| b.name.clone());
            if let Some(j) = self.bands[..i]
                .iter()
                .position(|o| o.name == b.name || o.label.as_deref().unwrap_or(&o.name) == label)
            {
                return Err(bad(
                    key("name"),
                    format!("band '{}' (label '{label}') repeats bands[{j}]", b.name),
                ));
            }
            let softening = match (b.softening_nmgy, b.depth_5sigma_ab) {
                (Some(s), None) if s.is_finite() && s > 0.0 => s,
                (Some(s), None) => {
                    return Err(bad(
                        key("softening_nmgy"),
                        format!("must be a positive number, got {s}"),
                    ));
                }
                (None, Some(m)) if m.is_finite() && (10.0..40.0).contains(&m) => {
                    softening_from_depth(m)
                }
                (None, Some(m)) => {
                    return Err(bad(
                        key("depth_5sigma_ab"),
                        format!("must be an AB magnitude between 10 and 40, got {m}"),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(bad(
                        key("softening_nmgy"),
                        "give softening_nmgy or depth_5sigma_ab, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(bad(
                        key("softening_nmgy"),
                        "missing: give softening_nmgy or depth_5sigma_ab".into(),
                    ));
                }
            };
            if !(b.zero_point.is_finite() && b.zero_point > 0.0) {
                return Err(bad(
                    key("zero_point"),
                    format!("must be a positive finite number, got {}", b.zero_point),
                ));
            }
            if !(b.error_floor.is_finite() && b.error_floor >= 0.0) {
                return Err(bad(
                    key("error_floor"),
                    format!("must be a non-negative number, got {}", b.error_floor),
                ));
            }
            let curve = read_filter(&b.filter).map_err(|e| bad(key("filter"), e.to_string()))?;
            // Measured curves can dip slightly below 0 in their wings (hsc_y does): only
            // require finite values and a positive peak.
            if curve.transmission.iter().any(|t| !t.is_finite())
                || !curve.transmission.iter().any(|t| *t > 0.0)
            {
                return Err(bad(
                    key("filter"),
                    format!(
                        "{}: the response must be finite with a positive peak",
                        b.filter.display()
                    ),
                ));
            }
            let band = Band {
                name: b.name.clone(),
                label,
                flux_softening_nmgy: softening,
            };
            let cols = match (&b.flux_column, &b.error_column, &self.columns) {
                (Some(f), Some(e), _) => Some((f.clone(), e.clone())),
                (None, None, Some(p)) => Some(p.expand(&band)),
                (None, None, None) => None,
                _ => {
                    return Err(bad(
                        key("flux_column"),
                        "flux_column and error_column must be given together".into(),
                    ));
                }
            };
            columns.push(cols.map(|(flux, error)| BandColumnNames {
                band: band.name.clone(),
                flux,
                error,
            }));
            bands.push(band);
            filters.push(curve);
            zero_points.push(b.zero_point);
            error_floors.push(b.error_floor);
        }
        let columns = if columns.iter().all(Option::is_some) {
            Some(columns.into_iter().flatten().collect())
        } else if columns.iter().all(Option::is_none) {
            None
        } else {
            let i = columns.iter().position(Option::is_none).unwrap_or(0);
            return Err(bad(
                format!("bands[{i}].flux_column"),
                "some bands have catalogue columns and others not; give `columns:` or \
                 flux_column/error_column for every band"
                    .into(),
            ));
        };
        Ok(DefinedSurvey {
            name: self.name.clone(),
            bands,
            filters,
            calibration: Calibration {
                zero_points,
                error_floors,
            },
            columns,
            emission_lines: Vec::new(),
            line_offsets: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(_: &Path) -> Result<FilterCurve> {
        FilterCurve::parse("t", "4000 0\n5000 1\n6000 0\n", "t.txt")
    }

    fn parse(text: &str) -> Result<DefinedSurvey> {
        let def: SurveyDefinition = serde_saphyr::from_str(text).map_err(|e| Error::Format {
            file: "s.yaml".into(),
            message: e.to_string(),
        })?;
        def.build("s.yaml", &curve)
    }

    #[test]
    fn softening_follows_lupton() {
        // m5 = 22.5 → σ₁ = 0.2 nmgy, b = √a σ₁.
        assert!(
            (softening_from_depth(22.5) - 0.2 * 1.085_736_204_758_129_4f64.sqrt()).abs() < 1e-12
        );
        // 2.5 mag deeper = 10× smaller.
        assert!((softening_from_depth(25.0) / softening_from_depth(22.5) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn yaml_survey_builds_columns_and_calibration() {
        let s = parse(
            "name: t\ncolumns: {flux: 'f_{label}', error: 'e_{label}'}\nbands:\n  - {name: hsc_g, label: g, filter: g.txt, depth_5sigma_ab: 22.5, zero_point: 1.1, error_floor: 0.02}\n  - {name: hsc_r, filter: r.txt, softening_nmgy: 0.01, flux_column: R, error_column: ER}\n",
        )
        .unwrap();
        assert_eq!(s.bands[1].label, "hsc_r");
        assert_eq!(s.calibration.zero_points, vec![1.1, 1.0]);
        assert_eq!(s.calibration.error_floors, vec![0.02, 0.0]);
        let c = s.columns.unwrap();
        assert_eq!((c[0].flux.as_str(), c[0].error.as_str()), ("f_g", "e_g"));
        assert_eq!((c[1].flux.as_str(), c[1].error.as_str()), ("R", "ER"));
        assert!((s.bands[0].flux_softening_nmgy - softening_from_depth(22.5)).abs() < 1e-15);
    }

    #[test]
    fn yaml_errors_name_file_and_key() {
        let cases = [
            (
                "name: t\nbands:\n  - {name: a, filter: a.txt}\n",
                "bands[0].softening_nmgy",
            ),
            (
                "name: t\nbands:\n  - {name: a, filter: a.txt, softening_nmgy: 1}\n  - {name: a, filter: a.txt, softening_nmgy: 1}\n",
                "bands[1].name",
            ),
            (
                "name: t\nbands:\n  - {name: a, filter: a.txt, softening_nmgy: 1, zero_point: -1}\n",
                "bands[0].zero_point",
            ),
            (
                "name: t\nbands:\n  - {name: a, filter: a.txt, softening_nmgy: 1, error_floor: .nan}\n",
                "bands[0].error_floor",
            ),
            (
                "name: t\nbands:\n  - {name: a, filter: a.txt, softening_nmgy: 1, flux_column: X}\n",
                "bands[0].flux_column",
            ),
            ("name: t\nbands: []\n", "bands"),
        ];
        for (text, key) in cases {
            let e = parse(text).err().unwrap().to_string();
            assert!(e.contains("s.yaml") && e.contains(key), "{key}: {e}");
        }
        // Unknown keys are refused by serde with the line number.
        let e = parse("name: t\nbandz: []\n").err().unwrap().to_string();
        assert!(e.contains("bandz"), "{e}");
    }

    #[test]
    fn missing_filter_file_is_named() {
        let dir = std::env::temp_dir().join(format!("popcosmos-survey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = dir.join("s.yaml");
        std::fs::write(
            &yaml,
            "name: t\nbands:\n  - {name: a, filter: nothere.txt, softening_nmgy: 1}\n",
        )
        .unwrap();
        let e = SurveyDefinition::load(&yaml).err().unwrap().to_string();
        assert!(
            e.contains("bands[0].filter") && e.contains("nothere.txt"),
            "{e}"
        );
        std::fs::write(dir.join("a.txt"), "# c\n4000 0\n5000 1\n6000 0\n").unwrap();
        std::fs::write(
            &yaml,
            "name: t\nbands:\n  - {name: a, filter: a.txt, softening_nmgy: 1}\n",
        )
        .unwrap();
        let s = SurveyDefinition::load(&yaml).unwrap();
        assert!((s.filters[0].pivot_wavelength_aa() - 5000.0).abs() < 100.0);
        std::fs::remove_dir_all(&dir).ok();
    }
}
