//! # popcosmos-surveys — photometric surveys: bands, filter curves, calibration
//!
//! A survey fixes the band order of every flux vector, the asinh softening per band and
//! the photometric calibration the likelihood applies: multiplicative zero points and
//! fractional error floors (the emission-line terms belong to the SPS model).
//!
//! Built in:
//! * `cosmos` ([`Cosmos`]) — the 26 COSMOS2020 bands of pop-cosmos in `COSMOS_FILTERS` order,
//!   with the Leistedt+23 calibration shipped in `pop_cosmos.constants`;
//! * `kids` — KiDS u g r i + VIKING Z Y J H Ks; `lsst` — LSST ugrizy
//!   (zero points 1, documented error floors and softenings); all three by name
//!   ([`BUILTIN_SURVEYS`], [`SurveySpec::named`]).
//!
//! Any other survey is a YAML file ([`SurveyDefinition`]: filter files, band names, column map,
//! calibration). Fitted zero points / floors live in calibration files
//! ([`CalibrationFile`], written by `popcosmos-cli calibrate`). Manifests select all of
//! this with [`SurveySpec`]; filter curves are bundled (see NOTICE).

#![warn(missing_docs)]

mod builtin;
mod calibration_file;
mod cosmos;
mod definition;
mod filters;

pub use calibration_file::{BandCalibration, CalibrationFile, LineOffset};
pub use cosmos::Cosmos;
pub use definition::{
    BandColumnNames, BandDefinition, ColumnPatterns, DefinedSurvey, SurveyDefinition,
    softening_from_depth,
};
pub use filters::{FilterCurve, cosmos_filter};

use std::path::PathBuf;

use popcosmos_api::{Error, Result, Survey};
use serde::{Deserialize, Serialize};

/// Which calibration preset to start from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibrationChoice {
    /// Leistedt et al. (2023) zero points and error floors (COSMOS only).
    #[default]
    Leistedt23,
    /// Zero points 1, no error floor.
    Uncalibrated,
    /// The survey's own definition (COSMOS: Leistedt+23; KiDS / LSST / YAML surveys: their
    /// listed zero points and floors). The default when `calibration` is absent.
    Nominal,
}

/// Names of the built-in surveys.
pub const BUILTIN_SURVEYS: [&str; 3] = ["cosmos", "kids", "lsst"];

/// Survey section of a manifest.
///
/// ```yaml
/// survey: {name: kids}                                  # built-in
/// survey: {file: surveys/hsc.yaml, calibration_file: calib.yaml}   # YAML survey + fitted ZPs
/// survey: {plugin: plugins/libexample_survey.so}        # plugin library (docs/plugins.md)
/// ```
///
/// Calibration is applied in order: preset (`calibration`), `calibration_file`, then the
/// explicit `zero_points` / `error_floors` lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurveySpec {
    /// Built-in survey (`cosmos`, `kids`, `lsst`); with `file`, optional and checked against
    /// the file's `name`.
    #[serde(default)]
    pub name: String,
    /// YAML survey definition (relative to the manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Survey plugin library (relative to the manifest; docs/plugins.md). Its bands,
    /// softening, calibration and filter curves replace `name` / `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PathBuf>,
    /// Configuration string handed to the survey plugin (plugin-defined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config: Option<String>,
    /// Calibration preset (default: the survey's nominal calibration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationChoice>,
    /// Calibration file from `popcosmos-cli calibrate` (relative to the manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration_file: Option<PathBuf>,
    /// Explicit zero points overriding the preset (one per band, survey order).
    #[serde(default)]
    pub zero_points: Option<Vec<f64>>,
    /// Explicit fractional error floors overriding the preset.
    #[serde(default)]
    pub error_floors: Option<Vec<f64>>,
}

