//! Models bundled in the binary (`assets/models/`), addressed as `builtin:NAME`.

use crate::error::{ModelError, Result};

/// One bundled model: its card and its weights, both compiled in.
#[derive(Debug)]
pub struct BuiltinModel {
    /// The `NAME` of `builtin:NAME` (the file stem under `assets/models/`).
    pub name: &'static str,
    /// Card file name under `assets/models/` (used in error messages).
    pub card_file: &'static str,
    /// The card's YAML text.
    pub card_text: &'static str,
    /// The safetensors bytes the card pins.
    pub bytes: &'static [u8],
}

macro_rules! bundled {
    ($name:literal) => {
        BuiltinModel {
            name: $name,
            card_file: concat!("assets/models/", $name, ".card.yaml"),
            card_text: include_str!(concat!("../../../assets/models/", $name, ".card.yaml")),
            bytes: include_bytes!(concat!("../../../assets/models/", $name, ".safetensors")),
        }
    };
}

/// Every bundled model, the default photulator first.
pub static BUILTIN: &[BuiltinModel] = &[
    bundled!("photulator_cosmos26"),
    bundled!("photulator_kids9"),
    bundled!("photulator_kids9_v2"),
    bundled!("photulator_lsst6"),
    bundled!("emline_emulator"),
    bundled!("stellar_mass_emulator"),
    bundled!("noise_model"),
    bundled!("popcosmos_prior_diffusion"),
    bundled!("popcosmos_prior_consistency"),
    bundled!("popcosmos_prior_flow"),
    bundled!("population_kids_kv450"),
    bundled!("population_kids_kv450_specz"),
    bundled!("population_kids_kv450_specz_r2"),
    bundled!("population_cosmos2020_zgt2p5"),
];

/// The bundled model called `name`.
pub fn builtin(name: &str) -> Result<&'static BuiltinModel> {
    BUILTIN
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| ModelError::UnknownBuiltin {
            name: name.to_string(),
            available: BUILTIN
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}
