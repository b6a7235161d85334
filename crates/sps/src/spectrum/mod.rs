//! Speculator spectrum emulator → observed-frame AB photometry through any filter set
//! (Alsing+20 eq. 2).
//!
//! * [`speculator::SpeculatorSegment`]: one PCA spectrum emulator segment.
//! * [`SpectrumEmulator`]: the three Prospector-α segments concatenated into one rest-frame
//!   spectrum ln l_ν on 5232 pixels, 1005 Å – 29.9 µm, per M☉ formed.
//! * [`igm`]: Madau (1995) mean IGM attenuation.
//! * [`SpectrumPhotometry`]: θ `[n, 16]` → per-band absolute magnitudes in the photulator
//!   convention (AB mag per M☉ formed "at 10 pc", so that f_nmgy = 10^((22.5 − M_b − N)/2.5),
//!   N = μ(z) − 2.5 log10 M_formed).
//!
//! ## Units of the emulator output
//! The sidecars call the output "ln l_ν [L☉ Hz⁻¹] per M☉"; numerically it is the rest-frame
//! f_ν **at 10 pc in maggies** (f_ν / 3631 Jy) per M☉ formed — Prospector's native
//! output. Interpreting it as L☉ Hz⁻¹ puts every band 32.37 mag
//! (= 2.5 log10[L☉ / (4π (10 pc)² · 3631 Jy)]) brighter than the COSMOS photulators, for
//! all bands and redshifts alike; as maggies at 10 pc the offset vanishes (docs/emulators.md).
//!
//! ## Photometry
//! A source of luminosity density L_ν at luminosity distance D_L has observed
//! f_ν(λ) = (1 + z) L_ν(λ/(1+z)) e^{−τ_IGM} / (4π D_L²) (the 1 + z bandwidth factor); the
//! photon-counting AB band average is ⟨f_ν⟩ = ∫ f_ν T dλ/λ / ∫ T dλ/λ. With u = ln λ the
//! numerator becomes a correlation of the rest-frame spectrum with the filter shifted by
//! s = ln(1 + z):
//!
//! F_b(z) = ∫ l_ν(u_r) e^{−τ} T_b(u_r + s) du_r.
//!
//! Because of the per-galaxy shift no single band matrix exists. We integrate by parts
//! instead: with the cumulative rest-frame integral C(u) = ∫^u l_ν e^{−τ} du' (exact
//! trapezoid on the native grid, one cumulative sum per galaxy) and T piecewise linear on
//! its knots u_k,
//!
//! F_b = Σ_k w_bk C(u_k − s),   w_b0 = −(T₀+T₁)/2, w_bk = −(T_{k+1}−T_{k−1})/2, w_bK = (T_K+T_{K−1})/2,
//!
//! (the trapezoid rule for ∫ C dT, exact for a spectrum constant in u). Evaluating C at the
//! shifted knots is a gather with per-galaxy indices found through a fixed uniform lookup
//! table over ln λ (finer than the native pixels), followed by linear interpolation of C.
//! All of it is batched tensor work (`[n, R]` cumulative sums, `[n, K]` gathers, one
//! `[n, K] @ [K, bands]` matmul). Every native pixel contributes — no resampling, no loss of
//! narrow lines — and the only approximations are the trapezoid rule on the filter knots
//! (gaps refined to ≤ [`PhotometryOptions::max_knot_spacing`] in ln λ) and linear
//! interpolation of C within one native pixel. `spectrum_photometry` tests compare with a
//! direct f64 quadrature (≲ 1e−3 mag) and a flat f_ν spectrum (exact).
//!
//! The emulator stops at 1005 Å rest: l_ν is continued flat in f_ν to the Lyman limit
//! (912 Å) and is zero below it (where Madau's Lyman-continuum τ ≫ 1 at the redshifts that
//! bring it into optical bands); nothing is added beyond 29.9 µm. A band that sees no flux
//! at all gets M = 99 ([`MAGGIES_FLOOR`]). Hence
//! M_b = −2.5 log10[(1 + z) ⟨l_ν⟩_b], and m_b = M_b + N exactly as for the photulators.
//!
//! ## Parameter mapping and validity
//! The emulator takes θ₁₄ = photulator input without log U: [log Z, r₁..r₆, √τ₂, n, τ₁/τ₂,
//! ln f_AGN, ln τ_AGN, log Z_gas, z] ([`theta_to_speculator_input`]). Its z input only sets
//! the age of the Universe (SFH bin edges) and was trained on 0.5 ≤ z ≤ 2.5 (= stored
//! shift ± 3 scale); by default [`SpectrumPhotometry`] clamps that *age* input to this range
//! while redshifting, distance and IGM use the true z ([`PhotometryOptions::age_z_range`]).