impl SurveySpec {
    /// A built-in survey by name with its nominal calibration.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.into(),
            file: None,
            plugin: None,
            plugin_config: None,
            calibration: None,
            calibration_file: None,
            zero_points: None,
            error_floors: None,
        }
    }

    /// Build the survey, validating overrides (errors name the manifest key).
    pub fn build(&self) -> Result<Box<dyn Survey>> {
        Ok(Box::new(self.build_defined()?))
    }

    /// A survey from a plugin library (`survey: {plugin: PATH, plugin_config: "…"}`).
    fn plugin_survey(&self, path: &std::path::Path) -> Result<DefinedSurvey> {
        if self.file.is_some() {
            return Err(Error::config(
                "survey.plugin",
                "give either `file:` or `plugin:`, not both",
            ));
        }
        let config = self.plugin_config.as_deref().unwrap_or("");
        let plugin = popcosmos_plugin_host::load_survey(path, config)
            .map_err(|e| Error::config("survey.plugin", e.to_string()))?;
        let emission_lines = plugin.emission_lines().to_vec();
        let (name, bands, filters, calibration) = plugin.into_parts();
        if !self.name.is_empty() && !self.name.eq_ignore_ascii_case(&name) {
            return Err(Error::config(
                "survey.name",
                format!(
                    "'{}' does not match the name '{name}' of survey.plugin {}",
                    self.name,
                    path.display()
                ),
            ));
        }
        Ok(DefinedSurvey {
            name,
            bands,
            filters,
            calibration,
            columns: None,
            emission_lines,
            line_offsets: Vec::new(),
        })
    }

    /// The survey with its filter curves and column map.
    pub fn build_defined(&self) -> Result<DefinedSurvey> {
        let mut survey = match (&self.plugin, &self.file) {
            (Some(plugin), _) => self.plugin_survey(plugin)?,
            (None, Some(path)) => {
                let s = SurveyDefinition::load(path)
                    .map_err(|e| Error::config("survey.file", e.to_string()))?;
                if !self.name.is_empty() && !self.name.eq_ignore_ascii_case(&s.name) {
                    return Err(Error::config(
                        "survey.name",
                        format!(
                            "'{}' does not match name '{}' in survey.file {}",
                            self.name,
                            s.name,
                            path.display()
                        ),
                    ));
                }
                s
            }
            (None, None) => match self.name.to_ascii_lowercase().as_str() {
                "cosmos" | "cosmos2020" => Cosmos::new(CalibrationChoice::Leistedt23).defined()?,
                "kids" | "kids-viking" | "kv450" => builtin::kids(),
                "lsst" => builtin::lsst(),
                "" => {
                    return Err(Error::config(
                        "survey",
                        "give `name:` (a built-in survey: cosmos, kids, lsst) or `file:` (a \
                         YAML survey definition)",
                    ));
                }
                other => {
                    return Err(Error::config(
                        "survey.name",
                        format!(
                            "unknown survey '{other}' (built-in surveys: {}; or give `file:` \
                             with a YAML survey definition)",
                            BUILTIN_SURVEYS.join(", ")
                        ),
                    ));
                }
            },
        };
        let n = survey.bands.len();
        match self.calibration.unwrap_or(CalibrationChoice::Nominal) {
            CalibrationChoice::Nominal => {}
            CalibrationChoice::Leistedt23 => {
                if survey.name != "cosmos" {
                    return Err(Error::config(
                        "survey.calibration",
                        format!(
                            "leistedt23 is the COSMOS calibration; survey '{}' has nominal or \
                             uncalibrated (fitted values: calibration_file)",
                            survey.name
                        ),
                    ));
                }
            }
            CalibrationChoice::Uncalibrated => {
                survey.calibration.zero_points = vec![1.0; n];
                survey.calibration.error_floors = vec![0.0; n];
            }
        }
        if let Some(path) = &self.calibration_file {
            let file = CalibrationFile::load(path)
                .map_err(|e| Error::config("survey.calibration_file", e.to_string()))?;
            let name = survey.name.clone();
            let source = path.display().to_string();
            file.apply(&name, &survey.bands, &mut survey.calibration, &source)?;
            survey.line_offsets = file.line_offsets(&source)?;
        }
        if let Some(zp) = &self.zero_points {
            check_len("survey.zero_points", zp, n)?;
            if let Some(i) = zp.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(Error::config(
                    format!("survey.zero_points[{i}]"),
                    format!("must be a positive finite number, got {}", zp[i]),
                ));
            }
            survey.calibration.zero_points = zp.clone();
        }
        if let Some(ef) = &self.error_floors {
            check_len("survey.error_floors", ef, n)?;
            if let Some(i) = ef.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(Error::config(
                    format!("survey.error_floors[{i}]"),
                    format!("must be a non-negative finite number, got {}", ef[i]),
                ));
            }
            survey.calibration.error_floors = ef.clone();
        }
        Ok(survey)
    }
}

