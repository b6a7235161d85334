//! The Prospector-α-like baseline prior of `pop_cosmos.catalogue.ProspectorModel`
//! with the Adachi & Kasai (2012) Padé cosmology.
//!
//! * [`ProspectorAlphaPrior::log_prob`] is a chain of batched candle ops (f32, any leading
//!   shape, any device): no host loops, safe to call per walker per MCMC step.
//! * [`log_prob_row`] is the same density on the host in f64 (for tests and diagnostics).
//! * [`ProspectorAlphaPrior::sample`] draws exactly from exp(log_prob) on the host
//!   (see [`ProspectorAlphaPrior::sample_theta_row`] for the construction).

use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use popcosmos_api::cosmology::pade;
use popcosmos_api::params::{self, LOWER, N_PARAMS, UPPER};
use popcosmos_api::{HostRng, Prior, RandomSource, Result, SupportConstraints};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::common::{self, LN_SQRT_2PI};

const LN_10: f64 = std::f64::consts::LN_10;
const SQRT_2: f64 = std::f64::consts::SQRT_2;

/// log10 M_formed hard limits (the uniform prior's bounds of index 0, reused here).
pub const LOG10M_MIN: f64 = 7.0;
/// Upper log10 M_formed limit.
pub const LOG10M_MAX: f64 = 13.0;

/// Anchor redshifts of the Leja+20 quadratic-in-z mass-function parameters.
pub const SMF_Z_ANCHORS: [f64; 3] = [0.2, 1.6, 3.0];
/// log10 φ₁ at the anchors.
pub const SMF_LOG10_PHI1: [f64; 3] = [-2.44, -3.08, -4.14];
/// log10 φ₂ at the anchors.
pub const SMF_LOG10_PHI2: [f64; 3] = [-2.89, -3.29, -3.51];
/// log10 M* at the anchors.
pub const SMF_LOG10_MSTAR: [f64; 3] = [10.79, 10.88, 10.84];
/// Faint-end slopes α₁, α₂.
pub const SMF_ALPHA: [f64; 2] = [-0.28, -1.48];

/// dust2 prior 𝒩(0.3, 1).
const DUST2_MEAN: f64 = 0.3;
/// dust1_fraction prior 𝒩(1, 0.3).
const DUST1F_MEAN: f64 = 1.0;
const DUST1F_SIGMA: f64 = 0.3;
/// dust_index | dust2 width.
const DUST_INDEX_SIGMA: f64 = 0.4;
/// Student-t scale of the SFR ratios (ν = 2).
const SFR_SCALE: f64 = 0.3;

/// Coefficients (a, b, c) of the quadratic a z² + b z + c through the three anchor points
/// (exact Lagrange solution of the 3×3 system; no clamping of z).
pub fn quadratic_through_anchors(y: [f64; 3]) -> [f64; 3] {
    let z = SMF_Z_ANCHORS;
    let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
    for k in 0..3 {
        let (i, j) = ((k + 1) % 3, (k + 2) % 3);
        let w = y[k] / ((z[k] - z[i]) * (z[k] - z[j]));
        a += w;
        b -= w * (z[i] + z[j]);
        c += w * z[i] * z[j];
    }
    [a, b, c]
}

fn quad_eval(c: [f64; 3], z: f64) -> f64 {
    (c[0] * z + c[1]) * z + c[2]
}

/// The three quadratics (log10 φ₁, log10 φ₂, log10 M*) as coefficient triples.
fn smf_coefficients() -> [[f64; 3]; 3] {
    static C: OnceLock<[[f64; 3]; 3]> = OnceLock::new();
    *C.get_or_init(|| {
        [
            quadratic_through_anchors(SMF_LOG10_PHI1),
            quadratic_through_anchors(SMF_LOG10_PHI2),
            quadratic_through_anchors(SMF_LOG10_MSTAR),
        ]
    })
}

/// (log10 φ₁, log10 φ₂, log10 M*) at redshift z.
pub fn mass_function_params(z: f64) -> [f64; 3] {
    smf_coefficients().map(|c| quad_eval(c, z))
}

