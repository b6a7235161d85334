//! Emission-line emulator (`pop_cosmos.emlines.EmLineEmulator`).
//!
//! A speculator network 16 → 128 → 128 → 128 → 32 (activation on the hidden layers only)
//! predicts 32 PCA coefficients, decoded to "absolute magnitudes" of 128 emission lines per
//! M☉ formed; 44 lines (10³ Å < λ < 10⁴ Å, App. A) are pushed through per-band
//! generalized-Gaussian bandpass models (App. B) to give band contributions
//! `F[n, band, line]` in nanomaggies:
//!
//! `F_bl = B_b(λ_l(1+z)) · 10^(9 − 0.4N) · C · λ_l(1+z) · 10^(−0.4·out_l)`,
//! `B_b(λ) = Σ_j amp_bj · β/(2σΓ(1/β)) · exp(−|(λ − loc)/σ|^β)`.
//!
//! **Input convention (reproduces the reference code path):** the network input is
//! θ^power — N first, √dust2, everything else as in θ (ln f_AGN, ln τ_AGN, …), exactly what
//! `CatalogueGenerator.forward` passes — even though the stored input shift/scale look like
//! moments of linear τ₂/f_AGN/τ_AGN. The T25 calibration was fitted through
//! this path, so we reproduce it; see [`crate::photulator::theta_to_power`].
//!
//! On CPU the bandpass sum and the contraction over lines run in one fused kernel
//! ([`EmLineEmulator::contract`]), so `F` is never materialised when only `Σ_l w_lk F_bl` is
//! needed (the data model needs k = 2 such sums).

use std::path::Path;

use candle_core::{CpuStorage, CustomOp3, DType, Device, IndexOp, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::activation::speculator_activation;
use crate::fastmath::{fast_exp, fast_ln};
use crate::weights::WeightFile;
use popcosmos_api::{Error, Result};

/// Bundled weights (`assets/models/emline_emulator.safetensors`).
pub const BUILTIN_WEIGHTS: &[u8] =
    include_bytes!("../../../assets/models/emline_emulator.safetensors");
const BUILTIN_NAME: &str = "emline_emulator.safetensors";

/// L☉ / (4π (10 pc)²) in erg s⁻¹ cm⁻².
pub const LSUN_AT_10PC: f64 = 3.214_388_202_429_568_5e-7;

const N_IN: usize = 16;
const N_HIDDEN: usize = 128;
const N_PCA: usize = 32;
const N_LINES_GRID: usize = 128;

/// One dense layer of a Speculator network; `act` = (α, β) of the speculator activation
/// (hidden layers only).
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    /// `[in, out]`.
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) act: Option<(Tensor, Tensor)>,
}

/// The Speculator network (Alsing+20) shared by the line and spectrum emulators: standardise
/// the inputs, dense layers (speculator activation on the hidden ones), un-standardise the
/// PCA coefficients. `x` `[n, in]` → `[n, n_pca]` f32.
pub(crate) fn speculator_pca(
    x: &Tensor,
    (input_shift, input_scale): (&Tensor, &Tensor),
    layers: &[Dense],
    (pca_shift, pca_scale): (&Tensor, &Tensor),
) -> Result<Tensor> {
    let mut h = x
        .to_dtype(DType::F32)?
        .broadcast_sub(input_shift)?
        .broadcast_div(input_scale)?;
    for layer in layers {
        let pre = h.matmul(&layer.weight)?;
        h = match &layer.act {
            Some((a, b)) => speculator_activation(&pre, a, b, Some(&layer.bias))?,
            None => pre.broadcast_add(&layer.bias)?,
        };
    }
    Ok(h.broadcast_mul(pca_scale)?.broadcast_add(pca_shift)?)
}

/// Generalized-Gaussian mixture per band, host constants (spec App. B).
#[derive(Debug, Clone)]
struct Bandpass {
    n_bands: usize,
    n_comp: usize,
    /// amp·β/(2σΓ(1/β)) per (band, component), computed in f64.
    coef: Vec<f32>,
    loc: Vec<f32>,
    sigma: Vec<f32>,
    beta: Vec<f32>,
}

