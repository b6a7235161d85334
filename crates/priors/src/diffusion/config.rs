//! Serde configuration of a score-based diffusion model, stored as JSON in the
//! `config` metadata entry of its safetensors file (format `popcosmos/diffusion/v1`).

use serde::{Deserialize, Serialize};

/// Architecture and SDE of a flowfusion-compatible diffusion model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffusionConfig {
    /// Dimension D of the modelled variable.
    pub dim: usize,
    /// Number C of conditioning inputs (0 for an unconditional model).
    #[serde(default)]
    pub conditional_dim: usize,
    /// Length E of the Fourier time embedding (E/2 frequencies, sines first).
    pub embedding_dim: usize,
    /// Hidden layer widths of the MLP; the network is `[E + D + C] + hidden + [D]`.
    pub hidden: Vec<usize>,
    /// Activation after every layer except the last.
    pub activation: Activation,
    /// If true the network output is the score; otherwise score = output / σ(t).
    pub no_sigma: bool,
    /// The forward SDE the network was trained with.
    pub sde: SdeConfig,
    /// Names of the D modelled columns (optional; e.g. the latent φ names for a population prior).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Names of the C conditioning columns (optional).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditional_names: Vec<String>,
}

/// Hidden-layer activation of the score network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// tanh.
    Tanh,
    /// SiLU (x σ(x)).
    Silu,
}

/// The forward SDE. `t_max` is T; `epsilon` the lower end of the time interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SdeConfig {
    /// Variance preserving: β(t) = β_min + (β_max − β_min) t/T.
    Vp {
        /// β at t = 0.
        beta_min: f64,
        /// β at t = T.
        beta_max: f64,
        /// T, the end of the diffusion time interval.
        t_max: f64,
        /// ε, the lower end of the time interval (the data end: training times and the ODE stop
        /// there rather than at 0).
        epsilon: f64,
    },
    /// Sub-variance preserving (same drift, g² = β(t)(1 − e^{−2∫β})).
    SubVp {
        /// β at t = 0.
        beta_min: f64,
        /// β at t = T.
        beta_max: f64,
        /// T, the end of the diffusion time interval.
        t_max: f64,
        /// ε, the lower end of the time interval (the data end: training times and the ODE stop
        /// there rather than at 0).
        epsilon: f64,
    },
    /// Variance exploding: σ(t) = σ_min (σ_max/σ_min)^{t/T}, no drift.
    Ve {
        /// σ at t = 0.
        sigma_min: f64,
        /// σ at t = T.
        sigma_max: f64,
        /// T, the end of the diffusion time interval.
        t_max: f64,
        /// ε, the lower end of the time interval (the data end: training times and the ODE stop
        /// there rather than at 0).
        epsilon: f64,
    },
}

impl SdeConfig {
    /// flowfusion's VP defaults (β 0.1 → 20, T = 1, ε = 1e−3).
    pub fn vp_default() -> Self {
        SdeConfig::Vp {
            beta_min: 0.1,
            beta_max: 20.0,
            t_max: 1.0,
            epsilon: 1e-3,
        }
    }

    /// T, the end of the diffusion time interval.
    pub fn t_max(&self) -> f64 {
        match *self {
            SdeConfig::Vp { t_max, .. } | SdeConfig::SubVp { t_max, .. } => t_max,
            SdeConfig::Ve { t_max, .. } => t_max,
        }
    }

    /// ε, the lower end of the time interval.
    pub fn epsilon(&self) -> f64 {
        match *self {
            SdeConfig::Vp { epsilon, .. } | SdeConfig::SubVp { epsilon, .. } => epsilon,
            SdeConfig::Ve { epsilon, .. } => epsilon,
        }
    }

    /// ∫₀ᵗ β(s) ds for the VP family.
    fn integrated_beta(beta_min: f64, beta_max: f64, t_max: f64, t: f64) -> f64 {
        beta_min * t + 0.5 * (beta_max - beta_min) * t * t / t_max
    }

    /// Linear drift coefficient a(t) with f(x, t) = a(t) x.
    pub fn drift_coeff(&self, t: f64) -> f64 {
        match *self {
            SdeConfig::Vp {
                beta_min,
                beta_max,
                t_max,
                ..
            }
            | SdeConfig::SubVp {
                beta_min,
                beta_max,
                t_max,
                ..
            } => -0.5 * (beta_min + (beta_max - beta_min) * t / t_max),
            SdeConfig::Ve { .. } => 0.0,
        }
    }