fn ln_smf_given(params: [f64; 3], log10m: f64) -> f64 {
    let delta = log10m - params[2];
    let x = (LN_10 * delta).exp();
    let l1 = LN_10 * (params[0] + delta * (SMF_ALPHA[0] + 1.0)) - x;
    let l2 = LN_10 * (params[1] + delta * (SMF_ALPHA[1] + 1.0)) - x;
    let mx = l1.max(l2);
    LN_10.ln() + mx + ((l1 - mx).exp() + (l2 - mx).exp()).ln()
}

/// ln φ_SMF(log10 M, z) = ln(ln10 (p₁ + p₂)) of the Leja+20 double Schechter.
pub fn ln_mass_function(log10m: f64, z: f64) -> f64 {
    ln_smf_given(mass_function_params(z), log10m)
}

/// Gallazzi+05 fit: (μ_Z, σ_Z) of log10 Z* at m = log10 M_formed.
pub fn mass_metallicity_params(log10m: f64) -> (f64, f64) {
    let mu = -0.25933163 + 0.38391743 * (2.0229099 * log10m - 20.37321787).tanh();
    let sigma = 0.6883885 - 0.37122853 * (2.47629773 * log10m - 25.74109587).tanh();
    (mu, sigma)
}

/// The reference's truncation "normaliser" erf((0.19 − Z)/(√2σ)) − erf((−1.98 − Z)/(√2σ)),
/// written as a sum of two non-negative erfs (erf is odd) so nothing cancels.
fn mzr_erf_norm(log10z: f64, sigma: f64) -> f64 {
    let k = 1.0 / (SQRT_2 * sigma);
    libm::erf((UPPER[1] - log10z) * k) + libm::erf((log10z - LOWER[1]) * k)
}

/// ln p(log10 Z* | log10 M_formed) exactly as the reference, including the quirk
/// that the erf normalisation is centred on log10 Z instead of μ_Z.
pub fn ln_mass_metallicity(log10z: f64, log10m: f64) -> f64 {
    let (mu, sigma) = mass_metallicity_params(log10m);
    let r = (log10z - mu) / sigma;
    -0.5 * r * r - sigma.ln() - mzr_erf_norm(log10z, sigma).ln()
}

/// μ_n(τ₂) = −0.095 + 0.111 τ₂ − 0.0066 τ₂² (dust_index | dust2 mean).
pub fn dust_index_mean(dust2: f64) -> f64 {
    -0.095 + 0.111 * dust2 - 0.0066 * dust2 * dust2
}

/// ln dV_c/dz per steradian (Mpc³), Padé cosmology.
pub fn ln_dvdz(z: f64) -> f64 {
    pade::differential_comoving_volume(z).ln()
}

/// The density over physical θ (all factors of the reference prior except the latent-normal
/// Jacobian term), in f64: ln p_φ(φ(θ)) = this + Σ_{i≥1} ln 𝒩(φ_i; 0, 1). θ\[0\] is N.
/// −∞ outside the support.
pub fn log_density_theta(theta: &[f64; N_PARAMS]) -> f64 {
    let z = theta[15];
    let log10m = -0.4 * (theta[0] - pade::distmod(z));
    let inside = log10m > LOG10M_MIN && log10m < LOG10M_MAX && theta[13] > theta[1];
    if !inside {
        return f64::NEG_INFINITY;
    }
    let (t2, n, f) = (theta[8], theta[9], theta[10]);
    let mut lp = -0.5 * (t2 - DUST2_MEAN).powi(2);
    lp -= 0.5 * ((f - DUST1F_MEAN) / DUST1F_SIGMA).powi(2);
    lp -= 0.5 * ((n - dust_index_mean(t2)) / DUST_INDEX_SIGMA).powi(2);
    for r in &theta[2..8] {
        lp -= 1.5 * (1.0 + 0.5 * (r / SFR_SCALE).powi(2)).ln();
    }
    lp + ln_mass_function(log10m, z) + ln_mass_metallicity(theta[1], log10m) + ln_dvdz(z)
}