/// The emission-line emulator and bandpass models.
#[derive(Debug, Clone)]
pub struct EmLineEmulator {
    device: Device,
    input_shift: Tensor,
    input_scale: Tensor,
    layers: Vec<Dense>,
    pca_shift: Tensor,
    pca_scale: Tensor,
    /// `[32, 128]`.
    pca_basis: Tensor,
    log_spectrum_shift: Tensor,
    log_spectrum_scale: Tensor,
    /// The same three restricted to the selected lines (`[32, 44]`, `[44]`, `[44]`).
    basis_sel: Tensor,
    shift_sel: Tensor,
    scale_sel: Tensor,
    /// Rest-frame wavelengths of the selected lines, Å `[44]`.
    line_lambdas: Tensor,
    line_idx: Vec<usize>,
    bandpass: Bandpass,
    /// Bandpass parameters as tensors `[1, bands, comps, 1]` for the non-CPU path.
    bandpass_t: [Tensor; 4],
    /// Band responses tabulated from filter curves ([`EmLineEmulator::with_filter_curves`]);
    /// replaces the generalized-Gaussian models when set.
    tabulated: Option<TabulatedBandpass>,
}

/// B_b(λ) = T_b(λ) / (c ∫ T_b dλ/λ · 3631 Jy) on a uniform λ grid (all bands share it).
#[derive(Debug, Clone)]
struct TabulatedBandpass {
    n_bands: usize,
    lambda0: f64,
    step: f64,
    n_grid: usize,
    /// `[bands · n_grid]` f32.
    table: Tensor,
    /// `[1, bands, 1]` u32 offsets b · n_grid.
    offsets: Tensor,
}

/// Speed of light in Å s⁻¹.
const C_AA_PER_S: f64 = 2.997_924_58e18;
/// AB zero point 3631 Jy in erg s⁻¹ cm⁻² Hz⁻¹.
const AB_ZP_CGS: f64 = 3631e-23;

/// Response B_b(λ) of a filter to a line at observed λ, in the units of the App. B models:
/// a line of flux F (erg s⁻¹ cm⁻²) at λ adds F · λ · B_b(λ) · 10⁹ nmgy to the band, since
/// ⟨f_ν⟩ = F λ T(λ) / (c ∫ T dλ/λ) for a photon-counting filter (AB).
pub fn filter_line_response(filter: &popcosmos_api::FilterCurve, lambda_aa: f64) -> f64 {
    let (w, t) = (&filter.wavelength_aa, &filter.transmission);
    let norm: f64 = (1..w.len())
        .map(|k| 0.5 * (t[k].max(0.0) / w[k] + t[k - 1].max(0.0) / w[k - 1]) * (w[k] - w[k - 1]))
        .sum();
    if lambda_aa <= w[0]
        || lambda_aa >= w[w.len() - 1]
        || norm.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
    {
        return 0.0;
    }
    filter.transmission_at(lambda_aa).max(0.0) / (C_AA_PER_S * norm * AB_ZP_CGS)
}

impl EmLineEmulator {
    /// Load the bundled emulator.
    pub fn builtin(device: &Device) -> Result<Self> {
        Self::from_weights(
            &WeightFile::from_bytes(BUILTIN_WEIGHTS, BUILTIN_NAME, device)?,
            device,
        )
    }

