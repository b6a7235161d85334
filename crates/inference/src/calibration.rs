//! Zero-point (and error-floor) calibration from galaxies with spectroscopic redshifts
//! (`popcosmos-cli calibrate`).
//!
//! Template codes (EAZY, LePhare) fit per-band multiplicative offsets on a spec-z sample;
//! this does the same with the pop-cosmos forward model:
//!
//! 1. every galaxy is sampled with its redshift pinned at the truth ([`PinnedRedshift`]: the
//!    sampler's z coordinate is overwritten by φ_z(z_true) before the posterior is
//!    evaluated), from the best library draw within Δz = `z_window`·(1+z) of the truth;
//! 2. the posterior-median model flux f̃_gb (no zero point) is taken over the last kept steps;
//! 3. per band, m_b = median over galaxies of f̂_gb / f̃_gb (bands with S/N > `min_snr`);
//! 4. the zero point solves m_b(Z_b) = Z_b. A fit with Z_b absorbs a fraction h_b (the band's
//!    leverage) of a zero-point error, so m is linear in ln Z with slope h_b:
//!    iteration 1 is the plain update ln Z ← ln m; later iterations use the secant through
//!    the last two (ln Z, ln m) pairs (slope clamped to [0, 0.8]), which removes the slow
//!    h_b^k convergence of the plain update for bands that dominate the fit;
//! 5. the common scale of all zero points is degenerate with the galaxies' mass (N): it is
//!    held at its starting value (geometric mean over bands), or fixed by a reference band.
//!
//! Optional error floors: per band, the smallest ε ≥ 0 for which the normalised residuals
//! (f̂ − Z f̃)/√(σ̂² + Z²(σ_em² + ε² f̃²)) have a normalised median absolute deviation
//! (1.4826·MAD) of at most 1, the Gaussian-core value.
//!
//! Optional emission-line scales ([`LINE_GROUPS`]): after each zero-point update, the model
//! flux of each group of blended lines is scaled by s_G, fitted by robust weighted least
//! squares of f̂/Z − f̃ on the groups' posterior-median band fluxes L_G (the model is linear
//! in s_G: f̃ + Σ_G (s_G − 1) L_G). A line falls in a given band only over a narrow range of
//! redshift, so a spec-z sample separates it from the zero point, which acts at every z.
//! The line offsets of the SPS model (Leistedt et al. 2023, fitted on COSMOS) become
//! 1 + α_l ← s_G (1 + α_l).

use candle_core::{D, Device, Tensor};
use popcosmos_api::{
    HostRng, LogDensity, N_PARAMS, Result, Shape,
    params::{IDX_Z, LOWER, UPPER, normal_quantile, phi_to_theta},
    stats::{median, nmad},
};
use popcosmos_catalog::ObservedChunk;
use popcosmos_samplers::RunConfig;

use crate::init::InitLibrary;
use crate::likelihood::PhotometricLikelihood;
use crate::pipeline::Pipeline;
use crate::posterior::{Posterior, photometry_in_chunks};

/// Settings of a calibration.
#[derive(Debug, Clone)]
pub struct CalibrationOptions {
    /// Catalogue column with the spectroscopic redshift.
    pub truth_column: String,
    /// Inference → zero-point updates.
    pub iterations: usize,
    /// Only bands with f̂/σ̂ above this enter a zero point.
    pub min_snr: f64,
    /// Also fit fractional error floors (after the last zero-point update).
    pub fit_error_floors: bool,
    /// Band (name or label) whose zero point stays at its starting value.
    pub reference_band: Option<String>,
    /// Library draws within this Δz/(1+z) of the truth are start-point candidates.
    pub z_window: f64,
    /// Kept steps per walker used for the posterior-median model flux (the last ones).
    pub median_steps: usize,
    /// Groups of emission lines whose flux scale is fitted (names of [`LINE_GROUPS`]).
    pub line_groups: Vec<String>,
}

/// Groups of lines that broad-band photometry cannot separate, each fitted with one scale
/// (`calibrate --line-offsets`): name, then (line, rest vacuum wavelength Å) per member.
pub const LINE_GROUPS: &[LineGroup] = &[
    (
        "halpha",
        &[
            ("H-alpha", 6564.6),
            ("[N II] 6585", 6585.3),
            ("[N II] 6550", 6549.9),
        ],
    ),
    (
        "hbeta-oiii",
        &[
            ("H-beta", 4862.7),
            ("[O III] 4960", 4960.3),
            ("[O III] 5008", 5008.2),
        ],
    ),
    ("oii", &[("[O II] 3727", 3727.1), ("[O II] 3730", 3729.9)]),
];

