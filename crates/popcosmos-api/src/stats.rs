//! Order statistics and Kolmogorov–Smirnov tests on host `f64` slices, shared by every crate.
//!
//! One convention throughout: NaNs are ignored, and a slice with nothing left gives NaN
//! (never a panic). Quantiles are numpy's default (linear interpolation, type 7).

/// A sorted copy of `values` without NaNs.
pub fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Linear-interpolated quantile at level `q` (clamped to [0, 1]) of an ascending-sorted
/// slice without NaNs; NaN if empty.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Linear-interpolated quantiles of `values` at the levels `qs`.
pub fn quantiles<const N: usize>(values: &[f64], qs: [f64; N]) -> [f64; N] {
    let v = sorted(values);
    qs.map(|q| quantile_sorted(&v, q))
}

/// Median (the mean of the two middle values for even lengths).
pub fn median(values: &[f64]) -> f64 {
    let v = sorted(values);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Normalised median absolute deviation, 1.4826 × median |x − median x| (σ for a Gaussian).
pub fn nmad(values: &[f64]) -> f64 {
    let m = median(values);
    let d: Vec<f64> = values.iter().map(|x| (x - m).abs()).collect();
    1.4826 * median(&d)
}

/// Two-sample Kolmogorov–Smirnov statistic sup |F_a − F_b| and its asymptotic p-value
/// (effective n = n_a n_b / (n_a + n_b)).
pub fn ks_two_sample(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (a, b) = (sorted(a), sorted(b));
    let (na, nb) = (a.len(), b.len());
    if na == 0 || nb == 0 {
        return (f64::NAN, f64::NAN);
    }
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < na && j < nb {
        let x = a[i].min(b[j]);
        while i < na && a[i] <= x {
            i += 1;
        }
        while j < nb && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / na as f64 - j as f64 / nb as f64).abs());
    }
    let ne = (na * nb) as f64 / (na + nb) as f64;
    (d, kolmogorov_p(d, ne))
}

/// One-sample Kolmogorov–Smirnov statistic of `sample` against `cdf`, and its asymptotic
/// p-value.
pub fn ks_one_sample(sample: &[f64], cdf: impl Fn(f64) -> f64) -> (f64, f64) {
    let v = sorted(sample);
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mut d: f64 = 0.0;
    for (i, &x) in v.iter().enumerate() {
        let f = cdf(x);
        d = d
            .max((f - i as f64 / n).abs())
            .max(((i + 1) as f64 / n - f).abs());
    }
    (d, kolmogorov_p(d, n))
}

/// Asymptotic Kolmogorov p-value P(D > d) for effective sample size `n`, with Stephens'
/// small-n correction.
pub fn kolmogorov_p(d: f64, n: f64) -> f64 {
    let lam = (n.sqrt() + 0.12 + 0.11 / n.sqrt()) * d;
    if lam < 0.2 {
        return 1.0;
    }
    let mut s = 0.0;
    for k in 1..200 {
        let k = k as f64;
        let sign = if k as i64 % 2 == 1 { 1.0 } else { -1.0 };
        let t = 2.0 * sign * (-2.0 * k * k * lam * lam).exp();
        s += t;
        if t.abs() < 1e-12 {
            break;
        }
    }
    s.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy_linear() {
        let v: Vec<f64> = (0..=100).map(|x| x as f64).collect();
        assert_eq!(quantiles(&v, [0.025, 0.5, 0.975]), [2.5, 50.0, 97.5]);
        let p = quantiles(&[3.0, 1.0, 2.0, f64::NAN], [0.025, 0.5]);
        assert!((p[0] - 1.05).abs() < 1e-12 && p[1] == 2.0);
    }

    #[test]
    fn empty_input_is_nan() {
        assert!(quantile_sorted(&[], 0.5).is_nan());
        assert!(median(&[f64::NAN]).is_nan());
        assert!(ks_two_sample(&[], &[1.0]).0.is_nan());
        assert!(ks_one_sample(&[], |x| x).0.is_nan());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn ks_two_sample_known_values() {
        let (d, p) = ks_two_sample(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]);
        assert_eq!((d, p), (0.0, 1.0));
        assert_eq!(ks_two_sample(&[0.0, 1.0], &[2.0, 3.0]).0, 1.0);
        // a = {1, 2, 3, 4}, b = {2.5, 5}: F_a(2) = 0.5 vs F_b(2) = 0.
        let (d, _) = ks_two_sample(&[4.0, 1.0, 3.0, 2.0], &[5.0, 2.5]);
        assert!((d - 0.5).abs() < 1e-12, "{d}");
    }

    #[test]
    fn ks_one_sample_of_uniform_grid() {
        let v: Vec<f64> = (0..100).map(|i| (i as f64 + 0.5) / 100.0).collect();
        let (d, p) = ks_one_sample(&v, |x| x.clamp(0.0, 1.0));
        assert!((d - 0.005).abs() < 1e-12 && p > 0.99, "{d} {p}");
    }
}
