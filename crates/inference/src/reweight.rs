//! Prior swap by importance reweighting of stored chains.
//!
//! A run made under a cheap prior q (a distilled flow, say) gives draws from
//! P_q(φ|d) ∝ L(φ) q(φ). Weighting each draw by w = p(φ)/q(φ) turns them into draws from
//! the posterior under another prior p (the diffusion prior), because the likelihood
//! cancels: P_p/P_q ∝ p/q. Only the two prior log-densities are evaluated, once per stored
//! draw, instead of re-running the sampler with the expensive prior. The result is exact as
//! the number of draws grows, provided q's posterior covers p's; the Kish effective sample
//! size of the weights says when it does not (few draws carry all the weight).
//!
//! Both priors are densities over the same latent φ, so no Jacobian enters; the chains store
//! physical θ, which is mapped back with [`popcosmos_api::params::theta_to_phi_row`].

use candle_core::{DType, Device, Tensor};
use popcosmos_api::params::{IDX_Z, N_PARAMS, PARAM_NAMES, theta_to_phi_row};
use popcosmos_api::{Error, Prior, Result};
use popcosmos_catalog::ResultTable;
use popcosmos_sps::{StellarMassEmulator, derived_from_tensor};

use crate::pipeline::{DERIVED_GETTERS, PERCENTILES, percentile_columns, z_odds};

/// Galaxies whose weights have a smaller Kish ESS are flagged: a handful of draws carry
/// the reweighted posterior, so its percentiles are not to be trusted.
pub const MIN_IMPORTANCE_ESS: f64 = 20.0;

/// Rows per prior call (bounds memory; both priors are batched).
const ROWS_PER_CALL: usize = 4096;

/// The draws of one galaxy: θ rows (physical) and their importance log-weights.
#[derive(Debug, Clone)]
pub struct GalaxyDraws {
    /// Galaxy id.
    pub id: String,
    /// Row-major `[n, 16]` physical parameters.
    pub theta: Vec<f64>,
    /// ln p_to(φ) − ln p_from(φ) per draw (unnormalised).
    pub log_weight: Vec<f64>,
}

impl GalaxyDraws {
    /// Number of draws.
    pub fn len(&self) -> usize {
        self.log_weight.len()
    }

    /// True when the galaxy has no draws.
    pub fn is_empty(&self) -> bool {
        self.log_weight.is_empty()
    }

    /// Self-normalised weights (sum 1); draws with −∞ log-weight get 0. `None` when no draw
    /// has a finite weight (the target prior excludes every draw).
    pub fn normalised_weights(&self) -> Option<Vec<f64>> {
        let max = popcosmos_samplers::finite_max(&self.log_weight)?;
        let w: Vec<f64> = self
            .log_weight
            .iter()
            .map(|v| if v.is_finite() { (v - max).exp() } else { 0.0 })
            .collect();
        let total: f64 = w.iter().sum();
        Some(w.into_iter().map(|x| x / total).collect())
    }
}

/// Kish effective sample size (Σw)²/Σw² of normalised or unnormalised weights.
pub fn kish_ess(weights: &[f64]) -> f64 {
    let s: f64 = weights.iter().sum();
    let s2: f64 = weights.iter().map(|w| w * w).sum();
    if s2 > 0.0 { s * s / s2 } else { 0.0 }
}

