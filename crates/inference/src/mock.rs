//! Mock photometry through the full data model for validation: prior draws →
//! SPS + emission lines → zero points → per-band uncertainties borrowed from real galaxies →
//! Student-t (or Gaussian) noise.
//!
//! Uncertainties: each mock galaxy takes the flux errors (and missing-band pattern) of a
//! randomly chosen real galaxy ("error template"), so the depth per band is realistic; the
//! total σ then follows the likelihood's error model (`likelihood.rs`) with those errors as σ^nm.

use popcosmos_api::{
    Calibration, DType, Device, Error, Prior, RandomSource, Result, Shape, SpsModel, Tensor,
    params::phi_to_theta,
};

/// A simulated catalogue (row-major `[galaxies, bands]`, nanomaggies).
pub struct MockCatalogue {
    /// Physical parameters `[galaxies][16]`.
    pub theta: Vec<[f64; 16]>,
    /// Noisy observed flux (nmgy), zero points applied: Z (f + noise).
    pub flux_nmgy: Vec<f64>,
    /// The template's measurement σ (nmgy; 1 where absent), without the line and floor
    /// terms, which the likelihood adds itself.
    pub flux_err_nmgy: Vec<f64>,
    /// false where the template galaxy had no measurement (written as NaN).
    pub present: Vec<bool>,
    /// Bands per galaxy (the row stride of the flux vectors).
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
            // The catalogue carries the measurement error only: the likelihood adds the line
            // and floor terms itself (writing the total here counted them twice).
            out.flux_err_nmgy.push(s_nm);
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

/// The pop-cosmos flux-uncertainty model: a conditional diffusion model of
/// ln(σ / maggies) per band given the galaxy's zero-point-corrected asinh magnitudes.
pub struct NoiseModel {
    model: popcosmos_priors::diffusion::DiffusionModel,
    softening_nmgy: Tensor,
    log_error_min: f64,
    log_error_max: f64,
    solver: popcosmos_priors::diffusion::OdeSolver,
}

impl NoiseModel {
    /// The bundled T25 model (`builtin:noise_model`, 26 COSMOS bands).
    pub fn builtin(device: &Device) -> Result<Self> {
        let m =
            popcosmos_models::builtin("noise_model").map_err(|e| Error::Invalid(e.to_string()))?;
        let model = popcosmos_priors::diffusion::DiffusionModel::from_bytes(
            m.bytes,
            "builtin:noise_model",
            device,
        )?;
        Self::new(model)
    }

    /// Wrap a conditional model whose file carries `f_b`, `log_error_min`, `log_error_max`.
    pub fn new(model: popcosmos_priors::diffusion::DiffusionModel) -> Result<Self> {
        let scalar = |k: &str| -> Result<f64> {
            let t = model
                .extra(k)
                .ok_or_else(|| Error::Invalid(format!("noise model: tensor `{k}` is missing")))?;
            Ok(t.flatten_all()?
                .get(0)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?)
        };
        let softening_nmgy = model
            .extra("f_b")
            .ok_or_else(|| Error::Invalid("noise model: tensor `f_b` is missing".into()))?
            .clone();
        Ok(Self {
            log_error_min: scalar("log_error_min")?,
            log_error_max: scalar("log_error_max")?,
            softening_nmgy,
            model,
            // Tighter than the reference's 1e−5: with per-row steps, 1e−5 leaves up to ~0.04
            // in ln σ on ordinary galaxies (the reference's shared step is set by the batch's
            // hardest row, so it is accidentally more accurate); 1e−6 costs ~1.6× the steps.
            solver: popcosmos_priors::diffusion::OdeSolver::Dopri5 {
                atol: 1e-6,
                rtol: 1e-6,
                min_step: 1e-6,
                max_steps: 100_000,
            },
        })
    }

    /// The same model solved with `solver` (e.g. a fixed-step one where speed matters more
    /// than the last per cent in σ).
    pub fn with_solver(mut self, solver: popcosmos_priors::diffusion::OdeSolver) -> Self {
        self.solver = solver;
        self
    }

    /// The same model solved at the tolerance of a population fit: dopri5 at 10⁻⁴ instead of
    /// 10⁻⁶, 9× faster, |Δ ln σ| 0.0017 at the median and 0.026 at the 99th percentile
    /// (measured on 1 000 COSMOS rows; docs/population.md, "Error model").
    pub fn for_fitting(self) -> Self {
        self.with_solver(popcosmos_priors::diffusion::OdeSolver::Dopri5 {
            atol: 1e-4,
            rtol: 1e-4,
            min_step: 1e-6,
            max_steps: 100_000,
        })
    }

    /// Number of bands.
    pub fn n_bands(&self) -> usize {
        self.model.config().dim
    }