/// A group of emission lines: its name and its lines' (name, rest vacuum wavelength Å).
pub type LineGroup = (&'static str, &'static [(&'static str, f64)]);

/// The [`LINE_GROUPS`] entry called `name`; the error (key `--line-offsets`) lists them.
pub fn line_group(name: &str) -> Result<&'static LineGroup> {
    LINE_GROUPS.iter().find(|(k, _)| *k == name).ok_or_else(|| {
        let known: Vec<&str> = LINE_GROUPS.iter().map(|(k, _)| *k).collect();
        popcosmos_api::Error::config(
            "--line-offsets",
            format!("unknown line group '{name}' (groups: {})", known.join(", ")),
        )
    })
}

/// The [`LINE_GROUPS`] entry called `name` and its lines' indices in `sps`; errors are keyed
/// `--line-offsets` (an unknown group, a model without those lines).
pub fn line_group_indices(
    name: &str,
    sps: &popcosmos_sps::PhotulatorSps,
) -> Result<(&'static LineGroup, Vec<usize>)> {
    let group = line_group(name)?;
    let lambdas: Vec<f64> = group.1.iter().map(|l| l.1).collect();
    let idx = sps.line_indices_at(&lambdas).map_err(|e| {
        popcosmos_api::Error::config("--line-offsets", format!("group '{}': {e}", group.0))
    })?;
    Ok((group, idx))
}

/// The name a line of [`LINE_GROUPS`] goes by, from its rest wavelength (within 1.5 Å).
pub fn line_name(lambda_aa: f64) -> Option<&'static str> {
    LINE_GROUPS
        .iter()
        .flat_map(|(_, lines)| lines.iter())
        .find(|(_, l)| (l - lambda_aa).abs() <= 1.5)
        .map(|(n, _)| *n)
}

/// A fitted group of emission lines.
#[derive(Debug, Clone, PartialEq)]
pub struct LineGroupFit {
    /// Group name ([`LINE_GROUPS`]).
    pub name: String,
    /// Total scale of the group's line flux against the starting offsets.
    pub scale: f64,
    /// 1σ error of the last iteration's scale update (weighted least squares).
    pub error: f64,
    /// Scale after each iteration (`history[0]` = 1).
    pub history: Vec<f64>,
    /// (line, rest λ Å, fitted offset α) of each member.
    pub offsets: Vec<(String, f64, f64)>,
}

impl Default for CalibrationOptions {
    fn default() -> Self {
        Self {
            truth_column: "zspec".into(),
            iterations: 4,
            min_snr: 5.0,
            fit_error_floors: false,
            reference_band: None,
            z_window: 0.05,
            median_steps: 10,
            line_groups: Vec::new(),
        }
    }
}

/// What a calibration found.
#[derive(Debug, Clone)]
pub struct CalibrationOutcome {
    /// Fitted multiplicative zero points, one per band (observed ≈ Z × model).
    pub zero_points: Vec<f64>,
    /// Fitted floors (`None` unless requested).
    pub error_floors: Option<Vec<f64>>,
    /// Galaxies entering each band's zero point in the last iteration.
    pub n_used: Vec<usize>,
    /// Galaxies sampled (finite truth inside the prior's redshift range).
    pub n_galaxies: usize,
    /// Zero points after each iteration (`history[0]` = start).
    pub history: Vec<Vec<f64>>,
    /// Every measured band of every calibration galaxy against its model at the spec-z,
    /// from the last iteration's chains.
    pub residuals: Vec<BandResidual>,
    /// Fitted emission-line groups (empty unless asked for).
    pub line_groups: Vec<LineGroupFit>,
}

/// One measured band of one calibration galaxy against the posterior-median model at its
/// spectroscopic redshift, with the fitted zero point applied. Binned by rest-frame
/// wavelength these show where the SPS model misses the data, as EAZY's template-error
/// check does (Brammer, van Dokkum & Coppi 2008): a zero point corrects a band at every
/// redshift, a rest-frame trend it cannot.
#[derive(Debug, Clone, PartialEq)]
pub struct BandResidual {
    /// Catalogue id of the galaxy.
    pub id: String,
    /// Its spectroscopic redshift.
    pub z: f64,
    /// Band index (survey order).
    pub band: usize,
    /// Observed flux (nmgy).
    pub flux_nmgy: f64,
    /// Its 1σ error (nmgy).
    pub flux_err_nmgy: f64,
    /// Posterior-median model flux × fitted zero point (nmgy).
    pub model_nmgy: f64,
    /// Model-side σ (emission lines, IGM) × fitted zero point (nmgy).
    pub model_sigma_nmgy: f64,
}

impl BandResidual {
    /// Observed over model flux.
    pub fn ratio(&self) -> f64 {
        self.flux_nmgy / self.model_nmgy
    }

    /// (observed − model) / σ, with σ² = error² + model σ² + (floor × model)².
    pub fn normalised(&self, floor: f64) -> f64 {
        let var = self.flux_err_nmgy.powi(2)
            + self.model_sigma_nmgy.powi(2)
            + (floor * self.model_nmgy).powi(2);
        (self.flux_nmgy - self.model_nmgy) / var.sqrt()
    }
}

/// The posterior with the redshift coordinate pinned per galaxy.
pub struct PinnedRedshift<'a> {
    /// The full posterior whose z coordinate is pinned.
    pub inner: &'a Posterior<'a>,
    /// `[16]`: 1 everywhere except 0 at z.
    keep: Tensor,
    /// `[1, galaxies, 16]`: φ_z(z_true) at z, 0 elsewhere.
    fill: Tensor,
}

