//! Walker initialisation from a library of prior draws (the reference starts each galaxy at
//! its maximum-likelihood mock galaxy).
//!
//! The library's model photometry is computed once per run; for each batch of galaxies the
//! likelihood of every library draw is one broadcast `[draws, galaxies]` evaluation, and
//! each galaxy's walkers start around its `top_k` best draws.

use popcosmos_api::{
    Likelihood, ModelPhotometry, Observations, Prior, RandomSource, Result, Shape, SpsModel,
    Tensor, params::phi_to_theta,
};

use crate::posterior::Posterior;
use crate::reparam::SamplingSpace;

/// Largest draws × galaxies × bands of one chunk of [`InitLibrary::log_like`] (2²⁴: a few
/// hundred MB of f32 intermediates).
pub const LIKE_CHUNK_ELEMENTS: usize = 1 << 24;

/// Rows per call when a proposal samples or evaluates the start library.
const PROPOSAL_CHUNK: usize = 16_384;

/// Fewest prior draws the sampling-space map is fitted to.
pub const MIN_WHITENING_DRAWS: usize = 1000;

/// Prior draws with their model photometry.
pub struct InitLibrary {
    /// Latent draws `[draws, 16]`.
    pub phi: Tensor,
    /// ln p(φ) of each draw under the run's prior `[draws]` (−∞ outside its support).
    pub log_prior: Tensor,
    /// Model photometry `[draws, bands]`.
    pub model: ModelPhotometry,
    /// The sampler's coordinates, fitted to the prior half of the draws (see
    /// [`SamplingSpace`]); its marginal whitening is left out when the prior half has fewer
    /// than [`MIN_WHITENING_DRAWS`] draws.
    pub sampling_space: SamplingSpace,
    /// ln of each draw's importance weight against the prior, `[draws]` f32, when part of the
    /// library comes from a proposal ([`InitLibrary::build_with_proposal`]); `None` for
    /// prior draws alone.
    pub log_weight: Option<Tensor>,
    /// The draws in the sampling coordinates with ln p(ψ), made on first use (SMC).
    pub(crate) in_psi: std::sync::OnceLock<std::result::Result<crate::smc::LibraryInPsi, String>>,
}

impl InitLibrary {
    /// Draw `n` points and evaluate the SPS model on them (in row chunks).
    ///
    /// With `broad`, half the draws come from the run's prior and half from `broad` (uniform
    /// in the parameter box and in log mass): a library drawn from the prior alone is densest
    /// where the prior is (low-mass, low-z galaxies), so its best-likelihood draw is biased
    /// towards those; the broad half covers the rest, and start points are ranked by
    /// posterior. Without it every draw is from the prior, as SMC's stage 0 needs.
    pub fn build(
        prior: &dyn Prior,
        broad: Option<&dyn Prior>,
        sps: &dyn SpsModel,
        n: usize,
        max_rows: usize,
        rng: &mut dyn RandomSource,
    ) -> Result<Self> {
        let device = sps.device().clone();
        let (n_prior, phi) = match broad {
            Some(broad) => {
                let n_prior = n.div_ceil(2);
                let phi = Tensor::cat(
                    &[
                        prior.sample(n_prior, rng, &device)?,
                        broad.sample(n - n_prior, rng, &device)?,
                    ],
                    0,
                )?;
                (n_prior, phi)
            }
            None => (n, prior.sample(n, rng, &device)?),
        };
        let log_prior = prior.log_prob(&phi)?;
        let model = crate::posterior::photometry_in_chunks(sps, &phi_to_theta(&phi)?, max_rows)?;
        let sampling_space =
            SamplingSpace::fit(&phi.narrow(0, 0, n_prior)?, prior, MIN_WHITENING_DRAWS)?;
        Ok(Self {
            phi,
            log_prior,
            model,
            sampling_space,
            log_weight: None,
            in_psi: Default::default(),
        })
    }

