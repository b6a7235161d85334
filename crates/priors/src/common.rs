//! Shared host-side helpers: fast f64 normal CDF/quantile, reproducible chunked parallel
//! sampling, and the support check that makes every returned draw finite under the
//! prior's own (f32, device) `log_prob`.

use candle_core::{DType, Device, Tensor};
use popcosmos_api::{HostRng, N_PARAMS, Prior, RandomSource, Result};
use rayon::prelude::*;

/// ½ ln 2π.
pub(crate) const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// Rows generated per reproducibility chunk (each chunk has its own seeded stream, so the
/// result does not depend on the number of threads).
const CHUNK_ROWS: usize = 4096;

/// Standard normal CDF (libm erfc; ~1 ulp).
#[inline]
pub(crate) fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// Standard normal quantile: Acklam's rational approximation (relative error < 1.2e-9,
/// far below f32 resolution) optionally refined by one Halley step against the libm-based
/// CDF (|error| ≲ 1e-15; same scheme as `popcosmos_api::params`, faster CDF).
fn acklam(u: f64, refine: bool) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.38357751867269e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    let p_low = 0.02425;
    let x = if u < p_low {
        let q = (-2.0 * u.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if u <= 1.0 - p_low {
        let q = u - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - u).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if !refine {
        return x;
    }
    let e = normal_cdf(x) - u;
    let g = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - g / (1.0 + x * g / 2.0)
}

/// Standard normal quantile to ~1 ulp of f64 (Acklam + one Halley step).
#[cfg(test)]
pub(crate) fn normal_quantile(u: f64) -> f64 {
    acklam(u, true)
}

/// θ → φ for one row, rounded to f32 (index 0 passes through; others probit-mapped, clipped
/// to within 1e-12 of the bounds like `popcosmos_api::params::theta_to_phi_row`). Uses the
/// unrefined quantile: its 1.2e-9 relative error is below the f32 output's resolution.
pub(crate) fn theta_to_phi_row_f32(theta: &[f64; N_PARAMS]) -> [f32; N_PARAMS] {
    use popcosmos_api::params::{IDX_N, LOWER, range};
    let mut phi = [0f32; N_PARAMS];
    for i in 0..N_PARAMS {
        phi[i] = if i == IDX_N {
            theta[i] as f32
        } else {
            let u = ((theta[i] - LOWER[i]) / range(i)).clamp(1e-12, 1.0 - 1e-12);
            acklam(u, false) as f32
        };
    }
    phi
}

/// SplitMix64 finaliser (seed derivation).
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A 64-bit base seed drawn from the caller's generator (two draws).
pub(crate) fn base_seed(rng: &mut dyn RandomSource) -> u64 {
    let a = (rng.next_f64() * 9_007_199_254_740_992.0) as u64;
    let b = (rng.next_f64() * 9_007_199_254_740_992.0) as u64;
    splitmix64(a ^ b.rotate_left(29))
}

/// Host-side certificate that a draw is *comfortably* inside the hard-boundary support
/// (7 < log10 M_formed < 13 and Z_gas > Z*, z not tiny): so far from the boundaries (1e-3 dex
/// in mass, 1e-4 dex in Z) that rounding φ to f32 and evaluating on any device cannot flip
/// it. Draws without the certificate are checked with the prior's own `log_prob`.
pub(crate) fn clearly_inside_support(log10m: f64, zstar: f64, zgas: f64, z: f64) -> bool {
    log10m > 7.0 + 1e-3 && log10m < 13.0 - 1e-3 && zgas - zstar > 1e-4 && z > 1e-5
}

/// Generate `n` φ rows with `draw` (host, rayon over fixed-size chunks with derived seeds);
/// `draw` returns the row and whether it is certified inside the support
/// ([`clearly_inside_support`]). Uncertified rows are evaluated with
/// `prior.log_prob` on `device`, and any whose f32 log-density is not finite (a draw within
/// f32 rounding of a hard boundary) is redrawn. Redrawing conditions on the f32 support, so
/// the returned rows are exact draws from exp(log_prob) as evaluated on that device, and all
/// have finite log-density. Returns `[n, 16]` f32 on `device`.
pub(crate) fn sample_rows<F>(
    prior: &dyn Prior,
    n: usize,
    rng: &mut dyn RandomSource,
    device: &Device,
    draw: F,
) -> Result<Tensor>
where
    F: Fn(&mut HostRng) -> ([f32; N_PARAMS], bool) + Sync,
{
    let seed = base_seed(rng);
    let mut rows = vec![([0f32; N_PARAMS], false); n];
    rows.par_chunks_mut(CHUNK_ROWS)
        .enumerate()
        .for_each(|(k, chunk)| {
            let mut r = HostRng::seed_from_u64(splitmix64(seed ^ splitmix64(k as u64)));
            for row in chunk {
                *row = draw(&mut r);
            }
        });
    let mut suspects: Vec<usize> = (0..n).filter(|&i| !rows[i].1).collect();
    let mut rows: Vec<[f32; N_PARAMS]> = rows.into_iter().map(|r| r.0).collect();
    for round in 1..=64u64 {
        if suspects.is_empty() {
            break;
        }
        let flat: Vec<f32> = suspects.iter().flat_map(|&i| rows[i]).collect();
        let t = Tensor::from_vec(flat, (suspects.len(), N_PARAMS), device)?;
        let lp = prior.log_prob(&t)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        suspects = suspects
            .into_iter()
            .zip(lp)
            .filter(|(_, v)| !v.is_finite())
            .map(|(i, _)| i)
            .collect();
        for &i in &suspects {
            let s = splitmix64(seed ^ splitmix64((round << 48) ^ (i as u64) ^ (1 << 63)));
            rows[i] = draw(&mut HostRng::seed_from_u64(s)).0;
        }
        if round == 64 && !suspects.is_empty() {
            return Err(popcosmos_api::Error::Invalid(format!(
                "prior '{}': could not draw finite-density samples (64 redraw rounds)",
                prior.name()
            )));
        }
    }
    let flat: Vec<f32> = rows.into_iter().flatten().collect();
    Ok(Tensor::from_vec(flat, (n, N_PARAMS), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_matches_api_version() {
        // (u = 0.5 is avoided: the api erfc(0) series never terminates — reported upstream.)
        for &u in &[1e-12, 1e-6, 0.01, 0.3, 0.4999, 0.9, 1.0 - 1e-9] {
            let a = normal_quantile(u);
            let b = popcosmos_api::params::normal_quantile(u);
            assert!((a - b).abs() < 1e-12 * (1.0 + a.abs()), "u={u}: {a} vs {b}");
        }
    }
}
