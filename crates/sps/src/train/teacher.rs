//! The teacher side of photulator training (`popcosmos-cli train-emulator`,
//! docs/emulators.md): magnitudes of the Speculator Prospector-α spectrum emulator (Alsing+20)
//! for θ draws, soft-capped training targets, the observability weighting of the loss, the
//! held-out accuracy statistics, and the warm-start band of largest filter overlap.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use popcosmos_api::FilterCurve;
use popcosmos_api::params::{IDX_N, IDX_Z};
use popcosmos_api::{Error, N_PARAMS, Result};

use super::{band_stats, soft_cap_magnitude};
use crate::photulator::theta_to_photulator_input;
use crate::spectrum::SpectrumPhotometry;

/// Host rows (one `Vec` per draw).
pub type Rows = Vec<Vec<f32>>;

/// Apparent magnitude (m = M + N of the draw) below which a band counts as observable: two
/// magnitudes beyond the deepest survey we ship (LSST 10-year u ≈ 26).
pub const OBSERVABLE_MAG: f64 = 28.0;

/// Draws fed to the teacher at a time.
const TEACHER_CHUNK: usize = 2048;

/// `[rows, 16]` f32 θ on `device`.
pub fn theta_tensor(rows: &[[f64; N_PARAMS]], device: &Device) -> Result<Tensor> {
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    Ok(Tensor::from_vec(flat, (rows.len(), N_PARAMS), device)?)
}

/// Photulator inputs and raw teacher magnitudes (99 where a band gets no flux) for `rows`;
/// `on_chunk(done)` follows every chunk of draws.
pub fn teacher_magnitudes(
    spec: &SpectrumPhotometry,
    rows: &[[f64; N_PARAMS]],
    device: &Device,
    on_chunk: &mut dyn FnMut(usize),
) -> Result<(Rows, Rows)> {
    let (mut x, mut y) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    for (k, chunk) in rows.chunks(TEACHER_CHUNK).enumerate() {
        let th = theta_tensor(chunk, device)?;
        y.extend(spec.absolute_magnitudes(&th)?.to_vec2::<f32>()?);
        x.extend(theta_to_photulator_input(&th)?.to_vec2::<f32>()?);
        on_chunk(((k + 1) * TEACHER_CHUNK).min(rows.len()));
    }
    Ok((x, y))
}

/// Every magnitude through [`soft_cap_magnitude`].
pub fn soft_capped(rows: &[Vec<f32>], cap: f32, width: f32) -> Rows {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|&m| soft_cap_magnitude(m, cap, width))
                .collect()
        })
        .collect()
}

/// Distribution of N = m − M over the training draws: how likely a draw of absolute magnitude
/// M is to be observable (m < [`OBSERVABLE_MAG`]).
pub struct Observability {
    /// N of every training draw, ascending.
    n_sorted: Vec<f64>,
}

impl Observability {
    /// From the training draws θ (their N column).
    pub fn new(rows: &[[f64; N_PARAMS]]) -> Self {
        let mut n_sorted: Vec<f64> = rows.iter().map(|r| r[IDX_N]).collect();
        n_sorted.sort_by(f64::total_cmp);
        Self { n_sorted }
    }

    /// P(N < OBSERVABLE_MAG − M) over the training draws (0 for a band without flux).
    pub fn probability(&self, abs_mag: f64) -> f64 {
        let limit = OBSERVABLE_MAG - abs_mag;
        self.n_sorted.partition_point(|&n| n < limit) as f64 / self.n_sorted.len().max(1) as f64
    }

    /// Loss weights EPS + P(m < [`OBSERVABLE_MAG`]) of every teacher magnitude: the network's
    /// accuracy goes where a likelihood can see it. A band no draw is observable in with
    /// EPS = 0 would go untrained without a word, so it is an error naming the band.
    pub fn loss_weights(&self, eps: f64, teacher: &[Vec<f32>], bands: &[String]) -> Result<Rows> {
        let w: Rows = teacher
            .iter()
            .map(|r| {
                r.iter()
                    .map(|&m| (eps + self.probability(m as f64)) as f32)
                    .collect()
            })
            .collect();
        match (0..bands.len()).find(|&b| w.iter().all(|r| r[b] == 0.0)) {
            Some(b) => Err(Error::Invalid(format!(
                "no training draw is observable (m < {OBSERVABLE_MAG}) in band {}; give EPS > 0",
                bands[b]
            ))),
            None => Ok(w),
        }
    }

