//! Photo-z validation metrics and id matching.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Catastrophic-outlier threshold on |Δz| (COSMOS2020 convention).
pub const OUTLIER_THRESHOLD: f64 = 0.15;

/// Photo-z summary, serialised as `{"bias", "sigma_nmad", "outlier_fraction", "n"}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhotozMetrics {
    /// median Δz, Δz = (z_phot − z_spec)/(1 + z_spec).
    pub bias: f64,
    /// 1.4826 × median |Δz − median Δz|.
    pub sigma_nmad: f64,
    /// Fraction with |Δz| > 0.15.
    pub outlier_fraction: f64,
    /// Number of pairs used (both values finite, z_spec > −1).
    pub n: usize,
}

/// Median of a slice (mean of the two middle values for even lengths); NaN if empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

/// Photo-z metrics over pairs; non-finite pairs are skipped. All-NaN with `n = 0` if
/// nothing is left. Panics if the slices differ in length.
pub fn photoz_metrics(z_phot: &[f64], z_spec: &[f64]) -> PhotozMetrics {
    assert_eq!(
        z_phot.len(),
        z_spec.len(),
        "photoz_metrics: z_phot and z_spec differ in length"
    );
    let dz: Vec<f64> = z_phot
        .iter()
        .zip(z_spec)
        .filter(|(p, s)| p.is_finite() && s.is_finite() && **s > -1.0)
        .map(|(p, s)| (p - s) / (1.0 + s))
        .collect();
    let n = dz.len();
    if n == 0 {
        return PhotozMetrics {
            bias: f64::NAN,
            sigma_nmad: f64::NAN,
            outlier_fraction: f64::NAN,
            n,
        };
    }
    let bias = median(&dz);
    let abs_dev: Vec<f64> = dz.iter().map(|d| (d - bias).abs()).collect();
    let outliers = dz.iter().filter(|d| d.abs() > OUTLIER_THRESHOLD).count();
    PhotozMetrics {
        bias,
        sigma_nmad: 1.4826 * median(&abs_dev),
        outlier_fraction: outliers as f64 / n as f64,
        n,
    }
}

/// Join two id lists: `(left index, right index)` for every left id found on the right,
/// in left order (the first occurrence on the right wins).
pub fn match_by_id<L: AsRef<str>, R: AsRef<str>>(left: &[L], right: &[R]) -> Vec<(usize, usize)> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(right.len());
    for (j, id) in right.iter().enumerate() {
        index.entry(id.as_ref()).or_insert(j);
    }
    left.iter()
        .enumerate()
        .filter_map(|(i, id)| index.get(id.as_ref()).map(|&j| (i, j)))
        .collect()
}

/// Fraction of `truth` inside `[lo, hi]` (inclusive); non-finite triples are skipped,
/// NaN if none is left. Panics if the slices differ in length.
pub fn coverage(lo: &[f64], hi: &[f64], truth: &[f64]) -> f64 {
    assert!(
        lo.len() == hi.len() && hi.len() == truth.len(),
        "coverage: slices differ in length"
    );
    let (mut inside, mut n) = (0usize, 0usize);
    for ((l, h), t) in lo.iter().zip(hi).zip(truth) {
        if l.is_finite() && h.is_finite() && t.is_finite() {
            n += 1;
            if l <= t && t <= h {
                inside += 1;
            }
        }
    }
    if n == 0 {
        f64::NAN
    } else {
        inside as f64 / n as f64
    }
}

/// Two runs' median redshifts agree when |Δz|/(1 + z̄) is below this (the reproducibility
/// goal of a photo-z run: seed noise well inside a typical photo-z error).
pub const AGREEMENT_TOLERANCE: f64 = 0.01;

/// How far apart the median redshifts of two runs over the same galaxies are (two seeds,
/// two library sizes, …), serialised with these field names.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// Pairs used (both medians finite).
    pub n: usize,
    /// Fraction with |Δz|/(1 + z̄) < [`AGREEMENT_TOLERANCE`], z̄ the pair's mean.
    pub within_tolerance: f64,
    /// Fraction with |Δz|/(1 + z̄) > [`OUTLIER_THRESHOLD`]: one run would call the other's
    /// photo-z a catastrophic outlier.
    pub beyond_outlier: f64,
    /// Median |Δz|/(1 + z̄).
    pub median_abs_dz: f64,
    /// 90th percentile of |Δz|/(1 + z̄).
    pub p90_abs_dz: f64,
}

