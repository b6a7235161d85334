//! Small statistics helpers shared by the sampling tests.
#![allow(dead_code)]

/// Kolmogorov–Smirnov statistic of `sample` against a CDF, and its asymptotic p-value.
pub fn ks_test(sample: &mut [f64], cdf: impl Fn(f64) -> f64) -> (f64, f64) {
    sample.sort_by(|a, b| a.total_cmp(b));
    let n = sample.len() as f64;
    let mut d: f64 = 0.0;
    for (i, &x) in sample.iter().enumerate() {
        let f = cdf(x);
        d = d
            .max((f - i as f64 / n).abs())
            .max(((i + 1) as f64 / n - f).abs());
    }
    (d, kolmogorov_p(d, n))
}

/// Asymptotic Kolmogorov p-value with Stephens' small-n correction.
pub fn kolmogorov_p(d: f64, n: f64) -> f64 {
    let lam = (n.sqrt() + 0.12 + 0.11 / n.sqrt()) * d;
    if lam < 0.2 {
        return 1.0;
    }
    let mut s = 0.0;
    for k in 1..200 {
        let k = k as f64;
        let t =
            2.0 * (if k as i64 % 2 == 1 { 1.0 } else { -1.0 }) * (-2.0 * k * k * lam * lam).exp();
        s += t;
        if t.abs() < 1e-12 {
            break;
        }
    }
    s.clamp(0.0, 1.0)
}

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