/// ln p(φ) for one latent row on the host in f64 (same density as the tensor `log_prob`).
pub fn log_prob_row(phi: &[f64; N_PARAMS]) -> f64 {
    let mut theta = [0.0; N_PARAMS];
    let mut latent = 0.0;
    theta[0] = phi[0];
    for i in 1..N_PARAMS {
        theta[i] = LOWER[i] + params::range(i) * common::normal_cdf(phi[i]);
        latent += -0.5 * phi[i] * phi[i] - LN_SQRT_2PI;
    }
    latent + log_density_theta(&theta)
}

// ---------------------------------------------------------------------------------------
// Sampling
// ---------------------------------------------------------------------------------------

/// Global lower bound of the quirky erf normaliser over the support: erf is concave on
/// [0, ∞) with erf(0) = 0, so erf(a) + erf(b) ≥ erf(a + b) = erf(2.17/(√2 σ)) ≥ that at
/// σ_max = 0.6883885 + 0.37122853. Slightly reduced for safety (it only costs acceptance).
fn mzr_norm_lower_bound() -> f64 {
    let sigma_max = 0.6883885 + 0.37122853;
    libm::erf((UPPER[1] - LOWER[1]) / (SQRT_2 * sigma_max)) * (1.0 - 1e-9)
}

/// Piecewise-constant envelope of h(z, m) = dV_c/dz(z) · φ_SMF(m, z) on
/// [0, 6] × (7, 13): proposals pick a cell ∝ envelope and a uniform point inside it, then
/// accept with h/envelope (exact rejection sampling as long as envelope ≥ h; the margin is
/// checked empirically by the tests).
pub(crate) struct MassRedshiftEnvelope {
    #[cfg_attr(not(test), allow(dead_code))]
    nz: usize,
    nm: usize,
    dz: f64,
    dm: f64,
    /// ln envelope per cell (index iz * nm + im), absolute.
    ln_env: Vec<f64>,
    /// Walker/Vose alias table over cells with weights exp(ln_env − max).
    alias_prob: Vec<f64>,
    alias: Vec<u32>,
}

/// Vose's alias table for the discrete distribution ∝ `w`.
fn alias_table(w: &[f64]) -> (Vec<f64>, Vec<u32>) {
    let k = w.len();
    let tot: f64 = w.iter().sum();
    let mut prob: Vec<f64> = w.iter().map(|v| v * k as f64 / tot).collect();
    let mut alias: Vec<u32> = (0..k as u32).collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..k).partition(|&i| prob[i] < 1.0);
    while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
        alias[s] = l as u32;
        prob[l] -= 1.0 - prob[s];
        if prob[l] < 1.0 {
            large.pop();
            small.push(l);
        }
    }
    // Leftovers (round-off) keep probability one.
    for i in small.into_iter().chain(large) {
        prob[i] = 1.0;
    }
    (prob, alias)
}

/// ln h(z, m) = ln dV_c/dz + ln φ_SMF (the (z, m) factor of the prior).
pub(crate) fn ln_h(z: f64, log10m: f64) -> f64 {
    ln_dvdz(z) + ln_mass_function(log10m, z)
}

impl MassRedshiftEnvelope {
    const NZ: usize = 240;
    const NM: usize = 600;