mod igm;
mod speculator;

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};

use crate::weights::{WeightFile, parse_card};
use popcosmos_api::FilterCurve;
use popcosmos_api::params::{IDX_DUST2, IDX_Z};
use popcosmos_api::{Error, N_PARAMS, Result};

pub use igm::madau95_tau;
pub use speculator::{SpeculatorConfig, SpeculatorSegment};

/// Flux floor (maggies at 10 pc per M☉) = absolute magnitude 99, for bands with no flux.
pub const MAGGIES_FLOOR: f64 = 2.511_886_431_509_582e-40;
/// Blue extension of the rest grid: l_ν is continued flat from the first pixel (1005 Å) to
/// the Lyman limit on this grid (Å); below 912 Å the source emits nothing.
const BLUE_EXTENSION_AA: [f64; 10] = [
    912.0, 920.0, 930.0, 940.0, 950.0, 960.0, 970.0, 980.0, 990.0, 1000.0,
];

/// Bundled Prospector-α segments (file stem, weights, sidecar), blue to red.
const BUILTIN_SEGMENTS: [(&str, &[u8], &str); 3] = [
    (
        "speculator_prospector_alpha_100_400",
        include_bytes!("../../../../assets/models/speculator_prospector_alpha_100_400.safetensors"),
        include_str!("../../../../assets/models/speculator_prospector_alpha_100_400.json"),
    ),
    (
        "speculator_prospector_alpha_400_1100",
        include_bytes!(
            "../../../../assets/models/speculator_prospector_alpha_400_1100.safetensors"
        ),
        include_str!("../../../../assets/models/speculator_prospector_alpha_400_1100.json"),
    ),
    (
        "speculator_prospector_alpha_1100_30000",
        include_bytes!(
            "../../../../assets/models/speculator_prospector_alpha_1100_30000.safetensors"
        ),
        include_str!("../../../../assets/models/speculator_prospector_alpha_1100_30000.json"),
    ),
];

/// Physical θ `[n, 16]` → spectrum-emulator input θ₁₄ `[n, 14]`: drop N and log U, dust2 → √dust2.
pub fn theta_to_speculator_input(theta: &Tensor) -> Result<Tensor> {
    let theta = theta.to_dtype(DType::F32)?;
    if theta.dim(D::Minus1)? != N_PARAMS {
        return Err(Error::shape(
            "theta",
            format!("[..., {N_PARAMS}]"),
            theta.dims(),
        ));
    }
    // θ index of log U (gaslog10U), which the spectrum emulator does not take.
    let gas_u = IDX_Z - 1;
    Ok(Tensor::cat(
        &[
            theta.narrow(D::Minus1, 1, IDX_DUST2 - 1)?,
            theta.narrow(D::Minus1, IDX_DUST2, 1)?.sqrt()?,
            theta.narrow(D::Minus1, IDX_DUST2 + 1, gas_u - IDX_DUST2 - 1)?,
            theta.narrow(D::Minus1, IDX_Z, 1)?,
        ],
        D::Minus1,
    )?)
}