    /// Load from a safetensors file.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::from_weights(&WeightFile::from_path(path, device)?, device)
    }

    /// Build from parsed tensors, validating every tensor's presence and shape. The band count
    /// is taken from `bandpass.amps`.
    pub fn from_weights(file: &WeightFile, device: &Device) -> Result<Self> {
        let amps_t = file.get_any("bandpass.amps")?;
        let (nb, nc) = match amps_t.dims() {
            [b, c] => (*b, *c),
            d => {
                return Err(Error::TensorShape {
                    file: file.name().into(),
                    tensor: "bandpass.amps".into(),
                    expected: vec![26, 2],
                    found: d.to_vec(),
                });
            }
        };
        let amps = file.get_host("bandpass.amps", &[nb, nc])?;
        let sigma = file.get_host("bandpass.sigs", &[nb, nc])?;
        let beta = file.get_host("bandpass.betas", &[nb, nc])?;
        let loc = file.get_host("bandpass.locs", &[nb, nc])?;
        let coef = (0..nb * nc)
            .map(|i| {
                let (a, s, b) = (amps[i] as f64, sigma[i] as f64, beta[i] as f64);
                (a * b / (2.0 * s * gamma(1.0 / b))) as f32
            })
            .collect::<Vec<_>>();
        let bandpass = Bandpass {
            n_bands: nb,
            n_comp: nc,
            coef,
            loc,
            sigma,
            beta,
        };
        let param =
            |v: &[f32]| -> Result<Tensor> { Ok(Tensor::from_slice(v, (1, nb, nc, 1), device)?) };
        let bandpass_t = [
            param(&bandpass.coef)?,
            param(&bandpass.loc)?,
            param(&bandpass.sigma)?,
            param(&bandpass.beta)?,
        ];

        let widths = [N_IN, N_HIDDEN, N_HIDDEN, N_HIDDEN, N_PCA];
        let mut layers = Vec::new();
        for k in 0..4 {
            let p = format!("layer.{k}");
            let (n_in, n_out) = (widths[k], widths[k + 1]);
            let act = if k < 3 {
                Some((
                    file.get(&format!("{p}.alpha"), &[n_out])?,
                    file.get(&format!("{p}.beta"), &[n_out])?,
                ))
            } else {
                None
            };
            layers.push(Dense {
                weight: file
                    .get(&format!("{p}.weight"), &[n_out, n_in])?
                    .t()?
                    .contiguous()?,
                bias: file.get(&format!("{p}.bias"), &[n_out])?,
                act,
            });
        }
        let idx_t = file.get_any("line_idx_selected")?;
        let n_lines = idx_t.elem_count();
        if idx_t.rank() != 1 {
            return Err(Error::TensorShape {
                file: file.name().into(),
                tensor: "line_idx_selected".into(),
                expected: vec![n_lines],
                found: idx_t.dims().to_vec(),
            });
        }
        let line_idx: Vec<usize> = idx_t
            .to_dtype(DType::I64)?
            .to_vec1::<i64>()?
            .into_iter()
            .map(|i| i as usize)
            .collect();
        if let Some(&bad) = line_idx.iter().find(|&&i| i >= N_LINES_GRID) {
            return Err(Error::Format {
                file: file.name().into(),
                message: format!(
                    "line_idx_selected contains {bad}, outside the {N_LINES_GRID}-line grid"
                ),
            });
        }
        let idx = Tensor::from_vec(
            line_idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            n_lines,
            device,
        )?;
        let pca_basis = file.get("pca_transform_matrix", &[N_PCA, N_LINES_GRID])?;
        let log_spectrum_shift = file.get("log_spectrum_shift", &[N_LINES_GRID])?;
        let log_spectrum_scale = file.get("log_spectrum_scale", &[N_LINES_GRID])?;
        file.get("wavelengths", &[N_LINES_GRID])?;
        Ok(Self {
            device: device.clone(),
            input_shift: file.get("input_shift", &[N_IN])?,
            input_scale: file.get("input_scale", &[N_IN])?,
            layers,
            pca_shift: file.get("pca_shift", &[N_PCA])?,
            pca_scale: file.get("pca_scale", &[N_PCA])?,
            basis_sel: pca_basis.index_select(&idx, 1)?.contiguous()?,
            shift_sel: log_spectrum_shift.index_select(&idx, 0)?,
            scale_sel: log_spectrum_scale.index_select(&idx, 0)?,
            pca_basis,
            log_spectrum_shift,
            log_spectrum_scale,
            line_lambdas: file.get("line_lambdas_selected", &[n_lines])?,
            line_idx,
            bandpass,
            bandpass_t,
            tabulated: None,
        })
    }

    /// Replace the COSMOS generalized-Gaussian bandpass models by the responses of `filters`
    /// themselves (one band per curve, in order): a line at observed λ through the normalised
    /// photon-counting filter, AB ([`filter_line_response`]). This gives F_bl for any survey;
    /// on the COSMOS curves it agrees with the App. B fits where those are good (tests).
    pub fn with_filter_curves(mut self, filters: &[popcosmos_api::FilterCurve]) -> Result<Self> {
        if filters.is_empty() {
            return Err(Error::Invalid(
                "with_filter_curves: no filter curves".into(),
            ));
        }
        let lo = filters
            .iter()
            .map(|f| f.wavelength_aa[0])
            .fold(f64::INFINITY, f64::min);
        let hi = filters
            .iter()
            .map(|f| f.wavelength_aa[f.wavelength_aa.len() - 1])
            .fold(0.0, f64::max);
        // ≤ 1 Å steps (finer than any bundled curve's sampling), at most 10⁵ points.
        let step = ((hi - lo) / 100_000.0).max(1.0);
        let n_grid = ((hi - lo) / step).ceil() as usize + 2;
        let nb = filters.len();
        let mut table = Vec::with_capacity(nb * n_grid);
        for f in filters {
            table.extend((0..n_grid).map(|i| filter_line_response(f, lo + i as f64 * step) as f32));
        }
        let device = self.device.clone();
        let offsets: Vec<u32> = (0..nb).map(|b| (b * n_grid) as u32).collect();
        self.tabulated = Some(TabulatedBandpass {
            n_bands: nb,
            lambda0: lo,
            step,
            n_grid,
            table: Tensor::from_vec(table, nb * n_grid, &device)?,
            offsets: Tensor::from_vec(offsets, (1, nb, 1), &device)?,
        });
        Ok(self)
    }

    /// Whether the band responses come from filter curves ([`Self::with_filter_curves`]).
    pub fn has_filter_curve_responses(&self) -> bool {
        self.tabulated.is_some()
    }

    /// The device the emulator's tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of bands the line contributions are computed for.
    pub fn n_bands(&self) -> usize {
        match &self.tabulated {
            Some(t) => t.n_bands,
            None => self.bandpass.n_bands,
        }
    }

    /// Number of selected lines (44).
    pub fn n_lines(&self) -> usize {
        self.line_idx.len()
    }

    /// Positions of the selected lines in the 128-line grid.
    pub fn line_indices(&self) -> &[usize] {
        &self.line_idx
    }

    /// Rest-frame (vacuum) wavelengths of the selected lines, Å, in line order.
    pub fn line_wavelengths_aa(&self) -> Result<Vec<f64>> {
        Ok(self
            .line_lambdas
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?)
    }

    /// Standardised PCA coefficients → PCA coefficients, `[n, 32]`.
    fn pca_coefficients(&self, theta16t: &Tensor) -> Result<Tensor> {
        match theta16t.dims() {
            [_, N_IN] => {}
            d => {
                let expected = format!("[n, {N_IN}]");
                return Err(Error::shape("line emulator input", expected, d));
            }
        }
        speculator_pca(
            theta16t,
            (&self.input_shift, &self.input_scale),
            &self.layers,
            (&self.pca_shift, &self.pca_scale),
        )
    }

    /// Line "absolute magnitudes" −2.5 log10(L/(L☉ per M☉ formed)) on the full 128-line grid,
    /// θ^power `[n, 16]` → `[n, 128]` (`Speculator.log_spectrum`).
    pub fn log_spectrum(&self, theta16t: &Tensor) -> Result<Tensor> {
        let pca = self.pca_coefficients(theta16t)?;
        Ok(pca
            .matmul(&self.pca_basis)?
            .broadcast_mul(&self.log_spectrum_scale)?
            .broadcast_add(&self.log_spectrum_shift)?)
    }

    /// Luminosities of the 44 selected lines in L☉ per M☉ formed, `[n, 44]`.
    pub fn line_luminosities(&self, theta16t: &Tensor) -> Result<Tensor> {
        let pca = self.pca_coefficients(theta16t)?;
        let mags = pca
            .matmul(&self.basis_sel)?
            .broadcast_mul(&self.scale_sel)?
            .broadcast_add(&self.shift_sel)?;
        Ok((mags * (-0.4 * std::f64::consts::LN_10))?.exp()?)
    }

    /// Observed wavelengths `[n, 44]` and the per-line factor `norm · λ_obs · L` `[n, 44]` that
    /// multiplies the bandpass value.
    fn line_terms(&self, theta16t: &Tensor) -> Result<(Tensor, Tensor)> {
        let theta16t = theta16t.to_dtype(DType::F32)?;
        let lum = self.line_luminosities(&theta16t)?;
        let n_param = theta16t.i((.., 0..1))?;
        let z = theta16t.i((.., N_IN - 1..N_IN))?;
        let lam = (z + 1.0)?.broadcast_mul(&self.line_lambdas)?;
        // 10^(9 − 0.4 N) · C = M_formed (10 pc / d_L)² · 10⁹ · C.
        let ln10 = std::f64::consts::LN_10;
        let norm = (n_param.affine(-0.4 * ln10, 9.0 * ln10)?.exp()? * LSUN_AT_10PC)?;
        let factor = lam.mul(&lum)?.broadcast_mul(&norm)?;
        Ok((lam, factor))
    }

    /// Band contributions of each selected line, θ^power `[n, 16]` → `[n, bands, 44]` nmgy
    /// (before any offsets).
    pub fn contributions(&self, theta16t: &Tensor) -> Result<Tensor> {
        let (lam, factor) = self.line_terms(theta16t)?;
        Ok(self
            .bandpass_values(&lam)?
            .broadcast_mul(&factor.unsqueeze(1)?)?)
    }

    /// Contracted contributions `Σ_l F[n, b, l] · weights[l, k]`, θ^power `[n, 16]`,
    /// `weights` `[44, k]` → `[n, bands, k]` nmgy. On CPU `F` is never materialised.
    pub fn contract(&self, theta16t: &Tensor, weights: &Tensor) -> Result<Tensor> {
        let (lam, factor) = self.line_terms(theta16t)?;
        let nl = self.n_lines();
        let w = weights.to_dtype(DType::F32)?.to_device(&self.device)?;
        let k = match w.dims() {
            [l, k] if *l == nl => *k,
            d => return Err(Error::shape("line weights", format!("[{nl}, k]"), d)),
        };
        if self.device.is_cpu() && self.tabulated.is_none() {
            let op = BandpassContract {
                bp: self.bandpass.clone(),
            };
            return Ok(lam.contiguous()?.apply_op3_no_bwd(
                &factor.contiguous()?,
                &w.t()?.contiguous()?,
                &op,
            )?);
        }
        #[cfg(feature = "cuda")]
        if self.device.is_cuda()
            && self.tabulated.is_none()
            && crate::activation::device_kernel_enabled()
        {
            let op = cuda::BandpassContractCuda {
                params: self.bandpass_t.clone(),
            };
            return Ok(lam.contiguous()?.apply_op3_no_bwd(
                &factor.contiguous()?,
                &w.contiguous()?,
                &op,
            )?);
        }
        let n = lam.dim(0)?;
        let f = self
            .bandpass_values(&lam)?
            .broadcast_mul(&factor.unsqueeze(1)?)?;
        Ok(f.reshape((n * self.n_bands(), nl))?
            .matmul(&w)?
            .reshape((n, self.n_bands(), k))?)
    }

    /// Bandpass model B_b(λ) at observed wavelengths `[n, L]` → `[n, bands, L]` (composed ops).
    fn bandpass_values(&self, lam: &Tensor) -> Result<Tensor> {
        if let Some(tb) = &self.tabulated {
            // Linear interpolation in the shared table; zero outside the grid.
            let (n, l) = lam.dims2()?;
            let x = ((lam.to_dtype(DType::F64)? - tb.lambda0)? / tb.step)?;
            let inside = x
                .ge(0.0)?
                .mul(&x.le((tb.n_grid - 2) as f64)?)?
                .to_dtype(DType::F32)?;
            let x = x.clamp(0.0, (tb.n_grid - 2) as f64)?;
            let i0 = x.floor()?;
            let frac = (&x - &i0)?.to_dtype(DType::F32)?.unsqueeze(1)?;
            let i1 = (&i0 + 1.0)?
                .to_dtype(DType::U32)?
                .unsqueeze(1)?
                .broadcast_add(&tb.offsets)?;
            let i0 = i0
                .to_dtype(DType::U32)?
                .unsqueeze(1)?
                .broadcast_add(&tb.offsets)?;
            let shape = (n, tb.n_bands, l);
            let take = |i: &Tensor| -> Result<Tensor> {
                Ok(tb
                    .table
                    .index_select(&i.flatten_all()?, 0)?
                    .reshape(shape)?)
            };
            let (v0, v1) = (take(&i0)?, take(&i1)?);
            let v = (&v0 + (v1 - &v0)?.broadcast_mul(&frac)?)?;
            return Ok(v.broadcast_mul(&inside.unsqueeze(1)?)?);
        }
        let [coef, loc, sigma, beta] = &self.bandpass_t;
        let x = lam.unsqueeze(1)?.unsqueeze(1)?; // [n, 1, 1, L]
        let u = x.broadcast_sub(loc)?.broadcast_div(sigma)?.abs()?;
        let g = u.broadcast_pow(beta)?.neg()?.exp()?.broadcast_mul(coef)?;
        Ok(g.sum(2)?)
    }
}