    fn build() -> Self {
        let (nz, nm) = (Self::NZ, Self::NM);
        let dz = (UPPER[15] - LOWER[15]) / nz as f64;
        let dm = (LOG10M_MAX - LOG10M_MIN) / nm as f64;
        // ln h on a grid with 2 sub-steps per cell in each direction.
        let (pz, pm) = (2 * nz + 1, 2 * nm + 1);
        let mut grid = vec![0.0; pz * pm];
        for iz in 0..pz {
            let z = LOWER[15] + iz as f64 * dz / 2.0;
            let ldv = if z > 0.0 {
                ln_dvdz(z)
            } else {
                f64::NEG_INFINITY
            };
            let par = mass_function_params(z);
            for im in 0..pm {
                let m = LOG10M_MIN + im as f64 * dm / 2.0;
                grid[iz * pm + im] = ldv + ln_smf_given(par, m);
            }
        }
        let mut ln_env = vec![f64::NEG_INFINITY; nz * nm];
        for iz in 0..nz {
            for im in 0..nm {
                let at = |a: usize, b: usize| grid[(2 * iz + a) * pm + 2 * im + b];
                let mut mx = f64::NEG_INFINITY;
                let mut spread: f64 = 0.0;
                for a in 0..3 {
                    for b in 0..3 {
                        let v = at(a, b);
                        mx = mx.max(v);
                        for (c, d) in [(a + 1, b), (a, b + 1)] {
                            if c < 3 && d < 3 {
                                let diff = (at(c, d) - v).abs();
                                if diff.is_finite() {
                                    spread = spread.max(diff);
                                }
                            }
                        }
                    }
                }
                // Smoothness margin: between sub-grid points ln h can exceed the sampled
                // maximum by at most a second-order term, which is ≲ ¼ of the largest
                // neighbour difference; use ½ of it plus a constant.
                ln_env[iz * nm + im] = mx + 0.5 * spread + 1e-3;
            }
        }
        let ref_max = ln_env.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = ln_env.iter().map(|l| (l - ref_max).exp()).collect();
        let (alias_prob, alias) = alias_table(&w);
        Self {
            nz,
            nm,
            dz,
            dm,
            ln_env,
            alias_prob,
            alias,
        }
    }

    /// ln(h/envelope) at a point (≤ 0 wherever the envelope is valid).
    #[cfg(test)]
    pub(crate) fn ln_ratio(&self, z: f64, m: f64) -> f64 {
        let iz = ((z / self.dz) as usize).min(self.nz - 1);
        let im = (((m - LOG10M_MIN) / self.dm) as usize).min(self.nm - 1);
        ln_h(z, m) - self.ln_env[iz * self.nm + im]
    }

    /// Propose (cell, z, log10 M) from the piecewise-constant envelope (no acceptance step:
    /// the caller accepts with h/envelope, after cheaper tests).
    #[inline]
    fn propose(&self, r: &mut impl Rng) -> (usize, f64, f64) {
        let k = self.alias_prob.len();
        let u = r.random::<f64>() * k as f64;
        let i = (u as usize).min(k - 1);
        let idx = if u - (i as f64) < self.alias_prob[i] {
            i
        } else {
            self.alias[i] as usize
        };
        let (iz, im) = (idx / self.nm, idx % self.nm);
        let z = LOWER[15] + (iz as f64 + r.random::<f64>()) * self.dz;
        let m = LOG10M_MIN + (im as f64 + r.random::<f64>()) * self.dm;
        (idx, z, m)
    }
}

/// Standardised Student-t (ν = 2) limit of the SFR ratios: |r| ≤ 5 ⇒ |t| ≤ 5/0.3.
fn student_t2_truncated(u: f64) -> f64 {
    let l = UPPER[2] / SFR_SCALE;
    let vmax = l / (l * l + 2.0).sqrt();
    // F(t) = ½ + t / (2√(t² + 2)) ⇒ v = 2F − 1 = t/√(t² + 2), t = v √2 / √(1 − v²).
    let v = vmax * (2.0 * u - 1.0);
    SFR_SCALE * v * SQRT_2 / (1.0 - v * v).sqrt()
}

/// The Prospector-α-like prior of `pop_cosmos.catalogue.ProspectorModel` (Padé cosmology Ω_m = 0.30966, H₀ = 67.66).
pub struct ProspectorAlphaPrior {
    envelope: OnceLock<MassRedshiftEnvelope>,
}

impl Default for ProspectorAlphaPrior {
    fn default() -> Self {
        Self::new()
    }
}

impl ProspectorAlphaPrior {
    /// A new prior (the sampling envelope is built lazily on the first draw, ~10 ms).
    pub fn new() -> Self {
        Self {
            envelope: OnceLock::new(),
        }
    }

    pub(crate) fn envelope(&self) -> &MassRedshiftEnvelope {
        self.envelope.get_or_init(MassRedshiftEnvelope::build)
    }