/// The concatenated rest-frame spectrum emulator.
#[derive(Debug, Clone)]
pub struct SpectrumEmulator {
    segments: Vec<SpeculatorSegment>,
    wavelengths_aa: Vec<f64>,
    device: Device,
}

impl SpectrumEmulator {
    /// The bundled Alsing+20 Prospector-α emulators (3 segments).
    pub fn builtin(device: &Device) -> Result<Self> {
        let segments = BUILTIN_SEGMENTS
            .iter()
            .map(|(name, bytes, card)| {
                let file = WeightFile::from_bytes(bytes, format!("{name}.safetensors"), device)?;
                let config = parse_card(card, &format!("assets/models/{name}.json"))?;
                SpeculatorSegment::from_weights(&file, config)
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(segments, device)
    }

    /// Segments from files (each with its JSON sidecar), in increasing wavelength.
    pub fn load(paths: &[&Path], device: &Device) -> Result<Self> {
        let segments = paths
            .iter()
            .map(|p| SpeculatorSegment::load(p, device))
            .collect::<Result<Vec<_>>>()?;
        Self::new(segments, device)
    }

    /// Concatenate segments; their wavelength ranges must not overlap.
    pub fn new(segments: Vec<SpeculatorSegment>, device: &Device) -> Result<Self> {
        let mut wavelengths_aa = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            let w = s.wavelengths_aa();
            if let (Some(&last), Some(&first)) = (wavelengths_aa.last(), w.first())
                && first <= last
            {
                return Err(Error::Invalid(format!(
                    "spectrum segment {i} starts at {first} Å, not after the previous one \
                     ({last} Å)"
                )));
            }
            wavelengths_aa.extend_from_slice(w);
        }
        if segments.is_empty() {
            return Err(Error::Invalid("spectrum emulator without segments".into()));
        }
        Ok(Self {
            segments,
            wavelengths_aa,
            device: device.clone(),
        })
    }

    /// The device the segments' tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The segments, in increasing wavelength.
    pub fn segments(&self) -> &[SpeculatorSegment] {
        &self.segments
    }

    /// Rest-frame wavelengths of the concatenated spectrum, Å.
    pub fn wavelengths_aa(&self) -> &[f64] {
        &self.wavelengths_aa
    }

    /// Training box of the inputs, `shift ± 3·scale` of the first segment (the Prospector-α
    /// files store (centre, range/6); all segments share it).
    pub fn input_box(&self) -> Vec<(f64, f64)> {
        let (sh, sc) = self.segments[0].input_standardisation();
        sh.iter()
            .zip(sc)
            .map(|(&m, &s)| (m as f64 - 3.0 * s as f64, m as f64 + 3.0 * s as f64))
            .collect()
    }

    /// ln l_ν (maggies at 10 pc per M☉ formed), θ₁₄ `[n, 14]` → `[n, 5232]` f32.
    pub fn ln_lnu(&self, theta14: &Tensor) -> Result<Tensor> {
        let parts = self
            .segments
            .iter()
            .map(|s| s.ln_lnu(theta14))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// Numerical options of [`SpectrumPhotometry`].
#[derive(Debug, Clone, PartialEq)]
pub struct PhotometryOptions {
    /// Largest gap between filter knots in ln λ; wider gaps get linearly interpolated knots.
    pub max_knot_spacing: f64,
    /// Range the emulator's age-setting z input is clamped to (`None`: pass z through).
    /// Default: the emulator's training range (0.5, 2.5).
    pub age_z_range: Option<(f64, f64)>,
    /// Galaxies per internal pass (bounds the `[rows, knots]` f64 temporaries).
    pub rows_per_pass: usize,
    /// Filter knots whose removal changes the piecewise-linear curve by at most this fraction
    /// of the band's peak transmission are dropped before refinement (0 keeps every knot).
    /// Finely sampled curves (LSST: 1 Å, 8 500 knots per band) are mostly straight segments;
    /// 10⁻⁵ changes a band flux by ≲ 10⁻⁵ mag and makes LSST photometry ~5× cheaper.
    pub knot_tolerance: f64,
}

impl Default for PhotometryOptions {
    fn default() -> Self {
        Self {
            max_knot_spacing: 1e-3,
            age_z_range: Some((0.5, 2.5)),
            rows_per_pass: 512,
            knot_tolerance: 1e-5,
        }
    }
}

/// Knots and integration weights of a filter set (host, f64).
#[derive(Debug, Clone)]
struct BandKnots {
    /// ln λ of every knot of every band, concatenated.
    ln_lambda: Vec<f64>,
    /// `[knots, bands]` row-major, including 1/∫T d ln λ.
    weights: Vec<f64>,
}

/// Indices of the knots kept when every dropped knot lies within `tol` of the straight line
/// between the kept knots around it (greedy: each kept knot reaches as far as it can).
fn thin_knots(x: &[f64], y: &[f64], tol: f64) -> Vec<usize> {
    let n = x.len();
    if tol <= 0.0 || n < 3 {
        return (0..n).collect();
    }
    let mut kept = vec![0];
    let mut anchor = 0;
    while anchor < n - 1 {
        // Extend the segment anchor → j while all knots strictly inside stay within tol.
        let mut best = anchor + 1;
        for j in anchor + 2..n {
            let (x0, y0, x1, y1) = (x[anchor], y[anchor], x[j], y[j]);
            let fits = (anchor + 1..j).all(|i| {
                let line = y0 + (y1 - y0) * (x[i] - x0) / (x1 - x0);
                (y[i] - line).abs() <= tol
            });
            if !fits {
                break;
            }
            best = j;
        }
        kept.push(best);
        anchor = best;
    }
    kept
}

fn band_knots(filters: &[FilterCurve], max_gap: f64, tolerance: f64) -> Result<BandKnots> {
    let nb = filters.len();
    let mut ln_lambda = Vec::new();
    let mut cols: Vec<(usize, Vec<f64>)> = Vec::with_capacity(nb);
    for f in filters {
        let w = &f.wavelength_aa;
        // Measured curves carry small negative noise (e.g. hsc_y −1.5e−4): clip to zero.
        let t: Vec<f64> = f.transmission.iter().map(|v| v.max(0.0)).collect();
        if let Some(i) = f.transmission.iter().position(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "filter '{}': transmission {} at {} Å must be finite",
                f.name, f.transmission[i], w[i]
            )));
        }
        if let Some(i) = w.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(Error::Invalid(format!(
                "filter '{}': wavelength {} must be positive",
                f.name, w[i]
            )));
        }
        // Trim to the support, keeping one zero knot on each side.
        let first = t.iter().position(|&v| v > 0.0).ok_or_else(|| {
            Error::Invalid(format!(
                "filter '{}': transmission is zero everywhere",
                f.name
            ))
        })?;
        let last = t.iter().rposition(|&v| v > 0.0).unwrap();
        let (a, b) = (first.saturating_sub(1), (last + 1).min(w.len() - 1));
        let peak = t.iter().fold(0.0f64, |m, &v| m.max(v));
        let keep: Vec<usize> = thin_knots(&w[a..=b], &t[a..=b], tolerance * peak)
            .into_iter()
            .map(|i| a + i)
            .collect();
        // Knots in u = ln λ, T piecewise linear in u; refine gaps wider than max_gap.
        let (mut u, mut tt) = (vec![w[a].ln()], vec![t[a]]);
        for pair in keep.windows(2) {
            let (i0, i1) = (pair[0], pair[1]);
            let (u0, u1) = (w[i0].ln(), w[i1].ln());
            let m = ((u1 - u0) / max_gap).ceil().max(1.0) as usize;
            for k in 1..=m {
                let f = k as f64 / m as f64;
                u.push(u0 + f * (u1 - u0));
                tt.push(t[i0] + f * (t[i1] - t[i0]));
            }
        }
        let nk = u.len();
        let norm: f64 = (1..nk)
            .map(|k| 0.5 * (tt[k] + tt[k - 1]) * (u[k] - u[k - 1]))
            .sum();
        if norm.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(Error::Invalid(format!(
                "filter '{}': ∫T dλ/λ is not positive",
                f.name
            )));
        }
        let mut wk = vec![0.0; nk];
        wk[0] = -0.5 * (tt[0] + tt[1]);
        wk[nk - 1] = 0.5 * (tt[nk - 1] + tt[nk - 2]);
        for k in 1..nk - 1 {
            wk[k] = -0.5 * (tt[k + 1] - tt[k - 1]);
        }
        cols.push((ln_lambda.len(), wk.iter().map(|w| w / norm).collect()));
        ln_lambda.extend(u);
    }
    let nk = ln_lambda.len();
    let mut weights = vec![0.0; nk * nb];
    for (b, (start, w)) in cols.iter().enumerate() {
        for (k, v) in w.iter().enumerate() {
            weights[(start + k) * nb + b] = *v;
        }
    }
    Ok(BandKnots { ln_lambda, weights })
}