/// Fused CPU kernel: (λ_obs `[n, L]`, factor `[n, L]`, wᵀ `[k, L]`) → `[n, bands, k]`,
/// `out[n,b,k] = Σ_l B_b(λ_nl) factor_nl w_lk`.
#[derive(Debug, Clone)]
struct BandpassContract {
    bp: Bandpass,
}

fn slice_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("bandpass kernel: expected contiguous f32 input"),
    }
}

impl CustomOp3 for BandpassContract {
    fn name(&self) -> &'static str {
        "emline-bandpass-contract"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let lam = slice_f32(s1, l1)?;
        let factor = slice_f32(s2, l2)?;
        let wt = slice_f32(s3, l3)?;
        let (n, nl) = l1.shape().dims2()?;
        let (k, nl_w) = l3.shape().dims2()?;
        if nl_w != nl || factor.len() != lam.len() {
            candle_core::bail!("bandpass kernel: inconsistent shapes");
        }
        let nb = self.bp.n_bands;
        let mut out = vec![0f32; n * nb * k];
        if nl == 0 || k == 0 {
            return Ok((CpuStorage::F32(out), Shape::from((n, nb, k))));
        }
        let run = |(lam, factor, out): (&[f32], &[f32], &mut [f32])| {
            let mut row = vec![0f32; nl];
            for ((lam, factor), out) in lam
                .chunks_exact(nl)
                .zip(factor.chunks_exact(nl))
                .zip(out.chunks_exact_mut(nb * k))
            {
                for b in 0..nb {
                    bandpass_row(&self.bp, b, lam, factor, &mut row);
                    for (kk, o) in out[b * k..(b + 1) * k].iter_mut().enumerate() {
                        *o = row
                            .iter()
                            .zip(&wt[kk * nl..(kk + 1) * nl])
                            .map(|(a, w)| a * w)
                            .sum();
                    }
                }
            }
        };
        // ≈ 2·bands·L transcendental pairs per galaxy; parallelise over galaxies when the
        // batch is big enough to pay for the rayon hand-off.
        let rows_per_task = 64;
        if n * nb * nl >= crate::activation::PAR_MIN_ELEMS {
            lam.par_chunks(rows_per_task * nl)
                .zip(factor.par_chunks(rows_per_task * nl))
                .zip(out.par_chunks_mut(rows_per_task * nb * k))
                .for_each(|((a, b), c)| run((a, b, c)));
        } else {
            run((lam, factor, &mut out));
        }
        Ok((CpuStorage::F32(out), Shape::from((n, nb, k))))
    }
}

