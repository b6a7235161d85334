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

pub(crate) use popcosmos_api::params::normal_cdf;

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
            popcosmos_api::params::normal_quantile_approx(u) as f32
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

/// Rows `[n, d]` with every coordinate finite: returns (mask `[n]` u32, the rows with the
/// non-finite ones replaced by 0) so a learned density can be evaluated safely and the
/// masked rows set to −∞ afterwards with [`mask_to_neg_inf`].
pub(crate) fn finite_rows(flat: &Tensor) -> Result<(Tensor, Tensor)> {
    let finite = flat
        .abs()?
        .lt(f64::INFINITY)?
        .to_dtype(DType::U32)?
        .min(candle_core::D::Minus1)?;
    let safe = finite
        .unsqueeze(1)?
        .broadcast_as(flat.shape())?
        .where_cond(flat, &flat.zeros_like()?)?;
    Ok((finite, safe))
}

/// `log_prob` where `finite` is 1, −∞ elsewhere.
pub(crate) fn mask_to_neg_inf(finite: &Tensor, log_prob: &Tensor) -> Result<Tensor> {
    let neg_inf = Tensor::full(f64::NEG_INFINITY, log_prob.shape(), log_prob.device())?
        .to_dtype(log_prob.dtype())?;
    Ok(finite.where_cond(log_prob, &neg_inf)?)
}

/// A learned prior's ln p of φ `[..., 16]`, row by row: φ flattened to `[n, 16]` on `device`
/// in `dtype`, rows with a non-finite coordinate evaluated by `per_row` at 0 and masked to −∞;
/// returns f32 `[...]` on φ's device.
pub(crate) fn log_prob_by_rows(
    phi: &Tensor,
    device: &Device,
    dtype: DType,
    per_row: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let dims = phi.dims();
    let lead = &dims[..dims.len() - 1];
    let n: usize = lead.iter().product();
    let flat = phi
        .reshape((n, N_PARAMS))?
        .to_device(device)?
        .to_dtype(dtype)?;
    let (finite, safe) = finite_rows(&flat)?;
    let lp = mask_to_neg_inf(&finite, &per_row(&safe)?)?;
    Ok(lp
        .to_dtype(DType::F32)?
        .reshape(lead)?
        .to_device(phi.device())?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn unrefined_quantile_is_below_f32_resolution() {
        // theta_to_phi_row_f32 uses the unrefined Acklam quantile; it must agree with the
        // refined one far below f32 rounding (relative 6e-8).
        use popcosmos_api::params::{normal_quantile, normal_quantile_approx};
        for &u in &[1e-12, 1e-6, 0.01, 0.3, 0.5, 0.9, 1.0 - 1e-9] {
            let (a, b) = (normal_quantile_approx(u), normal_quantile(u));
            assert!((a - b).abs() < 2e-9 * (1.0 + b.abs()), "u={u}: {a} vs {b}");
        }
    }
}