impl<'a> PinnedRedshift<'a> {
    /// `z_true` per galaxy of `inner.obs` (inside the prior's open z range).
    pub fn new(inner: &'a Posterior<'a>, z_true: &[f64], device: &Device) -> Result<Self> {
        let keep: Vec<f32> = (0..N_PARAMS)
            .map(|i| if i == IDX_Z { 0.0 } else { 1.0 })
            .collect();
        let g = z_true.len();
        let mut fill = vec![0f32; g * N_PARAMS];
        for (k, z) in z_true.iter().enumerate() {
            fill[k * N_PARAMS + IDX_Z] = phi_of_z(*z) as f32;
        }
        Ok(Self {
            inner,
            keep: Tensor::from_vec(keep, N_PARAMS, device)?,
            fill: Tensor::from_vec(fill, (1, g, N_PARAMS), device)?,
        })
    }

    /// φ with the z coordinate replaced, same shape `[walkers, galaxies, 16]`.
    pub fn pin(&self, phi: &Tensor) -> Result<Tensor> {
        Ok(phi.broadcast_mul(&self.keep)?.broadcast_add(&self.fill)?)
    }
}

/// Width (in φ) of the proper density put on the pinned, otherwise unused z coordinate.
const FREE_Z_WIDTH: f64 = 0.05;

impl LogDensity for PinnedRedshift<'_> {
    /// ln P at the pinned φ, plus 𝒩(φ_z; φ_z(z_true), 0.05²) on the sampler's own z
    /// coordinate. Why: the pinned target does not depend on that coordinate, and in the
    /// sampler's coordinates (`reparam`) N is built from it (N = μ(z) − 2.5 log M); a proper,
    /// narrow density keeps it at z_true instead of letting it wander, and leaves every other
    /// conditional exactly the pinned posterior.
    fn log_density(&self, phi: &Tensor) -> Result<Tensor> {
        let lp = self.inner.log_density(&self.pin(phi)?)?;
        let last = phi.rank() - 1;
        let dz = phi
            .narrow(last, IDX_Z, 1)?
            .to_dtype(lp.dtype())?
            .broadcast_sub(&self.fill.narrow(last, IDX_Z, 1)?.to_dtype(lp.dtype())?)?;
        let free = (dz / FREE_Z_WIDTH)?
            .sqr()?
            .squeeze(last)?
            .affine(-0.5, 0.0)?;
        Ok((lp + free)?)
    }
}

/// Latent coordinate of a redshift (the φ ↔ θ map is a per-parameter probit).
pub fn phi_of_z(z: f64) -> f64 {
    let u = ((z - LOWER[IDX_Z]) / (UPPER[IDX_Z] - LOWER[IDX_Z])).clamp(1e-12, 1.0 - 1e-12);
    normal_quantile(u)
}

/// Per galaxy and band: observed flux, error, mask and posterior-median model terms.
#[derive(Debug, Clone, Default)]
struct Fitted {
    obs: Vec<f64>,
    err: Vec<f64>,
    mask: Vec<f64>,
    model: Vec<f64>,
    line_sigma: Vec<f64>,
    /// Posterior-median band flux of each line group, `[rows, bands, groups]`.
    groups: Vec<f64>,
}

