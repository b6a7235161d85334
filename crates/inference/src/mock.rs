//! Mock photometry through the full data model (spec §3) for validation: prior draws →
//! SPS + emission lines → zero points → per-band uncertainties borrowed from real galaxies →
//! Student-t (or Gaussian) noise.
//!
//! Uncertainties: each mock galaxy takes the flux errors (and missing-band pattern) of a
//! randomly chosen real galaxy ("error template"), so the depth per band is realistic; the
//! total σ then follows spec §3 step 8 with those errors as σ^nm.

use popcosmos_api::{
    Calibration, Prior, RandomSource, Result, Shape, SpsModel, params::phi_to_theta,
};

/// A simulated catalogue (row-major `[galaxies, bands]`, nanomaggies).
pub struct MockCatalogue {
    /// Physical parameters `[galaxies][16]`.
    pub theta: Vec<[f64; 16]>,
    pub flux_nmgy: Vec<f64>,
    pub flux_err_nmgy: Vec<f64>,
    /// false where the template galaxy had no measurement (written as NaN).
    pub present: Vec<bool>,
    pub n_bands: usize,
}

/// Per-band error templates `[templates][bands]` (NaN = missing band).
pub fn simulate(
    prior: &dyn Prior,
    sps: &dyn SpsModel,
    calibration: &Calibration,
    templates: &[Vec<f64>],
    n: usize,
    student_t_nu: Option<f64>,
    rng: &mut dyn RandomSource,
) -> Result<MockCatalogue> {
    let device = sps.device().clone();
    let phi = prior.sample(n, rng, &device)?;
    let theta_t = phi_to_theta(&phi)?;
    let m = sps.photometry(&theta_t)?;
    let f = m
        .flux_nmgy
        .to_dtype(popcosmos_api::DType::F64)?
        .to_vec2::<f64>()?;
    let em = match &m.line_sigma_nmgy {
        Some(s) => s.to_dtype(popcosmos_api::DType::F64)?.to_vec2::<f64>()?,
        None => vec![vec![0.0; f[0].len()]; n],
    };
    let theta = theta_t
        .to_dtype(popcosmos_api::DType::F64)?
        .to_vec2::<f64>()?;
    let nb = calibration.zero_points.len();
    let normals = rng
        .normal(&Shape::from((n, nb, 1 + 4)), &device)?
        .to_dtype(popcosmos_api::DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let mut out = MockCatalogue {
        theta: theta
            .iter()
            .map(|r| <[f64; 16]>::try_from(r.as_slice()).expect("16 parameters"))
            .collect(),
        flux_nmgy: Vec::with_capacity(n * nb),
        flux_err_nmgy: Vec::with_capacity(n * nb),
        present: Vec::with_capacity(n * nb),
        n_bands: nb,
    };
    for i in 0..n {
        let tpl = &templates[rng.indices(1, templates.len())[0] as usize];
        for b in 0..nb {
            let z = calibration.zero_points[b];
            let sigma_nm = tpl[b];
            let present = sigma_nm.is_finite() && sigma_nm > 0.0;
            let s_nm = if present { sigma_nm } else { 1.0 };
            let s = ((s_nm / z).powi(2)
                + em[i][b].powi(2)
                + (calibration.error_floors[b] * f[i][b]).powi(2))
            .sqrt();
            let k = (i * nb + b) * 5;
            // Student-t(ν) = N / sqrt(χ²_ν/ν); χ²_ν from ν (integer, ≤ 4) squared normals.
            let t = match student_t_nu {
                Some(nu) => {
                    let nu_i = nu.round().clamp(1.0, 4.0) as usize;
                    let chi2: f64 = (0..nu_i).map(|j| normals[k + 1 + j].powi(2)).sum();
                    normals[k] / (chi2 / nu_i as f64).sqrt()
                }
                None => normals[k],
            };
            out.flux_nmgy.push(z * (f[i][b] + t * s));
            out.flux_err_nmgy.push(z * s);
            out.present.push(present);
        }
    }
    Ok(out)
}

impl MockCatalogue {
    /// Write as CSV in nanomaggies: `id, z_true, log10M_true, flux_<band>, fluxerr_<band>`
    /// (NaN where absent) plus the 16 true parameters as `true_<name>`.
    pub fn write_csv(&self, path: &std::path::Path, band_names: &[String]) -> Result<()> {
        use std::io::Write;
        let mut s = String::from("id");
        for b in band_names {
            s += &format!(",flux_{b},fluxerr_{b}");
        }
        for n in popcosmos_api::PARAM_NAMES {
            s += &format!(",true_{n}");
        }
        s.push('\n');
        for i in 0..self.theta.len() {
            s += &format!("mock{i:05}");
            for b in 0..self.n_bands {
                let k = i * self.n_bands + b;
                if self.present[k] {
                    s += &format!(",{:.9e},{:.9e}", self.flux_nmgy[k], self.flux_err_nmgy[k]);
                } else {
                    s += ",nan,nan";
                }
            }
            for v in &self.theta[i] {
                s += &format!(",{v:.9e}");
            }
            s.push('\n');
        }
        let mut f = std::fs::File::create(path).map_err(|e| popcosmos_api::Error::io(path, e))?;
        f.write_all(s.as_bytes())
            .map_err(|e| popcosmos_api::Error::io(path, e))?;
        Ok(())
    }
}
