//! The coordinates the sampler moves in (ψ), and the exact change of variables to the
//! latent space φ the posterior is defined on.
//!
//! Two steps, both bijections with their log-Jacobian added to the target:
//! 1. **Gas-metallicity offset** (priors whose support needs log Z_gas > log Z*, i.e.
//!    Prospector-α): coordinate 13 becomes u with Z_gas = Z* + (Z_max − Z*)·Φ(u). Why: the
//!    data often push Z_gas down onto Z*, so the posterior mode sits on that diagonal wall
//!    and most ensemble proposals near it are rejected (measured: ln P = −∞ within
//!    |Δφ| ≤ 0.01 of the refined mode for 3 of the first 10 demo galaxies). In u the wall is
//!    at −∞ and the prior of u given Z* is exactly 𝒩(0, 1).
//!    The same for the stellar-mass bounds (Prospector-α: 7 < log M < 13): coordinate 0
//!    becomes w with log M = lo + (hi − lo)·Φ(w) and N = μ(z) − 2.5 log M. The Leja+20 mass
//!    function piles prior (and posterior) mass against log M = 7, i.e. against the diagonal
//!    wall N = μ(z) − 17.5 (47 % of Prospector-α mocks have log M < 7.5).
//! 2. **Marginal whitening** ([`popcosmos_samplers::MarginalWhitening`]), fitted to the
//!    prior's draws after step 1: every prior marginal becomes a standard normal, which
//!    removes the kurtosis-25–40 tails of the Student-t SFR-ratio priors in φ.

use popcosmos_api::{
    DType, Error, LogDensity, N_PARAMS, Prior, Result, SupportConstraints, Tensor,
    cosmology::pade,
    params::{
        ACKLAM_A, ACKLAM_B, ACKLAM_C, ACKLAM_D, ACKLAM_P_LOW, IDX_N, IDX_Z, LOWER, UPPER,
        normal_cdf_tensor as cdf, normal_quantile,
    },
};
use popcosmos_samplers::{Chain, MarginalWhitening};

const IDX_ZSTAR: usize = 1;
const IDX_ZGAS: usize = 13;
/// Keeps the probit of the gas coordinate finite in f32.
const EDGE: f64 = 1e-7;

/// ψ ↔ φ for one run.
#[derive(Debug, Clone)]
pub struct SamplingSpace {
    support: SupportConstraints,
    whitening: Option<MarginalWhitening>,
}

impl SamplingSpace {
    /// Fit to prior draws φ `[n, 16]` of `prior` (whose support constraints it takes over);
    /// the marginal whitening only when there are at least `min_draws` draws.
    pub fn fit(prior_phi: &Tensor, prior: &dyn Prior, min_draws: usize) -> Result<Self> {
        let mut space = Self {
            support: prior.support_constraints(),
            whitening: None,
        };
        if prior_phi.dim(0)? >= min_draws {
            space.whitening = Some(MarginalWhitening::fit(&space.uncouple(prior_phi)?)?);
        }
        Ok(space)
    }

    /// ψ → (φ, ln|∂φ/∂ψ|) for `[..., 16]`.
    pub fn to_phi(&self, psi: &Tensor) -> Result<(Tensor, Tensor)> {
        let (coupled, log_j) = match &self.whitening {
            Some(w) => w.forward(psi)?,
            None => {
                let shape: Vec<usize> = psi.dims()[..psi.rank() - 1].to_vec();
                (psi.clone(), Tensor::zeros(shape, DType::F32, psi.device())?)
            }
        };
        if self.support == SupportConstraints::default() {
            return Ok((coupled, log_j));
        }
        let (phi, log_j_c) = self.couple(&coupled)?;
        Ok((phi, (log_j + log_j_c)?))
    }

    /// φ → ψ (host f64; start points and tests only).
    pub fn from_phi(&self, phi: &Tensor) -> Result<Tensor> {
        let coupled = self.uncouple(phi)?;
        match &self.whitening {
            Some(w) => w.inverse(&coupled),
            None => Ok(coupled),
        }
    }