    /// One exact draw of physical θ (θ\[0\] = N) from exp(log_prob) (host, f64).
    ///
    /// Construction (every factor either a normalised conditional or a rejection step, so
    /// the joint is exactly ∝ exp(log_prob)):
    /// * coupled block (z, log10 M, log10 Z*, Z_gas): (z, m) from a piecewise-constant
    ///   envelope of dV_c/dz · φ_SMF accepted with h/envelope; Z* ~ 𝒩(μ_Z(m), σ_Z(m))
    ///   rejected outside its bounds (the 1/σ_Z of the normal is the −ln σ_Z term);
    ///   accept with D_min/D(Z*, m), D the quirky erf normaliser; Z_gas ~ U(−2, 0.5)
    ///   rejected unless Z_gas > Z*. Any rejection restarts the whole block, so the
    ///   m-dependence of ∫(quirky term)·P(Z_gas > Z*) dZ* correctly reshapes p(z, m).
    /// * (dust2, dust_index): τ₂ ~ 𝒩(0.3, 1) and n ~ 𝒩(μ_n(τ₂), 0.4), restarting the pair
    ///   if either leaves its bounds — the conditional is unnormalised in the prior, so its
    ///   τ₂-dependent truncation mass must act as a weight on τ₂, which this does.
    /// * dust1_fraction 𝒩(1, 0.3) on [0, 2] by rejection; SFR ratios Student-t (ν = 2,
    ///   scale 0.3) truncated to [−5, 5] by exact inverse CDF; ln f_AGN, ln τ_AGN, log U
    ///   uniform.
    pub fn sample_theta_row(&self, rng: &mut HostRng) -> [f64; N_PARAMS] {
        let env = self.envelope();
        let d_min = mzr_norm_lower_bound();
        let mut th = [0.0; N_PARAMS];
        let r = rng.inner();
        // The acceptance tests are independent, so they run cheapest-first.
        let (z, m, zstar, zgas) = loop {
            let (idx, z, m) = env.propose(r);
            if z <= 0.0 || m <= LOG10M_MIN || m >= LOG10M_MAX {
                continue;
            }
            let (mu, sigma) = mass_metallicity_params(m);
            let zs = mu + sigma * r.sample::<f64, _>(StandardNormal);
            if !(zs > LOWER[1] && zs < UPPER[1]) {
                continue;
            }
            let zg = LOWER[13] + params::range(13) * r.random::<f64>();
            if zg <= zs {
                continue;
            }
            if r.random::<f64>() * mzr_erf_norm(zs, sigma) >= d_min {
                continue;
            }
            if (1.0 - r.random::<f64>()).ln() < ln_h(z, m) - env.ln_env[idx] {
                break (z, m, zs, zg);
            }
        };
        th[0] = pade::distmod(z) - 2.5 * m;
        th[1] = zstar;
        for t in th.iter_mut().take(8).skip(2) {
            *t = student_t2_truncated(r.random::<f64>());
        }
        let (t2, n) = loop {
            let t2 = DUST2_MEAN + r.sample::<f64, _>(StandardNormal);
            if !(LOWER[8]..=UPPER[8]).contains(&t2) {
                continue;
            }
            let n = dust_index_mean(t2) + DUST_INDEX_SIGMA * r.sample::<f64, _>(StandardNormal);
            if (LOWER[9]..=UPPER[9]).contains(&n) {
                break (t2, n);
            }
        };
        th[8] = t2;
        th[9] = n;
        th[10] = loop {
            let f = DUST1F_MEAN + DUST1F_SIGMA * r.sample::<f64, _>(StandardNormal);
            if (LOWER[10]..=UPPER[10]).contains(&f) {
                break f;
            }
        };
        for i in [11, 12, 14] {
            th[i] = LOWER[i] + params::range(i) * r.random::<f64>();
        }
        th[13] = zgas;
        th[15] = z;
        th
    }

    /// `n` exact θ draws (host f64, no f32 rounding), reproducible for a given `seed`
    /// regardless of the thread count.
    pub fn sample_theta(&self, n: usize, seed: u64) -> Vec<[f64; N_PARAMS]> {
        use rayon::prelude::*;
        let mut out = vec![[0.0; N_PARAMS]; n];
        out.par_chunks_mut(4096).enumerate().for_each(|(k, chunk)| {
            let mut r =
                HostRng::seed_from_u64(common::splitmix64(seed ^ common::splitmix64(k as u64)));
            for row in chunk {
                *row = self.sample_theta_row(&mut r);
            }
        });
        out
    }
}

