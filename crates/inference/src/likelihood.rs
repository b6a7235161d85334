//! Per-galaxy photometric likelihood.
//!
//! With model flux f_b (no zero point), line uncertainty σ^em_b, catalogue flux f̂_b and
//! error σ̂_b (nmgy), zero point Z_b and fractional floor ε_b:
//!
//! ```text
//! s_b² = σ̂_b² + Z_b² [ (σ^em_b)² + (ε_b f_b)² ]
//! r_b  = (f̂_b − Z_b f_b) / s_b
//! ln L = Σ_b m_b [ ln t_ν(r_b) − ln s_b ]         (Student-t, ν = 2 by default)
//! ```
//!
//! Masking convention: m_b = 0 for a band that is missing (NaN / sentinel) or flagged as an
//! upper limit / non-detection in the catalogue; such bands drop out of the sum entirely
//! (no upper-limit likelihood term). Normalising constants are included per used band so
//! log-likelihoods of galaxies with different numbers of bands stay comparable.

use popcosmos_api::{
    Calibration, Device, Likelihood, ModelPhotometry, Observations, Result, Tensor,
};
use serde::{Deserialize, Serialize};

/// Noise distribution per band.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LikelihoodSpec {
    /// Student-t with `nu` degrees of freedom (reference: ν = 2).
    StudentT {
        /// Degrees of freedom ν > 0 (default 2).
        #[serde(default = "default_nu")]
        nu: f64,
    },
    /// Gaussian.
    Gaussian {},
}

fn default_nu() -> f64 {
    2.0
}

impl Default for LikelihoodSpec {
    fn default() -> Self {
        LikelihoodSpec::StudentT { nu: 2.0 }
    }
}

impl LikelihoodSpec {
    /// Check that a Student-t ν is positive and finite (errors name `likelihood.nu`).
    pub fn validate(&self) -> popcosmos_api::Result<()> {
        if let LikelihoodSpec::StudentT { nu } = self
            && !(nu.is_finite() && *nu > 0.0)
        {
            return Err(popcosmos_api::Error::config(
                "likelihood.nu",
                format!("degrees of freedom must be positive and finite, got {nu}"),
            ));
        }
        Ok(())
    }
}

/// The photometric likelihood (Leistedt+23 data model) for one survey calibration.
pub struct PhotometricLikelihood {
    spec: LikelihoodSpec,
    zero_points: Tensor,
    error_floors: Tensor,
    /// ln of the per-band normalising constant of the standardised density.
    ln_norm: f64,
}

fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

impl PhotometricLikelihood {
    /// The likelihood of `spec` with `calibration`'s zero points and error floors (one per
    /// band) as f32 tensors on `device`.
    pub fn new(spec: LikelihoodSpec, calibration: &Calibration, device: &Device) -> Result<Self> {
        spec.validate()?;
        let f32v = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<_>>();
        let n = calibration.zero_points.len();
        let ln_norm = match spec {
            LikelihoodSpec::StudentT { nu } => {
                ln_gamma((nu + 1.0) / 2.0)
                    - ln_gamma(nu / 2.0)
                    - 0.5 * (nu * std::f64::consts::PI).ln()
            }
            LikelihoodSpec::Gaussian {} => -0.5 * (2.0 * std::f64::consts::PI).ln(),
        };
        Ok(Self {
            spec,
            zero_points: Tensor::from_vec(f32v(&calibration.zero_points), n, device)?,
            error_floors: Tensor::from_vec(f32v(&calibration.error_floors), n, device)?,
            ln_norm,
        })
    }

    /// Per-band log-density terms `[..., galaxies, bands]` (masked bands are 0).
    pub fn log_like_per_band(&self, model: &ModelPhotometry, obs: &Observations) -> Result<Tensor> {
        let f = &model.flux_nmgy;
        let zf = f.broadcast_mul(&self.zero_points)?;
        // Model-side variance in zero-point-corrected units: Z² (σ_em² + (ε f)²).
        let floor = f.broadcast_mul(&self.error_floors)?;
        let mut model_var = floor.sqr()?;
        if let Some(em) = &model.line_sigma_nmgy {
            model_var = (model_var + em.sqr()?)?;
        }
        let model_var = model_var.broadcast_mul(&self.zero_points.sqr()?)?;
        let var = model_var.broadcast_add(&obs.flux_err_nmgy.sqr()?)?;
        let ln_s = (var.log()? * 0.5)?;
        let r2 = (zf.broadcast_sub(&obs.flux_nmgy)?.sqr()? / &var)?;
        let ln_t = match self.spec {
            LikelihoodSpec::StudentT { nu } => ((r2 / nu)? + 1.0)?.log()? * (-(nu + 1.0) / 2.0),
            LikelihoodSpec::Gaussian {} => r2 * -0.5,
        }?;
        let per_band = ((ln_t - ln_s)? + self.ln_norm)?;
        Ok(per_band.broadcast_mul(&obs.mask)?)
    }
}