    /// A start library for SMC drawn partly from a `proposal` density q: a share `fraction`
    /// of the `n` draws from q, the rest from the prior p, interleaved so that every
    /// contiguous block (an SMC island's share) holds the same mix.
    ///
    /// Why: prior draws rarely land on a galaxy's thin posterior ridge, so the start library's
    /// density there sets how much of the posterior the tempering finds (docs/validation.md).
    /// A proposal where the survey's galaxies are (a population fitted to its photometry)
    /// puts more draws there; the importance weights p/m, with m = (1 − f) p + f q the
    /// mixture the draws come from (the "defensive" mixture of Hesterberg 1995, so p/m ≤
    /// 1/(1 − f)), keep the posterior and the evidence those of the run's prior. p's
    /// normalising constant, which the mixture needs, solves Geyer's (1994) reverse-logistic
    /// equation over the same draws ([`prior_normaliser`]).
    pub fn build_with_proposal(
        prior: &dyn Prior,
        proposal: &dyn Prior,
        fraction: f64,
        sps: &dyn SpsModel,
        n: usize,
        max_rows: usize,
        rng: &mut dyn RandomSource,
    ) -> Result<Self> {
        let device = sps.device().clone();
        // Row r is a proposal draw when ⌊(r + 1) f⌋ > ⌊r f⌋ (evenly spread).
        let from_q: Vec<bool> = (0..n)
            .map(|r| ((r + 1) as f64 * fraction).floor() > (r as f64 * fraction).floor())
            .collect();
        let n_q = from_q.iter().filter(|&&q| q).count();
        let n_p = n - n_q;
        let phi_p = prior.sample(n_p, rng, &device)?;
        // In chunks: one 10⁵-row pass of a flow spends most of its time allocating.
        let phi_q = in_row_chunks(n_q, |_, len| proposal.sample(len, rng, &device))?;
        let (mut next_p, mut next_q) = (0u32, n_p as u32);
        let order: Vec<u32> = from_q
            .iter()
            .map(|&q| {
                let i = if q { &mut next_q } else { &mut next_p };
                *i += 1;
                *i - 1
            })
            .collect();
        let phi = Tensor::cat(&[&phi_p, &phi_q], 0)?
            .index_select(&Tensor::from_vec(order, n, &device)?, 0)?;
        let log_prior = prior.log_prob(&phi)?;
        let host = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(t.to_dtype(popcosmos_api::DType::F64)?
                .to_device(&popcosmos_api::Device::Cpu)?
                .to_vec1::<f64>()?)
        };
        let log_q = in_row_chunks(n, |s, len| proposal.log_prob(&phi.narrow(0, s, len)?))?;
        let (lp, lq) = (host(&log_prior)?, host(&log_q)?);
        let share_q = n_q as f64 / n as f64;
        let ln_c = prior_normaliser(&lp, &lq, share_q);
        let log_weight: Vec<f32> = lp
            .iter()
            .zip(&lq)
            .map(|(&p, &q)| (p - ln_c - ln_mixture(p - ln_c, q, share_q)) as f32)
            .collect();
        let model = crate::posterior::photometry_in_chunks(sps, &phi_to_theta(&phi)?, max_rows)?;
        let sampling_space = SamplingSpace::fit(&phi_p, prior, MIN_WHITENING_DRAWS)?;
        Ok(Self {
            phi,
            log_prior,
            model,
            sampling_space,
            log_weight: Some(Tensor::from_vec(log_weight, n, &device)?),
            in_psi: Default::default(),
        })
    }

    /// Draws in the library.
    pub fn len(&self) -> usize {
        self.phi.dim(0).unwrap_or(0)
    }

    /// True when the library holds no draws.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// ln L of every draw for every galaxy, `[draws, galaxies]` (one broadcast evaluation).
    ///
    /// In chunks of draws of at most [`LIKE_CHUNK_ELEMENTS`] draw × galaxy × band entries, so
    /// that a 10⁶-draw library against 50 galaxies in 26 bands does not build 10⁹-entry
    /// intermediates (it ran out of 24 GB that way).
    pub fn log_like(&self, likelihood: &dyn Likelihood, obs: &Observations) -> Result<Tensor> {
        let (galaxies, bands) = obs.flux_nmgy.dims2()?;
        let m = self.len();
        let chunk = (LIKE_CHUNK_ELEMENTS / (galaxies * bands).max(1)).clamp(1, m.max(1));
        let mut parts = Vec::with_capacity(m.div_ceil(chunk));
        for start in (0..m).step_by(chunk) {
            let len = chunk.min(m - start);
            let rows = |t: &Tensor| t.narrow(0, start, len)?.unsqueeze(1);
            let model = ModelPhotometry {
                flux_nmgy: rows(&self.model.flux_nmgy)?,
                line_sigma_nmgy: self.model.line_sigma_nmgy.as_ref().map(rows).transpose()?,
            };
            parts.push(likelihood.log_like(&model, obs)?);
        }
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Indices `[galaxies, k]` of the `k` library draws with the highest posterior density.
    pub fn best_draws(
        &self,
        likelihood: &dyn Likelihood,
        obs: &Observations,
        k: usize,
    ) -> Result<Tensor> {
        // [draws, galaxies]; non-finite values sort last.
        let ll = self
            .log_like(likelihood, obs)?
            .broadcast_add(&self.log_prior.unsqueeze(1)?)?;
        let finite = ll.eq(&ll)?; // false for NaN
        let ll = finite.where_cond(&ll, &ll.ones_like()?.affine(0.0, -1e30)?)?;
        top_k_columns(&ll.t()?.contiguous()?, k.min(self.len()))
    }

    /// Initial walkers `[walkers, galaxies, 16]`: walker w of galaxy g starts at its
    /// (w mod k)-th best draw plus `jitter`·𝒩(0, I); jittered points that leave the
    /// posterior's support fall back to the draw itself.
    pub fn initial_walkers(
        &self,
        posterior: &Posterior<'_>,
        walkers: usize,
        top_k: usize,
        jitter: f64,
        rng: &mut dyn RandomSource,
    ) -> Result<Tensor> {
        let best = self.best_draws(posterior.likelihood, posterior.obs, top_k)?; // [G, k]
        let (g, k) = best.dims2()?;
        let device = self.phi.device();
        // Walker w uses column w % k: build the [walkers, galaxies] index table on device.
        let cols: Vec<u32> = (0..walkers).map(|w| (w % k) as u32).collect();
        let cols = Tensor::from_vec(cols, walkers, device)?;
        let idx = best.t()?.contiguous()?.index_select(&cols, 0)?; // [walkers, G]
        let flat = idx.flatten_all()?;
        let start =
            self.phi
                .index_select(&flat, 0)?
                .reshape((walkers, g, popcosmos_api::N_PARAMS))?;
        let noise = rng.normal(&Shape::from((walkers, g, popcosmos_api::N_PARAMS)), device)?;
        let jittered = (&start + (noise * jitter)?)?;
        let lp = popcosmos_api::LogDensity::log_density(posterior, &jittered)?;
        let ok = lp.ge(&lp.ones_like()?.affine(0.0, -1e30)?)?; // finite (NaN compares false)
        let ok = ok.unsqueeze(2)?.broadcast_as(start.shape())?.contiguous()?;
        Ok(ok.where_cond(&jittered, &start)?)
    }
}