/// Calibrate the zero points of `pipeline`'s survey on `galaxies` (all rows of the
/// calibration catalogue, read with the truth column). `progress(iteration, done, total)`.
pub fn calibrate(
    pipeline: &mut Pipeline,
    galaxies: &ObservedChunk,
    options: &CalibrationOptions,
    progress: &mut dyn FnMut(usize, usize, usize),
) -> Result<CalibrationOutcome> {
    let bad = |key: &str, m: String| popcosmos_api::Error::config(key, m);
    let truth = galaxies.truth.get(&options.truth_column).ok_or_else(|| {
        bad(
            "--truth",
            format!(
                "column '{}' was not read from the catalogue",
                options.truth_column
            ),
        )
    })?;
    // Galaxies whose truth is inside the prior's redshift range.
    let rows: Vec<usize> = (0..galaxies.len())
        .filter(|&i| truth[i].is_finite() && truth[i] > LOWER[IDX_Z] && truth[i] < UPPER[IDX_Z])
        .collect();
    if rows.is_empty() {
        return Err(bad(
            "--truth",
            format!(
                "no galaxy has a finite '{}' inside the prior's redshift range ({}, {})",
                options.truth_column, LOWER[IDX_Z], UPPER[IDX_Z]
            ),
        ));
    }
    if options.iterations == 0 {
        return Err(bad("--iterations", "must be ≥ 1".into()));
    }
    let nb = galaxies.n_bands;
    let band_names = pipeline.survey.band_names();
    let labels: Vec<String> = pipeline
        .survey
        .bands()
        .iter()
        .map(|b| b.label.clone())
        .collect();
    let reference = match &options.reference_band {
        Some(r) => Some(
            band_names
                .iter()
                .position(|b| b == r)
                .or_else(|| labels.iter().position(|l| l == r))
                .ok_or_else(|| {
                    bad(
                        "--reference-band",
                        format!(
                            "'{r}' is not a band of the survey (bands: {})",
                            band_names.join(", ")
                        ),
                    )
                })?,
        ),
        None => None,
    };
    let m = pipeline.manifest.clone();
    let device = pipeline.device.clone();
    let mut calibration = pipeline.survey.calibration().clone();
    let start = calibration.zero_points.clone();
    let start_log_mean = start.iter().map(|z| z.ln()).sum::<f64>() / nb as f64;

    // Line groups: names → line indices of the SPS model (checked before any sampling).
    let mut groups: Vec<LineGroupFit> = Vec::new();
    let mut group_idx: Vec<Vec<usize>> = Vec::new();
    for name in &options.line_groups {
        let (&(key, lines), idx) = line_group_indices(name, &pipeline.sps)?;
        let alpha = &pipeline
            .sps
            .line_calibration()
            .expect("indices found")
            .offsets;
        groups.push(LineGroupFit {
            name: key.to_string(),
            scale: 1.0,
            error: f64::NAN,
            history: vec![1.0],
            offsets: lines
                .iter()
                .zip(&idx)
                .map(|((n, l), &i)| (n.to_string(), *l, alpha[i]))
                .collect(),
        });
        group_idx.push(idx);
    }

    let mut rng = HostRng::seed_from_u64(m.seed ^ 0xCA11_B8A7E);
    let library = InitLibrary::build(
        pipeline.prior.as_ref(),
        Some(&popcosmos_priors::UniformPrior::new()),
        &pipeline.sps,
        m.init.library_size,
        m.sps.rows_per_call(&pipeline.device),
        &mut rng,
    )?;
    let lib_z: Vec<f64> = phi_to_theta(&library.phi)?
        .narrow(1, IDX_Z, 1)?
        .flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1::<f64>()?;

    let mut history = vec![calibration.zero_points.clone()];
    // (ln Z, ln m) of the previous iteration per band, for the secant step.
    let mut previous: Option<(Vec<f64>, Vec<f64>)> = None;
    let mut n_used = vec![0; nb];
    let mut last_fit = Fitted::default();
    for it in 0..options.iterations {
        pipeline.likelihood = PhotometricLikelihood::new(m.likelihood, &calibration, &device)?;
        let fit = fit_all(
            pipeline,
            galaxies,
            &rows,
            truth,
            &library,
            &lib_z,
            options,
            &group_idx,
            &mut rng,
            &mut |d| progress(it + 1, d, rows.len()),
        )?;
        // Measured ln m_b per band.
        let mut ln_m = vec![f64::NAN; nb];
        for b in 0..nb {
            let ratios: Vec<f64> = (0..rows.len())
                .filter_map(|g| {
                    let k = g * nb + b;
                    let (o, e, f) = (fit.obs[k], fit.err[k], fit.model[k]);
                    (fit.mask[k] > 0.0 && o / e > options.min_snr && f > 0.0).then(|| o / f)
                })
                .collect();
            n_used[b] = ratios.len();
            ln_m[b] = median(&ratios).ln();
        }
        let ln_z: Vec<f64> = calibration.zero_points.iter().map(|z| z.ln()).collect();
        let mut next: Vec<f64> = (0..nb)
            .map(|b| {
                if !ln_m[b].is_finite() {
                    return ln_z[b]; // no usable galaxy: keep
                }
                match &previous {
                    // Secant only across a real step: over a small one the noise in m dominates.
                    Some((px, pm)) if (ln_z[b] - px[b]).abs() > 1e-2 && pm[b].is_finite() => {
                        let h = ((ln_m[b] - pm[b]) / (ln_z[b] - px[b])).clamp(0.0, 0.8);
                        // Fixed point of m(x) = (1 − h) x* + h x through the newest pair.
                        (ln_m[b] - h * ln_z[b]) / (1.0 - h)
                    }
                    _ => ln_m[b],
                }
            })
            .collect();
        previous = Some((ln_z, ln_m));
        // Fix the degenerate common scale.
        let shift = match reference {
            Some(r) => start[r].ln() - next[r],
            None => start_log_mean - next.iter().sum::<f64>() / nb as f64,
        };
        for v in &mut next {
            *v += shift;
        }
        calibration.zero_points = next.iter().map(|x| x.exp()).collect();
        history.push(calibration.zero_points.clone());
        if !groups.is_empty() {
            let (scales, errors) = fit_line_scales(
                &fit,
                &calibration.zero_points,
                &calibration.error_floors,
                options.min_snr,
                groups.len(),
            );
            let mut pairs = Vec::new();
            for (k, group) in groups.iter_mut().enumerate() {
                // Plain steps, no secant: the posteriors absorb part of a line-flux error
                // through their gas parameters, and on real galaxies the secant through
                // successive scales ran away (KiDS: Hα × 6 after 6 iterations), because a
                // larger scale is met by fainter lines in the posteriors (docs/surveys.md).
                group.scale *= scales[k];
                group.error = errors[k];
                group.history.push(group.scale);
                for member in &mut group.offsets {
                    member.2 = scales[k] * (1.0 + member.2) - 1.0;
                    pairs.push((member.1, member.2));
                }
            }
            pipeline.sps = pipeline.sps.clone().with_line_offsets(&pairs)?;
        }
        last_fit = fit;
    }
    let error_floors = if options.fit_error_floors {
        Some(fit_floors(
            &last_fit,
            &calibration.zero_points,
            rows.len(),
            nb,
        ))
    } else {
        None
    };
    let residuals = band_residuals(&last_fit, &calibration.zero_points, galaxies, &rows, truth);
    Ok(CalibrationOutcome {
        zero_points: calibration.zero_points,
        error_floors,
        n_used,
        n_galaxies: rows.len(),
        history,
        residuals,
        line_groups: groups,
    })
}