/// `row[l] = factor[l] · Σ_j coef_bj exp(−|(λ_l − loc_bj)/σ_bj|^β_bj)`.
fn bandpass_row(bp: &Bandpass, b: usize, lam: &[f32], factor: &[f32], row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { bandpass_row_avx2(bp, b, lam, factor, row) };
            return;
        }
    }
    bandpass_row_generic(bp, b, lam, factor, row);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn bandpass_row_avx2(bp: &Bandpass, b: usize, lam: &[f32], factor: &[f32], row: &mut [f32]) {
    bandpass_row_generic(bp, b, lam, factor, row);
}

#[inline(always)]
fn bandpass_row_generic(bp: &Bandpass, b: usize, lam: &[f32], factor: &[f32], row: &mut [f32]) {
    row.fill(0.0);
    for j in 0..bp.n_comp {
        let i = b * bp.n_comp + j;
        let (coef, loc, sigma, beta) = (bp.coef[i], bp.loc[i], bp.sigma[i], bp.beta[i]);
        for (r, &x) in row.iter_mut().zip(lam) {
            let u = ((x - loc) / sigma).abs();
            // |u|^β = e^{β ln u}; u = 0 gives ln → −85, i.e. u^β ≈ 0 as it should, and far
            // from the band e^{−t} underflows to exactly 0 as in the f32 reference.
            let t = fast_exp(beta * fast_ln(u));
            *r += coef * fast_exp(-t);
        }
    }
    for (r, f) in row.iter_mut().zip(factor) {
        *r *= f;
    }
}

