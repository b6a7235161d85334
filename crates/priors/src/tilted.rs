//! Tilted populations (`kind: tilted`): a base prior reweighted by exp(a z + b log10 M_formed).
//!
//! The mock-recovery test of a population fit needs a truth population that differs from
//! the starting one in a known way (more distant and more massive galaxies), and the photo-z
//! of its mocks need that truth as a prior. An exponential tilt of the redshift and mass
//! marginals is the smallest such change: it keeps every conditional p(SED | z, M) of the
//! base, so it moves only what photometry constrains best.
//!
//! * Density: ln p(φ) = ln p_base(φ) + a z + b log10 M − ln C, with
//!   C = E_base[exp(a z + b log10 M)] estimated once from [`NORMALISER_DRAWS`] base draws
//!   (a fixed seed), so ln Z of a run is off by that Monte Carlo error only.
//! * Draws: sampling-importance-resampling (Rubin 1988) from [`POOL_FACTOR`] × n base draws,
//!   systematic resampling of the tilt weights.

use candle_core::{DType, Device, Tensor};
use popcosmos_api::cosmology::pade;
use popcosmos_api::params::{self, IDX_N, IDX_Z, N_PARAMS};
use popcosmos_api::{Error, HostRng, Prior, RandomSource, Result, SupportConstraints};

/// Base draws per returned draw when sampling.
pub const POOL_FACTOR: usize = 10;
/// Base draws that estimate the normalising constant.
pub const NORMALISER_DRAWS: usize = 1 << 16;

/// A base prior tilted by exp(a z + b log10 M_formed).
pub struct TiltedPrior {
    base: Box<dyn Prior>,
    z: f64,
    log10_mass: f64,
    ln_normaliser: f64,
    name: String,
}

/// The tilt a z + b log10 M_formed of latent rows φ `[..., 16]` → `[...]` (f32).
pub fn ln_tilt(phi: &Tensor, z_slope: f64, log10_mass_slope: f64) -> Result<Tensor> {
    let phi = phi.to_dtype(DType::F32)?;
    let last = phi.rank() - 1;
    let theta = params::phi_to_theta(&phi)?;
    let z = theta.narrow(last, IDX_Z, 1)?.squeeze(last)?;
    let n_mag = phi.narrow(last, IDX_N, 1)?.squeeze(last)?;
    let log10m = ((pade::distmod_t(&z)? - n_mag)? * 0.4)?;
    Ok((z.affine(z_slope, 0.0)? + log10m.affine(log10_mass_slope, 0.0)?)?)
}

/// `n` draws of `base` tilted by exp(a z + b log10 M), by sampling-importance-resampling
/// from `POOL_FACTOR × n` base draws (systematic resampling).
pub fn sample_tilted(
    base: &dyn Prior,
    n: usize,
    z_slope: f64,
    log10_mass_slope: f64,
    rng: &mut dyn RandomSource,
    device: &Device,
) -> Result<Tensor> {
    let pool = POOL_FACTOR * n.max(1);
    let phi = base.sample(pool, rng, device)?;
    let logw: Vec<f64> = ln_tilt(&phi, z_slope, log10_mass_slope)?
        .to_dtype(DType::F64)?
        .to_vec1()?;
    let max = logw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return Err(Error::Invalid(format!(
            "tilted prior: the tilt of {pool} base draws is not finite"
        )));
    }
    let w: Vec<f64> = logw.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = w.iter().sum();
    // Systematic resampling: one uniform, n evenly spaced pointers into the cumulative weights.
    let u0 = rng.next_f64();
    let mut idx = Vec::with_capacity(n);
    let mut cum = 0.0;
    let mut j = 0;
    for i in 0..n {
        let target = (i as f64 + u0) / n as f64 * total;
        while j + 1 < pool && cum + w[j] < target {
            cum += w[j];
            j += 1;
        }
        idx.push(j as u32);
    }
    let idx = Tensor::from_vec(idx, n, device)?;
    Ok(phi.index_select(&idx, 0)?)
}

/// Refuse a non-finite tilt (names the manifest keys).
pub fn check_slopes(z_slope: f64, log10_mass_slope: f64) -> Result<()> {
    if z_slope.is_finite() && log10_mass_slope.is_finite() {
        return Ok(());
    }
    Err(Error::config(
        "prior.z / prior.log10_mass",
        format!("the tilt must be finite, got {z_slope}, {log10_mass_slope}"),
    ))
}

