//! Small statistics helpers shared by the sampling tests.
#![allow(dead_code)]

/// `n` draws of `prior` (seeded by `rng`) as θ rows, after checking that every draw has a
/// finite log-density.
pub fn theta_draws(
    prior: &dyn popcosmos_api::Prior,
    n: usize,
    rng: &mut dyn popcosmos_api::RandomSource,
) -> Vec<Vec<f64>> {
    use candle_core::{DType, Device};
    let phi = prior.sample(n, rng, &Device::Cpu).unwrap();
    assert_eq!(phi.dims(), &[n, 16]);
    let lp = prior.log_prob(&phi).unwrap().to_vec1::<f32>().unwrap();
    assert!(
        lp.iter().all(|v| v.is_finite()),
        "non-finite log_prob among draws"
    );
    popcosmos_api::params::phi_to_theta(&phi)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap()
}

/// One-sample Kolmogorov–Smirnov statistic against a CDF, and its asymptotic p-value.
pub use popcosmos_api::stats::ks_one_sample as ks_test;

/// A tabulated CDF: cumulative trapezoid of a density sampled on a uniform grid,
/// normalised, linearly interpolated.
pub struct GridCdf {
    x0: f64,
    dx: f64,
    cum: Vec<f64>,
}

impl GridCdf {
    pub fn new(x0: f64, x1: f64, density: &[f64]) -> Self {
        let n = density.len();
        let dx = (x1 - x0) / (n - 1) as f64;
        let mut cum = vec![0.0; n];
        for i in 1..n {
            cum[i] = cum[i - 1] + 0.5 * dx * (density[i - 1] + density[i]);
        }
        let tot = cum[n - 1];
        cum.iter_mut().for_each(|c| *c /= tot);
        Self { x0, dx, cum }
    }

    pub fn cdf(&self, x: f64) -> f64 {
        let t = ((x - self.x0) / self.dx).clamp(0.0, (self.cum.len() - 1) as f64);
        let i = (t.floor() as usize).min(self.cum.len() - 2);
        let f = t - i as f64;
        self.cum[i] * (1.0 - f) + self.cum[i + 1] * f
    }
}

/// Simpson integral of f on [a, b] with n (even) intervals.
pub fn simpson(a: f64, b: f64, n: usize, f: impl Fn(f64) -> f64) -> f64 {
    let h = (b - a) / n as f64;
    let mut s = f(a) + f(b);
    for i in 1..n {
        s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(a + i as f64 * h);
    }
    s * h / 3.0
}

pub fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v)
}