/// |a − b|/(1 + (a + b)/2) of every pair whose values are both finite, in order.
pub fn scaled_differences(a: &[f64], b: &[f64]) -> Vec<f64> {
    assert_eq!(a.len(), b.len(), "scaled_differences: lengths differ");
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (x - y).abs() / (1.0 + 0.5 * (x + y)))
        .collect()
}

/// Agreement of two runs' median redshifts, paired by position; non-finite pairs are
/// skipped (all-NaN with `n = 0` if nothing is left).
pub fn median_agreement(z_a: &[f64], z_b: &[f64]) -> Agreement {
    let d = scaled_differences(z_a, z_b);
    let n = d.len();
    let share = |f: &dyn Fn(f64) -> bool| {
        if n == 0 {
            f64::NAN
        } else {
            d.iter().filter(|&&x| f(x)).count() as f64 / n as f64
        }
    };
    Agreement {
        n,
        within_tolerance: share(&|x| x < AGREEMENT_TOLERANCE),
        beyond_outlier: share(&|x| x > OUTLIER_THRESHOLD),
        median_abs_dz: median(&d),
        p90_abs_dz: popcosmos_api::stats::quantiles(&d, [0.9])[0],
    }
}

/// Share of a p(z) tabulated at bin centres `grid` (any normalisation) within `half_width`
/// of `centre`, bounds included: BPZ's ODDS (Benítez 2000) about a chosen point. NaN for a
/// p(z) without positive finite mass.
pub fn pz_odds(pz: &[f64], grid: &[f64], centre: f64, half_width: f64) -> f64 {
    assert_eq!(
        pz.len(),
        grid.len(),
        "pz_odds: p(z) and grid differ in length"
    );
    let (mut inside, mut total) = (0.0, 0.0);
    for (p, z) in pz.iter().zip(grid) {
        if p.is_finite() && *p > 0.0 {
            total += p;
            if (z - centre).abs() <= half_width {
                inside += p;
            }
        }
    }
    if total > 0.0 {
        inside / total
    } else {
        f64::NAN
    }
}

