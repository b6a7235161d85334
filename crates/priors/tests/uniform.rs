//! Uniform prior: closed-form log_prob and sample uniformity.

mod common_stats;

use candle_core::{DType, Device, Tensor};
use common_stats::{ks_test, theta_draws};
use popcosmos_api::cosmology::pade;
use popcosmos_api::params::{LOWER, N_PARAMS, UPPER};
use popcosmos_api::{HostRng, Prior};
use popcosmos_priors::UniformPrior;

#[test]
fn log_prob_matches_closed_form() {
    let prior = UniformPrior::new();
    let n = 3000;
    let mut rows = Vec::with_capacity(n);
    let mut rng = HostRng::seed_from_u64(3);
    let normals = (popcosmos_api::RandomSource::normal(&mut rng, &(n, 16).into(), &Device::Cpu)
        .unwrap()
        * 1.3)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for r in normals.iter() {
        let mut phi: [f64; N_PARAMS] = std::array::from_fn(|k| r[k] as f64);
        let z = 6.0 * popcosmos_api::params::normal_cdf(phi[15]);
        // log10 M in (6, 14): some rows outside the support.
        let m = 6.0 + 8.0 * popcosmos_api::RandomSource::next_f64(&mut rng);
        phi[0] = pade::distmod(z) - 2.5 * m;
        rows.push(phi);
    }
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.map(|v| v as f32)).collect();
    let t = Tensor::from_vec(flat, (n, 16), &Device::Cpu).unwrap();
    let got = prior.log_prob(&t).unwrap().to_vec1::<f32>().unwrap();
    let phi32 = t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let (mut n_out, mut max_err) = (0, 0f64);
    for (i, r) in phi32.iter().enumerate() {
        let z = 6.0 * popcosmos_api::params::normal_cdf(r[15]);
        let m = -0.4 * (r[0] - pade::distmod(z));
        // Closed form: Σ ln 𝒩(φ_i) + ln(0.4 / 6) inside 7 < log10 M < 13.
        let closed = if m > 7.0 && m < 13.0 {
            r[1..]
                .iter()
                .map(|p| -0.5 * p * p - 0.5 * (2.0 * std::f64::consts::PI).ln())
                .sum::<f64>()
                + (0.4f64 / 6.0).ln()
        } else {
            f64::NEG_INFINITY
        };
        if (m - 7.0).abs() < 1e-4 || (m - 13.0).abs() < 1e-4 {
            continue; // f32 rounding may flip rows on the boundary
        }
        if closed.is_finite() {
            max_err = max_err.max((got[i] as f64 - closed).abs());
        } else {
            n_out += 1;
            assert_eq!(got[i], f32::NEG_INFINITY);
        }
        assert_eq!(
            UniformPrior::log_prob_row(&r.clone().try_into().unwrap()).is_finite(),
            closed.is_finite()
        );
    }
    assert!(n_out > 100);
    assert!(max_err < 1e-4, "{max_err}");
}

#[test]
fn samples_are_uniform_within_bounds() {
    let prior = UniformPrior::new();
    let n = 100_000;
    let theta = theta_draws(&prior, n, &mut HostRng::seed_from_u64(9));
    for t in &theta {
        for i in 1..N_PARAMS {
            assert!(t[i] >= LOWER[i] && t[i] <= UPPER[i], "param {i}: {}", t[i]);
        }
    }
    for i in [1, 5, 8, 9, 12, 15] {
        let (d, p) = ks_test(&mut theta.iter().map(|t| t[i]).collect::<Vec<_>>(), |x| {
            ((x - LOWER[i]) / (UPPER[i] - LOWER[i])).clamp(0.0, 1.0)
        });
        eprintln!("uniform θ_{i}: KS D = {d:.2e}, p = {p:.3}");
        assert!(p > 1e-3);
    }
    let mut m: Vec<f64> = theta
        .iter()
        .map(|t| -0.4 * (t[0] - pade::distmod(t[15])))
        .collect();
    assert!(m.iter().all(|&v| v > 7.0 && v < 13.0));
    let (d, p) = ks_test(&mut m, |x| ((x - 7.0) / 6.0).clamp(0.0, 1.0));
    eprintln!("uniform log10 M: KS D = {d:.2e}, p = {p:.3}");
    assert!(p > 1e-3);
}