/// Scales s_G of the line groups (and their 1σ errors) from one iteration's fits: y = f̂/Z
/// − f̃ regressed on the group fluxes L_G over every band with S/N > `min_snr`, each weighted
/// by 1/σ² (σ² = (σ̂/Z)² + σ_em² + (ε f̃)²) and by Student-t (ν = 3) weights of its
/// residual, re-solved 10 times, so outliers and galaxies the SPS model misses do not pull
/// the lines. A weak 𝒩(0, 1) prior on s_G − 1 keeps a group no band constrains at 1.
fn fit_line_scales(
    fit: &Fitted,
    zp: &[f64],
    floors: &[f64],
    min_snr: f64,
    k: usize,
) -> (Vec<f64>, Vec<f64>) {
    let nb = zp.len();
    // (y, x, σ²) of every usable band measurement.
    let mut points: Vec<(f64, Vec<f64>, f64)> = Vec::new();
    for (idx, &mask) in fit.mask.iter().enumerate() {
        let b = idx % nb;
        let (o, e, f) = (fit.obs[idx], fit.err[idx], fit.model[idx]);
        if mask <= 0.0 || !(o / e > min_snr) || !(f > 0.0) {
            continue;
        }
        let x: Vec<f64> = fit.groups[idx * k..(idx + 1) * k].to_vec();
        if x.iter().any(|v| !v.is_finite()) {
            continue;
        }
        let var = (e / zp[b]).powi(2) + fit.line_sigma[idx].powi(2) + (floors[b] * f).powi(2);
        points.push((o / zp[b] - f, x, var));
    }
    let nu = 3.0;
    let mut delta = vec![0.0; k];
    let mut cov = vec![vec![f64::NAN; k]; k];
    for _ in 0..10 {
        let mut a = vec![vec![0.0; k]; k];
        let mut rhs = vec![0.0; k];
        for i in 0..k {
            a[i][i] = 1.0; // the 𝒩(0, 1) prior
        }
        for (y, x, var) in &points {
            let r = y - x.iter().zip(&delta).map(|(x, d)| x * d).sum::<f64>();
            let w = (nu + 1.0) / (nu + r * r / var) / var;
            for i in 0..k {
                rhs[i] += w * x[i] * y;
                for j in 0..k {
                    a[i][j] += w * x[i] * x[j];
                }
            }
        }
        match invert(&a) {
            Some(inv) => {
                delta = (0..k)
                    .map(|i| (0..k).map(|j| inv[i][j] * rhs[j]).sum())
                    .collect();
                cov = inv;
            }
            None => break,
        }
    }
    // A group's flux cannot turn negative, nor grow without bound.
    let scales = delta.iter().map(|d| (1.0 + d).clamp(0.05, 5.0)).collect();
    let errors = (0..k).map(|i| cov[i][i].sqrt()).collect();
    (scales, errors)
}