/// Weighted percentiles (`PERCENTILES`) of `values`: the weighted CDF with each draw at the
/// midpoint of its weight step, linearly interpolated; with equal weights this is numpy's
/// "hazen" rule. NaN values and zero weights are skipped.
pub fn weighted_percentiles(values: &[f64], weights: &[f64]) -> [f64; 5] {
    let mut pairs: Vec<(f64, f64)> = values
        .iter()
        .zip(weights)
        .filter(|(v, w)| !v.is_nan() && **w > 0.0)
        .map(|(v, w)| (*v, *w))
        .collect();
    if pairs.is_empty() {
        return [f64::NAN; 5];
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = pairs.iter().map(|p| p.1).sum();
    let mut cdf = Vec::with_capacity(pairs.len());
    let mut acc = 0.0;
    for (_, w) in &pairs {
        cdf.push((acc + 0.5 * w) / total);
        acc += w;
    }
    PERCENTILES.map(|(p, _)| {
        let q = p / 100.0;
        let i = cdf.partition_point(|c| *c < q);
        if i == 0 {
            pairs[0].0
        } else if i == pairs.len() {
            pairs[pairs.len() - 1].0
        } else {
            let (c0, c1) = (cdf[i - 1], cdf[i]);
            let t = if c1 > c0 { (q - c0) / (c1 - c0) } else { 0.0 };
            pairs[i - 1].0 + t * (pairs[i].0 - pairs[i - 1].0)
        }
    })
}

/// Split a chains table (`id`, the 16 physical parameter columns, …) into galaxies in
/// first-appearance order and compute every draw's log-weight ln p_to − ln p_from.
pub fn reweight_chains(
    chains: &ResultTable,
    from: &dyn Prior,
    to: &dyn Prior,
    device: &Device,
) -> Result<Vec<GalaxyDraws>> {
    let n = chains.len();
    let cols: Vec<&[f64]> = PARAM_NAMES
        .iter()
        .map(|name| {
            chains.column(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "chains: no column '{name}' (expected the chain files of a run with output.chains: true)"
                ))
            })
        })
        .collect::<Result<_>>()?;
    let mut theta = vec![0.0; n * N_PARAMS];
    let mut phi = vec![0f32; n * N_PARAMS];
    for r in 0..n {
        let row: Vec<f64> = cols.iter().map(|c| c[r]).collect();
        theta[r * N_PARAMS..(r + 1) * N_PARAMS].copy_from_slice(&row);
        for (dst, v) in phi[r * N_PARAMS..(r + 1) * N_PARAMS]
            .iter_mut()
            .zip(theta_to_phi_row(&row))
        {
            *dst = v as f32;
        }
    }
    let mut log_weight = Vec::with_capacity(n);
    for start in (0..n).step_by(ROWS_PER_CALL) {
        let end = (start + ROWS_PER_CALL).min(n);
        let x = Tensor::from_slice(
            &phi[start * N_PARAMS..end * N_PARAMS],
            (end - start, N_PARAMS),
            device,
        )?;
        let lp_to = to.log_prob(&x)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let lp_from = from.log_prob(&x)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        // A draw the sampler accepted has finite ln q; if it does not (a prior evaluated
        // differently now), it carries no information and gets zero weight.
        log_weight.extend(lp_to.iter().zip(&lp_from).map(|(a, b)| {
            if b.is_finite() {
                a - b
            } else {
                f64::NEG_INFINITY
            }
        }));
    }
    let mut order: Vec<String> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = Default::default();
    let mut galaxies: Vec<GalaxyDraws> = Vec::new();
    for r in 0..n {
        let id = chains.ids[r].as_str();
        let g = *index.entry(id).or_insert_with(|| {
            order.push(id.to_string());
            galaxies.push(GalaxyDraws {
                id: id.to_string(),
                theta: Vec::new(),
                log_weight: Vec::new(),
            });
            galaxies.len() - 1
        });
        galaxies[g]
            .theta
            .extend_from_slice(&theta[r * N_PARAMS..(r + 1) * N_PARAMS]);
        galaxies[g].log_weight.push(log_weight[r]);
    }
    Ok(galaxies)
}

/// Per-galaxy summary columns of a reweighted posterior: weighted percentiles of z, the
/// derived quantities and the other parameters (same names as a run's results), plus
/// `n_draws`, `importance_ess` (Kish) and `max_weight` (largest normalised weight), and a
/// `flags` string column (set when the ESS is below [`MIN_IMPORTANCE_ESS`]).
pub fn summary_columns() -> Vec<String> {
    let mut cols = percentile_columns();
    cols.extend(["z_odds", "n_draws", "importance_ess", "max_weight"].map(String::from));
    cols
}

