//! Example popcosmos survey plugin: the SDSS *ugriz* imaging survey.
//!
//! * Band names `sdss_u … sdss_z`, labels `u … z`.
//! * Asinh softening b of the SDSS magnitude system (Lupton, Gunn & Szalay 1999; SDSS DR7
//!   documentation): b/f₀ = 1.4, 0.9, 1.2, 1.8, 7.4 × 10⁻¹⁰, i.e. 0.14, 0.09, 0.12, 0.18 and
//!   0.74 nanomaggies.
//! * Zero points from the known offsets of the SDSS system from AB (u_AB = u_SDSS − 0.04,
//!   z_AB = z_SDSS + 0.02): a source of AB flux f is catalogued with flux Z·f,
//!   Z_u = 10^(−0.4·0.04), Z_z = 10^(+0.4·0.02), Z = 1 in g, r, i.
//! * Fractional error floors from the uber-calibration accuracy (Padmanabhan et al. 2008):
//!   2 % in u, 1 % in g, r, i, z.
//! * No emission-line calibration (no filter-specific line terms are known for SDSS).
//!
//! Configuration (`survey: {plugin: …, plugin_config: "calibration=uncalibrated"}`):
//! `calibration=sdss` (default) or `calibration=uncalibrated` (Z = 1, no floors).
//!
//! Build: `cargo build --release --manifest-path plugins/example-survey/Cargo.toml`
//! → `plugins/example-survey/target/release/libexample_survey.so`.

use popcosmos_plugin_abi::{BandDef, SurveyPlugin, declare_survey_plugin};

/// (filter name, label, softening nmgy, AB offset m_SDSS − m_AB mag, error floor)
const SDSS: [(&str, &str, f64, f64, f64); 5] = [
    ("sdss_u", "u", 0.14, 0.04, 0.02),
    ("sdss_g", "g", 0.09, 0.0, 0.01),
    ("sdss_r", "r", 0.12, 0.0, 0.01),
    ("sdss_i", "i", 0.18, 0.0, 0.01),
    ("sdss_z", "z", 0.74, -0.02, 0.01),
];

pub struct Sdss {
    calibrated: bool,
}

impl SurveyPlugin for Sdss {
    fn create(config: &str) -> Result<Self, String> {
        let mut calibrated = true;
        for item in config
            .split([';', ',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match item.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("calibration", "sdss")) => calibrated = true,
                Some(("calibration", "uncalibrated")) => calibrated = false,
                Some(("calibration", other)) => {
                    return Err(format!(
                        "calibration: expected 'sdss' or 'uncalibrated', got '{other}'"
                    ));
                }
                _ => {
                    return Err(format!(
                        "unknown configuration item '{item}' (known: calibration=sdss|uncalibrated)"
                    ));
                }
            }
        }
        Ok(Self { calibrated })
    }

    fn name(&self) -> String {
        "sdss".into()
    }

    fn bands(&self) -> Vec<BandDef> {
        SDSS.iter()
            .map(|&(name, label, b, offset, floor)| BandDef {
                name: name.into(),
                label: label.into(),
                flux_softening_nmgy: b,
                // m_SDSS = m_AB + offset ⇒ f_SDSS = 10^(−0.4·offset) f_AB.
                zero_point: if self.calibrated {
                    10f64.powf(-0.4 * offset)
                } else {
                    1.0
                },
                error_floor: if self.calibrated { floor } else { 0.0 },
            })
            .collect()
    }
}

declare_survey_plugin!(Sdss);
