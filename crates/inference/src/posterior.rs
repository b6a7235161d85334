//! The per-galaxy posterior in the sampler's latent space (spec §4):
//! ln P(φ) = ln L(θ(φ)) + ln p(φ), evaluated for a whole `[walkers, galaxies, 16]` batch.

use popcosmos_api::{
    Likelihood, LogDensity, ModelPhotometry, Observations, Prior, Result, SpsModel, Tensor,
    params::phi_to_theta,
};

/// Posterior over φ for a batch of galaxies sharing one SPS model, likelihood and prior.
pub struct Posterior<'a> {
    pub sps: &'a dyn SpsModel,
    pub likelihood: &'a dyn Likelihood,
    pub prior: &'a dyn Prior,
    /// Observations `[galaxies, bands]`.
    pub obs: &'a Observations,
    /// Largest number of parameter rows sent to the SPS model at once (bounds the
    /// emulator's `[bands, rows, 128]` activations).
    pub max_rows: usize,
}

impl Posterior<'_> {
    /// Model photometry for φ `[walkers, galaxies, 16]` → fields `[walkers, galaxies, bands]`.
    pub fn model_photometry(&self, phi: &Tensor) -> Result<ModelPhotometry> {
        let (w, g, d) = phi.dims3()?;
        let theta = phi_to_theta(phi)?;
        let per_chunk = (self.max_rows / g.max(1)).max(1);
        let mut fluxes = Vec::new();
        let mut sigmas = Vec::new();
        let mut start = 0;
        while start < w {
            let len = per_chunk.min(w - start);
            let rows = theta.narrow(0, start, len)?.reshape((len * g, d))?;
            let m = self.sps.photometry(&rows)?;
            let b = m.flux_nmgy.dim(1)?;
            fluxes.push(m.flux_nmgy.reshape((len, g, b))?);
            if let Some(s) = m.line_sigma_nmgy {
                sigmas.push(s.reshape((len, g, b))?);
            }
            start += len;
        }
        let flux_nmgy = Tensor::cat(&fluxes, 0)?;
        let line_sigma_nmgy = if sigmas.len() == fluxes.len() {
            Some(Tensor::cat(&sigmas, 0)?)
        } else {
            None
        };
        Ok(ModelPhotometry {
            flux_nmgy,
            line_sigma_nmgy,
        })
    }

    /// ln L only, `[walkers, galaxies]`.
    pub fn log_like(&self, phi: &Tensor) -> Result<Tensor> {
        let model = self.model_photometry(phi)?;
        self.likelihood.log_like(&model, self.obs)
    }
}

impl LogDensity for Posterior<'_> {
    fn log_density(&self, phi: &Tensor) -> Result<Tensor> {
        let ll = self.log_like(phi)?;
        let lp = self.prior.log_prob(phi)?;
        Ok((ll + lp)?)
    }
}
