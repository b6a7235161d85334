//! The observed catalogue as the population fit sees it: fluxes, errors and masks of the
//! usable rows, and their standardised asinh magnitudes.

use candle_core::{Device, Tensor};
use popcosmos_api::{Band, Error, Result};
use popcosmos_catalog::ObservedChunk;

/// An optional explicit selection: rows fainter than `max_mag` (AB, asinh) in `band`, or
/// without a measurement there, are dropped from the observed set, and simulated galaxies
/// are cut the same way. Without one, the fitted population is that of the catalogue as
/// given, which is the right prior for the galaxies of that catalogue.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Band name or label.
    pub band: String,
    /// Faintest asinh AB magnitude kept in that band.
    pub max_mag: f64,
}

/// The rows a population fit is matched to.
#[derive(Debug, Clone)]
pub struct ObservedSet {
    /// Number of bands.
    pub n_bands: usize,
    /// Band labels (for messages and plots).
    pub labels: Vec<String>,
    /// Observed flux `[rows × bands]` nmgy (0 where masked).
    pub flux_nmgy: Vec<f32>,
    /// 1σ error `[rows × bands]` nmgy (1 where masked).
    pub flux_err_nmgy: Vec<f32>,
    /// 1 = measured `[rows × bands]`.
    pub mask: Vec<f32>,
    /// Asinh softening per band (nmgy).
    pub softening_nmgy: Vec<f64>,
    /// Asinh magnitude = shift + scale × feature, per band (median and 1.4826·MAD of the
    /// measured rows), so every band weighs alike in the distance.
    pub feature_shift: Vec<f64>,
    /// The scale of the standardisation above, per band (mag).
    pub feature_scale: Vec<f64>,
    /// Rows dropped because no band was measured.
    pub rows_without_data: usize,
    /// Rows dropped by the selection.
    pub rows_cut: usize,
    /// Index of the selection band, if any.
    pub selection: Option<(usize, f64)>,
}

/// Lupton et al. (1999) asinh magnitude of a flux (nmgy) with softening `b` (nmgy).
pub fn asinh_mag(flux_nmgy: f64, b: f64) -> f64 {
    -2.5 / std::f64::consts::LN_10 * ((flux_nmgy / (2.0 * b)).asinh() - (1e9 / b).ln())
}

fn median_mad(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let med = popcosmos_api::stats::median(&v);
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    (med, 1.4826 * popcosmos_api::stats::median(&dev))
}

impl ObservedSet {
    /// Build from a catalogue read in full. `source` names the catalogue in errors;
    /// `min_rows` is the fewest usable rows a fit may run on.
    pub fn new(
        chunk: &ObservedChunk,
        bands: &[Band],
        selection: Option<&Selection>,
        min_rows: usize,
        source: &str,
    ) -> Result<Self> {
        let nb = chunk.n_bands;
        if bands.len() != nb {
            return Err(Error::Invalid(format!(
                "{source}: {nb} band columns but the survey has {} bands",
                bands.len()
            )));
        }
        let labels: Vec<String> = bands.iter().map(|b| b.label.clone()).collect();
        let softening: Vec<f64> = bands.iter().map(|b| b.flux_softening_nmgy).collect();
        let sel = match selection {
            None => None,
            Some(s) => {
                let b = bands
                    .iter()
                    .position(|x| x.name == s.band || x.label == s.band)
                    .ok_or_else(|| {
                        Error::config(
                            "selection.band",
                            format!(
                                "'{}' is not a band of this survey ({})",
                                s.band,
                                labels.join(", ")
                            ),
                        )
                    })?;
                if !s.max_mag.is_finite() {
                    return Err(Error::config(
                        "selection.max_mag",
                        format!("must be finite, got {}", s.max_mag),
                    ));
                }
                Some((b, s.max_mag))
            }
        };
        let mut per_band_count = vec![0usize; nb];
        for r in 0..chunk.len() {
            for b in 0..nb {
                if chunk.mask[r * nb + b] > 0.0 {
                    per_band_count[b] += 1;
                }
            }
        }
        if let Some(b) = per_band_count.iter().position(|&c| c == 0) {
            return Err(Error::Invalid(format!(
                "{source}: band '{}' ({}) has no valid flux in any row; drop it from the survey \
                 or fix the catalogue's column",
                labels[b], bands[b].name
            )));
        }
        let mut out = Self {
            n_bands: nb,
            labels,
            flux_nmgy: Vec::new(),
            flux_err_nmgy: Vec::new(),
            mask: Vec::new(),
            softening_nmgy: softening,
            feature_shift: vec![0.0; nb],
            feature_scale: vec![1.0; nb],
            rows_without_data: 0,
            rows_cut: 0,
            selection: sel,
        };
        for r in 0..chunk.len() {
            let row = r * nb..(r + 1) * nb;
            if chunk.mask[row.clone()].iter().all(|&m| m == 0.0) {
                out.rows_without_data += 1;
                continue;
            }
            if let Some((b, max_mag)) = sel {
                let k = r * nb + b;
                let m = asinh_mag(chunk.flux_nmgy[k] as f64, out.softening_nmgy[b]);
                if chunk.mask[k] == 0.0 || m > max_mag {
                    out.rows_cut += 1;
                    continue;
                }
            }
            out.flux_nmgy
                .extend_from_slice(&chunk.flux_nmgy[row.clone()]);
            out.flux_err_nmgy
                .extend_from_slice(&chunk.flux_err_nmgy[row.clone()]);
            out.mask.extend_from_slice(&chunk.mask[row]);
        }
        let n = out.len();
        if n < min_rows {
            return Err(Error::Invalid(format!(
                "{source}: only {n} usable rows ({} without any measured band, {} cut by the \
                 selection); a population fit needs at least {min_rows}",
                out.rows_without_data, out.rows_cut
            )));
        }
        for b in 0..nb {
            let mags: Vec<f64> = (0..n)
                .filter(|&r| out.mask[r * nb + b] > 0.0)
                .map(|r| asinh_mag(out.flux_nmgy[r * nb + b] as f64, out.softening_nmgy[b]))
                .collect();
            let (med, mad) = median_mad(mags);
            out.feature_shift[b] = med;
            out.feature_scale[b] = if mad > 0.0 { mad } else { 1.0 };
        }
        Ok(out)
    }