    /// A chain sampled in ψ, mapped to φ with log-densities of the φ target.
    pub fn chain_to_phi(&self, chain: &Chain) -> Result<Chain> {
        // On the device the whitening was fitted on (the run's); host data otherwise.
        let device = self
            .whitening
            .as_ref()
            .map_or(popcosmos_api::Device::Cpu, |w| w.device().clone());
        let (phi, log_j) = self.to_phi(&chain.samples_tensor(&device)?)?;
        let lp = (chain.log_prob_tensor(&device)? - log_j)?;
        Ok(Chain {
            samples: phi.flatten_all()?.to_vec1::<f32>()?,
            log_prob: lp.flatten_all()?.to_vec1::<f32>()?,
            kept: chain.kept,
            walkers: chain.walkers,
            galaxies: chain.galaxies,
            dim: chain.dim,
            acceptance: chain.acceptance.clone(),
            config: chain.config,
        })
    }

    /// φ → coupled coordinates (column 13 replaced by u, column 0 by w), on the host.
    fn uncouple(&self, phi: &Tensor) -> Result<Tensor> {
        if self.support == SupportConstraints::default() {
            return Ok(phi.clone());
        }
        let shape = phi.shape().clone();
        if *phi.dims().last().unwrap_or(&0) != N_PARAMS {
            return Err(Error::shape(
                "sampling-space φ",
                format!("[..., {N_PARAMS}]"),
                phi.dims(),
            ));
        }
        let mut v = phi
            .to_dtype(DType::F64)?
            .to_device(&popcosmos_api::Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        for row in v.chunks_exact_mut(N_PARAMS) {
            if self.support.gas_metallicity_above_stellar {
                let zstar = theta_of(IDX_ZSTAR, row[IDX_ZSTAR]);
                let zgas = theta_of(IDX_ZGAS, row[IDX_ZGAS]);
                let frac = ((zgas - zstar) / (UPPER[IDX_ZGAS] - zstar)).clamp(EDGE, 1.0 - EDGE);
                row[IDX_ZGAS] = normal_quantile(frac);
            }
            if let Some((lo, hi)) = self.support.log10_mass_formed_range {
                let z = theta_of(IDX_Z, row[IDX_Z]);
                let log10m = (pade::distmod(z) - row[IDX_N]) / 2.5;
                row[IDX_N] = normal_quantile(((log10m - lo) / (hi - lo)).clamp(EDGE, 1.0 - EDGE));
            }
        }
        let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
        Ok(Tensor::from_vec(v, shape, phi.device())?)
    }
}

/// θ_i from φ_i for a probit-mapped parameter.
fn theta_of(i: usize, phi: f64) -> f64 {
    LOWER[i] + (UPPER[i] - LOWER[i]) * popcosmos_api::params::normal_cdf(phi)
}

impl SamplingSpace {
    /// Coupled coordinates → φ and the log-Jacobian of the coupling, as tensor ops (on the
    /// sampling path; f64 inside: in f32 the probit's central polynomial cancels to ~1e-5,
    /// which shows up in the log-Jacobian where Z_max − Z* is small).
    fn couple(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let last = x.rank() - 1;
        let col = |i: usize| -> Result<Tensor> { Ok(x.narrow(last, i, 1)?.to_dtype(DType::F64)?) };
        let mut cols: Vec<Tensor> = (0..N_PARAMS).map(col).collect::<Result<_>>()?;
        let mut log_j = cols[0].zeros_like()?;
        if self.support.gas_metallicity_above_stellar {
            let (lo_s, r_s) = (LOWER[IDX_ZSTAR], UPPER[IDX_ZSTAR] - LOWER[IDX_ZSTAR]);
            let (lo_g, hi_g) = (LOWER[IDX_ZGAS], UPPER[IDX_ZGAS]);
            let r_g = hi_g - lo_g;
            let zstar = cdf(&cols[IDX_ZSTAR])?.affine(r_s, lo_s)?;
            let u = &cols[IDX_ZGAS];
            let room = zstar.affine(-1.0, hi_g)?; // Z_max − Z* > 0
            let zgas = (&zstar + (&room * cdf(u)?)?)?;
            let v = zgas
                .affine(1.0 / r_g, -lo_g / r_g)?
                .clamp(EDGE, 1.0 - EDGE)?;
            let phi_gas = probit(&v)?;
            // ln|∂φ₁₃/∂u| = ln(Z_max − Z*) + ln 𝒩(u) − ln r_g − ln 𝒩(φ₁₃).
            let lj = ((room.log()? - (u.sqr()? * 0.5)?)? + (phi_gas.sqr()? * 0.5)?)?
                .affine(1.0, -r_g.ln())?;
            log_j = (log_j + lj)?;
            cols[IDX_ZGAS] = phi_gas;
        }
        if let Some((lo, hi)) = self.support.log10_mass_formed_range {
            // N = μ(z) − 2.5 (lo + (hi − lo) Φ(w)); ln|∂N/∂w| = ln(2.5 (hi − lo)) + ln 𝒩(w).
            let z = cdf(&cols[IDX_Z])?.affine(UPPER[IDX_Z] - LOWER[IDX_Z], LOWER[IDX_Z])?;
            let w = &cols[IDX_N];
            let log10m = cdf(w)?.affine(hi - lo, lo)?;
            let n = (pade::distmod_t(&z)? - (log10m * 2.5)?)?;
            let lj = (w.sqr()? * -0.5)?.affine(
                1.0,
                (2.5 * (hi - lo)).ln() - 0.5 * (2.0 * std::f64::consts::PI).ln(),
            )?;
            log_j = (log_j + lj)?;
            cols[IDX_N] = n;
        }
        let phi = Tensor::cat(&cols, last)?.to_dtype(DType::F32)?;
        Ok((phi, log_j.squeeze(last)?.to_dtype(DType::F32)?))
    }
}

/// Φ⁻¹(v) elementwise for v ∈ (0, 1) (Acklam's rational approximation, relative error
/// < 1.2e-9; evaluate it in f64).
fn probit(v: &Tensor) -> Result<Tensor> {
    let horner = |t: &Tensor, c: &[f64], lead_one: bool| -> Result<Tensor> {
        let mut acc = t.ones_like()?.affine(0.0, c[0])?;
        for &k in &c[1..] {
            acc = (acc * t)?.affine(1.0, k)?;
        }
        if lead_one {
            acc = ((acc * t)? + 1.0)?;
        }
        Ok(acc)
    };
    // Central region.
    let q = v.affine(1.0, -0.5)?;
    let r = q.sqr()?;
    let central = ((horner(&r, &ACKLAM_A, false)? * &q)? / horner(&r, &ACKLAM_B, true)?)?;
    // Tails: q = √(−2 ln p) with p the smaller tail probability (clamped so both branches
    // stay finite where they are not used).
    let tail_p = v.minimum(&v.affine(-1.0, 1.0)?)?.clamp(1e-30, 0.5)?;
    let tq = (tail_p.log()? * -2.0)?.sqrt()?;
    let tail = (horner(&tq, &ACKLAM_C, false)? / horner(&tq, &ACKLAM_D, true)?)?;
    let upper_tail = v.gt(1.0 - ACKLAM_P_LOW)?;
    let tail = upper_tail.where_cond(&tail.neg()?, &tail)?;
    let in_tail = (v.lt(ACKLAM_P_LOW)?.to_dtype(DType::U8)? + upper_tail.to_dtype(DType::U8)?)?;
    Ok(in_tail.where_cond(&tail, &central)?)
}

/// A φ-space target seen from ψ: ln p(φ(ψ)) + ln|∂φ/∂ψ|.
pub struct InSamplingSpace<'a> {
    /// The target over φ.
    pub target: &'a dyn LogDensity,
    /// The map between ψ and φ.
    pub space: &'a SamplingSpace,
}

