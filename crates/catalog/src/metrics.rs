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
}