/// Inverse of a small symmetric positive-definite matrix (Gauss–Jordan); `None` if singular.
fn invert(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut m: Vec<Vec<f64>> = a
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut r = row.clone();
            r.extend((0..n).map(|j| if i == j { 1.0 } else { 0.0 }));
            r
        })
        .collect();
    for c in 0..n {
        let p = (c..n).max_by(|&x, &y| m[x][c].abs().total_cmp(&m[y][c].abs()))?;
        if !(m[p][c].abs() > 1e-300) {
            return None;
        }
        m.swap(c, p);
        let pivot = m[c][c];
        for v in &mut m[c] {
            *v /= pivot;
        }
        let src = m[c].clone();
        for (r, row) in m.iter_mut().enumerate() {
            if r != c {
                let f = row[c];
                for (v, s) in row.iter_mut().zip(&src) {
                    *v -= f * s;
                }
            }
        }
    }
    Some(m.into_iter().map(|r| r[n..].to_vec()).collect())
}

/// The measured bands of `fit` (galaxies in `rows` order) with the zero points `zp` applied.
fn band_residuals(
    fit: &Fitted,
    zp: &[f64],
    galaxies: &ObservedChunk,
    rows: &[usize],
    truth: &[f64],
) -> Vec<BandResidual> {
    let nb = zp.len();
    let mut out = Vec::new();
    for (g, &row) in rows.iter().enumerate() {
        for (b, z) in zp.iter().enumerate() {
            let k = g * nb + b;
            if fit.mask[k] <= 0.0 || !(fit.model[k] > 0.0) {
                continue;
            }
            out.push(BandResidual {
                id: galaxies.ids[row].clone(),
                z: truth[row],
                band: b,
                flux_nmgy: fit.obs[k],
                flux_err_nmgy: fit.err[k],
                model_nmgy: z * fit.model[k],
                model_sigma_nmgy: z * fit.line_sigma[k],
            });
        }
    }
    out
}