/// ln p(φ) as batched tensor ops (f32): φ `[..., 16]` → `[...]`.
pub(crate) fn log_prob_tensor(phi: &Tensor) -> Result<Tensor> {
    let phi = phi.to_dtype(DType::F32)?;
    let last = phi.rank() - 1;
    let theta = params::phi_to_theta(&phi)?;
    let col = |i: usize| -> Result<Tensor> { Ok(theta.narrow(last, i, 1)?.squeeze(last)?) };

    // Σ_{i=1..15} ln 𝒩(φ_i; 0, 1): uniform in θ within the bounds.
    let latent = ((phi.narrow(last, 1, N_PARAMS - 1)?.sqr()?.sum(last)? * -0.5)?
        - (N_PARAMS - 1) as f64 * LN_SQRT_2PI)?;

    // Mass formed and support.
    let z = col(15)?;
    let n_mag = phi.narrow(last, 0, 1)?.squeeze(last)?;
    let log10m = ((pade::distmod_t(&z)? - n_mag)? * 0.4)?;
    let zstar = col(1)?;
    let zgas = col(13)?;
    let support = log10m
        .gt(LOG10M_MIN)?
        .mul(&log10m.lt(LOG10M_MAX)?)?
        .mul(&zgas.gt(&zstar)?)?;
    // Clamped copy keeps every term finite (and gradients NaN-free) off the support.
    let m = log10m.clamp(LOG10M_MIN, LOG10M_MAX)?;

    // Dust.
    let t2 = col(8)?;
    let dust2 = ((&t2 - DUST2_MEAN)?.sqr()? * -0.5)?;
    let dust1f = (col(10)?
        .affine(1.0 / DUST1F_SIGMA, -DUST1F_MEAN / DUST1F_SIGMA)?
        .sqr()?
        * -0.5)?;
    let mu_n = ((t2.sqr()? * -0.0066)? + t2.affine(0.111, -0.095)?)?;
    let dust_index = (((col(9)? - mu_n)? * (1.0 / DUST_INDEX_SIGMA))?.sqr()? * -0.5)?;

    // SFR ratios: Student-t ν = 2, scale 0.3.
    let r = theta.narrow(last, 2, 6)?;
    let sfr = ((r * (1.0 / SFR_SCALE))?
        .sqr()?
        .affine(0.5, 1.0)?
        .log()?
        .sum(last)?
        * -1.5)?;

    // Leja+20 double Schechter with quadratic-in-z parameters (log-sum-exp in ln space).
    let quad = |c: [f64; 3]| -> Result<Tensor> { Ok((z.affine(c[0], c[1])?.mul(&z)? + c[2])?) };
    let [c1, c2, cm] = smf_coefficients();
    let delta = (&m - quad(cm)?)?;
    let x = (&delta * LN_10)?.exp()?;
    let l1 = (((quad(c1)? + (&delta * (SMF_ALPHA[0] + 1.0))?)? * LN_10)? - &x)?;
    let l2 = (((quad(c2)? + (&delta * (SMF_ALPHA[1] + 1.0))?)? * LN_10)? - &x)?;
    let mx = l1.maximum(&l2)?;
    let smf = ((((&l1 - &mx)?.exp()? + (&l2 - &mx)?.exp()?)?.log()? + mx)? + LN_10.ln())?;

    // Mass–metallicity with the reference's erf normalisation (centred on log10 Z).
    let mu_z = (m.affine(2.0229099, -20.37321787)?.tanh()? * 0.38391743)? - 0.25933163;
    let sigma_z = (m.affine(2.47629773, -25.74109587)?.tanh()? * -0.37122853)? + 0.6883885;
    let (mu_z, sigma_z) = (mu_z?, sigma_z?);
    let k = (&sigma_z * SQRT_2)?.recip()?;
    let norm = (zstar.affine(-1.0, UPPER[1])?.mul(&k)?.erf()?
        + zstar.affine(1.0, -LOWER[1])?.mul(&k)?.erf()?)?;
    let mzr =
        (((((&zstar - mu_z)? / &sigma_z)?.sqr()? * -0.5)? - sigma_z.log()?)? - norm.log()?)?;

    // Uniform in comoving volume.
    let ldv = pade::ln_differential_comoving_volume_t(&z)?;

    let total = (((((((latent + dust2)? + dust1f)? + dust_index)? + sfr)? + smf)? + mzr)? + ldv)?;
    let neg_inf = Tensor::full(f32::NEG_INFINITY, total.shape(), total.device())?;
    Ok(support.where_cond(&total, &neg_inf)?)
}