impl TiltedPrior {
    /// Tilt `base` by exp(`z_slope` z + `log10_mass_slope` log10 M_formed); estimates the
    /// normalising constant from [`NORMALISER_DRAWS`] base draws.
    pub fn new(base: Box<dyn Prior>, z_slope: f64, log10_mass_slope: f64) -> Result<Self> {
        check_slopes(z_slope, log10_mass_slope)?;
        let mut rng = HostRng::seed_from_u64(0x7117);
        let phi = base.sample(NORMALISER_DRAWS, &mut rng, &Device::Cpu)?;
        let t: Vec<f64> = ln_tilt(&phi, z_slope, log10_mass_slope)?
            .to_dtype(DType::F64)?
            .to_vec1()?;
        let max = t.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mean = t.iter().map(|x| (x - max).exp()).sum::<f64>() / t.len() as f64;
        let name = format!(
            "tilted({}; {z_slope} z + {log10_mass_slope} log10 M)",
            base.name()
        );
        Ok(Self {
            base,
            z: z_slope,
            log10_mass: log10_mass_slope,
            ln_normaliser: max + mean.ln(),
            name,
        })
    }

    /// ln C = ln E_base[exp(a z + b log10 M)].
    pub fn ln_normaliser(&self) -> f64 {
        self.ln_normaliser
    }
}

impl Prior for TiltedPrior {
    fn name(&self) -> &str {
        &self.name
    }

    fn log_prob(&self, phi: &Tensor) -> Result<Tensor> {
        let base = self.base.log_prob(phi)?;
        let tilt = ln_tilt(phi, self.z, self.log10_mass)?.to_dtype(base.dtype())?;
        Ok(((base + tilt)? - self.ln_normaliser)?)
    }

    fn sample(&self, n: usize, rng: &mut dyn RandomSource, device: &Device) -> Result<Tensor> {
        let phi = sample_tilted(self.base.as_ref(), n, self.z, self.log10_mass, rng, device)?;
        debug_assert_eq!(phi.dims(), &[n, N_PARAMS]);
        Ok(phi)
    }

    fn support_constraints(&self) -> SupportConstraints {
        self.base.support_constraints()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProspectorAlphaPrior;

    fn host(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().to_vec1().unwrap()
    }

    fn redshifts(phi: &Tensor) -> Vec<f64> {
        let theta = params::phi_to_theta(phi).unwrap();
        host(&theta.narrow(1, IDX_Z, 1).unwrap().squeeze(1).unwrap())
    }

    /// The tilt's effect on the z marginal is exact maths: E_tilted[z] = E_base[z e^t]/E_base[e^t].
    /// SIR draws must reproduce it, and the density must integrate to one under the base
    /// (E_base[p_tilted/p_base] = 1).
    #[test]
    fn draws_and_density_match_the_reweighted_base() {
        let base = ProspectorAlphaPrior::new();
        let dev = Device::Cpu;
        let mut rng = HostRng::seed_from_u64(5);
        let (a, b) = (0.4, 1.0);
        let ref_phi = base.sample(200_000, &mut rng, &dev).unwrap();
        let t = host(&ln_tilt(&ref_phi, a, b).unwrap());
        let z = redshifts(&ref_phi);
        let max = t.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = t.iter().map(|x| (x - max).exp()).collect();
        let wsum: f64 = w.iter().sum();
        let expected: f64 = w.iter().zip(&z).map(|(w, z)| w * z).sum::<f64>() / wsum;
        let base_mean = z.iter().sum::<f64>() / z.len() as f64;

        let tilted = TiltedPrior::new(Box::new(ProspectorAlphaPrior::new()), a, b).unwrap();
        let draws = tilted.sample(20_000, &mut rng, &dev).unwrap();
        let dz = redshifts(&draws);
        let mean = dz.iter().sum::<f64>() / dz.len() as f64;
        let sd = (dz.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / dz.len() as f64).sqrt();
        assert!(
            expected > base_mean + 0.1,
            "the tilt must move z: {base_mean} → {expected}"
        );
        // SIR draws are correlated through shared pool members; allow 2× the iid error.
        let tol = 2.0 * 4.0 * sd / (dz.len() as f64).sqrt();
        assert!(
            (mean - expected).abs() < tol,
            "tilted mean z {mean} vs reweighted base {expected} (tol {tol})"
        );

        // E_base[exp(ln p_tilted − ln p_base)] = 1.
        let lp_t = host(&tilted.log_prob(&ref_phi).unwrap());
        let lp_b = host(&base.log_prob(&ref_phi).unwrap());
        let ratios: Vec<f64> = lp_t.iter().zip(&lp_b).map(|(t, b)| (t - b).exp()).collect();
        let m = ratios.iter().sum::<f64>() / ratios.len() as f64;
        let se = (ratios.iter().map(|r| (r - m).powi(2)).sum::<f64>()
            / (ratios.len() as f64).powi(2))
        .sqrt();
        assert!(
            (m - 1.0).abs() < 4.0 * se + 0.02,
            "E_base[p_tilted / p_base] = {m} ± {se}"
        );
    }

    #[test]
    fn a_non_finite_tilt_is_refused() {
        let e = TiltedPrior::new(Box::new(ProspectorAlphaPrior::new()), f64::NAN, 1.0)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("prior.z"), "{e}");
    }
}
