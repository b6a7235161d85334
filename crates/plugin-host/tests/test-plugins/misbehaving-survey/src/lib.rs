//! A survey plugin that misbehaves as its configuration asks: `negative-zero-point`,
//! `duplicate-band`, `no-bands`, `nan-line`, `panic-bands`, `decreasing-filter`,
//! `partial-filters`; anything else is a valid two-band survey with one emission line and
//! filter curves (`long-filter`: band a's curve has 5000 points).

use popcosmos_plugin_abi::{BandDef, FilterDef, LineDef, SurveyPlugin, declare_survey_plugin};

pub struct Misbehaving {
    mode: String,
}

impl SurveyPlugin for Misbehaving {
    fn create(config: &str) -> Result<Self, String> {
        Ok(Self {
            mode: config.to_string(),
        })
    }

    fn name(&self) -> String {
        "misbehaving".into()
    }

    fn bands(&self) -> Vec<BandDef> {
        let band = |name: &str, zp: f64| BandDef {
            name: name.into(),
            label: name.into(),
            flux_softening_nmgy: 0.1,
            zero_point: zp,
            error_floor: 0.01,
        };
        match self.mode.as_str() {
            "negative-zero-point" => vec![band("a", 1.0), band("b", -1.0)],
            "duplicate-band" => vec![band("a", 1.0), band("a", 1.0)],
            "no-bands" => vec![],
            "panic-bands" => panic!("bands() panics on purpose"),
            _ => vec![band("a", 1.0), band("b", 1.1)],
        }
    }

    fn emission_lines(&self) -> Vec<LineDef> {
        let x = if self.mode == "nan-line" {
            f64::NAN
        } else {
            0.5
        };
        vec![LineDef {
            offset: x,
            ln_scatter: -2.0,
        }]
    }

    fn filter_curve(&self, band: usize) -> Option<FilterDef> {
        let curve = |wl: Vec<f64>, tr: Vec<f64>| {
            Some(FilterDef {
                wavelength_aa: wl,
                transmission: tr,
            })
        };
        match (self.mode.as_str(), band) {
            ("long-filter", 0) => curve(
                (0..5000).map(|k| 3000.0 + k as f64).collect(),
                (0..5000).map(|k| (k % 10) as f64).collect(),
            ),
            (_, 0) => curve(vec![3000.0, 4000.0, 5000.0], vec![0.0, 1.0, 0.5]),
            ("decreasing-filter", _) => curve(vec![7000.0, 6000.0], vec![1.0, 1.0]),
            ("partial-filters", _) => None,
            _ => curve(vec![6000.0, 7000.0], vec![1.0, 1.0]),
        }
    }
}

declare_survey_plugin!(Misbehaving);
