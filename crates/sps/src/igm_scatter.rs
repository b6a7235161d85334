//! Model uncertainty of the flux blueward of Lyman α: the intergalactic medium's scatter.
//!
//! Why: the emulators' training spectra carry one mean IGM attenuation (Madau 1995), while
//! the transmission of the Lyman-α forest varies from sightline to sightline by tens of per
//! cent at z ~ 3 (e.g. Thomas et al. 2017), and real z > 2.5 galaxies are 0.3–0.8 mag bluer
//! in u − g than the model at the same redshift and magnitude (docs/population.md). A band
//! that the forest covers then carries a model-side error, as EAZY's template error function
//! inflates the rest-frame UV (Brammer, van Dokkum & Coppi 2008):
//!
//! ```text
//! σ^IGM_b = s · w_b(z) · f_ref(z)
//! ```
//!
//! - w_b(z): share of band b's photon-weighted response (∫ T dλ/λ) at observed wavelengths
//!   below 1216 (1 + z) Å;
//! - f_ref(z): model flux of the bluest band (by pivot) entirely redward of Lyα, the level of
//!   the unattenuated far-UV continuum that the forest removes a random share of (a flat f_ν
//!   UV continuum, as star-forming galaxies have);
//! - s: the manifest's `sps.igm_scatter`.
//!
//! w and the reference band are tabulated on a redshift grid once, so an evaluation is two
//! gathers. The term adds in quadrature to the emission-line scatter.

use candle_core::{D, DType, Device, Tensor};
use popcosmos_api::{Error, FilterCurve, Result};

/// Rest-frame Lyman α, Å.
const LYMAN_ALPHA_AA: f64 = 1215.67;
/// A band with less of its response in the forest than this counts as redward of Lyα.
const CLEAR: f64 = 0.01;
/// Spacing of the redshift table.
const DZ: f64 = 0.005;

/// The tabulated IGM term of one survey's bands.
#[derive(Debug, Clone)]
pub struct IgmScatter {
    scale: f64,
    /// w_b(z) at z = k · DZ, `[nz, bands]` f32.
    forest: Tensor,
    /// Reference band at z = k · DZ, `[nz]` u32.
    reference: Tensor,
    nz: usize,
}

/// Share of a filter's photon-weighted response ∫ T dλ/λ below `cut` Å.
pub fn forest_share(filter: &FilterCurve, cut: f64) -> f64 {
    let (w, t) = (&filter.wavelength_aa, &filter.transmission);
    let (mut below, mut total) = (0.0, 0.0);
    for i in 1..w.len() {
        let (a, b) = (w[i - 1], w[i]);
        let (ta, tb) = (t[i - 1].max(0.0) / a, t[i].max(0.0) / b);
        let seg = 0.5 * (ta + tb) * (b - a);
        total += seg;
        if b <= cut {
            below += seg;
        } else if a < cut {
            // Linear response inside the segment, integrated up to the cut.
            let f = (cut - a) / (b - a);
            below += 0.5 * (ta + ta + (tb - ta) * f) * (cut - a);
        }
    }
    if total > 0.0 { below / total } else { 0.0 }
}