fn check_len(key: &str, v: &[f64], n: usize) -> Result<()> {
    if v.len() != n {
        return Err(Error::config(
            key,
            format!("expected {n} values (one per band), got {}", v.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_survey_names_the_key() {
        let spec = SurveySpec::named("sdss");
        let err = spec.build().err().unwrap().to_string();
        assert!(err.contains("survey.name") && err.contains("sdss"), "{err}");
    }

    #[test]
    fn overrides_are_validated() {
        let mut spec = SurveySpec::named("cosmos");
        spec.zero_points = Some(vec![1.0; 3]);
        let err = spec.build().err().unwrap().to_string();
        assert!(
            err.contains("survey.zero_points") && err.contains("26"),
            "{err}"
        );
        spec.zero_points = Some(vec![1.0; 26]);
        spec.error_floors = Some({
            let mut v = vec![0.0; 26];
            v[5] = -1.0;
            v
        });
        let err = spec.build().err().unwrap().to_string();
        assert!(err.contains("survey.error_floors[5]"), "{err}");
        spec.error_floors = None;
        let s = spec.build().unwrap();
        assert_eq!(s.calibration().zero_points, vec![1.0; 26]);
    }

    #[test]
    fn builtins_and_calibration_precedence() {
        let kids = SurveySpec::named("kids").build().unwrap();
        assert_eq!(kids.bands().len(), 9);
        assert_eq!(kids.calibration().zero_points, vec![1.0; 9]);
        assert_eq!(kids.calibration().error_floors[0], 0.05);
        let mut spec = SurveySpec::named("lsst");
        spec.calibration = Some(CalibrationChoice::Leistedt23);
        let e = spec.build().err().unwrap().to_string();
        assert!(
            e.contains("survey.calibration") && e.contains("lsst"),
            "{e}"
        );
        spec.calibration = Some(CalibrationChoice::Uncalibrated);
        assert_eq!(
            spec.build().unwrap().calibration().error_floors,
            vec![0.0; 6]
        );
        // COSMOS default stays Leistedt+23.
        let c = SurveySpec::named("cosmos").build().unwrap();
        assert!((c.calibration().zero_points[1] - 1.0830942).abs() < 1e-7);

        // calibration_file after the preset, explicit lists after the file.
        let dir = std::env::temp_dir().join(format!("popcosmos-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        let mut text = String::from("survey: lsst\nbands:\n");
        for (i, l) in ["u", "g", "r", "i", "z", "y"].iter().enumerate() {
            text += &format!(
                "  - {{band: {l}, zero_point: {}, error_floor: 0.07}}\n",
                1.0 + i as f64 / 10.0
            );
        }
        std::fs::write(&path, text).unwrap();
        let mut spec = SurveySpec::named("lsst");
        spec.calibration_file = Some(path.clone());
        let s = spec.build().unwrap();
        assert!((s.calibration().zero_points[5] - 1.5).abs() < 1e-12);
        assert_eq!(s.calibration().error_floors, vec![0.07; 6]);
        spec.zero_points = Some(vec![2.0; 6]);
        assert_eq!(
            spec.build().unwrap().calibration().zero_points,
            vec![2.0; 6]
        );
        // A file fitted for another survey is refused, naming the key and the file.
        let mut spec = SurveySpec::named("kids");
        spec.calibration_file = Some(path.clone());
        let e = spec.build().err().unwrap().to_string();
        assert!(
            e.contains("survey.calibration_file") && e.contains("c.yaml"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn empty_spec_explains_both_forms() {
        let e = SurveySpec::named("").build().err().unwrap().to_string();
        assert!(e.contains("name:") && e.contains("file:"), "{e}");
    }
}