    /// RMS of Δ = network − teacher in band `b` over every draw, each weighted by
    /// [`Self::probability`] of its teacher magnitude: the expected RMS over observable draws,
    /// with far less scatter than the few draws that happen to be observable.
    pub fn weighted_rms(&self, pred: &[Vec<f32>], teacher: &[Vec<f32>], b: usize) -> f64 {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (p, t) in pred.iter().zip(teacher) {
            let w = self.probability(t[b] as f64);
            num += w * ((p[b] - t[b]) as f64).powi(2);
            den += w;
        }
        // NaN, not 0, when no draw can be observable in the band.
        if den > 0.0 {
            (num / den).sqrt()
        } else {
            f64::NAN
        }
    }
}

/// Δ = network − teacher in band `b` on the draws observable in it (m = M + N <
/// [`OBSERVABLE_MAG`]).
pub fn observable_delta(
    held: &[[f64; N_PARAMS]],
    pred: &[Vec<f32>],
    teacher: &[Vec<f32>],
    b: usize,
) -> Vec<f64> {
    (0..held.len())
        .filter(|&r| teacher[r][b] as f64 + held[r][IDX_N] < OBSERVABLE_MAG)
        .map(|r| (pred[r][b] - teacher[r][b]) as f64)
        .collect()
}

/// Root mean square (0 for an empty slice).
pub fn rms(d: &[f64]) -> f64 {
    (d.iter().map(|v| v * v).sum::<f64>() / d.len().max(1) as f64).sqrt()
}

/// Quantile `q` of |d| (nearest rank); NaN for an empty slice.
pub fn abs_quantile(d: &[f64], q: f64) -> f64 {
    let mut a: Vec<f64> = d.iter().map(|v| v.abs()).collect();
    if a.is_empty() {
        return f64::NAN;
    }
    a.sort_by(f64::total_cmp);
    a[((q * a.len() as f64).ceil() as usize).clamp(1, a.len()) - 1]
}

/// RMS and 95th percentile of |Δ|.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// RMS of Δ, mag.
    pub rms: f64,
    /// 95th percentile of |Δ|, mag.
    pub p95: f64,
}

impl Spread {
    fn of(d: &[f64]) -> Self {
        Self {
            rms: rms(d),
            p95: abs_quantile(d, 0.95),
        }
    }
}

/// One band's held-out accuracy, Δ = network − teacher.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldoutBand {
    /// RMS against the soft-capped target over every draw.
    pub capped_rms: f64,
    /// Draws where the band sees flux (teacher M below the cap by 8 widths).
    pub seen: usize,
    /// Mean Δ over the seen draws, mag.
    pub seen_mean: f64,
    /// Spread of Δ over the seen draws.
    pub seen_spread: Spread,
    /// Largest |Δ| over the seen draws, mag.
    pub seen_max: f64,
    /// Seen draws at z ≤ 2.5 and z > 2.5 (the spectrum emulator's training edge).
    pub low_z: Spread,
    /// Seen draws at z > 2.5.
    pub high_z: Spread,
    /// Draws observable in the band (m < [`OBSERVABLE_MAG`]).
    pub observable: usize,
    /// Spread of Δ over the observable draws.
    pub observable_spread: Spread,
    /// [`Observability::weighted_rms`].
    pub weighted_rms: f64,
}

