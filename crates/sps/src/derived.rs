//! Derived physical quantities from θ (`pop_cosmos.utils`).
//!
//! Host f64 code, meant for posterior samples after sampling. Cosmology is astropy `Planck18`
//! ([`popcosmos_api::cosmology::Planck18`], tabulated once per process), so there is no
//! per-sample integration: one distance-modulus and one age look-up per row.
//!
//! * log10 M_formed = −0.4 (N − μ(max(z, 10⁻³)))
//! * SFH (7 continuity bins, lookback edges `[0, 0.03, 0.1, …, 0.85 t_univ, t_univ]` Gyr):
//!   s₀ = 1, s_j = 10^−(r₁+…+r_j), ŝ = s / Σ s_k Δt_k, m_j = ŝ_j Δt_j
//! * log10 sSFR_formed = clip(log10((m₀ + m₁ + 10⁻²⁰)/0.1) − 9, −18, 0)   [yr⁻¹]
//! * log10 SFR = log10 sSFR_formed + log10 M_formed                         [M☉ yr⁻¹]
//! * mass-weighted age t_mw = Σ_j ŝ_j (edge²_{j+1} − edge²_j)/2              (Gyr)
//! * with the surviving fraction Mfrac ([`crate::stellar_mass`]):
//!   log10 M_remaining = log10 M_formed + log10 Mfrac,
//!   log10 sSFR_remaining = log10 sSFR_formed − log10 Mfrac.

use std::sync::OnceLock;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::stellar_mass::StellarMassEmulator;
use popcosmos_api::cosmology::Planck18;
use popcosmos_api::params::{IDX_N, IDX_Z};
use popcosmos_api::{Error, N_PARAMS, Result};

/// Number of SFH bins.
pub const N_SFH_BINS: usize = 7;
/// Smallest redshift used in the distance modulus (as the reference / fixtures).
pub const Z_MIN_DISTMOD: f64 = 1e-3;

/// The process-wide Planck18 table (built on first use).
pub fn planck18() -> &'static Planck18 {
    static COSMO: OnceLock<Planck18> = OnceLock::new();
    COSMO.get_or_init(Planck18::new)
}

/// Derived quantities of one parameter vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DerivedQuantities {
    /// log10 of the stellar mass formed, M☉ (from N and z).
    pub log10_mass_formed: f64,
    /// Mass-weighted (lookback) age, Gyr.
    pub mass_weighted_age_gyr: f64,
    /// log10 SFR averaged over the last 100 Myr, M☉/yr.
    pub log10_sfr: f64,
    /// log10 sSFR per unit mass formed, yr⁻¹.
    pub log10_ssfr_formed: f64,
    /// NaN unless a surviving-mass fraction was supplied.
    pub log10_mass_remaining: f64,
    /// NaN unless a surviving-mass fraction was supplied.
    pub log10_ssfr_remaining: f64,
}

/// log10 M_formed/M☉ from N and z: −0.4 (N − μ(max(z, 10⁻³))).
pub fn log10_mass_formed(n_param: f64, z: f64) -> f64 {
    -0.4 * (n_param - planck18().distmod(z.max(Z_MIN_DISTMOD)))
}

/// N from log10 M_formed and z (the inverse of [`log10_mass_formed`]).
pub fn n_from_log10_mass(log10_mass: f64, z: f64) -> f64 {
    planck18().distmod(z.max(Z_MIN_DISTMOD)) - 2.5 * log10_mass
}

/// Lookback-time edges (Gyr) of the 7 SFH bins for a galaxy whose universe is `t_univ` old.
pub fn sfh_bin_edges_gyr(t_univ_gyr: f64) -> [f64; N_SFH_BINS + 1] {
    let lo = 0.1f64.log10();
    let hi = (0.85 * t_univ_gyr).log10();
    let mut e = [0.0; N_SFH_BINS + 1];
    e[1] = 0.03;
    for k in 0..5 {
        e[2 + k] = 10f64.powf(lo + k as f64 * (hi - lo) / 4.0);
    }
    e[N_SFH_BINS] = t_univ_gyr;
    e
}

