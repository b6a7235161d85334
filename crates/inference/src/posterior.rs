//! The per-galaxy posterior in the sampler's latent space:
//! ln P(φ) = ln L(θ(φ)) + ln p(φ), evaluated for a whole `[walkers, galaxies, 16]` batch.

use popcosmos_api::{
    Likelihood, LogDensity, ModelPhotometry, Observations, Prior, Result, SpsModel, Tensor,
    params::phi_to_theta,
};

/// Posterior over φ for a batch of galaxies sharing one SPS model, likelihood and prior.
pub struct Posterior<'a> {
    /// The SPS model giving model photometry from θ.
    pub sps: &'a dyn SpsModel,
    /// The photometric likelihood ln L.
    pub likelihood: &'a dyn Likelihood,
    /// The prior ln p(φ).
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
        let theta = phi_to_theta(phi)?.reshape((w * g, d))?;
        let m = photometry_in_chunks(self.sps, &theta, self.max_rows)?;
        let b = m.flux_nmgy.dim(1)?;
        Ok(ModelPhotometry {
            flux_nmgy: m.flux_nmgy.reshape((w, g, b))?,
            line_sigma_nmgy: m
                .line_sigma_nmgy
                .map(|s| s.reshape((w, g, b)))
                .transpose()?,
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

/// Evaluate `sps` on θ `[n, 16]` in chunks of at most `max_rows` rows → fields `[n, bands]`.
pub fn photometry_in_chunks(
    sps: &dyn SpsModel,
    theta: &Tensor,
    max_rows: usize,
) -> Result<ModelPhotometry> {
    let n = theta.dim(0)?;
    let mut fluxes = Vec::new();
    let mut sigmas = Vec::new();
    let mut start = 0;
    while start < n {
        let len = max_rows.max(1).min(n - start);
        let m = sps.photometry(&theta.narrow(0, start, len)?)?;
        fluxes.push(m.flux_nmgy);
        sigmas.extend(m.line_sigma_nmgy);
        start += len;
    }
    let line_sigma_nmgy = if sigmas.len() == fluxes.len() {
        Some(Tensor::cat(&sigmas, 0)?)
    } else {
        None
    };
    Ok(ModelPhotometry {
        flux_nmgy: Tensor::cat(&fluxes, 0)?,
        line_sigma_nmgy,
    })
}