    /// Conditioning asinh magnitudes `[n, bands]` of zero-point-corrected fluxes (nmgy).
    pub fn conditioning(&self, flux_zp_nmgy: &Tensor) -> Result<Tensor> {
        popcosmos_sps::photulator::flux_to_asinh_mag(flux_zp_nmgy, &self.softening_nmgy)
    }

    /// ln(σ / maggies) `[n, bands]` (unclamped) from conditioning magnitudes and base draws
    /// `[n, bands]` ~ 𝒩(0, I), by the probability-flow ODE from T to ε.
    pub fn ln_sigma_maggies(&self, cond_asinh_mag: &Tensor, base: &Tensor) -> Result<Tensor> {
        Ok(self
            .model
            .sample_ode(base, Some(cond_asinh_mag), &self.solver)?
            .0)
    }

    /// σ^nm in nmgy (zero-point-corrected units): exp(9 ln 10 + clamp(ln σ, min, max)).
    pub fn sigma_nmgy(&self, ln_sigma_maggies: &Tensor) -> Result<Tensor> {
        Ok(ln_sigma_maggies
            .clamp(self.log_error_min, self.log_error_max)?
            .affine(1.0, 9.0 * std::f64::consts::LN_10)?
            .exp()?)
    }

    /// One draw of σ^nm (nmgy) for zero-point-corrected noiseless fluxes `[n, bands]`.
    /// Galaxies with non-finite model fluxes cannot be conditioned on; they get σ from a
    /// neutral 25th-magnitude input (callers drop them).
    pub fn draw_sigma_nmgy(
        &self,
        flux_zp_nmgy: &Tensor,
        rng: &mut dyn RandomSource,
    ) -> Result<Tensor> {
        let cond = self.conditioning(flux_zp_nmgy)?;
        let finite = cond.abs()?.lt(1e3)?;
        let cond = finite.where_cond(&cond, &cond.ones_like()?.affine(25.0, 0.0)?)?;
        let base = rng.normal(cond.shape(), cond.device())?;
        self.sigma_nmgy(&self.ln_sigma_maggies(&cond, &base)?)
    }
}

/// Median per-band KS of [`noise_model_ks`] up to which the noise model is taken to describe
/// a catalogue's errors. On its own mocks the check gives 0.06–0.19 (median 0.11 for 300
/// galaxies: it conditions on noisy fluxes, the model on noiseless ones); on COSMOS2020
/// Classic photometry 0.72.
pub const NOISE_MODEL_MAX_KS: f64 = 0.2;

/// Per-band two-sample KS statistic between σ^nm drawn for a catalogue's own observed
/// fluxes and its measured errors (at most `max_rows` rows, evenly spaced): whether the
/// noise model describes that catalogue's errors. It was trained on COSMOS2020 *Farmer*
/// photometry (Thorp et al. 2025); other photometry of the same fields (the Classic
/// apertures, say) has other errors.
pub fn noise_model_ks(
    noise: &NoiseModel,
    set: &popcosmos_population::ObservedSet,
    max_rows: usize,
    rng: &mut dyn RandomSource,
) -> Result<Vec<f64>> {
    use popcosmos_population::ErrorModel;
    let nb = set.n_bands;
    let rows = set.len();
    let kept = rows.min(max_rows.max(1));
    let pick: Vec<usize> = (0..kept).map(|k| k * rows / kept).collect();
    let take = |v: &[f32]| -> Vec<f32> {
        pick.iter()
            .flat_map(|&r| v[r * nb..(r + 1) * nb].iter().copied())
            .collect()
    };
    let (flux, err, mask) = (
        take(&set.flux_nmgy),
        take(&set.flux_err_nmgy),
        take(&set.mask),
    );
    let drawn = noise.sample(&flux, rng)?;
    let measured = popcosmos_population::ObservedSet {
        flux_nmgy: flux,
        flux_err_nmgy: err,
        mask: mask.clone(),
        ..set.clone()
    };
    Ok(popcosmos_population::error_ks(&measured, &drawn, &mask))
}

/// The fit-population error model for COSMOS: σ^nm conditioned on all 26 magnitudes at once,
/// so the errors keep the correlations between bands that depth and blending give them.
impl popcosmos_population::ErrorModel for NoiseModel {
    fn n_bands(&self) -> usize {
        NoiseModel::n_bands(self)
    }

    fn describe(&self) -> String {
        "builtin:noise_model, the COSMOS2020 uncertainty model of Thorp et al. (2025), \
         conditioned on each galaxy's 26 asinh magnitudes"
            .into()
    }