/// Smallest ε per band with NMAD of the normalised residuals ≤ 1 (bisection on [0, 1]).
fn fit_floors(fit: &Fitted, zp: &[f64], n: usize, nb: usize) -> Vec<f64> {
    (0..nb)
        .map(|b| {
            let rows: Vec<usize> = (0..n)
                .map(|g| g * nb + b)
                .filter(|&k| fit.mask[k] > 0.0 && fit.model[k] > 0.0)
                .collect();
            if rows.len() < 5 {
                return 0.0;
            }
            let scatter = |eps: f64| {
                let z = zp[b];
                let r: Vec<f64> = rows
                    .iter()
                    .map(|&k| {
                        let f = fit.model[k];
                        let var = fit.err[k].powi(2)
                            + z * z * (fit.line_sigma[k].powi(2) + (eps * f).powi(2));
                        (fit.obs[k] - z * f) / var.sqrt()
                    })
                    .collect();
                nmad(&r)
            };
            if scatter(0.0) <= 1.0 {
                return 0.0;
            }
            let (mut lo, mut hi) = (0.0, 1.0);
            if scatter(hi) > 1.0 {
                return hi;
            }
            for _ in 0..50 {
                let mid = 0.5 * (lo + hi);
                if scatter(mid) > 1.0 {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            hi
        })
        .collect()
}

/// Sample every calibration galaxy (batches of `galaxies_per_batch`) with z pinned and
/// return observed and posterior-median model photometry, `[rows, bands]` row-major.
#[allow(clippy::too_many_arguments)]
fn fit_all(
    pipeline: &Pipeline,
    galaxies: &ObservedChunk,
    rows: &[usize],
    truth: &[f64],
    library: &InitLibrary,
    lib_z: &[f64],
    options: &CalibrationOptions,
    groups: &[Vec<usize>],
    rng: &mut HostRng,
    progress: &mut dyn FnMut(usize),
) -> Result<Fitted> {
    let m = &pipeline.manifest;
    let nb = galaxies.n_bands;
    let mut out = Fitted::default();
    for batch in rows.chunks(m.galaxies_per_batch) {
        let chunk = subset(galaxies, batch);
        let z: Vec<f64> = batch.iter().map(|&i| truth[i]).collect();
        let obs = chunk.to_observations(&pipeline.device)?;
        let posterior = pipeline.posterior(&obs);
        let pinned = PinnedRedshift::new(&posterior, &z, &pipeline.device)?;
        let init = pinned_start(&pinned, library, lib_z, &z, options.z_window, m, rng)?;
        let config = RunConfig {
            n_steps: m.sampler.steps,
            burn_in: m.sampler.burn_in,
            thin: m.sampler.thin,
        };
        let chain = pipeline.sample_posterior(init, &pinned, library, rng, &config)?;
        // Last `median_steps` kept steps → model photometry → median over draws.
        let keep = options.median_steps.clamp(1, chain.kept);
        let (w, g) = (chain.walkers, chain.galaxies);
        let phi = chain
            .samples_tensor(&pipeline.device)?
            .narrow(0, chain.kept - keep, keep)?
            .reshape((keep * w, g, N_PARAMS))?;
        let theta = phi_to_theta(&pinned.pin(&phi)?)?.reshape((keep * w * g, N_PARAMS))?;
        let model =
            photometry_in_chunks(&pipeline.sps, &theta, m.sps.rows_per_call(&pipeline.device))?;
        let med = |t: &Tensor| -> Result<Vec<f64>> {
            // [draws·g, …] (draw-major) → per (g, …) median over draws, row-major.
            let v = t
                .reshape((keep * w, ()))?
                .t()?
                .contiguous()?
                .to_dtype(candle_core::DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            Ok(v.chunks(keep * w)
                .map(|c| {
                    let c: Vec<f64> = c.iter().copied().filter(|x| x.is_finite()).collect();
                    median(&c)
                })
                .collect())
        };
        out.model.extend(med(&model.flux_nmgy)?);
        match &model.line_sigma_nmgy {
            Some(s) => out.line_sigma.extend(med(s)?),
            None => out.line_sigma.extend(std::iter::repeat_n(0.0, g * nb)),
        }
        if !groups.is_empty() {
            // [draws·g, bands, groups] in row chunks, then per (g, band, group) medians.
            let rows_per_call = m.sps.rows_per_call(&pipeline.device);
            let n = theta.dim(0)?;
            let parts = (0..n)
                .step_by(rows_per_call)
                .map(|s| {
                    let len = rows_per_call.min(n - s);
                    pipeline
                        .sps
                        .line_group_flux_nmgy(&theta.narrow(0, s, len)?, groups)
                })
                .collect::<Result<Vec<_>>>()?;
            out.groups.extend(med(&Tensor::cat(&parts, 0)?)?);
        }
        out.obs.extend(chunk.flux_nmgy.iter().map(|v| *v as f64));
        out.err
            .extend(chunk.flux_err_nmgy.iter().map(|v| *v as f64));
        out.mask.extend(chunk.mask.iter().map(|v| *v as f64));
        progress(out.obs.len() / nb);
    }
    Ok(out)
}

/// Walkers `[walkers, galaxies, 16]` around each galaxy's best library draw among those
/// within the z window (all draws if none is), with z pinned.
fn pinned_start(
    pinned: &PinnedRedshift<'_>,
    library: &InitLibrary,
    lib_z: &[f64],
    z: &[f64],
    window: f64,
    m: &crate::manifest::Manifest,
    rng: &mut HostRng,
) -> Result<Tensor> {
    let device = library.phi.device();
    let post = pinned.inner;
    let unsq = |t: &Tensor| t.unsqueeze(1);
    let model = popcosmos_api::ModelPhotometry {
        flux_nmgy: unsq(&library.model.flux_nmgy)?,
        line_sigma_nmgy: library
            .model
            .line_sigma_nmgy
            .as_ref()
            .map(unsq)
            .transpose()?,
    };
    // [draws, galaxies] log posterior of the library draws (at their own z) …
    let lp = popcosmos_api::Likelihood::log_like(post.likelihood, &model, post.obs)?
        .broadcast_add(&library.log_prior.unsqueeze(1)?)?
        .to_dtype(candle_core::DType::F64)?
        .t()?
        .contiguous()?
        .to_vec2::<f64>()?;
    // … ranked per galaxy among draws close to the truth (host: one pass per galaxy).
    let best: Vec<u32> = z
        .iter()
        .zip(&lp)
        .map(|(zt, row)| {
            let tol = window * (1.0 + zt);
            let pick = |near: bool| {
                row.iter()
                    .enumerate()
                    .filter(|(d, v)| v.is_finite() && (!near || (lib_z[*d] - zt).abs() <= tol))
                    .max_by(|a, b| a.1.partial_cmp(b.1).expect("finite"))
                    .map(|(d, _)| d as u32)
            };
            pick(true).or_else(|| pick(false)).unwrap_or(0)
        })
        .collect();
    let g = z.len();
    let idx = Tensor::from_vec(best, g, device)?;
    let start = library.phi.index_select(&idx, 0)?.unsqueeze(0)?; // [1, g, 16]
    let w = m.sampler.walkers;
    let start = pinned.pin(&start.broadcast_as((w, g, N_PARAMS))?.contiguous()?)?;
    let noise = popcosmos_api::RandomSource::normal(rng, &Shape::from((w, g, N_PARAMS)), device)?;
    let jittered = pinned.pin(&(&start + (noise * m.init.jitter)?)?)?;
    let lp = pinned.log_density(&jittered)?;
    let ok = lp.ge(&lp.ones_like()?.affine(0.0, -1e30)?)?;
    let ok = ok
        .unsqueeze(D::Minus1)?
        .broadcast_as(start.shape())?
        .contiguous()?;
    Ok(ok.where_cond(&jittered, &start)?)
}

/// Rows `rows` of a chunk (same band layout and truth columns).
pub fn subset(c: &ObservedChunk, rows: &[usize]) -> ObservedChunk {
    let nb = c.n_bands;
    let pick = |v: &[f32]| -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| v[r * nb..(r + 1) * nb].iter().copied())
            .collect()
    };
    ObservedChunk {
        row_offset: c.row_offset + rows.first().copied().unwrap_or(0),
        ids: rows.iter().map(|&r| c.ids[r].clone()).collect(),
        n_bands: nb,
        flux_nmgy: pick(&c.flux_nmgy),
        flux_err_nmgy: pick(&c.flux_err_nmgy),
        mask: pick(&c.mask),
        truth: c
            .truth
            .iter()
            .map(|(k, v)| (k.clone(), rows.iter().map(|&r| v[r]).collect()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use popcosmos_api::RandomSource;

    /// The least-squares line scales recover the scales put into a synthetic fit, within
    /// their own errors, with 5 % gross outliers present; a group no band sees stays at 1.
    #[test]
    fn line_scales_of_a_synthetic_fit() {
        let (n, nb, k) = (400, 4, 3);
        let zp = [1.1, 0.9, 1.0, 1.05];
        let truth = [1.6, 0.7];
        let mut rng = HostRng::seed_from_u64(3);
        let mut fit = Fitted::default();
        for g in 0..n {
            // Each galaxy's two groups sit in one band each, as a line does at one redshift.
            let (b1, b2) = (g % nb, (g / nb) % nb);
            for b in 0..nb {
                let f = 10.0 + (g * 7 + b * 3) as f64 % 13.0;
                let l1 = if b == b1 { 0.1 * f } else { 0.0 };
                let l2 = if b == b2 { 0.05 * f } else { 0.0 };
                let err = 0.02 * f;
                let u = rng.next_f64();
                let noise = if g % 20 == 7 {
                    25.0
                } else {
                    err * (u - 0.5) * 12f64.sqrt()
                };
                let obs = zp[b] * (f + (truth[0] - 1.0) * l1 + (truth[1] - 1.0) * l2) + noise;
                fit.obs.push(obs);
                fit.err.push(err);
                fit.mask.push(1.0);
                fit.model.push(f);
                fit.line_sigma.push(0.0);
                fit.groups.extend([l1, l2, 0.0]);
            }
        }
        let (s, e) = fit_line_scales(&fit, &zp, &[0.0; 4], 5.0, k);
        for i in 0..2 {
            assert!(e[i] > 0.0 && e[i] < 0.05, "{e:?}");
            assert!(
                (s[i] - truth[i]).abs() < 3.0 * e[i],
                "group {i}: {s:?} ± {e:?}"
            );
        }
        // The unseen group: the prior alone, s = 1 ± 1.
        assert!(
            (s[2] - 1.0).abs() < 1e-9 && (e[2] - 1.0).abs() < 1e-6,
            "{s:?} {e:?}"
        );
    }

    #[test]
    fn nmad_of_known_values() {
        // median 3, |x − 3| = 2 1 0 1 2 → median 1.
        assert!((nmad(&[1.0, 2.0, 3.0, 4.0, 5.0]) - 1.4826).abs() < 1e-12);
    }

    #[test]
    fn phi_of_z_inverts_the_probit() {
        for z in [0.01, 0.5, 2.0, 5.9] {
            let mut row = [0.0; N_PARAMS];
            row[IDX_Z] = phi_of_z(z);
            let theta = popcosmos_api::params::phi_row_to_theta(&row);
            assert!((theta[IDX_Z] - z).abs() < 1e-9, "{z}");
        }
    }
}