/// Held-out accuracy per band of the network magnitudes `pred` against the soft-capped
/// `target` and the raw `teacher`; `seen` is the teacher magnitude below which a band
/// sees flux.
pub fn heldout_accuracy(
    held: &[[f64; N_PARAMS]],
    pred: &[Vec<f32>],
    (target, teacher): (&[Vec<f32>], &[Vec<f32>]),
    observability: &Observability,
    seen: f32,
) -> Vec<HeldoutBand> {
    let all = band_stats(pred, target);
    (0..all.len())
        .map(|b| {
            let delta = |keep: &dyn Fn(usize) -> bool| -> Vec<f64> {
                (0..held.len())
                    .filter(|&r| teacher[r][b] < seen && keep(r))
                    .map(|r| (pred[r][b] - teacher[r][b]) as f64)
                    .collect()
            };
            let z = |r: usize| held[r][IDX_Z];
            let d = delta(&|_| true);
            let observable = observable_delta(held, pred, teacher, b);
            HeldoutBand {
                capped_rms: all[b].rms,
                seen: d.len(),
                seen_mean: d.iter().sum::<f64>() / d.len().max(1) as f64,
                seen_spread: Spread::of(&d),
                seen_max: abs_quantile(&d, 1.0),
                low_z: Spread::of(&delta(&|r| z(r) <= 2.5)),
                high_z: Spread::of(&delta(&|r| z(r) > 2.5)),
                observable: observable.len(),
                observable_spread: Spread::of(&observable),
                weighted_rms: observability.weighted_rms(pred, teacher, b),
            }
        })
        .collect()
}

/// Normalised overlap ∫ min(T̂_a, T̂_b) d ln λ of two filter curves (each scaled to
/// ∫ T̂ d ln λ = 1): 1 for identical curves, 0 for disjoint ones.
pub fn filter_overlap(a: &FilterCurve, b: &FilterCurve) -> f64 {
    let lo = a.wavelength_aa[0].min(b.wavelength_aa[0]).ln();
    let hi = a.wavelength_aa[a.wavelength_aa.len() - 1]
        .max(b.wavelength_aa[b.wavelength_aa.len() - 1])
        .ln();
    const N: usize = 4000;
    let du = (hi - lo) / N as f64;
    let sample = |f: &FilterCurve| -> Vec<f64> {
        let v: Vec<f64> = (0..=N)
            .map(|k| f.transmission_at((lo + k as f64 * du).exp()).max(0.0))
            .collect();
        let norm = v.iter().sum::<f64>() * du;
        v.into_iter()
            .map(|t| t / norm.max(f64::MIN_POSITIVE))
            .collect()
    };
    let (ta, tb) = (sample(a), sample(b));
    ta.iter().zip(&tb).map(|(x, y)| x.min(*y)).sum::<f64>() * du
}

/// The source curve of largest normalised overlap ∫ min(T̂_a, T̂_b) d ln λ with `target`
/// (each curve scaled to ∫ T̂ d ln λ = 1), and that overlap; `None` for an empty source set.
pub fn closest_band<'a>(
    target: &FilterCurve,
    sources: &'a [FilterCurve],
) -> Option<(&'a FilterCurve, f64)> {
    sources
        .iter()
        .map(|s| (s, filter_overlap(target, s)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// `OUT.checkpoint.safetensors`: the networks at the last evaluation step of a running job.
pub fn checkpoint_path(output: &Path) -> PathBuf {
    output.with_extension("checkpoint.safetensors")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_observability_and_overlap() {
        assert_eq!(rms(&[3.0, -4.0]), (12.5f64).sqrt());
        assert_eq!(abs_quantile(&[1.0, -3.0, 2.0], 0.95), 3.0);
        assert!(abs_quantile(&[], 0.5).is_nan());
        // N of the draws: 10, 20; observable when M + N < 28.
        let mut rows = [[0.0; N_PARAMS]; 2];
        (rows[0][IDX_N], rows[1][IDX_N]) = (10.0, 20.0);
        let o = Observability::new(&rows);
        assert_eq!([o.probability(5.0), o.probability(10.0)], [1.0, 0.5]);
        let bands = ["b".to_string()];
        assert!(o.loss_weights(0.0, &[vec![99.0]], &bands).is_err());
        assert_eq!(
            o.loss_weights(0.1, &[vec![5.0]], &bands).unwrap(),
            [[1.1f32]]
        );
        let curve = |lo: f64| FilterCurve {
            name: format!("f{lo}"),
            wavelength_aa: vec![lo, lo + 100.0, lo + 200.0],
            transmission: vec![0.0, 1.0, 0.0],
        };
        let (a, far) = (curve(5000.0), curve(9000.0));
        assert!((filter_overlap(&a, &a) - 1.0).abs() < 1e-3);
        assert!(filter_overlap(&a, &far) < 1e-6);
        let sources = [far.clone(), a.clone()];
        assert!(std::ptr::eq(
            closest_band(&a, &sources).unwrap().0,
            &sources[1]
        ));
    }
}