impl Prior for ProspectorAlphaPrior {
    fn name(&self) -> &str {
        "prospector-alpha"
    }

    fn log_prob(&self, phi: &Tensor) -> Result<Tensor> {
        log_prob_tensor(phi)
    }

    fn sample(&self, n: usize, rng: &mut dyn RandomSource, device: &Device) -> Result<Tensor> {
        common::sample_rows(self, n, rng, device, |r| {
            let th = self.sample_theta_row(r);
            let log10m = -0.4 * (th[0] - pade::distmod(th[15]));
            let ok = common::clearly_inside_support(log10m, th[1], th[13], th[15]);
            (common::theta_to_phi_row_f32(&th), ok)
        })
    }

    fn support_constraints(&self) -> SupportConstraints {
        SupportConstraints {
            gas_metallicity_above_stellar: true,
            log10_mass_formed_range: Some((LOG10M_MIN, LOG10M_MAX)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn quadratics_pass_through_anchors() {
        for y in [SMF_LOG10_PHI1, SMF_LOG10_PHI2, SMF_LOG10_MSTAR] {
            let c = quadratic_through_anchors(y);
            for k in 0..3 {
                assert!((quad_eval(c, SMF_Z_ANCHORS[k]) - y[k]).abs() < 1e-12);
            }
        }
    }

    /// The piecewise-constant envelope must dominate h(z, m) everywhere: probe 2·10⁶
    /// uniform points plus points near every cell corner.
    #[test]
    fn envelope_dominates_density() {
        let env = MassRedshiftEnvelope::build();
        let mut r = rand_chacha_like();
        let mut worst = f64::NEG_INFINITY;
        for _ in 0..1_000_000 {
            let z = 6.0 * r.random::<f64>();
            let m = 7.0 + 6.0 * r.random::<f64>();
            if z > 0.0 {
                worst = worst.max(env.ln_ratio(z, m));
            }
        }
        for iz in 0..env.nz {
            for im in 0..env.nm {
                for (fz, fm) in [
                    (0.999, 0.999),
                    (1e-3, 0.999),
                    (0.999, 1e-3),
                    (0.5, 0.999),
                    (0.999, 0.5),
                ] {
                    let z = (iz as f64 + fz) * env.dz;
                    let m = LOG10M_MIN + (im as f64 + fm) * env.dm;
                    worst = worst.max(env.ln_ratio(z, m));
                }
            }
        }
        assert!(worst <= 0.0, "envelope violated: max ln(h/env) = {worst}");
    }

    fn rand_chacha_like() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(17)
    }

    #[test]
    fn host_log_prob_has_expected_support() {
        let mut th = [0.0; N_PARAMS];
        th[15] = 1.0;
        th[0] = pade::distmod(1.0) - 2.5 * 10.0;
        th[1] = -0.5;
        th[13] = -0.4;
        th[14] = -2.0;
        th[12] = 3.0;
        th[11] = -3.0;
        th[8] = 0.5;
        th[10] = 1.0;
        assert!(log_density_theta(&th).is_finite());
        th[13] = -0.6;
        assert_eq!(log_density_theta(&th), f64::NEG_INFINITY);
        th[13] = -0.4;
        th[0] = pade::distmod(1.0) - 2.5 * 13.01;
        assert_eq!(log_density_theta(&th), f64::NEG_INFINITY);
    }
}