/// `f(start, len)` over rows 0..n in chunks of [`PROPOSAL_CHUNK`], concatenated (one call
/// with len 0 when n = 0, so an empty share still gives an empty tensor).
fn in_row_chunks(n: usize, mut f: impl FnMut(usize, usize) -> Result<Tensor>) -> Result<Tensor> {
    if n == 0 {
        return f(0, 0);
    }
    let parts = (0..n)
        .step_by(PROPOSAL_CHUNK)
        .map(|s| f(s, PROPOSAL_CHUNK.min(n - s)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// ln[(1 − f) p + f q] from ln p and ln q (a non-finite term contributes nothing).
fn ln_mixture(ln_p: f64, ln_q: f64, f: f64) -> f64 {
    let a = if ln_p.is_finite() {
        (1.0 - f).ln() + ln_p
    } else {
        f64::NEG_INFINITY
    };
    let b = if ln_q.is_finite() {
        f.ln() + ln_q
    } else {
        f64::NEG_INFINITY
    };
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// ln c of an unnormalised density p̃ = c·p from draws of the mixture m = (1 − f) p + f q,
/// q normalised, given ln p̃ and ln q at every draw: the root of mean_j p_j/m_j = 1 (the
/// mixture's importance weights for p average to one; Geyer 1994, the optimal bridge
/// sampling estimator of Meng & Wong 1996). Each weight is a decreasing sigmoid of ln c, so
/// the root is bracketed and found by bisection; the fixed-point iteration crawls when p and
/// q overlap little.
pub fn prior_normaliser(ln_p: &[f64], ln_q: &[f64], f: f64) -> f64 {
    let n = ln_p.len() as f64;
    // mean_j w_j − 1 at ln c = x, w_j = 1/((1 − f) + f q_j c / p̃_j).
    let excess = |x: f64| {
        ln_p.iter()
            .zip(ln_q)
            .filter(|(p, _)| p.is_finite())
            .map(|(&p, &q)| 1.0 / ((1.0 - f) + f * (q - p + x).exp()))
            .sum::<f64>()
            / n
            - 1.0
    };
    let (mut lo, mut hi) = (-1.0, 1.0);
    let mut width = 2.0;
    while excess(lo) < 0.0 && width < 1e4 {
        lo -= width;
        width *= 2.0;
    }
    while excess(hi) > 0.0 && width < 1e4 {
        hi += width;
        width *= 2.0;
    }
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if excess(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// Column indices `[rows, k]` (u32) of the `k` largest values of each row of `x` `[rows, cols]`,
/// largest first. Repeated arg-max rather than a sort: candle's CUDA arg-sort holds a whole
/// row in shared memory and fails beyond ~12k columns (the default library has 30 000).
fn top_k_columns(x: &Tensor, k: usize) -> Result<Tensor> {
    let cols = x.dim(1)?;
    let index = Tensor::arange(0u32, cols as u32, x.device())?.unsqueeze(0)?;
    let mut x = x.clone();
    let mut picks = Vec::with_capacity(k);
    for i in 0..k {
        let best = x.argmax_keepdim(1)?; // [rows, 1]
        if i + 1 < k {
            let taken = index.broadcast_eq(&best)?;
            x = taken.where_cond(&x.ones_like()?.affine(0.0, f32::MIN as f64)?, &x)?;
        }
        picks.push(best);
    }
    Ok(Tensor::cat(&picks, 1)?.contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use popcosmos_api::{Device, HostRng, RandomSource};

    /// p̃ = 7·𝒩(0, 1) and q = 𝒩(1, 1.5²), drawn as the mixture 0.7 p + 0.3 q: the fixed point
    /// recovers ln 7, and the weights p/m average to one over the draws.
    #[test]
    fn prior_normaliser_recovers_a_known_constant() {
        let mut rng = HostRng::seed_from_u64(3);
        let n = 200_000;
        let z = rng
            .normal(&Shape::from(n), &Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let f = 0.3;
        let x: Vec<f64> = z
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let from_q = ((i + 1) as f64 * f).floor() > (i as f64 * f).floor();
                if from_q {
                    1.0 + 1.5 * v as f64
                } else {
                    v as f64
                }
            })
            .collect();
        let ln_n = |x: f64, mu: f64, s: f64| {
            -0.5 * ((x - mu) / s).powi(2) - s.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
        };
        let lp: Vec<f64> = x.iter().map(|&v| 7f64.ln() + ln_n(v, 0.0, 1.0)).collect();
        let lq: Vec<f64> = x.iter().map(|&v| ln_n(v, 1.0, 1.5)).collect();
        let ln_c = prior_normaliser(&lp, &lq, f);
        assert!((ln_c - 7f64.ln()).abs() < 0.01, "{ln_c}");
        let mean_w = lp
            .iter()
            .zip(&lq)
            .map(|(&p, &q)| (p - ln_c - ln_mixture(p - ln_c, q, f)).exp())
            .sum::<f64>()
            / n as f64;
        assert!((mean_w - 1.0).abs() < 1e-9, "{mean_w}");
    }

    #[test]
    fn top_k_columns_match_a_full_sort() {
        let mut rng = HostRng::seed_from_u64(11);
        let (rows, cols, k) = (7, 20_000, 5);
        let x = rng.normal(&(rows, cols).into(), &Device::Cpu).unwrap();
        let got = top_k_columns(&x, k).unwrap().to_vec2::<u32>().unwrap();
        for (r, row) in x.to_vec2::<f32>().unwrap().iter().enumerate() {
            let mut order: Vec<u32> = (0..cols as u32).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
            assert_eq!(got[r], order[..k], "row {r}");
        }
    }
}
