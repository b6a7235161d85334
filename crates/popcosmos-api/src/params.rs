//! The 16 stellar-population parameters and the probit map between the
//! sampler's latent space φ and physical parameters θ.
//!
//! Index 0 is `N = μ(z) − 2.5 log10(M_formed / M☉)` and passes through unchanged; indices
//! 1..15 are mapped by θ = lower + range · Φ(φ) with Φ the standard normal CDF, so that a
//! standard normal in φ is the uniform distribution inside the bounds.

use candle_core::{DType, Tensor};

use crate::Result;

/// Number of SPS parameters.
pub const N_PARAMS: usize = 16;

/// Parameter names in the fixed order used everywhere.
pub const PARAM_NAMES: [&str; N_PARAMS] = [
    "N",
    "log10Z",
    "logsfr_ratio1",
    "logsfr_ratio2",
    "logsfr_ratio3",
    "logsfr_ratio4",
    "logsfr_ratio5",
    "logsfr_ratio6",
    "dust2",
    "dust_index",
    "dust1_fraction",
    "lnfagn",
    "lnagntau",
    "gaslog10Z",
    "gaslog10U",
    "z",
];

/// Units (or meaning) of each parameter, for documentation and output headers.
pub const PARAM_UNITS: [&str; N_PARAMS] = [
    "mag (distance modulus minus 2.5 log10 M_formed/Msun)",
    "dex (log10 Z*/Zsun)",
    "dex (log10 SFR1/SFR2)",
    "dex (log10 SFR2/SFR3)",
    "dex (log10 SFR3/SFR4)",
    "dex (log10 SFR4/SFR5)",
    "dex (log10 SFR5/SFR6)",
    "dex (log10 SFR6/SFR7)",
    "optical depth tau2 (diffuse dust)",
    "Kriek & Conroy power-law index offset",
    "tau1/tau2 (birth-cloud / diffuse)",
    "ln f_AGN",
    "ln tau_AGN",
    "dex (log10 Zgas/Zsun)",
    "dex (log10 U, ionisation parameter)",
    "redshift",
];

/// Lower bounds. Index 0 (N) is not bounded; 7 and 13 are the log10 M_formed limits
/// that the Prospector-α prior reuses.
pub const LOWER: [f64; N_PARAMS] = [
    7.0,
    -1.98,
    -5.0,
    -5.0,
    -5.0,
    -5.0,
    -5.0,
    -5.0,
    0.0,
    -1.0,
    0.0,
    -11.512925464970229, // ln 1e-5
    1.6094379124341003,  // ln 5
    -2.0,
    -4.0,
    0.0,
];

/// Upper bounds (see [`LOWER`]); z_max = 6.
pub const UPPER: [f64; N_PARAMS] = [
    13.0,
    0.19,
    5.0,
    5.0,
    5.0,
    5.0,
    5.0,
    5.0,
    4.0,
    0.4,
    2.0,
    1.0986122886681098, // ln 3
    5.0106352940962555, // ln 150
    0.5,
    -1.0,
    6.0,
];

/// Index of a named parameter.
pub fn param_index(name: &str) -> Option<usize> {
    PARAM_NAMES.iter().position(|n| *n == name)
}

/// Index of the redshift column.
pub const IDX_Z: usize = 15;
/// Index of N.
pub const IDX_N: usize = 0;
/// Index of dust2 (τ₂).
pub const IDX_DUST2: usize = 8;

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// Width of the box for a parameter (`upper − lower`).
pub fn range(i: usize) -> f64 {
    UPPER[i] - LOWER[i]
}

fn row_constants(lower_or_range: impl Fn(usize) -> f64, pass_through: f32) -> Vec<f32> {
    (0..N_PARAMS)
        .map(|i| {
            if i == IDX_N {
                pass_through
            } else {
                lower_or_range(i) as f32
            }
        })
        .collect()
}

/// φ → θ on a tensor whose last dimension is 16 (any leading shape, any device).
pub fn phi_to_theta(phi: &Tensor) -> Result<Tensor> {
    let dev = phi.device();
    let lower = Tensor::from_vec(row_constants(|i| LOWER[i], 0.0), N_PARAMS, dev)?;
    let width = Tensor::from_vec(row_constants(range, 0.0), N_PARAMS, dev)?;
    let pass = Tensor::from_vec(row_constants(|_| 0.0, 1.0), N_PARAMS, dev)?;
    // Column 0 gets weight 0 here and is added back via `pass`.
    let cdf = normal_cdf_tensor(&phi.to_dtype(DType::F32)?)?;
    let theta = cdf.broadcast_mul(&width)?.broadcast_add(&lower)?;
    Ok(theta.add(&phi.to_dtype(DType::F32)?.broadcast_mul(&pass)?)?)
}

