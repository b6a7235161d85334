//! # popcosmos-surveys — photometric surveys: bands, filter curves, calibration
//!
//! A survey fixes the band order of every flux vector, the asinh softening per band and
//! the calibration of the data model (spec §3.1): multiplicative zero points, fractional
//! error floors and the emission-line offsets / scatters.
//!
//! Built in: [`cosmos`] — the 26 COSMOS2020 bands of pop-cosmos in `COSMOS_FILTERS` order,
//! with the Leistedt+23 calibration shipped in `pop_cosmos.constants` and the filter
//! curves bundled from the reference (see NOTICE). Manifests select a survey with
//! [`SurveySpec`].

pub mod cosmos;
pub mod filters;

pub use cosmos::Cosmos;
pub use filters::FilterCurve;

use popcosmos_api::{Error, Result, Survey};
use serde::{Deserialize, Serialize};

/// Which calibration to use for a built-in survey.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibrationChoice {
    /// Leistedt et al. (2023) zero points, error floors and emission-line terms.
    #[default]
    Leistedt23,
    /// Zero points 1, no error floor, Leistedt+23 emission-line terms.
    Uncalibrated,
}

/// Survey section of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurveySpec {
    /// Survey name (`cosmos`).
    pub name: String,
    /// Calibration preset.
    #[serde(default)]
    pub calibration: CalibrationChoice,
    /// Explicit zero points overriding the preset (one per band, survey order).
    #[serde(default)]
    pub zero_points: Option<Vec<f64>>,
    /// Explicit fractional error floors overriding the preset.
    #[serde(default)]
    pub error_floors: Option<Vec<f64>>,
}

impl SurveySpec {
    /// Build the survey, validating overrides (errors name the manifest key).
    pub fn build(&self) -> Result<Box<dyn Survey>> {
        let mut survey = match self.name.to_ascii_lowercase().as_str() {
            "cosmos" | "cosmos2020" => Cosmos::new(self.calibration),
            other => {
                return Err(Error::Invalid(format!(
                    "survey.name: unknown survey '{other}' (known surveys: cosmos)"
                )));
            }
        };
        let n = survey.bands.len();
        if let Some(zp) = &self.zero_points {
            check_len("survey.zero_points", zp, n)?;
            if let Some(i) = zp.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(Error::Invalid(format!(
                    "survey.zero_points[{i}]: must be a positive finite number, got {}",
                    zp[i]
                )));
            }
            survey.calibration.zero_points = zp.clone();
        }
        if let Some(ef) = &self.error_floors {
            check_len("survey.error_floors", ef, n)?;
            if let Some(i) = ef.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(Error::Invalid(format!(
                    "survey.error_floors[{i}]: must be a non-negative finite number, got {}",
                    ef[i]
                )));
            }
            survey.calibration.error_floors = ef.clone();
        }
        Ok(Box::new(survey))
    }
}

fn check_len(key: &str, v: &[f64], n: usize) -> Result<()> {
    if v.len() != n {
        return Err(Error::Invalid(format!(
            "{key}: expected {n} values (one per band), got {}",
            v.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_survey_names_the_key() {
        let spec = SurveySpec {
            name: "sdss".into(),
            calibration: Default::default(),
            zero_points: None,
            error_floors: None,
        };
        let err = spec.build().err().unwrap().to_string();
        assert!(err.contains("survey.name") && err.contains("sdss"), "{err}");
    }

    #[test]
    fn overrides_are_validated() {
        let mut spec = SurveySpec {
            name: "cosmos".into(),
            calibration: Default::default(),
            zero_points: Some(vec![1.0; 3]),
            error_floors: None,
        };
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
}
