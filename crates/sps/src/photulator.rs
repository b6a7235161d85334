//! The COSMOS "Photulator" stack: 26 per-band speculator networks θ₁₅ → absolute magnitude.
//!
//! All bands are evaluated at once: the per-band weights are stacked into `[bands, in, out]`
//! tensors, so each layer is one batched matmul `[bands, n, in] @ [bands, in, out]` followed by
//! the fused bias + activation op ([`crate::activation`]). The activation is applied after
//! every layer **including the 1-unit output layer**.
//!
//! ```no_run
//! # fn main() -> popcosmos_api::Result<()> {
//! use popcosmos_sps::Photulator;
//! use popcosmos_sps::photulator::theta_to_photulator_input;
//! let device = candle_core::Device::Cpu;
//! let phot = Photulator::builtin(&device)?;
//! let theta = candle_core::Tensor::zeros((4, 16), candle_core::DType::F32, &device)?;
//! let absmag = phot.absolute_magnitudes(&theta_to_photulator_input(&theta)?)?; // [4, 26]
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor};
use serde::Deserialize;

use crate::activation::speculator_activation;
use crate::fused_cpu::{FusedPhotulatorOp, HostLayer, PackedPhotulator};
use crate::weights::{WeightFile, parse_card, read_sidecar};
use popcosmos_api::params::IDX_DUST2;
use popcosmos_api::{Error, Result};

/// Bundled weights (`assets/models/photulator_cosmos26.safetensors`).
pub const BUILTIN_WEIGHTS: &[u8] =
    include_bytes!("../../../assets/models/photulator_cosmos26.safetensors");
/// Bundled model card.
pub const BUILTIN_CARD: &str = include_str!("../../../assets/models/photulator_cosmos26.json");
const BUILTIN_NAME: &str = "photulator_cosmos26.safetensors";

/// Number of photulator inputs (θ without N, dust2 → √dust2).
pub const N_INPUTS: usize = 15;

/// 2.5 / ln 10 (Pogson), as in `speculator.flux2asinhmag`.
const POGSON: f64 = 1.085_736_204_758_129_4;

/// Architecture and band list, read from the model card (JSON sidecar).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PhotulatorConfig {
    /// Band (filter) names in output order.
    pub bands: Vec<String>,
    /// Layer widths, `[15, 128, 128, 128, 128, 1]`.
    #[serde(default = "default_architecture")]
    pub architecture: Vec<usize>,
}

fn default_architecture() -> Vec<usize> {
    vec![N_INPUTS, 128, 128, 128, 128, 1]
}

impl PhotulatorConfig {
    /// The card of the bundled COSMOS model.
    pub fn builtin() -> Result<Self> {
        parse_card(BUILTIN_CARD, "photulator_cosmos26.json")
    }
}

/// One layer of all bands: `weight` `[bands, in, out]` (already transposed from the file's
/// `[out, in]`), `bias`/`alpha`/`beta` `[bands, out]`.
#[derive(Debug, Clone)]
struct StackedLayer {
    weight: Tensor,
    bias: Tensor,
    alpha: Tensor,
    beta: Tensor,
}

/// Intermediates of a forward pass, for debugging against the reference (`debug.band*`).
#[derive(Debug, Clone)]
pub struct PhotulatorTrace {
    /// Standardised input `[bands, n, 15]`.
    pub h_in: Tensor,
    /// Pre-activation `x W + b` per layer, `[bands, n, out]`.
    pub pre: Vec<Tensor>,
    /// Post-activation per layer, `[bands, n, out]`.
    pub post: Vec<Tensor>,
}

/// The stacked photulator networks.
#[derive(Debug, Clone)]
pub struct Photulator {
    config: PhotulatorConfig,
    device: Device,
    /// `[15]` if all bands share the standardisation (they do for COSMOS), else `[bands, 1, 15]`.
    input_shift: Tensor,
    input_scale: Tensor,
    layers: Vec<StackedLayer>,
    output_shift: Tensor,
    output_scale: Tensor,
    flux_softening_nmgy: Vec<f32>,
    max_rows_per_pass: Option<usize>,
    /// Weights packed for the fused CPU kernel (x86-64 AVX2+FMA CPUs only).
    packed: Option<Arc<PackedPhotulator>>,
    use_fused: bool,
}

impl Photulator {
    /// Load the bundled 26-band COSMOS photulator.
    pub fn builtin(device: &Device) -> Result<Self> {
        let file = WeightFile::from_bytes(BUILTIN_WEIGHTS, BUILTIN_NAME, device)?;
        Self::from_weights(&file, PhotulatorConfig::builtin()?, device)
    }