/// The bandpass contraction on CUDA (cargo feature `cuda`): one thread per (galaxy, band)
/// evaluates B_b(λ_l) for the galaxy's lines and accumulates Σ_l B_b(λ_l) factor_l w_lk, so
/// the `[n, bands, components, lines]` intermediates of the composed ops never exist.
#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::WrapErr;
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
    use candle_core::{CudaStorage, CustomOp3, Layout, Shape, Tensor};

    use crate::cuda::{cuda_of, ptx, view};

    /// Most columns of the line weights (`k`) the kernel accumulates in registers.
    const MAX_K: usize = 8;

    const SOURCE: &str = r#"
extern "C" __global__ void bandpass_contract(
    const float* lam, const float* factor, const float* w, const float* coef,
    const float* loc, const float* sigma, const float* beta, float* out,
    unsigned int n, unsigned int nb, unsigned int nc, unsigned int nl, unsigned int k)
{
    const unsigned int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n * nb) return;
    const unsigned int g = idx / nb, b = idx % nb;
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (unsigned int l = 0; l < nl; ++l) {
        const float x = lam[(size_t)g * nl + l];
        float bp = 0.f;
        for (unsigned int j = 0; j < nc; ++j) {
            const unsigned int i = b * nc + j;
            // |u|^beta = e^{beta ln u}: u = 0 gives 0, far from the band e^{-t} underflows to 0.
            const float u = fabsf((x - loc[i]) / sigma[i]);
            bp += coef[i] * expf(-expf(beta[i] * logf(u)));
        }
        const float r = bp * factor[(size_t)g * nl + l];
        for (unsigned int kk = 0; kk < k; ++kk) acc[kk] += r * w[l * k + kk];
    }
    for (unsigned int kk = 0; kk < k; ++kk) out[(size_t)idx * k + kk] = acc[kk];
}
"#;

    /// (λ_obs `[n, L]`, factor `[n, L]`, w `[L, k]`) → `[n, bands, k]`; the bandpass
    /// parameters (coef, loc, σ, β) are `[1, bands, components, 1]` tensors on the device.
    pub(super) struct BandpassContractCuda {
        pub params: [Tensor; 4],
    }

    impl CustomOp3 for BandpassContractCuda {
        fn name(&self) -> &'static str {
            "emline-bandpass-contract-cuda"
        }

        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &Layout,
            _: &candle_core::CpuStorage,
            _: &Layout,
            _: &candle_core::CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
            candle_core::bail!("emline-bandpass-contract-cuda runs on CUDA only")
        }

        fn cuda_fwd(
            &self,
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
            s3: &CudaStorage,
            l3: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let what = "bandpass contraction input";
            let dev = s1.device().clone();
            let (n, nl) = l1.shape().dims2()?;
            let (nl_w, k) = l3.shape().dims2()?;
            let [_, nb, nc, _] = *self.params[0].dims() else {
                candle_core::bail!("bandpass parameters must be [1, bands, components, 1]");
            };
            if nl_w != nl || l2.shape().dims2()? != (n, nl) || k > MAX_K {
                candle_core::bail!(
                    "bandpass contraction: λ {:?}, factor {:?}, w {:?} (k ≤ {MAX_K})",
                    l1.dims(),
                    l2.dims(),
                    l3.dims()
                );
            }
            if n * nb >= u32::MAX as usize {
                candle_core::bail!("bandpass contraction: {n} rows are too many for one launch");
            }
            let guards: Vec<_> = self.params.iter().map(Tensor::storage_and_layout).collect();
            let p = guards
                .iter()
                .map(|(s, l)| view(cuda_of(s, "bandpass parameters")?, l, what))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let (lam, factor, w) = (
                view(s1, l1, what)?,
                view(s2, l2, what)?,
                view(s3, l3, what)?,
            );
            let len = n * nb * k;
            // SAFETY: every element is written by the kernel below.
            let out: CudaSlice<f32> = unsafe { dev.alloc::<f32>(len)? };
            if len > 0 {
                let module = "popcosmos_bandpass_contract";
                let func =
                    dev.get_or_load_custom_func("bandpass_contract", module, ptx(module, SOURCE)?)?;
                const THREADS: u32 = 128;
                let cfg = LaunchConfig {
                    grid_dim: (((n * nb) as u32).div_ceil(THREADS), 1, 1),
                    block_dim: (THREADS, 1, 1),
                    shared_mem_bytes: 0,
                };
                let dims = [n as u32, nb as u32, nc as u32, nl as u32, k as u32];
                let mut b = func.builder();
                b.arg(&lam).arg(&factor).arg(&w);
                for v in &p {
                    b.arg(v);
                }
                b.arg(&out);
                for d in &dims {
                    b.arg(d);
                }
                // SAFETY: shapes checked above; the kernel reads n·L of λ and factor, L·k of w,
                // bands·components of each parameter, and writes n·bands·k outputs.
                unsafe { b.launch(cfg) }.w()?;
            }
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from((n, nb, k)),
            ))
        }
    }
}

