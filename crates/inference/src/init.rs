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