    /// Squared diffusion coefficient g(t)².
    pub fn g2(&self, t: f64) -> f64 {
        match *self {
            SdeConfig::Vp {
                beta_min,
                beta_max,
                t_max,
                ..
            } => beta_min + (beta_max - beta_min) * t / t_max,
            SdeConfig::SubVp {
                beta_min,
                beta_max,
                t_max,
                ..
            } => {
                let beta = beta_min + (beta_max - beta_min) * t / t_max;
                let ib = Self::integrated_beta(beta_min, beta_max, t_max, t);
                beta * (1.0 - (-2.0 * ib).exp())
            }
            SdeConfig::Ve {
                sigma_min,
                sigma_max,
                t_max,
                ..
            } => {
                let s = sigma_min * (sigma_max / sigma_min).powf(t / t_max);
                s * s * 2.0 * (sigma_max / sigma_min).ln() / t_max
            }
        }
    }

    /// Perturbation kernel x_t | x_0 ~ 𝒩(mean · x_0, std²): returns (mean, std).
    pub fn marginal(&self, t: f64) -> (f64, f64) {
        match *self {
            SdeConfig::Vp {
                beta_min,
                beta_max,
                t_max,
                ..
            } => {
                let ib = Self::integrated_beta(beta_min, beta_max, t_max, t);
                ((-0.5 * ib).exp(), (-(-ib).exp_m1()).sqrt())
            }
            SdeConfig::SubVp {
                beta_min,
                beta_max,
                t_max,
                ..
            } => {
                let ib = Self::integrated_beta(beta_min, beta_max, t_max, t);
                ((-0.5 * ib).exp(), -(-ib).exp_m1())
            }
            SdeConfig::Ve {
                sigma_min,
                sigma_max,
                t_max,
                ..
            } => (1.0, sigma_min * (sigma_max / sigma_min).powf(t / t_max)),
        }
    }

    /// Standard deviation of the base distribution 𝒩(0, σ² I) at t = T.
    pub fn prior_std(&self) -> f64 {
        match *self {
            SdeConfig::Vp { .. } | SdeConfig::SubVp { .. } => 1.0,
            SdeConfig::Ve { sigma_max, .. } => sigma_max,
        }
    }

    /// Check the parameters make sense (names the offending key).
    pub fn validate(&self) -> Result<(), String> {
        let (t_max, eps) = (self.t_max(), self.epsilon());
        if !(t_max > 0.0 && eps > 0.0 && eps < t_max) {
            return Err(format!("sde: need 0 < epsilon ({eps}) < t_max ({t_max})"));
        }
        match *self {
            SdeConfig::Vp {
                beta_min, beta_max, ..
            }
            | SdeConfig::SubVp {
                beta_min, beta_max, ..
            } if !(beta_min > 0.0 && beta_max >= beta_min) => Err(format!(
                "sde: need 0 < beta_min ({beta_min}) <= beta_max ({beta_max})"
            )),
            SdeConfig::Ve {
                sigma_min,
                sigma_max,
                ..
            } if !(sigma_min > 0.0 && sigma_max > sigma_min) => Err(format!(
                "sde: need 0 < sigma_min ({sigma_min}) < sigma_max ({sigma_max})"
            )),
            _ => Ok(()),
        }
    }
}

/// One SDE of each kind for tests: the default VP, a sub-VP with the VP's β range and a VE
/// from σ_min = 0.01 to `ve_sigma_max`.
#[cfg(test)]
pub(crate) fn one_sde_of_each_kind(ve_sigma_max: f64) -> [SdeConfig; 3] {
    [
        SdeConfig::vp_default(),
        SdeConfig::SubVp {
            beta_min: 0.1,
            beta_max: 20.0,
            t_max: 1.0,
            epsilon: 1e-3,
        },
        SdeConfig::Ve {
            sigma_min: 0.01,
            sigma_max: ve_sigma_max,
            t_max: 1.0,
            epsilon: 1e-5,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The marginal variance must solve the SDE's variance ODE dv/dt = 2 a(t) v + g(t)²
    /// (with the mean coefficient solving dm/dt = a m), checked by finite differences.
    #[test]
    fn marginals_solve_the_moment_odes() {
        for sde in one_sde_of_each_kind(10.0) {
            for &t in &[0.05, 0.3, 0.7, 0.95] {
                let h = 1e-6;
                let (m0, s0) = sde.marginal(t - h);
                let (m1, s1) = sde.marginal(t + h);
                let (m, s) = sde.marginal(t);
                let dm = (m1 - m0) / (2.0 * h);
                let dv = (s1 * s1 - s0 * s0) / (2.0 * h);
                assert!((dm - sde.drift_coeff(t) * m).abs() < 1e-5 * (1.0 + dm.abs()));
                // VE's marginal is the variance *added* since t = 0 (σ_min² offset), still
                // obeying the same ODE.
                let want = 2.0 * sde.drift_coeff(t) * s * s + sde.g2(t);
                assert!(
                    (dv - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{sde:?} t={t}"
                );
            }
        }
    }
}
