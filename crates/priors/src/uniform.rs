//! Uniform prior: uniform in θ within the parameter bounds for indices 1..15 and flat in
//! log10 M_formed on (7, 13) given z (Padé distance modulus, Adachi & Kasai 2012).

use candle_core::{DType, Device, Tensor};
use popcosmos_api::cosmology::pade;
use popcosmos_api::params::{IDX_Z, LOWER, N_PARAMS, UPPER};
use popcosmos_api::{Prior, RandomSource, Result};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::common::{self, LN_SQRT_2PI};
use crate::prospector::{LOG10M_MAX, LOG10M_MIN};

/// ln of the density of N given z: log10 M = −0.4(N − μ(z)) uniform on (7, 13) ⇒
/// p(N | z) = 0.4 / 6 = 1/15.
const LN_P_N_GIVEN_Z: f64 = -2.708_050_201_102_21; // −ln 15

/// Uniform-in-θ prior, normalised: ln p(φ) = Σ_{i=1..15} ln 𝒩(φ_i; 0, 1) − ln 15 for
/// 7 < log10 M_formed < 13, −∞ otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct UniformPrior;

impl UniformPrior {
    /// The prior (it has no settings).
    pub fn new() -> Self {
        Self
    }

    /// Host f64 version of [`Prior::log_prob`] for one row.
    pub fn log_prob_row(phi: &[f64; N_PARAMS]) -> f64 {
        let z = LOWER[IDX_Z] + (UPPER[IDX_Z] - LOWER[IDX_Z]) * common::normal_cdf(phi[IDX_Z]);
        let m = -0.4 * (phi[0] - pade::distmod(z));
        if !(m > LOG10M_MIN && m < LOG10M_MAX) {
            return f64::NEG_INFINITY;
        }
        phi[1..]
            .iter()
            .map(|p| -0.5 * p * p - LN_SQRT_2PI)
            .sum::<f64>()
            + LN_P_N_GIVEN_Z
    }
}

impl Prior for UniformPrior {
    fn name(&self) -> &str {
        "uniform"
    }

    fn log_prob(&self, phi: &Tensor) -> Result<Tensor> {
        let phi = phi.to_dtype(DType::F32)?;
        let last = phi.rank() - 1;
        let latent = ((phi.narrow(last, 1, N_PARAMS - 1)?.sqr()?.sum(last)? * -0.5)?
            + (LN_P_N_GIVEN_Z - (N_PARAMS - 1) as f64 * LN_SQRT_2PI))?;
        let z = ((phi.narrow(last, IDX_Z, 1)?.squeeze(last)? * std::f64::consts::FRAC_1_SQRT_2)?
            .erf()?
            .affine(0.5 * UPPER[IDX_Z], 0.5 * UPPER[IDX_Z])?
            + LOWER[IDX_Z])?;
        let n_mag = phi.narrow(last, 0, 1)?.squeeze(last)?;
        let m = ((pade::distmod_t(&z)? - n_mag)? * 0.4)?;
        let support = m.gt(LOG10M_MIN)?.mul(&m.lt(LOG10M_MAX)?)?;
        let neg_inf = Tensor::full(f32::NEG_INFINITY, latent.shape(), latent.device())?;
        Ok(support.where_cond(&latent, &neg_inf)?)
    }

    /// φ_{1..15} ~ 𝒩(0, 1), log10 M ~ U(7, 13), N = μ(z) − 2.5 log10 M.
    fn sample(&self, n: usize, rng: &mut dyn RandomSource, device: &Device) -> Result<Tensor> {
        common::sample_rows(self, n, rng, device, |hr| {
            let r = hr.inner();
            let mut phi = [0f32; N_PARAMS];
            for p in phi.iter_mut().skip(1) {
                *p = r.sample::<f64, _>(StandardNormal) as f32;
            }
            let z = LOWER[IDX_Z]
                + (UPPER[IDX_Z] - LOWER[IDX_Z]) * common::normal_cdf(phi[IDX_Z] as f64);
            let m = LOG10M_MIN + (LOG10M_MAX - LOG10M_MIN) * r.random::<f64>();
            phi[0] = (pade::distmod(z) - 2.5 * m) as f32;
            (phi, common::clearly_inside_support(m, 0.0, 1.0, z))
        })
    }
}