/// Summarise reweighted galaxies as a results table ([`summary_columns`]); `equal_weights`
/// ignores the importance weights (the posterior under the prior the run used).
pub fn summarise(
    galaxies: &[GalaxyDraws],
    stellar_mass: &StellarMassEmulator,
    equal_weights: bool,
    device: &Device,
) -> Result<ResultTable> {
    let columns = summary_columns();
    let mut out: Vec<Vec<f64>> = vec![Vec::with_capacity(galaxies.len()); columns.len()];
    let mut table = ResultTable::default();
    let mut flags = Vec::with_capacity(galaxies.len());
    for g in galaxies {
        let n = g.len();
        let weights = if equal_weights {
            Some(vec![1.0 / n as f64; n])
        } else {
            g.normalised_weights()
        };
        let weights = weights.unwrap_or_else(|| vec![0.0; n]);
        let theta = Tensor::from_slice(&g.theta, (n, N_PARAMS), device)?.to_dtype(DType::F32)?;
        let derived = derived_from_tensor(&theta, Some(stellar_mass))?;
        let mut col = 0;
        let mut push = |values: Vec<f64>, out: &mut Vec<Vec<f64>>| {
            for v in weighted_percentiles(&values, &weights) {
                out[col].push(v);
                col += 1;
            }
        };
        let z: Vec<f64> = (0..n).map(|r| g.theta[r * N_PARAMS + IDX_Z]).collect();
        let odds = z_odds(&z, Some(&weights));
        push(z, &mut out);
        for get in DERIVED_GETTERS {
            push(derived.iter().map(get).collect(), &mut out);
        }
        for p in (0..N_PARAMS).filter(|p| *p != IDX_Z) {
            push(
                (0..n).map(|r| g.theta[r * N_PARAMS + p]).collect(),
                &mut out,
            );
        }
        let max_weight = weights.iter().copied().fold(0.0, f64::max);
        let ess = kish_ess(&weights);
        for v in [odds, n as f64, ess, max_weight] {
            out[col].push(v);
            col += 1;
        }
        flags.push(if equal_weights || ess >= MIN_IMPORTANCE_ESS {
            String::new()
        } else {
            format!("importance ESS {ess:.1} < {MIN_IMPORTANCE_ESS}")
        });
        table.ids.push(g.id.clone());
    }
    for (name, values) in columns.into_iter().zip(out) {
        table.columns.insert(name, values);
    }
    table.strings.insert("flags".into(), flags);
    Ok(table)
}

/// How two posterior summaries of the same galaxies differ, for one quantity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShiftStats {
    /// Galaxies compared (finite in both).
    pub n: usize,
    /// Median and 95th percentile over galaxies of |Δ median| / σ_a, σ_a = (p84 − p16)/2 of `a`.
    pub median_abs_shift_sigma: f64,
    /// 95th percentile over galaxies of |Δ median| / σ_a (see `median_abs_shift_sigma`).
    pub p95_abs_shift_sigma: f64,
    /// Mean of Δ median / σ_a (a systematic shift shows here).
    pub mean_shift_sigma: f64,
    /// Median over galaxies of the 68 % and 95 % interval-width ratios b / a.
    pub width68_ratio: f64,
    /// Median over galaxies of the 95 % interval-width ratio b / a.
    pub width95_ratio: f64,
}