impl LogDensity for InSamplingSpace<'_> {
    fn log_density(&self, psi: &Tensor) -> Result<Tensor> {
        let (phi, log_j) = self.space.to_phi(psi)?;
        let lp = self.target.log_density(&phi)?;
        let log_j = log_j.to_dtype(lp.dtype())?;
        Ok((lp + log_j)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use popcosmos_api::{Device, HostRng, testing::max_abs_diff};

    /// Tensor probit against the host f64 quantile, over the centre and both tails.
    #[test]
    fn tensor_probit_matches_host_quantile() {
        let v: Vec<f32> = vec![1e-7, 1e-4, 0.01, 0.02425, 0.1, 0.3, 0.5, 0.77, 0.98, 0.9999];
        let t = Tensor::new(v.as_slice(), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let got = probit(&t).unwrap().to_vec1::<f64>().unwrap();
        for (x, g) in v.iter().zip(got) {
            let want = normal_quantile(*x as f64);
            assert!(
                (g - want).abs() < 1e-8 * want.abs().max(1.0),
                "Φ⁻¹({x}) {g} vs {want}"
            );
        }
    }

    /// Round trip φ → ψ → φ on Prospector-α draws; the gas coordinate of prior draws is
    /// 𝒩(0, 1) (Z_gas | Z* is uniform on (Z*, Z_max)); the log-Jacobian of both couplings
    /// matches finite differences.
    #[test]
    fn gas_offset_round_trip_and_prior_coordinate() {
        let prior = popcosmos_priors::ProspectorAlphaPrior::new();
        let mut rng = HostRng::seed_from_u64(4);
        let draws = prior.sample(4000, &mut rng, &Device::Cpu).unwrap();
        let space = SamplingSpace::fit(&draws, &prior, usize::MAX).unwrap(); // no whitening
        let psi = space.from_phi(&draws).unwrap();
        let (back, log_j) = space.to_phi(&psi).unwrap();
        let err = max_abs_diff(&back, &draws);
        assert!(err < 2e-3, "φ round trip error {err}");
        let u = psi
            .narrow(1, IDX_ZGAS, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let n = u.len() as f64;
        let mean = u.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = u.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.06 && (var - 1.0).abs() < 0.08,
            "u: mean {mean} var {var}"
        );
        // The coupling is triangular (φ₁₃ depends on u and Z*, N on w and z), so ln|J| is
        // the sum of the two diagonal log-derivatives; check both by finite differences.
        let h = 1e-2; // φ is f32: a smaller step drowns ΔN in its rounding
        let rows = psi.narrow(0, 0, 200).unwrap();
        let mut fd_sum = Tensor::zeros(200, DType::F32, &Device::Cpu).unwrap();
        for idx in [IDX_ZGAS, IDX_N] {
            let bump = Tensor::from_vec(
                (0..N_PARAMS)
                    .map(|i| if i == idx { h as f32 } else { 0.0 })
                    .collect::<Vec<_>>(),
                N_PARAMS,
                &Device::Cpu,
            )
            .unwrap();
            let (p_plus, _) = space.to_phi(&rows.broadcast_add(&bump).unwrap()).unwrap();
            let (p_minus, _) = space.to_phi(&rows.broadcast_sub(&bump).unwrap()).unwrap();
            let fd = ((p_plus - p_minus).unwrap().narrow(1, idx, 1).unwrap() / (2.0 * h))
                .unwrap()
                .abs()
                .unwrap()
                .log()
                .unwrap()
                .flatten_all()
                .unwrap();
            fd_sum = (fd_sum + fd).unwrap();
        }
        let fd = fd_sum.to_vec1::<f32>().unwrap();
        let lj = log_j.narrow(0, 0, 200).unwrap().to_vec1::<f32>().unwrap();
        let worst = fd
            .iter()
            .zip(&lj)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 5e-3, "log-Jacobian vs finite differences: {worst}");
    }
}