/// Γ(x) (libm `tgamma`).
pub(crate) fn gamma(x: f64) -> f64 {
    libm::tgamma(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use popcosmos_api::testing::max_abs_diff;

    #[test]
    fn gamma_known_values() {
        assert!((gamma(1.0) - 1.0).abs() < 1e-14);
        assert!((gamma(0.5) - std::f64::consts::PI.sqrt()).abs() < 1e-14);
        assert!((gamma(5.0) - 24.0).abs() < 1e-12);
    }

    #[test]
    fn fused_contraction_matches_composed() {
        let dev = Device::Cpu;
        let em = EmLineEmulator::builtin(&dev).unwrap();
        let n = 300;
        let mut theta = Tensor::rand(0f32, 1.0, (n, 16), &dev).unwrap();
        // N ~ 25–45, z ~ 0–4.5.
        let n_col = theta.i((.., 0..1)).unwrap().affine(20.0, 25.0).unwrap();
        let z_col = (theta.i((.., 15..16)).unwrap() * 4.5).unwrap();
        theta = Tensor::cat(&[n_col, theta.i((.., 1..15)).unwrap(), z_col], 1).unwrap();
        let w = Tensor::randn(0f32, 1.0, (em.n_lines(), 3), &dev).unwrap();
        let fused = em.contract(&theta, &w).unwrap();
        let f = em.contributions(&theta).unwrap();
        let composed = f
            .reshape((n * 26, em.n_lines()))
            .unwrap()
            .matmul(&w)
            .unwrap()
            .reshape((n, 26, 3))
            .unwrap();
        let scale = f
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let diff = max_abs_diff(&fused, &composed);
        assert!(diff <= 1e-5 * scale as f64, "{diff} vs scale {scale}");
    }
}