/// Compare quantity `q` (a results prefix such as `z` or `log10M_formed`) between two
/// summary tables with the same galaxies in the same order.
pub fn shift_stats(a: &ResultTable, b: &ResultTable, q: &str) -> Result<ShiftStats> {
    if a.ids != b.ids {
        return Err(Error::Invalid(
            "compared tables hold different galaxies".into(),
        ));
    }
    let col = |t: &ResultTable, p: &str| -> Result<Vec<f64>> {
        t.column(&format!("{q}_{p}"))
            .map(|c| c.to_vec())
            .ok_or_else(|| Error::Invalid(format!("no column {q}_{p}")))
    };
    let (a16, a50, a84, a2, a97) = (
        col(a, "p16")?,
        col(a, "p50")?,
        col(a, "p84")?,
        col(a, "p2.5")?,
        col(a, "p97.5")?,
    );
    let (b16, b50, b84, b2, b97) = (
        col(b, "p16")?,
        col(b, "p50")?,
        col(b, "p84")?,
        col(b, "p2.5")?,
        col(b, "p97.5")?,
    );
    let mut shifts = Vec::new();
    let mut w68 = Vec::new();
    let mut w95 = Vec::new();
    for i in 0..a.len() {
        let sigma = 0.5 * (a84[i] - a16[i]);
        let s = (b50[i] - a50[i]) / sigma;
        let r68 = (b84[i] - b16[i]) / (a84[i] - a16[i]);
        let r95 = (b97[i] - b2[i]) / (a97[i] - a2[i]);
        if s.is_finite() && r68.is_finite() && r95.is_finite() {
            shifts.push(s);
            w68.push(r68);
            w95.push(r95);
        }
    }
    let n = shifts.len();
    if n == 0 {
        return Err(Error::Invalid(format!("no galaxy with finite {q} in both")));
    }
    let mean = shifts.iter().sum::<f64>() / n as f64;
    let mut abs: Vec<f64> = shifts.iter().map(|s| s.abs()).collect();
    let quantile = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        let pos = p * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    Ok(ShiftStats {
        n,
        median_abs_shift_sigma: quantile(&mut abs, 0.5),
        p95_abs_shift_sigma: quantile(&mut abs, 0.95),
        mean_shift_sigma: mean,
        width68_ratio: quantile(&mut w68, 0.5),
        width95_ratio: quantile(&mut w95, 0.5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_percentiles_with_equal_weights_are_hazen() {
        // Hazen: the k-th of n sorted values sits at (k − 0.5)/n.
        let v: Vec<f64> = (1..=4).map(f64::from).collect();
        let p = weighted_percentiles(&v, &[0.25; 4]);
        assert_eq!(p[2], 2.5);
        assert!((p[1] - 1.14).abs() < 1e-12); // q=0.16 between 0.125 (1) and 0.375 (2)
        assert_eq!(p[0], 1.0); // below the first midpoint: clamped
        assert_eq!(p[4], 4.0);
    }

    #[test]
    fn weighted_grid_reproduces_target_quantiles() {
        // A uniform grid on [0, 1] weighted by the density 2x has CDF x², quantile √q.
        let n = 10_000;
        let x: Vec<f64> = (0..n).map(|i| (i as f64 + 0.5) / n as f64).collect();
        let w: Vec<f64> = x.iter().map(|v| 2.0 * v).collect();
        let p = weighted_percentiles(&x, &w);
        for (got, (q, _)) in p.iter().zip(PERCENTILES) {
            let want = (q / 100.0_f64).sqrt();
            assert!((got - want).abs() < 1e-3, "q={q}: {got} vs {want}");
        }
    }

    #[test]
    fn kish_ess_limits() {
        assert!((kish_ess(&[1.0; 10]) - 10.0).abs() < 1e-12);
        assert!((kish_ess(&[1.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn normalised_weights_handle_infinities() {
        let g = GalaxyDraws {
            id: "a".into(),
            theta: vec![0.0; 3 * N_PARAMS],
            log_weight: vec![1000.0, f64::NEG_INFINITY, 1000.0 + 2f64.ln()],
        };
        let w = g.normalised_weights().unwrap();
        assert!((w[0] - 1.0 / 3.0).abs() < 1e-12 && w[1] == 0.0);
        let none = GalaxyDraws {
            log_weight: vec![f64::NEG_INFINITY; 3],
            ..g
        };
        assert!(none.normalised_weights().is_none());
    }
}
