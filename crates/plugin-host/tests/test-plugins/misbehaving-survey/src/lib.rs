//! A survey plugin that misbehaves as its configuration asks: `negative-zero-point`,
//! `duplicate-band`, `no-bands`, `nan-line`, `panic-bands`; anything else is a valid
//! two-band survey with one emission line.

use popcosmos_plugin_abi::{BandDef, LineDef, SurveyPlugin, declare_survey_plugin};

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
        let x = if self.mode == "nan-line" { f64::NAN } else { 0.5 };
        vec![LineDef {
            offset: x,
            ln_scatter: -2.0,
        }]
    }
}

declare_survey_plugin!(Misbehaving);