impl IgmScatter {
    /// The term for `filters` (one per band, in band order) with scale `s` ≥ 0, tabulated up
    /// to redshift `z_max`.
    pub fn new(filters: &[FilterCurve], scale: f64, z_max: f64, device: &Device) -> Result<Self> {
        if filters.is_empty() {
            return Err(Error::Invalid(
                "IGM scatter needs the bands' filter curves".into(),
            ));
        }
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(Error::Invalid(format!(
                "IGM scatter must be finite and ≥ 0, got {scale}"
            )));
        }
        let nb = filters.len();
        let nz = (z_max.max(0.0) / DZ).ceil() as usize + 2;
        let pivots: Vec<f64> = filters.iter().map(|f| f.pivot_wavelength_aa()).collect();
        let reddest = (0..nb)
            .max_by(|&a, &b| pivots[a].total_cmp(&pivots[b]))
            .unwrap_or(0);
        let mut forest = Vec::with_capacity(nz * nb);
        let mut reference = Vec::with_capacity(nz);
        for k in 0..nz {
            let cut = LYMAN_ALPHA_AA * (1.0 + k as f64 * DZ);
            let w: Vec<f64> = filters.iter().map(|f| forest_share(f, cut)).collect();
            let clear = (0..nb)
                .filter(|&b| w[b] < CLEAR)
                .min_by(|&a, &b| pivots[a].total_cmp(&pivots[b]))
                .unwrap_or(reddest);
            forest.extend(w.iter().map(|&v| v as f32));
            reference.push(clear as u32);
        }
        Ok(Self {
            scale,
            forest: Tensor::from_vec(forest, (nz, nb), device)?,
            reference: Tensor::from_vec(reference, nz, device)?,
            nz,
        })
    }

    /// Bands tabulated.
    pub fn bands(&self) -> usize {
        self.forest.dim(1).unwrap_or(0)
    }

    /// The scale s.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// σ^IGM `[n, bands]` for redshifts `z` `[n]` and model fluxes `flux` `[n, bands]`.
    pub fn sigma_nmgy(&self, z: &Tensor, flux: &Tensor) -> Result<Tensor> {
        let k = (z.to_dtype(DType::F32)? / DZ)?
            .round()?
            .clamp(0.0, (self.nz - 1) as f64)?
            .to_dtype(DType::U32)?;
        let w = self.forest.index_select(&k, 0)?; // [n, bands]
        let reference = self.reference.index_select(&k, 0)?.unsqueeze(1)?; // [n, 1]
        let f_ref = flux
            .contiguous()?
            .gather(&reference.contiguous()?, D::Minus1)?; // [n, 1]
        Ok((w.broadcast_mul(&f_ref)? * self.scale)?)
    }
}

/// A flat filter from `lo` to `hi` Å, for tests.
#[cfg(test)]
pub(crate) fn top_hat(name: &str, lo: f64, hi: f64) -> FilterCurve {
    let wavelength_aa: Vec<f64> = (0..=200)
        .map(|i| lo + (hi - lo) * i as f64 / 200.0)
        .collect();
    FilterCurve {
        name: name.into(),
        transmission: vec![1.0; wavelength_aa.len()],
        wavelength_aa,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forest_share_of_a_top_hat_is_its_photon_weighted_fraction() {
        let f = top_hat("x", 3000.0, 4000.0);
        // ∫ dλ/λ from 3000 to 3500 over 3000 to 4000 = ln(3500/3000) / ln(4000/3000).
        let want = (3500.0f64 / 3000.0).ln() / (4000.0f64 / 3000.0).ln();
        assert!((forest_share(&f, 3500.0) - want).abs() < 1e-4);
        assert_eq!(forest_share(&f, 2000.0), 0.0);
        assert!((forest_share(&f, 5000.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn sigma_scales_the_bluest_clear_band_by_the_forest_share() {
        // u 3000–4000, g 4000–5500, r 5500–7000; z = 2.5 puts Lyα at 4255 Å: u fully in the
        // forest, g partly, r clear and the reference.
        let filters = [
            top_hat("u", 3000.0, 4000.0),
            top_hat("g", 4000.0, 5500.0),
            top_hat("r", 5500.0, 7000.0),
        ];
        let igm = IgmScatter::new(&filters, 0.5, 6.0, &Device::Cpu).unwrap();
        let z = Tensor::new(&[2.5f32, 0.5], &Device::Cpu).unwrap();
        let flux = Tensor::new(&[[1.0f32, 2.0, 4.0], [1.0, 2.0, 4.0]], &Device::Cpu).unwrap();
        let s = igm.sigma_nmgy(&z, &flux).unwrap().to_vec2::<f32>().unwrap();
        let cut = LYMAN_ALPHA_AA * 3.5;
        let w_g = (cut / 4000.0f64).ln() / (5500.0f64 / 4000.0).ln();
        assert!((s[0][0] - 0.5 * 4.0).abs() < 1e-5, "{s:?}");
        assert!((s[0][1] as f64 - 0.5 * w_g * 4.0).abs() < 0.02, "{s:?}");
        assert_eq!(s[0][2], 0.0);
        // At z = 0.5 Lyα (1824 Å) is blueward of every band: no term.
        assert_eq!(s[1], vec![0.0; 3]);
    }

    #[test]
    fn a_negative_scale_or_no_filters_is_refused() {
        let f = [top_hat("u", 3000.0, 4000.0)];
        assert!(IgmScatter::new(&f, -0.1, 6.0, &Device::Cpu).is_err());
        assert!(IgmScatter::new(&[], 0.1, 6.0, &Device::Cpu).is_err());
    }
}