/// φ → θ for one parameter vector (host, f64).
pub fn phi_row_to_theta(phi: &[f64]) -> [f64; N_PARAMS] {
    let mut theta = [0.0; N_PARAMS];
    for i in 0..N_PARAMS {
        theta[i] = if i == IDX_N {
            phi[i]
        } else {
            LOWER[i] + range(i) * normal_cdf(phi[i])
        };
    }
    theta
}

/// θ → φ for one parameter vector (host, f64). Values on or outside the bounds are clipped
/// to within 1e-12 of them so the result stays finite.
pub fn theta_to_phi_row(theta: &[f64]) -> [f64; N_PARAMS] {
    let mut phi = [0.0; N_PARAMS];
    for i in 0..N_PARAMS {
        phi[i] = if i == IDX_N {
            theta[i]
        } else {
            let u = ((theta[i] - LOWER[i]) / range(i)).clamp(1e-12, 1.0 - 1e-12);
            normal_quantile(u)
        };
    }
    phi
}

/// θ → φ on a `[n, 16]` tensor (computed on the host in f64; used for initialisation, not
/// on the hot path).
pub fn theta_to_phi(theta: &Tensor) -> Result<Tensor> {
    let dims = theta.dims().to_vec();
    let flat = theta
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let out: Vec<f32> = flat
        .chunks(N_PARAMS)
        .flat_map(|row| theta_to_phi_row(row).map(|v| v as f32))
        .collect();
    Ok(Tensor::from_vec(out, dims, theta.device())?)
}

/// ln|dθ/dφ| = Σ_{i≥1} [ln range_i + ln 𝒩(φ_i; 0, 1)] over the last dimension.
/// Subtract it from ln p(φ) to get a density over physical θ.
pub fn log_jacobian(phi: &Tensor) -> Result<Tensor> {
    let dev = phi.device();
    let mask = Tensor::from_vec(row_constants(|_| 1.0, 0.0), N_PARAMS, dev)?;
    let const_term: f64 = (1..N_PARAMS).map(|i| range(i).ln() - LN_SQRT_2PI).sum();
    let phi = phi.to_dtype(DType::F32)?;
    let sq = phi.sqr()?.broadcast_mul(&mask)?.sum(phi.rank() - 1)?;
    Ok(((sq * -0.5)? + const_term)?)
}

/// Standard normal quantile Φ⁻¹(u) (Acklam's rational approximation refined by one
/// Halley step; |error| < 1e-15 in f64).
pub fn normal_quantile(u: f64) -> f64 {
    let x = normal_quantile_approx(u);
    // One Halley refinement step against the exact CDF.
    let e = normal_cdf(x) - u;
    let g = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - g / (1.0 + x * g / 2.0)
}

/// Coefficients of Acklam's rational approximation to Φ⁻¹ (central numerator/denominator
/// A/B for p_low ≤ u ≤ 1 − p_low, tail numerator/denominator C/D), shared by the host
/// quantile here and the tensor one of the sampler's coordinates.
pub const ACKLAM_A: [f64; 6] = [
    -3.969683028665376e+01,
    2.209460984245205e+02,
    -2.759285104469687e+02,
    1.38357751867269e+02,
    -3.066479806614716e+01,
    2.506628277459239e+00,
];
/// Acklam's central denominator (see [`ACKLAM_A`]).
pub const ACKLAM_B: [f64; 5] = [
    -5.447609879822406e+01,
    1.615858368580409e+02,
    -1.556989798598866e+02,
    6.680131188771972e+01,
    -1.328068155288572e+01,
];
/// Acklam's tail numerator (see [`ACKLAM_A`]).
pub const ACKLAM_C: [f64; 6] = [
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e+00,
    -2.549732539343734e+00,
    4.374664141464968e+00,
    2.938163982698783e+00,
];
/// Acklam's tail denominator (see [`ACKLAM_A`]).
pub const ACKLAM_D: [f64; 4] = [
    7.784695709041462e-03,
    3.224671290700398e-01,
    2.445134137142996e+00,
    3.754408661907416e+00,
];
/// Lower end of the central region of Acklam's approximation.
pub const ACKLAM_P_LOW: f64 = 0.02425;