    /// Usable rows.
    pub fn len(&self) -> usize {
        self.flux_nmgy.len() / self.n_bands.max(1)
    }

    /// No usable rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Standardised asinh magnitudes `[rows, bands]` of the given rows (0 where masked).
    pub fn features(&self, rows: &[u32], device: &Device) -> Result<Tensor> {
        let nb = self.n_bands;
        let mut v = Vec::with_capacity(rows.len() * nb);
        for &r in rows {
            for b in 0..nb {
                let k = r as usize * nb + b;
                v.push(if self.mask[k] > 0.0 {
                    ((asinh_mag(self.flux_nmgy[k] as f64, self.softening_nmgy[b])
                        - self.feature_shift[b])
                        / self.feature_scale[b]) as f32
                } else {
                    0.0
                });
            }
        }
        Ok(Tensor::from_vec(v, (rows.len(), nb), device)?)
    }

    /// Masks `[rows, bands]` of the given rows.
    pub fn masks(&self, rows: &[u32], device: &Device) -> Result<Tensor> {
        let nb = self.n_bands;
        let mut v = Vec::with_capacity(rows.len() * nb);
        for &r in rows {
            v.extend_from_slice(&self.mask[r as usize * nb..(r as usize + 1) * nb]);
        }
        Ok(Tensor::from_vec(v, (rows.len(), nb), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn band(l: &str) -> Band {
        Band {
            name: format!("x_{l}"),
            label: l.into(),
            flux_softening_nmgy: 0.01,
        }
    }

    fn chunk(rows: usize, f: impl Fn(usize, usize) -> Option<f32>) -> ObservedChunk {
        let nb = 2;
        let mut c = ObservedChunk {
            row_offset: 0,
            ids: (0..rows).map(|i| i.to_string()).collect(),
            n_bands: nb,
            flux_nmgy: vec![],
            flux_err_nmgy: vec![],
            mask: vec![],
            truth: Default::default(),
        };
        for r in 0..rows {
            for b in 0..nb {
                match f(r, b) {
                    Some(v) => {
                        c.flux_nmgy.push(v);
                        c.flux_err_nmgy.push(0.1);
                        c.mask.push(1.0);
                    }
                    None => {
                        c.flux_nmgy.push(0.0);
                        c.flux_err_nmgy.push(1.0);
                        c.mask.push(0.0);
                    }
                }
            }
        }
        c
    }

    #[test]
    fn asinh_mag_is_pogson_for_bright_sources() {
        // f ≫ b: m → 22.5 − 2.5 log10 f.
        assert!((asinh_mag(1000.0, 0.01) - (22.5 - 2.5 * 3.0)).abs() < 1e-6);
    }

    #[test]
    fn counts_and_skips_rows_without_data_and_names_empty_bands() {
        let c = chunk(600, |r, b| (r % 10 != 0).then_some(1.0 + (r + b) as f32));
        let set = ObservedSet::new(&c, &[band("g"), band("r")], None, 500, "cat.csv").unwrap();
        assert_eq!(set.rows_without_data, 60);
        assert_eq!(set.len(), 540);
        let err = ObservedSet::new(&c, &[band("g"), band("r")], None, 541, "cat.csv")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cat.csv") && err.contains("540") && err.contains("541"),
            "{err}"
        );
        let c = chunk(600, |_, b| (b == 0).then_some(1.0));
        let err = ObservedSet::new(&c, &[band("g"), band("r")], None, 10, "cat.csv")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'r'") && err.contains("no valid flux"),
            "{err}"
        );
    }

    #[test]
    fn features_are_standardised_per_band() {
        let c = chunk(1000, |r, _| Some(1.0 + r as f32));
        let set = ObservedSet::new(&c, &[band("g"), band("r")], None, 10, "c").unwrap();
        let rows: Vec<u32> = (0..1000).collect();
        let x: Vec<Vec<f32>> = set
            .features(&rows, &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        let mut col: Vec<f64> = x.iter().map(|r| r[0] as f64).collect();
        let (med, mad) = median_mad(std::mem::take(&mut col));
        assert!(med.abs() < 1e-3 && (mad - 1.0).abs() < 1e-3, "{med} {mad}");
    }

    #[test]
    fn selection_cuts_faint_and_unmeasured_rows() {
        // Band g: flux 1..600 nmgy, so m < 22.5 − 2.5 log10(100) = 17.5 keeps f > 100.
        let c = chunk(600, |r, b| (b == 1 || r >= 10).then_some(1.0 + r as f32));
        let s = Selection {
            band: "g".into(),
            max_mag: 17.49,
        };
        let set = ObservedSet::new(&c, &[band("g"), band("r")], Some(&s), 10, "c").unwrap();
        assert_eq!(set.len(), 500);
        assert_eq!(set.rows_cut, 100);
        let bad = Selection {
            band: "K".into(),
            max_mag: 20.0,
        };
        let err = ObservedSet::new(&c, &[band("g"), band("r")], Some(&bad), 10, "c")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("selection.band") && err.contains("'K'"),
            "{err}"
        );
    }
}