/// Derived quantities for one θ row (16 values, N first); `mass_fraction` is the stellar-mass
/// emulator output for that row, if available.
pub fn derived_quantities(theta: &[f64], mass_fraction: Option<f64>) -> DerivedQuantities {
    let z = theta[IDX_Z];
    let log10_mass_formed = log10_mass_formed(theta[IDX_N], z);
    let edges = sfh_bin_edges_gyr(planck18().age_gyr(z));
    // Relative SFRs s_j = 10^−(r₁+…+r_j), bin 0 youngest.
    let mut s = [1.0f64; N_SFH_BINS];
    let mut cum = 0.0;
    for j in 1..N_SFH_BINS {
        cum += theta[1 + j]; // logsfr_ratio_j sits at index 1 + j
        s[j] = 10f64.powf(-cum);
    }
    let dt: [f64; N_SFH_BINS] = std::array::from_fn(|j| edges[j + 1] - edges[j]);
    let total: f64 = s.iter().zip(&dt).map(|(s, d)| s * d).sum();
    let shat = s.map(|v| v / total);
    let recent = shat[0] * dt[0] + shat[1] * dt[1];
    let log10_ssfr_formed = (((recent + 1e-20) / 0.1).log10() - 9.0).clamp(-18.0, 0.0);
    let mass_weighted_age_gyr = (0..N_SFH_BINS)
        .map(|j| shat[j] * (edges[j + 1].powi(2) - edges[j].powi(2)) / 2.0)
        .sum();
    let log10_mfrac = mass_fraction.map_or(f64::NAN, f64::log10);
    DerivedQuantities {
        log10_mass_formed,
        mass_weighted_age_gyr,
        log10_sfr: log10_ssfr_formed + log10_mass_formed,
        log10_ssfr_formed,
        log10_mass_remaining: log10_mass_formed + log10_mfrac,
        log10_ssfr_remaining: log10_ssfr_formed - log10_mfrac,
    }
}

/// [`DerivedQuantities`] of every row of a flat row-major `[n, 16]` θ slice (N first, parallel
/// over rows); `mass_fraction` holds the stellar-mass emulator output per row, if available.
pub fn derived_quantities_batch(
    theta: &[f64],
    mass_fraction: Option<&[f64]>,
) -> Result<Vec<DerivedQuantities>> {
    if !theta.len().is_multiple_of(N_PARAMS) {
        return Err(Error::Invalid(format!(
            "theta has {} values, not a multiple of 16",
            theta.len()
        )));
    }
    let n = theta.len() / N_PARAMS;
    if let Some(m) = mass_fraction
        && m.len() != n
    {
        return Err(Error::Invalid(format!(
            "{} mass fractions for {n} rows",
            m.len()
        )));
    }
    planck18(); // build the table once, outside the parallel loop
    Ok(theta
        .par_chunks(N_PARAMS)
        .enumerate()
        .map(|(i, row)| derived_quantities(row, mass_fraction.map(|m| m[i])))
        .collect())
}

/// Derived quantities of θ `[n, 16]` on any device, running the stellar-mass emulator when
/// given (batched) and the rest on the host.
pub fn derived_from_tensor(
    theta: &Tensor,
    stellar_mass: Option<&StellarMassEmulator>,
) -> Result<Vec<DerivedQuantities>> {
    let theta = theta.to_dtype(DType::F32)?;
    let mfrac = match stellar_mass {
        Some(emu) => Some(
            emu.mass_fraction(&theta)?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?,
        ),
        None => None,
    };
    let host = theta
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    derived_quantities_batch(&host, mfrac.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_edges_follow_spec() {
        let e = sfh_bin_edges_gyr(10.0);
        assert_eq!(e[0], 0.0);
        assert_eq!(e[1], 0.03);
        assert!((e[2] - 0.1).abs() < 1e-12);
        assert!((e[6] - 8.5).abs() < 1e-12);
        assert_eq!(e[7], 10.0);
    }

    #[test]
    fn constant_sfh_has_half_age() {
        // r = 0 everywhere: constant SFR, mass-weighted lookback age = t_univ / 2.
        let mut theta = [0.0; 16];
        theta[0] = 30.0;
        theta[15] = 1.0;
        let d = derived_quantities(&theta, Some(0.6));
        let t = planck18().age_gyr(1.0);
        assert!((d.mass_weighted_age_gyr - t / 2.0).abs() < 1e-12);
        assert!((d.log10_ssfr_formed - (1.0 / t).log10() + 9.0).abs() < 1e-9);
        assert!((d.log10_mass_remaining - d.log10_mass_formed - 0.6f64.log10()).abs() < 1e-12);
        assert!((n_from_log10_mass(d.log10_mass_formed, 1.0) - 30.0).abs() < 1e-9);
    }
}
