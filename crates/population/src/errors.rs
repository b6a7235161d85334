//! A survey's flux-error model learned from its own catalogue.
//!
//! Per band, the measured (flux, σ) pairs are sorted by flux; a simulated galaxy of flux f
//! takes the σ of a random one of the `neighbours` measured galaxies nearest to f in flux
//! rank. This reproduces σ(f) with its scatter (sky-limited at the faint end, Poisson and
//! aperture effects at the bright end) without assuming a functional form. Fluxes outside
//! the measured range take the errors of the extreme galaxies. COSMOS2020 has its own learned
//! conditional model (Thorp et al. 2025; `builtin:noise_model`), which the inference crate
//! plugs in through [`ErrorModel`]; this one serves any catalogue.

use popcosmos_api::{RandomSource, Result, stats::ks_two_sample};

use crate::data::ObservedSet;

/// Where a simulated galaxy's measurement errors come from: σ^nm given its noiseless,
/// zero-point-corrected fluxes. The draw is not differentiated: as for real photometry, the
/// errors are a property of the measurement, not of the galaxy's parameters.
pub trait ErrorModel: Send + Sync {
    /// Number of bands.
    fn n_bands(&self) -> usize;
    /// σ^nm (nmgy) for noiseless fluxes `[n × bands]` (row-major, nmgy).
    fn sample(&self, flux_nmgy: &[f32], rng: &mut dyn RandomSource) -> Result<Vec<f32>>;
    /// What the errors are drawn from, for fit reports and model cards.
    fn describe(&self) -> String;
}

/// Per-band two-sample KS statistic between the catalogue's measured errors (`set`) and
/// errors drawn for simulated galaxies (`[n × bands]`, counted only where `mask` is 1).
pub fn error_ks(set: &ObservedSet, drawn_sigma: &[f32], mask: &[f32]) -> Vec<f64> {
    let nb = set.n_bands;
    let column = |values: &[f32], mask: &[f32], b: usize| -> Vec<f64> {
        values
            .iter()
            .zip(mask)
            .skip(b)
            .step_by(nb)
            .filter(|(s, m)| **m > 0.0 && s.is_finite() && **s > 0.0)
            .map(|(s, _)| *s as f64)
            .collect()
    };
    (0..nb)
        .map(|b| {
            let sim = column(drawn_sigma, mask, b);
            let obs = column(&set.flux_err_nmgy, &set.mask, b);
            if sim.is_empty() || obs.is_empty() {
                return f64::NAN;
            }
            ks_two_sample(&sim, &obs).0
        })
        .collect()
}

/// Conditional σ_b(f) by nearest neighbours in flux rank.
#[derive(Debug, Clone)]
pub struct EmpiricalErrorModel {
    /// Per band: measured fluxes (ascending) and their errors, nmgy.
    bands: Vec<(Vec<f32>, Vec<f32>)>,
    neighbours: usize,
}

impl EmpiricalErrorModel {
    /// Learn from the measured bands of `set`; σ is drawn among the `neighbours` nearest.
    pub fn new(set: &ObservedSet, neighbours: usize) -> Self {
        let nb = set.n_bands;
        let bands = (0..nb)
            .map(|b| {
                let mut pairs: Vec<(f32, f32)> = (0..set.len())
                    .filter(|&r| set.mask[r * nb + b] > 0.0)
                    .map(|r| (set.flux_nmgy[r * nb + b], set.flux_err_nmgy[r * nb + b]))
                    .filter(|(f, s)| f.is_finite() && s.is_finite() && *s > 0.0)
                    .collect();
                pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
                pairs.into_iter().unzip()
            })
            .collect();
        Self {
            bands,
            neighbours: neighbours.max(1),
        }
    }
}

impl ErrorModel for EmpiricalErrorModel {
    fn n_bands(&self) -> usize {
        self.bands.len()
    }

    fn describe(&self) -> String {
        format!(
            "empirical: per band, the error of one of the {} catalogue galaxies nearest in flux",
            self.neighbours
        )
    }

    fn sample(&self, flux_nmgy: &[f32], rng: &mut dyn RandomSource) -> Result<Vec<f32>> {
        let nb = self.bands.len();
        let mut out = Vec::with_capacity(flux_nmgy.len());
        for (k, &f) in flux_nmgy.iter().enumerate() {
            let (fluxes, errors) = &self.bands[k % nb];
            let m = fluxes.len();
            if m == 0 {
                out.push(f32::NAN);
                continue;
            }
            let rank = fluxes.partition_point(|&x| x < f);
            let half = self.neighbours / 2;
            let lo = rank
                .saturating_sub(half)
                .min(m.saturating_sub(self.neighbours));
            let width = self.neighbours.min(m);
            let j = lo + ((rng.next_f64() * width as f64) as usize).min(width - 1);
            out.push(errors[j]);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use popcosmos_api::HostRng;

    #[test]
    fn reproduces_a_known_conditional_error_law() {
        // σ² = 0.5² + 0.01 f (sky + Poisson) with 10 % lognormal scatter, 1 band.
        let mut rng = HostRng::seed_from_u64(3);
        let n = 20_000;
        let law = |f: f64, u: f64| (0.25 + 0.01 * f.max(0.0)).sqrt() * (0.1 * u).exp();
        let mut set = ObservedSet {
            n_bands: 1,
            labels: vec!["x".into()],
            flux_nmgy: vec![],
            flux_err_nmgy: vec![],
            mask: vec![],
            softening_nmgy: vec![0.1],
            feature_shift: vec![0.0],
            feature_scale: vec![1.0],
            rows_without_data: 0,
            rows_cut: 0,
            selection: None,
        };
        let normal = |rng: &mut HostRng| {
            let (u1, u2) = (rng.next_f64().max(1e-300), rng.next_f64());
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        };
        for _ in 0..n {
            let f = 10f64.powf(4.0 * rng.next_f64() - 1.0);
            let u = normal(&mut rng);
            set.flux_nmgy.push(f as f32);
            set.flux_err_nmgy.push(law(f, u) as f32);
            set.mask.push(1.0);
        }
        let model = EmpiricalErrorModel::new(&set, 20);
        // Fresh fluxes from the same law: the drawn σ must follow it in distribution,
        // both overall and at a fixed bright flux where Poisson noise dominates.
        let fresh: Vec<f32> = (0..n)
            .map(|_| 10f64.powf(4.0 * rng.next_f64() - 1.0) as f32)
            .collect();
        let drawn = model.sample(&fresh, &mut rng).unwrap();
        let truth: Vec<f64> = fresh
            .iter()
            .map(|&f| law(f as f64, normal(&mut rng)))
            .collect();
        let d: Vec<f64> = drawn.iter().map(|&s| s as f64).collect();
        let (ks, _) = ks_two_sample(&d, &truth);
        assert!(ks < 0.03, "KS {ks}");
        let bright = model.sample(&vec![1000.0; 4000], &mut rng).unwrap();
        let med =
            popcosmos_api::stats::median(&bright.iter().map(|&s| s as f64).collect::<Vec<_>>());
        assert!((med / law(1000.0, 0.0) - 1.0).abs() < 0.03, "{med}");
        // Beyond the measured range: the extreme galaxies' errors, never NaN.
        assert!(
            model
                .sample(&[1e9, -1e9], &mut rng)
                .unwrap()
                .iter()
                .all(|s| s.is_finite())
        );
        let mask = vec![1.0; n];
        assert!(error_ks(&set, &drawn, &mask)[0] < 0.03);
    }
}
