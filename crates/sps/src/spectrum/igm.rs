//! Mean intergalactic-medium attenuation of Madau (1995, ApJ 441, 18).
//!
//! Effective optical depth at observed wavelength λ for a source at redshift z_s:
//!
//! * Lyman-series line blanketing (eq. 15 and Table 2): for each line j
//!   (Lyα 1216, Lyβ 1026, Lyγ 973, Lyδ 950 Å) with absorbers between z = 0 and z_s, i.e.
//!   λ_j < λ < λ_j (1 + z_s): τ_j = A_j (λ/λ_j)^3.46, A = (3.6e−3, 1.7e−3, 1.2e−3, 9.3e−4).
//! * Photoelectric absorption by Lyman-limit systems (the approximation in footnote 3), for
//!   912 Å < λ < 912 Å (1 + z_s), with x_c = λ/912 Å and x_e = 1 + z_s:
//!   τ_c = 0.25 x_c³ (x_e^0.46 − x_c^0.46) + 9.4 x_c^1.5 (x_e^0.18 − x_c^0.18)
//!   − 0.7 x_c³ (x_c^−1.32 − x_e^−1.32) − 0.023 (x_e^1.68 − x_c^1.68).
//!
//! Madau's mean attenuation is what FSPS (and hence the Prospector-α training spectra of the
//! COSMOS photulators, "IGM on") applies by default. The Speculator spectra start at 1005 Å
//! rest frame, so only Lyα and Lyβ ever act on them; the full model is kept for other grids.

use candle_core::{DType, Tensor};
use popcosmos_api::Result;

/// Lyman-series rest wavelengths (Å) and Madau (1995) Table 2 coefficients A_j.
pub const LYMAN_SERIES: [(f64, f64); 4] = [
    (1216.0, 3.6e-3),
    (1026.0, 1.7e-3),
    (973.0, 1.2e-3),
    (950.0, 9.3e-4),
];
/// Lyman limit, Å.
pub const LYMAN_LIMIT_AA: f64 = 912.0;
const LINE_EXPONENT: f64 = 3.46;

/// Madau (1995) effective optical depth at observed wavelength `lambda_obs_aa` for a source at
/// redshift `z` (f64 reference of the batched version that [`crate::SpectrumPhotometry`]
/// applies).
pub fn madau95_tau(lambda_obs_aa: f64, z: f64) -> f64 {
    let mut tau = 0.0;
    for (lj, a) in LYMAN_SERIES {
        if lambda_obs_aa > lj && lambda_obs_aa < lj * (1.0 + z) {
            tau += a * (lambda_obs_aa / lj).powf(LINE_EXPONENT);
        }
    }
    let (xc, xe) = (lambda_obs_aa / LYMAN_LIMIT_AA, 1.0 + z);
    if xc > 1.0 && xc < xe {
        tau += 0.25 * xc.powi(3) * (xe.powf(0.46) - xc.powf(0.46))
            + 9.4 * xc.powf(1.5) * (xe.powf(0.18) - xc.powf(0.18))
            - 0.7 * xc.powi(3) * (xc.powf(-1.32) - xe.powf(-1.32))
            - 0.023 * (xe.powf(1.68) - xc.powf(1.68));
    }
    tau
}

