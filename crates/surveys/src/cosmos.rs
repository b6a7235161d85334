//! The COSMOS2020 26-band survey of pop-cosmos.

use popcosmos_api::{Band, Calibration, Result, Survey};
use serde::Deserialize;

use crate::CalibrationChoice;

/// `pop_cosmos.constants` as shipped with the reference (MIT; see NOTICE).
pub const CONSTANTS_JSON: &str = include_str!("../../../assets/models/pop_cosmos_constants.json");

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct Constants {
    COSMOS_FILTERS: Vec<String>,
    COSMOS_FLUX_SOFTENING_nanomaggies: Vec<f64>,
    ZEROPOINTS_LEISTEDT23: Vec<f64>,
    ERRORFLOOR_LEISTEDT23: Vec<f64>,
}

/// Short labels in `COSMOS_FILTERS` order.
pub const COSMOS_LABELS: [&str; 26] = [
    "u", "g", "r", "i", "z", "y", "Y", "J", "H", "Ks", "IB427", "IB464", "IA484", "IB505", "IA527",
    "IB574", "IA624", "IA679", "IB709", "IA738", "IA767", "IB827", "NB711", "NB816", "Ch1", "Ch2",
];

/// The COSMOS survey.
#[derive(Debug, Clone)]
pub struct Cosmos {
    /// The 26 bands in `COSMOS_FILTERS` order, with their asinh softenings (nmgy).
    pub bands: Vec<Band>,
    /// Zero points and error floors of the chosen [`CalibrationChoice`].
    pub calibration: Calibration,
}

impl Cosmos {
    /// The COSMOS survey with the Leistedt+23 calibration (`Leistedt23` or `Nominal`), or
    /// unit zero points and no error floors (`Uncalibrated`).
    pub fn new(choice: CalibrationChoice) -> Self {
        let c: Constants =
            serde_json::from_str(CONSTANTS_JSON).expect("bundled constants are valid JSON");
        let bands = c
            .COSMOS_FILTERS
            .iter()
            .zip(&c.COSMOS_FLUX_SOFTENING_nanomaggies)
            .zip(COSMOS_LABELS)
            .map(|((name, b), label)| Band {
                name: name.clone(),
                label: label.to_string(),
                flux_softening_nmgy: *b,
            })
            .collect::<Vec<_>>();
        let n = bands.len();
        let calibration = match choice {
            CalibrationChoice::Leistedt23 | CalibrationChoice::Nominal => Calibration {
                zero_points: c.ZEROPOINTS_LEISTEDT23,
                error_floors: c.ERRORFLOOR_LEISTEDT23,
            },
            CalibrationChoice::Uncalibrated => Calibration {
                zero_points: vec![1.0; n],
                error_floors: vec![0.0; n],
            },
        };
        Self { bands, calibration }
    }

    /// As a [`crate::DefinedSurvey`] with the bundled filter curves (no column map: COSMOS
    /// catalogues name their columns by emulator band, `flux_{band}`).
    pub fn defined(self) -> Result<crate::DefinedSurvey> {
        let filters = self
            .bands
            .iter()
            .map(|b| crate::filters::cosmos_filter(&b.name))
            .collect::<Result<Vec<_>>>()?;
        Ok(crate::DefinedSurvey {
            name: "cosmos".into(),
            bands: self.bands,
            filters,
            calibration: self.calibration,
            columns: None,
            emission_lines: Vec::new(),
            line_offsets: Vec::new(),
        })
    }
}

impl Survey for Cosmos {
    fn name(&self) -> &str {
        "cosmos"
    }
    fn bands(&self) -> &[Band] {
        &self.bands
    }
    fn calibration(&self) -> &Calibration {
        &self.calibration
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosmos_matches_spec_tables() {
        let s = Cosmos::new(CalibrationChoice::Leistedt23);
        assert_eq!(s.bands.len(), 26);
        assert_eq!(s.bands[0].name, "u_megaprime_sagem");
        assert_eq!(s.bands[24].name, "irac1_cosmos");
        assert_eq!(s.bands[24].label, "Ch1");
        // Leistedt+23 calibration table (to the printed precision).
        assert!((s.calibration.zero_points[1] - 1.0830942).abs() < 1e-7);
        assert!((s.calibration.zero_points[17] - 1.1472832).abs() < 1e-7);
        assert!((s.calibration.error_floors[0] - 0.1).abs() < 1e-7);
        assert!((s.bands[3].flux_softening_nmgy - 0.00087932684).abs() < 1e-12);
        // Every band has a bundled filter curve.
        for b in &s.bands {
            let f = crate::filters::cosmos_filter(&b.name).unwrap();
            assert!(f.wavelength_aa.len() > 10, "{}", b.name);
        }
    }
}