/// Inclusive cumulative sum along the last axis of a `[n, m]` tensor, in blocks of 64 (two
/// small triangular matmuls: candle's `cumsum` builds an `[m, m]` matrix, too big here).
pub fn cumsum_last(x: &Tensor) -> Result<Tensor> {
    const BLOCK: usize = 64;
    let (n, m) = x.dims2()?;
    let nblk = m.div_ceil(BLOCK);
    let pad = nblk * BLOCK - m;
    let dev = x.device();
    let dt = x.dtype();
    let xp = if pad > 0 {
        Tensor::cat(&[x.clone(), Tensor::zeros((n, pad), dt, dev)?], 1)?
    } else {
        x.clone()
    };
    // Upper-triangular ones: (v @ U)_j = Σ_{i ≤ j} v_i.
    let tri = |k: usize, strict: bool| -> Result<Tensor> {
        let v: Vec<f64> = (0..k * k)
            .map(|idx| {
                let (i, j) = (idx / k, idx % k);
                if i < j || (!strict && i == j) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Tensor::from_vec(v, (k, k), dev)?.to_dtype(dt)?)
    };
    let inblock = xp
        .reshape((n * nblk, BLOCK))?
        .matmul(&tri(BLOCK, false)?)?
        .reshape((n, nblk, BLOCK))?;
    let totals = inblock.narrow(2, BLOCK - 1, 1)?.squeeze(2)?; // [n, nblk]
    let offsets = totals.matmul(&tri(nblk, true)?)?; // exclusive prefix over blocks
    let out = inblock.broadcast_add(&offsets.unsqueeze(2)?)?;
    Ok(out.reshape((n, nblk * BLOCK))?.narrow(1, 0, m)?)
}

/// Spectrum emulator + filter set → absolute magnitudes in the photulator convention.
#[derive(Debug, Clone)]
pub struct SpectrumPhotometry {
    emulator: SpectrumEmulator,
    band_names: Vec<String>,
    options: PhotometryOptions,
    /// Rest grid: blue extension + native emulator pixels, Å.
    rest_aa: Vec<f64>,
    /// ln λ of the rest grid, host and `[R]` f64 tensor.
    ln_rest: Vec<f64>,
    ln_rest_t: Tensor,
    /// Δu of each native interval `[1, R−1]` f64.
    du: Tensor,
    /// Lookup table: native index of the last pixel ≤ u₀ + t·δ, `[T]` u32.
    table: Tensor,
    table_step: f64,
    /// Knot positions `[1, K]` f64 and weights `[K, bands]` f64.
    knots: Tensor,
    weights: Tensor,
}

impl SpectrumPhotometry {
    /// Bundled Prospector-α emulator through `filters` with default options.
    pub fn builtin(filters: &[FilterCurve], device: &Device) -> Result<Self> {
        Self::new(
            SpectrumEmulator::builtin(device)?,
            filters,
            PhotometryOptions::default(),
        )
    }

    /// `emulator` through `filters` (observed-frame curves; the output bands in their order),
    /// with the filter knots and the ln λ lookup table prepared once. Errors on an empty filter
    /// list or bad `options`.
    pub fn new(
        emulator: SpectrumEmulator,
        filters: &[FilterCurve],
        options: PhotometryOptions,
    ) -> Result<Self> {
        if filters.is_empty() {
            return Err(Error::Invalid("no filter curves given".into()));
        }
        if options.max_knot_spacing.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            || options.rows_per_pass == 0
            || options.knot_tolerance.is_nan()
            || options.knot_tolerance < 0.0
        {
            return Err(Error::Invalid(format!(
                "bad photometry options {options:?}"
            )));
        }
        let device = emulator.device().clone();
        let rest_aa: Vec<f64> = BLUE_EXTENSION_AA
            .iter()
            .chain(emulator.wavelengths_aa())
            .copied()
            .collect();
        let ln_rest: Vec<f64> = rest_aa.iter().map(|w| w.ln()).collect();
        let r = ln_rest.len();
        let min_du = ln_rest
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(f64::INFINITY, f64::min);
        // Finer than any native pixel, so each table cell holds at most one pixel edge.
        let step = 0.5 * min_du;
        let nt = ((ln_rest[r - 1] - ln_rest[0]) / step).ceil() as usize + 2;
        let mut table = Vec::with_capacity(nt);
        let mut j = 0usize;
        for t in 0..nt {
            let u = ln_rest[0] + t as f64 * step;
            while j + 1 < r && ln_rest[j + 1] <= u {
                j += 1;
            }
            table.push(j as u32);
        }
        let du: Vec<f64> = ln_rest.windows(2).map(|w| w[1] - w[0]).collect();
        let bk = band_knots(filters, options.max_knot_spacing, options.knot_tolerance)?;
        let nk = bk.ln_lambda.len();
        Ok(Self {
            band_names: filters.iter().map(|f| f.name.clone()).collect(),
            ln_rest_t: Tensor::from_slice(&ln_rest, r, &device)?,
            du: Tensor::from_vec(du, (1, r - 1), &device)?,
            table: Tensor::from_vec(table, nt, &device)?,
            table_step: step,
            knots: Tensor::from_vec(bk.ln_lambda, (1, nk), &device)?,
            weights: Tensor::from_vec(bk.weights, (nk, filters.len()), &device)?,
            ln_rest,
            rest_aa,
            emulator,
            options,
        })
    }

    /// Band (filter) names, in output order.
    pub fn band_names(&self) -> &[String] {
        &self.band_names
    }

    /// The rest-frame spectrum emulator.
    pub fn emulator(&self) -> &SpectrumEmulator {
        &self.emulator
    }

    /// The numerical options.
    pub fn options(&self) -> &PhotometryOptions {
        &self.options
    }

    /// Absolute magnitudes (photulator convention) for physical θ `[n, 16]` → `[n, bands]` f32.
    pub fn absolute_magnitudes(&self, theta: &Tensor) -> Result<Tensor> {
        let n = match theta.dims() {
            [n, N_PARAMS] => *n,
            d => return Err(Error::shape("theta", format!("[n, {N_PARAMS}]"), d)),
        };
        let rows = self.options.rows_per_pass;
        let mut parts = Vec::with_capacity(n.div_ceil(rows));
        for start in (0..n).step_by(rows) {
            let th = theta.narrow(0, start, rows.min(n - start))?;
            let z = th.narrow(1, IDX_Z, 1)?.to_dtype(DType::F32)?;
            let mut x = theta_to_speculator_input(&th)?;
            if let Some((lo, hi)) = self.options.age_z_range {
                let za = z.clamp(lo as f32, hi as f32)?;
                x = Tensor::cat(&[x.narrow(1, 0, 13)?, za], 1)?;
            }
            let ln_l = self.emulator.ln_lnu(&x)?;
            parts.push(self.absolute_magnitudes_from_ln_lnu(&ln_l, &z)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Rest-frame grid of [`Self::band_average`] (Å): the blue extension to 912 Å followed by
    /// the emulator pixels.
    pub fn rest_wavelengths_aa(&self) -> &[f64] {
        &self.rest_aa
    }

    /// Photometry of given rest-frame spectra: ln l_ν `[n, R]` (maggies at 10 pc per M☉, on
    /// [`SpectrumEmulator::wavelengths_aa`]) at redshifts `z` `[n, 1]` → `[n, bands]` f32.
    /// The blue extension and Madau IGM are applied here.
    pub fn absolute_magnitudes_from_ln_lnu(&self, ln_lnu: &Tensor, z: &Tensor) -> Result<Tensor> {
        let n = ln_lnu.dim(0)?;
        let z = z.to_dtype(DType::F64)?.reshape((n, 1))?;
        let ln_lnu = ln_lnu.to_dtype(DType::F64)?;
        let blue = ln_lnu
            .narrow(1, 0, 1)?
            .broadcast_as((n, BLUE_EXTENSION_AA.len()))?;
        let ln_lnu = Tensor::cat(&[&blue, &ln_lnu], 1)?;
        let tau = igm::madau95_tau_tensor(&self.rest_aa, &z)?;
        let l = (ln_lnu - tau)?.exp()?;
        let mean_lnu = self.band_average(&l, &z)?;
        // l_ν is f_ν at 10 pc in maggies per M☉ (see the module docs), so
        // M = −2.5 log10[(1+z) ⟨l_ν⟩]; floor at M = 99 for bands that see no flux at all.
        let flux = mean_lnu
            .broadcast_mul(&(z + 1.0)?)?
            .clamp(MAGGIES_FLOOR, f64::MAX)?;
        Ok(flux
            .log()?
            .affine(-2.5 / std::f64::consts::LN_10, 0.0)?
            .to_dtype(DType::F32)?)
    }

    /// ⟨l_ν⟩_b = ∫ l_ν T_b(u + s) du / ∫ T_b du, rest-frame l_ν `[n, R]` f64 on
    /// [`Self::rest_wavelengths_aa`] (IGM applied),
    /// `z` `[n, 1]` f64 → `[n, bands]` f64.
    pub fn band_average(&self, lnu: &Tensor, z: &Tensor) -> Result<Tensor> {
        let (n, r) = lnu.dims2()?;
        if r != self.ln_rest.len() {
            return Err(Error::Invalid(format!(
                "spectrum has {r} pixels, the rest grid {}",
                self.ln_rest.len()
            )));
        }
        // Cumulative trapezoid C [n, R], C₀ = 0.
        let pieces = ((lnu.narrow(1, 0, r - 1)? + lnu.narrow(1, 1, r - 1)?)? * 0.5)?
            .broadcast_mul(&self.du)?;
        let c = Tensor::cat(
            &[
                Tensor::zeros((n, 1), DType::F64, lnu.device())?,
                cumsum_last(&pieces)?,
            ],
            1,
        )?;
        // Rest-frame positions of the observed knots: q = u_k − ln(1+z), [n, K].
        let s = (z + 1.0)?.log()?;
        let q = self.knots.broadcast_sub(&s)?;
        let nk = q.dim(1)?;
        let u0 = self.ln_rest[0];
        let nt = self.table.dim(0)?;
        let t = ((q.clone() - u0)? / self.table_step)?
            .floor()?
            .clamp(0.0, (nt - 1) as f64)?
            .to_dtype(DType::U32)?;
        let j = self
            .table
            .index_select(&t.flatten_all()?, 0)?
            .reshape((n, nk))?;
        // The table cell may contain one pixel edge: step past it if q is beyond.
        let j1 = (j.to_dtype(DType::F64)? + 1.0)?
            .clamp(0.0, (r - 1) as f64)?
            .to_dtype(DType::U32)?;
        let u_j1 = self
            .ln_rest_t
            .index_select(&j1.flatten_all()?, 0)?
            .reshape((n, nk))?;
        let step = q.ge(&u_j1)?.to_dtype(DType::F64)?;
        let j = (j.to_dtype(DType::F64)? + step)?
            .clamp(0.0, (r - 2) as f64)?
            .to_dtype(DType::U32)?;
        let jp = (j.to_dtype(DType::F64)? + 1.0)?.to_dtype(DType::U32)?;
        let u_lo = self
            .ln_rest_t
            .index_select(&j.flatten_all()?, 0)?
            .reshape((n, nk))?;
        let u_hi = self
            .ln_rest_t
            .index_select(&jp.flatten_all()?, 0)?
            .reshape((n, nk))?;
        let frac = ((q - &u_lo)? / (u_hi - &u_lo)?)?.clamp(0.0, 1.0)?;
        let c_lo = c.contiguous()?.gather(&j.contiguous()?, 1)?;
        let c_hi = c.contiguous()?.gather(&jp.contiguous()?, 1)?;
        let cq = (&c_lo + (c_hi - &c_lo)?.mul(&frac)?)?;
        Ok(cq.matmul(&self.weights)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knot_thinning_keeps_the_corners_of_a_piecewise_linear_curve() {
        // A trapezoid sampled every unit, with a constant leak on each side: the exact
        // piecewise-linear curve has corners at 0, 10, 20, 30, 40, 50.
        let x: Vec<f64> = (0..=50).map(f64::from).collect();
        let y: Vec<f64> = x
            .iter()
            .map(|&v| match v {
                v if v <= 10.0 => 1e-5,
                v if v <= 20.0 => 1e-5 + (v - 10.0) / 10.0 * (1.0 - 1e-5),
                v if v <= 30.0 => 1.0,
                v if v <= 40.0 => 1.0 - (v - 30.0) / 10.0 * (1.0 - 2e-5),
                _ => 2e-5,
            })
            .collect();
        assert_eq!(thin_knots(&x, &y, 1e-9), vec![0, 10, 20, 30, 40, 50]);
        assert_eq!(thin_knots(&x, &y, 0.0).len(), 51);
        // A curved profile: every dropped knot is within tol of the kept polyline.
        let yc: Vec<f64> = x
            .iter()
            .map(|v| (-(v - 25.0).powi(2) / 60.0).exp())
            .collect();
        let kept = thin_knots(&x, &yc, 1e-3);
        assert!(kept.len() < 40 && kept.len() > 5, "{kept:?}");
        for w in kept.windows(2) {
            for i in w[0]..w[1] {
                let line =
                    yc[w[0]] + (yc[w[1]] - yc[w[0]]) * (x[i] - x[w[0]]) / (x[w[1]] - x[w[0]]);
                assert!((yc[i] - line).abs() <= 1e-3);
            }
        }
    }

    #[test]
    fn blocked_cumsum_matches_running_sum() {
        let v: Vec<f64> = (0..3 * 150).map(|i| ((i * 37 % 11) as f64) - 4.5).collect();
        let x = Tensor::from_vec(v.clone(), (3, 150), &Device::Cpu).unwrap();
        let c = cumsum_last(&x).unwrap().to_vec2::<f64>().unwrap();
        for r in 0..3 {
            let mut acc = 0.0;
            for k in 0..150 {
                acc += v[r * 150 + k];
                assert!((c[r][k] - acc).abs() < 1e-9, "row {r} col {k}");
            }
        }
    }
}