/// Batched Madau (1995) optical depth on a fixed **rest-frame** grid: `lambda_rest_aa` (host,
/// `[R]`), `z` `[n, 1]` (any float dtype) → τ `[n, R]` f64.
///
/// λ_obs = λ_rest (1 + z). The upper condition λ_obs < λ_j (1 + z) is λ_rest < λ_j, a fixed
/// column mask; the lower one (absorbers at z ≥ 0) is evaluated per element.
pub fn madau95_tau_tensor(lambda_rest_aa: &[f64], z: &Tensor) -> Result<Tensor> {
    let device = z.device();
    let n = z.dim(0)?;
    let r = lambda_rest_aa.len();
    let one_plus_z = (z.to_dtype(DType::F64)?.reshape((n, 1))? + 1.0)?;
    let lam_rest = Tensor::from_slice(lambda_rest_aa, (1, r), device)?;
    let lam_obs = one_plus_z.broadcast_mul(&lam_rest)?;
    let mut tau = Tensor::zeros((n, r), DType::F64, device)?;
    for (lj, a) in LYMAN_SERIES {
        let col: Vec<f64> = lambda_rest_aa
            .iter()
            .map(|&l| if l < lj { 1.0 } else { 0.0 })
            .collect();
        if col.iter().all(|&c| c == 0.0) {
            continue;
        }
        let col = Tensor::from_vec(col, (1, r), device)?;
        let above = lam_obs.gt(lj)?.to_dtype(DType::F64)?;
        let term = (lam_obs.clone() / lj)?
            .powf(LINE_EXPONENT)?
            .affine(a, 0.0)?
            .mul(&above)?
            .broadcast_mul(&col)?;
        tau = (tau + term)?;
    }
    if lambda_rest_aa.iter().any(|&l| l < LYMAN_LIMIT_AA) {
        let col: Vec<f64> = lambda_rest_aa
            .iter()
            .map(|&l| if l < LYMAN_LIMIT_AA { 1.0 } else { 0.0 })
            .collect();
        let col = Tensor::from_vec(col, (1, r), device)?;
        let xc = (lam_obs.clone() / LYMAN_LIMIT_AA)?;
        let xe = one_plus_z;
        let above = xc.gt(1.0)?.to_dtype(DType::F64)?;
        let pw = |x: &Tensor, p: f64| x.powf(p);
        let xc3 = pw(&xc, 3.0)?;
        let t1 = (xc3.broadcast_mul(&pw(&xe, 0.46)?)? - xc3.mul(&pw(&xc, 0.46)?)?)? * 0.25;
        let xc15 = pw(&xc, 1.5)?;
        let t2 = (xc15.broadcast_mul(&pw(&xe, 0.18)?)? - xc15.mul(&pw(&xc, 0.18)?)?)? * 9.4;
        let t3 = (xc3.mul(&pw(&xc, -1.32)?)? - xc3.broadcast_mul(&pw(&xe, -1.32)?)?)? * -0.7;
        let t4 = (pw(&xc, 1.68)?.broadcast_sub(&pw(&xe, 1.68)?)? * 0.023)?;
        let lc = (((t1? + t2?)? + t3?)? + t4)?
            .mul(&above)?
            .broadcast_mul(&col)?;
        tau = (tau + lc)?;
    }
    Ok(tau)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lyman_alpha_blanketing_matches_the_published_law() {
        // Just blueward of Lyα emission at z = 3: τ = 3.6e−3 · 4^3.46 = 0.43594 (Madau eq. 15;
        // 4^3.46 = e^{3.46 ln 4} = 121.095).
        let tau = madau95_tau(1216.0 * 4.0 - 1e-6, 3.0);
        assert!((tau - 0.435_94).abs() < 2e-5, "{tau}");
        // Redward of Lyα(1+z): no absorption; blueward of the observer-frame 1216 Å: none.
        assert_eq!(madau95_tau(1216.0 * 4.0 + 1.0, 3.0), 0.0);
        // λ_obs = 1200 Å, z = 0.2: only Lyβ absorbers (1026 < 1200 < 1231 Å):
        // 1.7e−3 · (1200/1026)^3.46 = 2.9232e−3.
        let tau = madau95_tau(1200.0, 0.2);
        assert!((tau - 2.9232e-3).abs() < 1e-6, "{tau}");
    }

    #[test]
    fn lyman_continuum_is_opaque_at_high_redshift() {
        // Below the Lyman limit of a z = 4 source transmission collapses (Madau Fig. 3:
        // essentially nothing shortward of 912(1+z) Å at z ≳ 3): τ rises monotonically from
        // the edge, exceeding 2.5 within 5 % and 5 (transmission < 1 %) 20 % below it.
        let t95 = madau95_tau(0.95 * 912.0 * 5.0, 4.0);
        let t80 = madau95_tau(0.80 * 912.0 * 5.0, 4.0);
        assert!(t95 > 2.5 && t80 > 5.0 && t80 > t95, "{t95} {t80}");
        // … and τ_c vanishes at the Lyman edge (x_c = x_e).
        let edge = madau95_tau(912.0 * 5.0 - 1e-9, 4.0);
        let lines: f64 = LYMAN_SERIES
            .iter()
            .map(|(l, a)| a * (912.0 * 5.0 / l).powf(3.46))
            .sum();
        assert!((edge - lines).abs() < 1e-6, "{edge} vs {lines}");
    }

    #[test]
    fn tensor_version_equals_host_version() {
        let lam: Vec<f64> = (0..200).map(|i| 700.0 + 5.0 * i as f64).collect();
        let zs = [0.0f64, 0.3, 2.0, 4.5];
        let z = Tensor::from_slice(&zs, (4, 1), &candle_core::Device::Cpu).unwrap();
        let tau = madau95_tau_tensor(&lam, &z)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        for (i, &zz) in zs.iter().enumerate() {
            for (j, &l) in lam.iter().enumerate() {
                let want = madau95_tau(l * (1.0 + zz), zz);
                assert!(
                    (tau[i][j] - want).abs() < 1e-9 * (1.0 + want),
                    "z {zz} λ {l}: {} vs {want}",
                    tau[i][j]
                );
            }
        }
    }
}