/// Acklam's rational approximation to Φ⁻¹(u) alone (relative error < 1.2e-9: enough for
/// f32 outputs, and cheaper than [`normal_quantile`]).
pub fn normal_quantile_approx(u: f64) -> f64 {
    // c₀xⁿ + … + cₙ by Horner's rule.
    let poly = |c: &[f64], x: f64| c[1..].iter().fold(c[0], |acc, &k| acc * x + k);
    let tail = |q: f64| poly(&ACKLAM_C, q) / (poly(&ACKLAM_D, q) * q + 1.0);
    if u < ACKLAM_P_LOW {
        tail((-2.0 * u.ln()).sqrt())
    } else if u <= 1.0 - ACKLAM_P_LOW {
        let q = u - 0.5;
        let r = q * q;
        poly(&ACKLAM_A, r) * q / (poly(&ACKLAM_B, r) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - u).ln()).sqrt())
    }
}

/// Φ(x) = ½(1 + erf(x/√2)) elementwise, as tensor ops in `x`'s dtype.
pub fn normal_cdf_tensor(x: &Tensor) -> Result<Tensor> {
    Ok((((x * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)? * 0.5)?)
}

/// Standard normal CDF in f64.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Complementary error function (libm; ~1 ulp).
pub fn erfc(x: f64) -> f64 {
    libm::erfc(x)
}

/// Error function (libm; ~1 ulp).
pub fn erf(x: f64) -> f64 {
    libm::erf(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn erf_matches_known_values() {
        // Abramowitz & Stegun table values.
        assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-14);
        assert!((erf(1.0) - 0.842_700_792_949_714_9).abs() < 1e-14);
        assert!((erfc(3.0) - 2.209_049_699_858_544e-5).abs() < 1e-18);
        assert!((erf(-2.0) + 0.995_322_265_018_952_7).abs() < 1e-14);
    }

    #[test]
    fn quantile_inverts_cdf() {
        for &u in &[1e-10, 1e-4, 0.01, 0.3, 0.5, 0.77, 0.99, 1.0 - 1e-9] {
            let x = normal_quantile(u);
            assert!((normal_cdf(x) - u).abs() < 1e-14 * u.max(1e-3), "u={u}");
        }
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
    }

    /// Test vector of the reference probit map (θ to 4 dp, φ to 5 significant figures).
    #[test]
    fn probit_map_reproduces_spec_test_vector() {
        let theta = [
            20.0272, -1.4193, 0.1677, 0.1611, 0.1254, -0.0325, -0.1381, -0.0569, 0.4827, 0.3139,
            0.8754, -1.3199, 3.0758, -1.3194, -1.9458, 1.2390,
        ];
        let phi_ref = [
            20.027, -0.64829, 0.042047, 0.040405, 0.031430, -0.0081468, -0.034613, -0.014256,
            -1.1717, 1.5425, -0.15675, 0.87139, -0.17348, -0.60602, 0.48099, -0.81860,
        ];
        let phi = theta_to_phi_row(&theta);
        for i in 1..N_PARAMS {
            // 4-dp rounding of θ propagates to ≲ 1e-3 relative in φ.
            assert!(
                (phi[i] - phi_ref[i]).abs() < 2e-4 + 2e-3 * phi_ref[i].abs(),
                "i={i}"
            );
        }
        let t = Tensor::from_vec(phi.map(|v| v as f32).to_vec(), (1, 16), &Device::Cpu).unwrap();
        let back = phi_to_theta(&t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for i in 0..N_PARAMS {
            assert!(
                (back[i] as f64 - theta[i]).abs() < 2e-5 * (1.0 + theta[i].abs()),
                "i={i}"
            );
        }
    }

    #[test]
    fn log_jacobian_matches_finite_differences() {
        let phi_row = [
            21.0f32, 0.3, -0.2, 0.1, 0.0, 0.5, -0.7, 1.1, -1.2, 0.4, 0.9, -0.1, 0.2, -0.6, 0.8,
            0.05,
        ];
        let t = Tensor::from_vec(phi_row.to_vec(), (1, 16), &Device::Cpu).unwrap();
        let lj = log_jacobian(&t).unwrap().to_vec1::<f32>().unwrap()[0] as f64;
        // The map is diagonal: ln|J| = Σ ln dθ_i/dφ_i; check with central differences in f64.
        let mut expect = 0.0;
        for i in 1..N_PARAMS {
            let h = 1e-5;
            let f = |x: f64| LOWER[i] + range(i) * normal_cdf(x);
            let d = (f(phi_row[i] as f64 + h) - f(phi_row[i] as f64 - h)) / (2.0 * h);
            expect += d.ln();
        }
        assert!((lj - expect).abs() < 1e-4, "{lj} vs {expect}");
    }
}
