//! Surviving-stellar-mass-fraction emulator.
//!
//! `Mfrac = tanh(L2(tanh(L1(tanh(L0((θ − shift)/scale))))))` — tanh after every layer,
//! **including the output** — on the raw θ `[n, 16]` (N first, dust2 linear, *not* √dust2).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module};

use crate::weights::WeightFile;
use popcosmos_api::{Error, N_PARAMS, Result};

/// Bundled weights (`assets/models/stellar_mass_emulator.safetensors`).
pub const BUILTIN_WEIGHTS: &[u8] =
    include_bytes!("../../../assets/models/stellar_mass_emulator.safetensors");
const BUILTIN_NAME: &str = "stellar_mass_emulator.safetensors";
const WIDTHS: [usize; 4] = [N_PARAMS, 128, 128, 1];

/// The stellar-mass emulator.
#[derive(Debug, Clone)]
pub struct StellarMassEmulator {
    input_shift: Tensor,
    input_scale: Tensor,
    layers: Vec<Linear>,
}

impl StellarMassEmulator {
    /// The bundled weights ([`BUILTIN_WEIGHTS`]).
    pub fn builtin(device: &Device) -> Result<Self> {
        Self::from_weights(&WeightFile::from_bytes(
            BUILTIN_WEIGHTS,
            BUILTIN_NAME,
            device,
        )?)
    }

    /// Weights from a safetensors file.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::from_weights(&WeightFile::from_path(path, device)?)
    }

    /// Build from parsed tensors, validating presence and shapes.
    pub fn from_weights(file: &WeightFile) -> Result<Self> {
        let layers = (0..3)
            .map(|k| {
                let w = file.get(&format!("layer.{k}.weight"), &[WIDTHS[k + 1], WIDTHS[k]])?;
                let b = file.get(&format!("layer.{k}.bias"), &[WIDTHS[k + 1]])?;
                Ok(Linear::new(w, Some(b)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            input_shift: file.get("input_shift", &[N_PARAMS])?,
            input_scale: file.get("input_scale", &[N_PARAMS])?,
            layers,
        })
    }

    /// Surviving mass fraction M_remaining / M_formed, θ `[n, 16]` → `[n]`.
    pub fn mass_fraction(&self, theta: &Tensor) -> Result<Tensor> {
        let n = match theta.dims() {
            [n, N_PARAMS] => *n,
            d => return Err(Error::shape("theta", format!("[n, {N_PARAMS}]"), d)),
        };
        let mut h = theta
            .to_dtype(DType::F32)?
            .broadcast_sub(&self.input_shift)?
            .broadcast_div(&self.input_scale)?;
        for layer in &self.layers {
            h = layer.forward(&h)?.tanh()?;
        }
        Ok(h.reshape(n)?)
    }
}
