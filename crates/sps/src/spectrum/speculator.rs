//! One Speculator spectrum-emulator segment (Alsing+20).
//!
//! θ₁₄ `[n, 14]` → ln l_ν `[n, n_λ]` (rest frame, per M☉ formed; numerically f_ν at 10 pc in
//! maggies, see [`super`]):
//!
//! ```text
//! h₀   = (θ₁₄ − input_shift) / input_scale
//! h_k  = act(h_{k−1} Wₖᵀ + bₖ)     hidden layers (speculator activation, per-unit α, β)
//! pca  = (h_L W_Lᵀ + b_L) · pca_scale + pca_shift          linear output layer
//! ln l_ν = (pca @ P) · log_spectrum_scale + log_spectrum_shift
//! ```
//!
//! Tensors (`layer.{k}.weight [out, in]`, `.bias`, `.alpha`, `.beta` on hidden layers,
//! `input_shift/scale [14]`, `pca_shift/scale [n_pca]`, `pca_transform_matrix [n_pca, n_λ]`,
//! `log_spectrum_shift/scale [n_λ]`, `wavelengths [n_λ]`) and the JSON sidecar
//! ([`SpeculatorConfig`]) are those of `speculator_prospector_alpha_*.safetensors`.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::emlines::{Dense, speculator_pca};
use crate::weights::{WeightFile, parse_card, read_sidecar};
use popcosmos_api::{Error, Result};

/// Number of spectrum-emulator inputs: θ without N and without log U.
pub const N_INPUTS: usize = 14;

/// Architecture read from the JSON sidecar.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SpeculatorConfig {
    /// Layer widths, e.g. `[14, 256, 256, 256, 30]` (last = number of PCA components).
    pub architecture: Vec<usize>,
    /// Number of rest-frame wavelength pixels.
    pub n_wavelengths: usize,
    /// Input parameter names (14), for documentation and checks.
    #[serde(default)]
    pub input_parameters: Vec<String>,
}

/// One wavelength segment of the Speculator spectrum emulator.
#[derive(Debug, Clone)]
pub struct SpeculatorSegment {
    config: SpeculatorConfig,
    input_shift: Tensor,
    input_scale: Tensor,
    layers: Vec<Dense>,
    pca_shift: Tensor,
    pca_scale: Tensor,
    /// `[n_pca, n_λ]`.
    pca_basis: Tensor,
    log_spectrum_shift: Tensor,
    log_spectrum_scale: Tensor,
    wavelengths_aa: Vec<f64>,
    input_shift_host: Vec<f32>,
    input_scale_host: Vec<f32>,
}

impl SpeculatorSegment {
    /// Load from a safetensors file and its JSON sidecar (`x.safetensors` → `x.json`).
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let (text, name) = read_sidecar(path)?.ok_or_else(|| Error::Format {
            file: path.display().to_string(),
            message: "missing JSON sidecar with the architecture (expected next to the weights)"
                .into(),
        })?;
        let config = parse_card(&text, &name)?;
        Self::from_weights(&WeightFile::from_path(path, device)?, config)
    }

    /// Build from parsed tensors, checking every tensor's presence and shape.
    pub fn from_weights(file: &WeightFile, config: SpeculatorConfig) -> Result<Self> {
        let arch = &config.architecture;
        let nl = config.n_wavelengths;
        if arch.len() < 2 || arch[0] != N_INPUTS {
            return Err(Error::Format {
                file: file.name().to_string(),
                message: format!("speculator architecture {arch:?} must start with {N_INPUTS}"),
            });
        }
        let n_pca = arch[arch.len() - 1];
        let n_layers = arch.len() - 1;
        let mut layers = Vec::with_capacity(n_layers);
        for k in 0..n_layers {
            let (n_in, n_out) = (arch[k], arch[k + 1]);
            let p = format!("layer.{k}");
            let weight = file
                .get(&format!("{p}.weight"), &[n_out, n_in])?
                .t()?
                .contiguous()?;
            let bias = file.get(&format!("{p}.bias"), &[n_out])?;
            // Hidden layers only: the output layer is linear.
            let act = if k + 1 < n_layers {
                Some((
                    file.get(&format!("{p}.alpha"), &[n_out])?,
                    file.get(&format!("{p}.beta"), &[n_out])?,
                ))
            } else {
                None
            };
            layers.push(Dense { weight, bias, act });
        }
        let input_shift = file.get("input_shift", &[N_INPUTS])?;
        let input_scale = file.get("input_scale", &[N_INPUTS])?;
        let wavelengths_aa: Vec<f64> = file
            .get_host("wavelengths", &[nl])?
            .into_iter()
            .map(f64::from)
            .collect();
        if let Some(i) = (1..nl).find(|&i| wavelengths_aa[i] <= wavelengths_aa[i - 1]) {
            return Err(Error::Format {
                file: file.name().to_string(),
                message: format!("wavelengths must increase (index {i})"),
            });
        }
        Ok(Self {
            input_shift_host: input_shift.to_vec1()?,
            input_scale_host: input_scale.to_vec1()?,
            input_shift,
            input_scale,
            layers,
            pca_shift: file.get("pca_shift", &[n_pca])?,
            pca_scale: file.get("pca_scale", &[n_pca])?,
            pca_basis: file.get("pca_transform_matrix", &[n_pca, nl])?,
            log_spectrum_shift: file.get("log_spectrum_shift", &[nl])?,
            log_spectrum_scale: file.get("log_spectrum_scale", &[nl])?,
            wavelengths_aa,
            config,
        })
    }

    /// The configuration read from the segment's JSON sidecar.
    pub fn config(&self) -> &SpeculatorConfig {
        &self.config
    }

    /// Rest-frame wavelengths, Å (increasing).
    pub fn wavelengths_aa(&self) -> &[f64] {
        &self.wavelengths_aa
    }

    /// Input standardisation (shift, scale), 14 each. The Prospector-α files store
    /// (centre, range/6) of the training box, so `shift ± 3·scale` are its bounds.
    pub fn input_standardisation(&self) -> (&[f32], &[f32]) {
        (&self.input_shift_host, &self.input_scale_host)
    }

    /// Standardised PCA coefficients → PCA coefficients, `[n, n_pca]`.
    pub fn pca_coefficients(&self, theta14: &Tensor) -> Result<Tensor> {
        match theta14.dims() {
            [_, N_INPUTS] => {}
            d => {
                let expected = format!("[n, {N_INPUTS}]");
                return Err(Error::shape("spectrum emulator input", expected, d));
            }
        }
        speculator_pca(
            theta14,
            (&self.input_shift, &self.input_scale),
            &self.layers,
            (&self.pca_shift, &self.pca_scale),
        )
    }

    /// ln l_ν (maggies at 10 pc per M☉ formed, rest frame), θ₁₄ `[n, 14]` → `[n, n_λ]` f32.
    pub fn ln_lnu(&self, theta14: &Tensor) -> Result<Tensor> {
        Ok(self
            .pca_coefficients(theta14)?
            .matmul(&self.pca_basis)?
            .broadcast_mul(&self.log_spectrum_scale)?
            .broadcast_add(&self.log_spectrum_shift)?)
    }
}