    fn sample(&self, flux_nmgy: &[f32], rng: &mut dyn RandomSource) -> Result<Vec<f32>> {
        let nb = NoiseModel::n_bands(self);
        let flux = Tensor::from_vec(
            flux_nmgy.to_vec(),
            (flux_nmgy.len() / nb, nb),
            self.softening_nmgy.device(),
        )?;
        Ok(self
            .draw_sigma_nmgy(&flux, rng)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?)
    }
}

/// Which uncertainties a mock catalogue gets.
pub enum MockErrors<'a> {
    /// Borrowed from real galaxies (per-band errors and missing bands; see [`simulate`]).
    Templates(&'a [Vec<f64>]),
    /// Drawn from the diffusion uncertainty model.
    NoiseModel(&'a NoiseModel),
}

/// A magnitude selection: keep galaxies whose noisy flux in `band` is positive and whose AB
/// magnitude 22.5 − 2.5 log10 f̂ is below `max_mag` (e.g. IRAC ch1 < 26).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection {
    /// Index of the selection band in survey order.
    pub band: usize,
    /// Faintest kept AB magnitude (exclusive).
    pub max_mag: f64,
}

impl Selection {
    fn keeps(&self, noisy_flux_nmgy: f64) -> bool {
        noisy_flux_nmgy > 0.0 && 22.5 - 2.5 * noisy_flux_nmgy.log10() < self.max_mag
    }
}

/// Mock catalogue through the full data model with uncertainties from `errors`
/// and an optional selection; draws in rounds until `n` galaxies pass. Returns the catalogue
/// and the number of galaxies drawn in total (for the selection efficiency).
#[allow(clippy::too_many_arguments)]
pub fn simulate_selected(
    prior: &dyn Prior,
    sps: &dyn SpsModel,
    calibration: &Calibration,
    errors: MockErrors,
    n: usize,
    student_t_nu: Option<f64>,
    selection: Option<Selection>,
    rng: &mut dyn RandomSource,
) -> Result<(MockCatalogue, usize)> {
    let nb = calibration.zero_points.len();
    let mut out = MockCatalogue {
        theta: Vec::new(),
        flux_nmgy: Vec::new(),
        flux_err_nmgy: Vec::new(),
        present: Vec::new(),
        n_bands: nb,
    };
    let mut drawn = 0;
    for _round in 0..200 {
        let need = n - out.theta.len();
        if need == 0 {
            break;
        }
        // Over-draw by the selection efficiency seen so far.
        let eff = if drawn == 0 {
            1.0
        } else {
            (out.theta.len().max(1) as f64) / drawn as f64
        };
        let batch = ((need as f64 / eff) * 1.2).ceil().clamp(16.0, 50_000.0) as usize;
        let cat = match errors {
            MockErrors::Templates(t) => {
                simulate(prior, sps, calibration, t, batch, student_t_nu, rng)?
            }
            MockErrors::NoiseModel(nm) => {
                simulate_noise_model(prior, sps, calibration, nm, batch, student_t_nu, rng)?
            }
        };
        drawn += batch;
        for i in 0..batch {
            if out.theta.len() == n {
                break;
            }
            let row = i * nb..(i + 1) * nb;
            if let Some(sel) = selection
                && !(cat.present[i * nb + sel.band] && sel.keeps(cat.flux_nmgy[i * nb + sel.band]))
            {
                continue;
            }
            out.theta.push(cat.theta[i]);
            out.flux_nmgy.extend_from_slice(&cat.flux_nmgy[row.clone()]);
            out.flux_err_nmgy
                .extend_from_slice(&cat.flux_err_nmgy[row.clone()]);
            out.present.extend_from_slice(&cat.present[row]);
        }
    }
    if out.theta.len() < n {
        return Err(Error::Invalid(format!(
            "mock: only {} of {n} galaxies passed the selection after {drawn} draws",
            out.theta.len()
        )));
    }
    Ok((out, drawn))
}

/// The full data model with σ^nm from the diffusion uncertainty model (all bands present).
pub fn simulate_noise_model(
    prior: &dyn Prior,
    sps: &dyn SpsModel,
    calibration: &Calibration,
    noise: &NoiseModel,
    n: usize,
    student_t_nu: Option<f64>,
    rng: &mut dyn RandomSource,
) -> Result<MockCatalogue> {
    let device = sps.device().clone();
    let nb = calibration.zero_points.len();
    if noise.n_bands() != nb {
        return Err(Error::Invalid(format!(
            "mock: the noise model has {} bands, the survey {nb}",
            noise.n_bands()
        )));
    }
    let phi = prior.sample(n, rng, &device)?;
    let theta_t = phi_to_theta(&phi)?;
    let m = sps.photometry(&theta_t)?;
    let zp = Tensor::from_vec(
        calibration
            .zero_points
            .iter()
            .map(|&z| z as f32)
            .collect::<Vec<_>>(),
        nb,
        &device,
    )?;
    let sigma_nm = noise
        .draw_sigma_nmgy(&m.flux_nmgy.broadcast_mul(&zp)?, rng)?
        .to_dtype(DType::F64)?
        .to_vec2::<f64>()?;
    let f = m.flux_nmgy.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let em = match &m.line_sigma_nmgy {
        Some(s) => s.to_dtype(DType::F64)?.to_vec2::<f64>()?,
        None => vec![vec![0.0; nb]; n],
    };
    let theta = theta_t.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let t_draws = student_t(n * nb, student_t_nu, rng, &device)?;
    let mut out = MockCatalogue {
        theta: Vec::with_capacity(n),
        flux_nmgy: Vec::with_capacity(n * nb),
        flux_err_nmgy: Vec::with_capacity(n * nb),
        present: Vec::with_capacity(n * nb),
        n_bands: nb,
    };
    for i in 0..n {
        if !f[i].iter().all(|v| v.is_finite()) {
            continue;
        }
        out.theta
            .push(<[f64; 16]>::try_from(theta[i].as_slice()).expect("16 parameters"));
        for b in 0..nb {
            let z = calibration.zero_points[b];
            let s = ((sigma_nm[i][b] / z).powi(2)
                + em[i][b].powi(2)
                + (calibration.error_floors[b] * f[i][b]).powi(2))
            .sqrt();
            out.flux_nmgy.push(z * (f[i][b] + t_draws[i * nb + b] * s));
            // Measurement error only; the likelihood adds the line and floor terms.
            out.flux_err_nmgy.push(sigma_nm[i][b]);
            out.present.push(true);
        }
    }
    Ok(out)
}

/// `count` Student-t(ν) draws (ν integer ≤ 4 via χ² from squared normals), or 𝒩(0, 1).
fn student_t(
    count: usize,
    nu: Option<f64>,
    rng: &mut dyn RandomSource,
    device: &Device,
) -> Result<Vec<f64>> {
    let k = 1 + nu.map_or(0, |v| v.round().clamp(1.0, 4.0) as usize);
    let z = rng
        .normal(&Shape::from((count, k)), device)?
        .to_dtype(DType::F64)?
        .to_vec2::<f64>()?;
    Ok(z.iter()
        .map(|r| {
            if k == 1 {
                r[0]
            } else {
                let nu_i = (k - 1) as f64;
                r[0] / (r[1..].iter().map(|v| v * v).sum::<f64>() / nu_i).sqrt()
            }
        })
        .collect())
}

impl MockCatalogue {
    /// Write as Parquet or CSV (by extension) with the same columns as [`Self::write_csv`]
    /// plus `z_true` and `log10M_true` (formed mass).
    pub fn write_table(&self, path: &std::path::Path, band_names: &[String]) -> Result<()> {
        use popcosmos_catalog::{ResultSchema, ResultTable, write_table};
        let nb = self.n_bands;
        let mut t = ResultTable::default();
        let mut cols = Vec::new();
        for (b, name) in band_names.iter().enumerate() {
            for (prefix, src) in [
                ("flux_", &self.flux_nmgy),
                ("fluxerr_", &self.flux_err_nmgy),
            ] {
                let c = format!("{prefix}{name}");
                let v = (0..self.theta.len())
                    .map(|i| {
                        if self.present[i * nb + b] {
                            src[i * nb + b]
                        } else {
                            f64::NAN
                        }
                    })
                    .collect();
                t.columns.insert(c.clone(), v);
                cols.push(c);
            }
        }
        for (k, name) in popcosmos_api::PARAM_NAMES.iter().enumerate() {
            let c = format!("true_{name}");
            t.columns
                .insert(c.clone(), self.theta.iter().map(|r| r[k]).collect());
            cols.push(c);
        }
        let z: Vec<f64> = self
            .theta
            .iter()
            .map(|r| r[popcosmos_api::params::IDX_Z])
            .collect();
        let log_m: Vec<f64> = self
            .theta
            .iter()
            .map(|r| {
                -0.4 * (r[0]
                    - popcosmos_api::cosmology::pade::distmod(r[popcosmos_api::params::IDX_Z]))
            })
            .collect();
        t.columns.insert("z_true".into(), z);
        t.columns.insert("log10M_true".into(), log_m);
        cols.push("z_true".into());
        cols.push("log10M_true".into());
        t.ids = (0..self.theta.len())
            .map(|i| format!("mock{i:05}"))
            .collect();
        let mut schema = ResultSchema::new(cols);
        schema.string_columns.clear();
        Ok(write_table(path, &schema, &t)?)
    }
}