    /// Load from a safetensors file; the model card next to it (`.json`) supplies the band
    /// list, otherwise the bundled COSMOS card is assumed.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let config = match read_sidecar(path)? {
            Some((text, name)) => parse_card(&text, &name)?,
            None => PhotulatorConfig::builtin()?,
        };
        let file = WeightFile::from_path(path, device)?;
        Self::from_weights(&file, config, device)
    }

    /// Build from parsed tensors, validating every tensor's presence and shape.
    pub fn from_weights(
        file: &WeightFile,
        config: PhotulatorConfig,
        device: &Device,
    ) -> Result<Self> {
        let nb = config.bands.len();
        let arch = &config.architecture;
        if arch.len() < 2 || arch[0] != N_INPUTS || arch[arch.len() - 1] != 1 {
            return Err(Error::Format {
                file: file.name().to_string(),
                message: format!(
                    "photulator architecture {arch:?} must map {N_INPUTS} inputs to 1 output"
                ),
            });
        }
        // Stacked per-band scalars (a wrong band count shows up here first).
        let output_shift = file.get("output_shift", &[nb])?;
        let output_scale = file.get("output_scale", &[nb])?;
        let f_b = file.get_host("f_b", &[nb])?;
        let shared_shift = file.get("input_shift", &[N_INPUTS])?;
        let shared_scale = file.get("input_scale", &[N_INPUTS])?;
        let shared_shift_host = shared_shift.to_vec1::<f32>()?;
        let shared_scale_host = shared_scale.to_vec1::<f32>()?;

        let mut band_shift = Vec::with_capacity(nb);
        let mut band_scale = Vec::with_capacity(nb);
        let mut all_shared = true;
        for b in 0..nb {
            let p = format!("band.{b}");
            let sh = file.get(&format!("{p}.input_shift"), &[N_INPUTS])?;
            let sc = file.get(&format!("{p}.input_scale"), &[N_INPUTS])?;
            all_shared &= sh.to_vec1::<f32>()? == shared_shift_host
                && sc.to_vec1::<f32>()? == shared_scale_host;
            band_shift.push(sh);
            band_scale.push(sc);
            for name in ["output_shift", "output_scale", "f_b"] {
                file.get(&format!("{p}.{name}"), &[1])?;
            }
        }
        let (input_shift, input_scale) = if all_shared {
            (shared_shift, shared_scale)
        } else {
            (
                Tensor::stack(&band_shift, 0)?.unsqueeze(1)?,
                Tensor::stack(&band_scale, 0)?.unsqueeze(1)?,
            )
        };

        let mut layers = Vec::with_capacity(arch.len() - 1);
        let mut host_layers = Vec::with_capacity(arch.len() - 1);
        for k in 0..arch.len() - 1 {
            let (n_in, n_out) = (arch[k], arch[k + 1]);
            let mut w = Vec::with_capacity(nb);
            let mut bias = Vec::with_capacity(nb);
            let mut alpha = Vec::with_capacity(nb);
            let mut beta = Vec::with_capacity(nb);
            for b in 0..nb {
                let p = format!("band.{b}.layer.{k}");
                // File layout is [out, in] (torch Linear); the batched matmul wants [in, out].
                w.push(file.get(&format!("{p}.weight"), &[n_out, n_in])?.t()?);
                bias.push(file.get(&format!("{p}.bias"), &[n_out])?);
                alpha.push(file.get(&format!("{p}.alpha"), &[n_out])?);
                beta.push(file.get(&format!("{p}.beta"), &[n_out])?);
            }
            let layer = StackedLayer {
                weight: Tensor::stack(&w, 0)?.contiguous()?,
                bias: Tensor::stack(&bias, 0)?,
                alpha: Tensor::stack(&alpha, 0)?,
                beta: Tensor::stack(&beta, 0)?,
            };
            if device.is_cpu() && all_shared {
                let host =
                    |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
                host_layers.push(HostLayer {
                    n_in,
                    n_out,
                    weight: host(&layer.weight)?,
                    bias: host(&layer.bias)?,
                    alpha: host(&layer.alpha)?,
                    beta: host(&layer.beta)?,
                });
            }
            layers.push(layer);
        }
        let packed = if host_layers.len() == layers.len() {
            PackedPhotulator::new(
                nb,
                shared_shift_host.clone(),
                shared_scale_host.clone(),
                &host_layers,
                output_shift.to_vec1::<f32>()?,
                output_scale.to_vec1::<f32>()?,
            )
            .map(Arc::new)
        } else {
            None
        };
        // Tensor path on CPU: keeping each pass's [bands, rows, 128] activations (~13 MB at
        // 1024 rows) inside the last-level cache avoids a memory round trip per layer.
        let max_rows_per_pass = device.is_cpu().then_some(1024);
        Ok(Self {
            config,
            device: device.clone(),
            input_shift,
            input_scale,
            layers,
            output_shift,
            output_scale,
            flux_softening_nmgy: f_b,
            max_rows_per_pass,
            packed,
            use_fused: true,
        })
    }

    /// Band names in output order.
    pub fn band_names(&self) -> &[String] {
        &self.config.bands
    }

    /// Number of bands (networks).
    pub fn n_bands(&self) -> usize {
        self.config.bands.len()
    }

    /// The configuration read from the JSON sidecar.
    pub fn config(&self) -> &PhotulatorConfig {
        &self.config
    }

    /// The device the stacked weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Asinh-magnitude softening f_b per band, nanomaggies.
    pub fn flux_softening_nmgy(&self) -> &[f32] {
        &self.flux_softening_nmgy
    }

    /// Largest number of rows evaluated in one pass (`None` = no limit). Larger batches are
    /// split into passes of this size on the CPU, where it keeps activations cache-resident.
    pub fn max_rows_per_pass(&self) -> Option<usize> {
        self.max_rows_per_pass
    }

    /// Override the pass size (`None` evaluates any batch in one pass).
    pub fn set_max_rows_per_pass(&mut self, rows: Option<usize>) {
        self.max_rows_per_pass = rows.filter(|&r| r > 0);
    }

    /// Whether forward passes on this device can use the fused whole-network CPU kernel
    /// (x86-64 with AVX2 and FMA).
    pub fn has_fused_kernel(&self) -> bool {
        self.packed.is_some()
    }

    /// Enable or disable the fused CPU kernel (on by default where available). Disabled,
    /// every pass goes through the batched candle tensor path.
    pub fn set_fused_kernel(&mut self, enabled: bool) {
        self.use_fused = enabled;
    }

    fn check_input(&self, theta15: &Tensor) -> Result<usize> {
        match theta15.dims() {
            [n, N_INPUTS] => Ok(*n),
            d => Err(Error::shape(
                "photulator input",
                format!("[n, {N_INPUTS}]"),
                d,
            )),
        }
    }

    /// Standardised input `[bands, n, 15]` (broadcast view when the bands share it).
    fn standardise(&self, theta15: &Tensor, n: usize) -> Result<Tensor> {
        let x = theta15.to_dtype(DType::F32)?;
        let h = x
            .broadcast_sub(&self.input_shift)?
            .broadcast_div(&self.input_scale)?;
        Ok(if h.rank() == 2 {
            h.unsqueeze(0)?
                .broadcast_as((self.n_bands(), n, N_INPUTS))?
        } else {
            h
        })
    }

    /// Absolute AB magnitudes per 1 M☉ formed at 10 pc, θ₁₅ `[n, 15]` → `[n, bands]`.
    ///
    /// On an AVX2 CPU without autograd tracking this runs the fused kernel; otherwise (CUDA,
    /// gradients, other CPUs) the batched tensor path: one `[bands, n, in] @ [bands, in, out]`
    /// matmul plus the fused activation op per layer.
    pub fn absolute_magnitudes(&self, theta15: &Tensor) -> Result<Tensor> {
        let n = self.check_input(theta15)?;
        if let Some(packed) = &self.packed
            && self.use_fused
            && theta15.device().is_cpu()
            && !theta15.track_op()
        {
            let x = theta15.to_dtype(DType::F32)?.contiguous()?;
            return Ok(x.apply_op1_no_bwd(&FusedPhotulatorOp(packed))?);
        }
        match self.max_rows_per_pass {
            Some(rows) if n > rows => {
                let parts = (0..n)
                    .step_by(rows)
                    .map(|start| {
                        self.absmag_pass(&theta15.narrow(0, start, rows.min(n - start))?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(&parts, 0)?)
            }
            _ => self.absmag_pass(theta15),
        }
    }

    fn absmag_pass(&self, theta15: &Tensor) -> Result<Tensor> {
        let n = theta15.dim(0)?;
        let mut h = self.standardise(theta15, n)?;
        for layer in &self.layers {
            let pre = h.matmul(&layer.weight)?;
            h = speculator_activation(&pre, &layer.alpha, &layer.beta, Some(&layer.bias))?;
        }
        // [bands, n, 1] → [n, bands], then de-standardise.
        let out = h.squeeze(2)?.t()?;
        Ok(out
            .broadcast_mul(&self.output_scale)?
            .broadcast_add(&self.output_shift)?
            .contiguous()?)
    }

    /// Every intermediate of the forward pass (slow; for tests and debugging).
    pub fn trace(&self, theta15: &Tensor) -> Result<PhotulatorTrace> {
        let n = self.check_input(theta15)?;
        let h_in = self.standardise(theta15, n)?.contiguous()?;
        let (mut pre, mut post) = (Vec::new(), Vec::new());
        let mut h = h_in.clone();
        for layer in &self.layers {
            let p = h
                .matmul(&layer.weight)?
                .broadcast_add(&layer.bias.unsqueeze(1)?)?;
            h = speculator_activation(&p, &layer.alpha, &layer.beta, None)?;
            pre.push(p);
            post.push(h.clone());
        }
        Ok(PhotulatorTrace { h_in, pre, post })
    }

    /// Apparent AB magnitudes m = M(θ₁₅) + N; `n_param` is `[n]` or `[n, 1]`.
    pub fn magnitudes(&self, theta15: &Tensor, n_param: &Tensor) -> Result<Tensor> {
        let absmag = self.absolute_magnitudes(theta15)?;
        let n_col = n_param.to_dtype(DType::F32)?.reshape((absmag.dim(0)?, 1))?;
        Ok(absmag.broadcast_add(&n_col)?)
    }

    /// Fluxes in nanomaggies, 10^((22.5 − m)/2.5) (as `CatalogueGenerator.forward`).
    pub fn fluxes_nmgy(&self, theta15: &Tensor, n_param: &Tensor) -> Result<Tensor> {
        mag_to_flux_nmgy(&self.magnitudes(theta15, n_param)?)
    }

    /// Continuum(+lines) fluxes in nanomaggies straight from physical θ `[n, 16]`.
    pub fn fluxes_from_theta(&self, theta: &Tensor) -> Result<Tensor> {
        let n_param = theta.narrow(D::Minus1, 0, 1)?;
        self.fluxes_nmgy(&theta_to_photulator_input(theta)?, &n_param)
    }
}

/// Physical θ `[..., 16]` (N first, dust2 linear) → photulator input `[..., 15]`: drop N and
/// replace dust2 by √dust2.
pub fn theta_to_photulator_input(theta: &Tensor) -> Result<Tensor> {
    let theta = theta.to_dtype(DType::F32)?;
    let d = theta.dim(D::Minus1)?;
    if d != popcosmos_api::N_PARAMS {
        return Err(Error::shape("theta", "[..., 16]", theta.dims()));
    }
    Ok(Tensor::cat(
        &[
            theta.narrow(D::Minus1, 1, IDX_DUST2 - 1)?,
            theta.narrow(D::Minus1, IDX_DUST2, 1)?.sqrt()?,
            theta.narrow(D::Minus1, IDX_DUST2 + 1, d - IDX_DUST2 - 1)?,
        ],
        D::Minus1,
    )?)
}

/// Physical θ `[..., 16]` → θ^power (dust2 → √dust2, N kept first), the emission-line emulator
/// input of the reference code path.
pub fn theta_to_power(theta: &Tensor) -> Result<Tensor> {
    let theta = theta.to_dtype(DType::F32)?;
    let d = theta.dim(D::Minus1)?;
    Ok(Tensor::cat(
        &[
            theta.narrow(D::Minus1, 0, IDX_DUST2)?,
            theta.narrow(D::Minus1, IDX_DUST2, 1)?.sqrt()?,
            theta.narrow(D::Minus1, IDX_DUST2 + 1, d - IDX_DUST2 - 1)?,
        ],
        D::Minus1,
    )?)
}

/// AB magnitude → nanomaggies, 10^((22.5 − m)/2.5).
pub fn mag_to_flux_nmgy(mag: &Tensor) -> Result<Tensor> {
    let k = 0.4 * std::f64::consts::LN_10;
    Ok(mag.affine(-k, 22.5 * k)?.exp()?)
}

/// Lupton+99 asinh magnitude of fluxes `[..., bands]` with softening `[bands]` (both nmgy):
/// −(2.5/ln10)·[asinh(f/2b) − ln(10⁹/b)].
pub fn flux_to_asinh_mag(flux_nmgy: &Tensor, softening_nmgy: &Tensor) -> Result<Tensor> {
    let b = softening_nmgy.to_dtype(DType::F32)?;
    let x = flux_nmgy.broadcast_div(&b.affine(2.0, 0.0)?)?;
    // asinh(x) = sign(x) ln(|x| + √(x² + 1)), the odd form avoids cancellation for x ≪ 0.
    let ax = x.abs()?;
    let asinh = (ax.sqr()? + 1.0)?
        .sqrt()?
        .add(&ax)?
        .log()?
        .mul(&x.sign()?)?;
    let ln_ratio = b.recip()?.affine(1e9, 0.0)?.log()?;
    Ok(asinh.broadcast_sub(&ln_ratio)?.affine(-POGSON, 0.0)?)
}