/// Total-variation distance ½ Σ |p − q| between two p(z) on the same grid, each normalised
/// to unit sum first; in [0, 1], NaN if either has no positive finite mass.
pub fn total_variation(p: &[f64], q: &[f64]) -> f64 {
    assert_eq!(p.len(), q.len(), "total_variation: lengths differ");
    let mass = |v: &[f64]| -> f64 { v.iter().filter(|x| x.is_finite() && **x > 0.0).sum() };
    let (sp, sq) = (mass(p), mass(q));
    if !(sp > 0.0 && sq > 0.0) {
        return f64::NAN;
    }
    let clean = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
    0.5 * p
        .iter()
        .zip(q)
        .map(|(a, b)| (clean(*a) / sp - clean(*b) / sq).abs())
        .sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_by_hand() {
        // Δz = [0.0, 0.01, −0.02, 0.2, 0.03]  (z_spec = 1 → 1 + z = 2)
        let z_spec = [1.0; 5];
        let z_phot = [1.0, 1.02, 0.96, 1.4, 1.06];
        let m = photoz_metrics(&z_phot, &z_spec);
        assert_eq!(m.n, 5);
        // sorted Δz: −0.02, 0, 0.01, 0.03, 0.2 → median 0.01
        assert!((m.bias - 0.01).abs() < 1e-15);
        // |Δz − 0.01| = 0.01, 0, 0.03, 0.19, 0.02 → median 0.02
        assert!((m.sigma_nmad - 1.4826 * 0.02).abs() < 1e-15);
        assert_eq!(m.outlier_fraction, 0.2);
    }

    #[test]
    fn even_count_and_nan_skipped() {
        let m = photoz_metrics(&[0.1, 0.3, f64::NAN, 0.0, 0.5], &[0.0, 0.0, 0.0, 0.0, 0.0]);
        // Δz = 0.1, 0.3, 0.0, 0.5 → median 0.2; |dev| = 0.1, 0.1, 0.2, 0.3 → 0.15
        assert_eq!(m.n, 4);
        assert!((m.bias - 0.2).abs() < 1e-15);
        assert!((m.sigma_nmad - 1.4826 * 0.15).abs() < 1e-12);
        assert_eq!(m.outlier_fraction, 0.5);
        assert!(photoz_metrics(&[], &[]).bias.is_nan());
    }

    #[test]
    fn json_keys() {
        let m = PhotozMetrics {
            bias: 0.5,
            sigma_nmad: 0.25,
            outlier_fraction: 0.125,
            n: 8,
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"bias":0.5,"sigma_nmad":0.25,"outlier_fraction":0.125,"n":8}"#
        );
    }

    #[test]
    fn matching_and_coverage() {
        let pairs = match_by_id(&["a", "b", "c"], &["c".to_string(), "a".into(), "a".into()]);
        assert_eq!(pairs, vec![(0, 1), (2, 0)]);
        let c = coverage(
            &[0.0, 0.0, 0.0, f64::NAN],
            &[1.0, 1.0, 1.0, 1.0],
            &[0.5, 1.0, 2.0, 0.5],
        );
        assert!((c - 2.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn agreement_by_hand() {
        // Pairs: (0.5, 0.5) → 0; (1.0, 1.03) → 0.03/2.015; (0.2, 0.205) → 0.005/1.2025;
        // (2.0, 3.0) → 1/3.5; a NaN pair is skipped.
        let a = [0.5, 1.0, 0.2, 2.0, f64::NAN];
        let b = [0.5, 1.03, 0.205, 3.0, 1.0];
        let d = scaled_differences(&a, &b);
        assert_eq!(d.len(), 4);
        assert!((d[1] - 0.03 / 2.015).abs() < 1e-15);
        let m = median_agreement(&a, &b);
        assert_eq!(m.n, 4);
        assert_eq!(m.within_tolerance, 0.5); // 0 and 0.00416
        assert_eq!(m.beyond_outlier, 0.25); // 0.2857
        // sorted: 0, 0.004158, 0.014888, 0.285714 → median (0.004158 + 0.014888)/2
        let want = 0.5 * (0.005 / 1.2025 + 0.03 / 2.015);
        assert!((m.median_abs_dz - want).abs() < 1e-15);
        // h = 0.9 × 3 = 2.7 → v2 + 0.7 (v3 − v2)
        let want90 = 0.03 / 2.015 + 0.7 * (1.0 / 3.5 - 0.03 / 2.015);
        assert!((m.p90_abs_dz - want90).abs() < 1e-15);
        assert!(median_agreement(&[], &[]).within_tolerance.is_nan());
    }

    #[test]
    fn odds_and_total_variation_by_hand() {
        let grid = [0.1, 0.3, 0.5, 0.7, 0.9];
        let pz = [1.0, 2.0, 4.0, 2.0, 1.0]; // total 10
        // Within 0.2 of 0.5: bins 0.3, 0.5, 0.7 (bounds included) → 8/10.
        assert!((pz_odds(&pz, &grid, 0.5, 0.2 + 1e-12) - 0.8).abs() < 1e-15);
        assert!((pz_odds(&pz, &grid, 0.1, 0.05) - 0.1).abs() < 1e-15);
        assert!(pz_odds(&[0.0; 5], &grid, 0.5, 1.0).is_nan());
        // Normalised: p = [.1,.2,.4,.2,.1], q = [0,0,.5,.5,0] → ½(.1+.2+.1+.3+.1) = 0.4.
        let q = [0.0, 0.0, 3.0, 3.0, f64::NAN];
        assert!((total_variation(&pz, &q) - 0.4).abs() < 1e-15);
        assert_eq!(total_variation(&pz, &pz), 0.0);
        assert!((total_variation(&[1.0, 0.0], &[0.0, 2.0]) - 1.0).abs() < 1e-15);
        assert!(total_variation(&pz, &[0.0; 5]).is_nan());
    }
}