impl Likelihood for PhotometricLikelihood {
    fn log_like(&self, model: &ModelPhotometry, obs: &Observations) -> Result<Tensor> {
        let per_band = self.log_like_per_band(model, obs)?;
        Ok(per_band.sum(per_band.rank() - 1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calib(n: usize, zp: f64, floor: f64) -> Calibration {
        Calibration {
            zero_points: vec![zp; n],
            error_floors: vec![floor; n],
        }
    }

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    /// Direct scalar evaluation of the likelihood for one galaxy (one argument per quantity of the
    /// formula, on purpose: it is the independent check of the tensor code).
    #[allow(clippy::too_many_arguments)]
    fn reference(
        f: &[f64],
        em: &[f64],
        obs: &[f64],
        err: &[f64],
        mask: &[f64],
        zp: f64,
        floor: f64,
        nu: Option<f64>,
    ) -> f64 {
        let mut s = 0.0;
        for b in 0..f.len() {
            if mask[b] == 0.0 {
                continue;
            }
            let var = err[b].powi(2) + zp * zp * (em[b].powi(2) + (floor * f[b]).powi(2));
            let r2 = (obs[b] - zp * f[b]).powi(2) / var;
            s += match nu {
                Some(nu) => {
                    ln_gamma((nu + 1.0) / 2.0)
                        - ln_gamma(nu / 2.0)
                        - 0.5 * (nu * std::f64::consts::PI).ln()
                        - (nu + 1.0) / 2.0 * (1.0 + r2 / nu).ln()
                }
                None => -0.5 * (2.0 * std::f64::consts::PI).ln() - 0.5 * r2,
            } - 0.5 * var.ln();
        }
        s
    }

    #[test]
    fn matches_scalar_formula_with_masks_and_broadcasting() {
        let f = [1.0, 2.0, 0.5];
        let em = [0.01, 0.2, 0.0];
        let obs = [1.1, 1.7, 0.9];
        let err = [0.1, 0.3, 0.2];
        let mask = [1.0, 1.0, 0.0];
        for (spec, nu) in [
            (LikelihoodSpec::StudentT { nu: 2.0 }, Some(2.0)),
            (LikelihoodSpec::StudentT { nu: 5.0 }, Some(5.0)),
            (LikelihoodSpec::Gaussian {}, None),
        ] {
            let lik =
                PhotometricLikelihood::new(spec, &calib(3, 1.05, 0.03), &Device::Cpu).unwrap();
            // model [walkers=2, galaxies=1, bands=3]: both walkers identical.
            let fm: Vec<f32> = f.iter().chain(f.iter()).map(|v| *v as f32).collect();
            let emm: Vec<f32> = em.iter().chain(em.iter()).map(|v| *v as f32).collect();
            let model = ModelPhotometry {
                flux_nmgy: t(&fm, &[2, 1, 3]),
                line_sigma_nmgy: Some(t(&emm, &[2, 1, 3])),
            };
            let o = Observations {
                flux_nmgy: t(&obs.map(|v| v as f32), &[1, 3]),
                flux_err_nmgy: t(&err.map(|v| v as f32), &[1, 3]),
                mask: t(&mask.map(|v| v as f32), &[1, 3]),
            };
            let ll = lik.log_like(&model, &o).unwrap().to_vec2::<f32>().unwrap();
            let expect = reference(&f, &em, &obs, &err, &mask, 1.05, 0.03, nu);
            assert!(
                (ll[0][0] as f64 - expect).abs() < 1e-5,
                "{spec:?}: {} vs {expect}",
                ll[0][0]
            );
            assert_eq!(ll[0][0], ll[1][0]);
        }
    }

    #[test]
    fn student_t_normalises_to_one() {
        // ∫ exp(ln t_ν(r) − ln s) df over f̂ must be 1 (one band, ν = 2, s = 0.5).
        let lik = PhotometricLikelihood::new(
            LikelihoodSpec::StudentT { nu: 2.0 },
            &calib(1, 1.0, 0.0),
            &Device::Cpu,
        )
        .unwrap();
        let n = 400_001;
        let (lo, hi) = (-2000.0f64, 2000.0f64);
        let grid: Vec<f32> = (0..n)
            .map(|i| (lo + (hi - lo) * i as f64 / (n - 1) as f64) as f32)
            .collect();
        let model = ModelPhotometry {
            flux_nmgy: t(&[0.0; 1], &[1, 1, 1]),
            line_sigma_nmgy: None,
        };
        let o = Observations {
            flux_nmgy: t(&grid, &[n, 1]),
            flux_err_nmgy: t(&vec![0.5; n], &[n, 1]),
            mask: t(&vec![1.0; n], &[n, 1]),
        };
        let ll = lik
            .log_like(&model, &o)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let h = (hi - lo) / (n - 1) as f64;
        let integral: f64 = ll.iter().map(|v| (*v as f64).exp() * h).sum();
        // Tail mass beyond ±2000 for s = 0.5, ν = 2: ≈ s²/ (2·2000²)·2 ≈ 6e-8.
        assert!((integral - 1.0).abs() < 1e-4, "{integral}");
    }

    #[test]
    fn ln_gamma_known_values() {
        assert!((ln_gamma(1.5) - (-0.120_782_237_635_245_2)).abs() < 1e-13);
        assert!((ln_gamma(1.0)).abs() < 1e-13);
        assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-11);
    }
}
