//! Runs on in-memory tables, for callers that are not the command line (the Python
//! package): `run` without the output folder, `predict` and `sample-prior` without files.
//!
//! [`Pipeline::fit_reader`] cuts the catalogue into the batches of [`Pipeline::run`] and
//! gives each batch the same random stream, so its summaries are bit-identical to the
//! Parquet files `run` writes for the same manifest and seed.

use std::ops::ControlFlow;
use std::time::Instant;

use popcosmos_api::{
    DType, Device, Error, HostRng, N_PARAMS, PARAM_NAMES, Result, SpsModel, Survey, Tensor,
    params::{self, phi_row_to_theta},
};
use popcosmos_catalog::{CatalogueReader, ResultTable};
use popcosmos_models::HubConfig;
use popcosmos_priors::PriorSpec;
use popcosmos_sps::photulator;
use popcosmos_surveys::SurveySpec;

use crate::manifest::SpsSpec;
use crate::pipeline::{Pipeline, Progress};

/// The results of [`Pipeline::fit_reader`]: what `run` writes as parts, in catalogue order.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// One row per galaxy: the columns of [`crate::pipeline::result_columns_of`] and `flags`.
    pub summaries: ResultTable,
    /// The thinned chains in long format (id, step, walker, 16 parameters, log_prob) when
    /// `output.chains` is on.
    pub chains: Option<ResultTable>,
    /// Wall-clock seconds spent building the initialisation library.
    pub seconds_library: f64,
    /// Wall-clock seconds spent sampling and summarising the batches.
    pub seconds_sampling: f64,
}

impl Pipeline {
    /// Sample every galaxy of `reader` as [`Pipeline::run`] does (same batches, same seeds),
    /// keeping the results in memory. Every value is checked before sampling starts.
    /// `progress` gets `run`'s events; a `Break` from it stops the fit before the next batch
    /// and returns `Ok(None)`.
    pub fn fit_reader(
        &self,
        mut reader: CatalogueReader,
        progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<Option<Fit>> {
        let m = &self.manifest;
        let mut batches = Vec::new();
        while let Some(chunk) = reader
            .next_chunk(m.galaxies_per_batch)
            .map_err(Error::from)?
        {
            batches.push(chunk);
        }
        let total = batches.iter().map(|c| c.len()).sum();
        macro_rules! report {
            ($event:expr) => {
                if progress($event).is_break() {
                    return Ok(None);
                }
            };
        }
        report!(Progress::Total(total));
        report!(Progress::Stage("building the initialisation library"));
        let t = Instant::now();
        let library = self.init_library()?;
        let seconds_library = t.elapsed().as_secs_f64();
        report!(Progress::Stage("sampling"));
        let t = Instant::now();
        let mut summaries = ResultTable::default();
        let mut chains = m.output.chains.then(ResultTable::default);
        for (b, chunk) in batches.iter().enumerate() {
            let (table, batch_chains) = self.process_batch(chunk, b as u64, &library)?;
            append(&mut summaries, table);
            if let (Some(all), Some(c)) = (&mut chains, batch_chains) {
                append(all, c);
            }
            report!(Progress::Done(chunk.len()));
        }
        Ok(Some(Fit {
            summaries,
            chains,
            seconds_library,
            seconds_sampling: t.elapsed().as_secs_f64(),
        }))
    }
}

/// Rows of `more` after those of `all` (same columns).
fn append(all: &mut ResultTable, more: ResultTable) {
    all.ids.extend(more.ids);
    for (k, v) in more.columns {
        all.columns.entry(k).or_default().extend(v);
    }
    for (k, v) in more.ints {
        all.ints.entry(k).or_default().extend(v);
    }
    for (k, v) in more.strings {
        all.strings.entry(k).or_default().extend(v);
    }
}

/// Latent-φ column name of parameter `name` in prior-draw tables.
pub fn phi_column(name: &str) -> String {
    format!("phi_{name}")
}

/// `n` draws of a prior as `sample-prior` writes them: ids `drawNNNNNNNN`, the 16 physical
/// parameters, `log10M_formed` (the Prospector-α prior's Padé distance modulus) and the
/// latent coordinates `phi_<name>`, in that column order.
pub fn prior_draws(
    spec: &PriorSpec,
    n: usize,
    seed: u64,
    hub: &HubConfig,
) -> Result<(Vec<String>, ResultTable)> {
    let prior = crate::manifest::build_prior(spec, &Device::Cpu, hub)?;
    prior_table(prior.as_ref(), n, seed)
}

/// [`prior_draws`] of an already built prior.
pub fn prior_table(
    prior: &dyn popcosmos_api::Prior,
    n: usize,
    seed: u64,
) -> Result<(Vec<String>, ResultTable)> {
    let device = Device::Cpu;
    let mut rng = HostRng::seed_from_u64(seed);
    let phi = prior.sample(n, &mut rng, &device)?;
    let phi = phi.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let mut cols: Vec<String> = PARAM_NAMES.iter().map(|s| s.to_string()).collect();
    cols.push("log10M_formed".into());
    cols.extend(PARAM_NAMES.iter().map(|n| phi_column(n)));
    let mut data: Vec<Vec<f64>> = vec![Vec::with_capacity(phi.len()); cols.len()];
    let mut table = ResultTable::default();
    for (i, row) in phi.iter().enumerate() {
        table.ids.push(format!("draw{i:08}"));
        let theta = phi_row_to_theta(row);
        for k in 0..N_PARAMS {
            data[k].push(theta[k]);
            data[N_PARAMS + 1 + k].push(row[k]);
        }
        let mu = popcosmos_api::cosmology::pade::distmod(theta[params::IDX_Z]);
        data[N_PARAMS].push(-0.4 * (theta[0] - mu));
    }
    for (c, v) in cols.iter().zip(data) {
        table.columns.insert(c.clone(), v);
    }
    Ok((cols, table))
}

/// Accepted `log10M` (stellar mass formed, M☉) in [`predict_photometry`]: from dwarfs to the
/// most massive galaxies, wider than any prior's 7–13.
pub const LOG10M_RANGE: (f64, f64) = (4.0, 15.0);
/// Accepted `N` (magnitudes, μ(z) − 2.5 log10 M): `LOG10M_RANGE` at 0 < z ≤ 6.
pub const N_RANGE: (f64, f64) = (-20.0, 60.0);

/// The forward model of `predict` on named parameter columns (`N` or `log10M`, then the 15
/// other parameters by name, any order; `source` names the table in errors). Returns, per
/// band of `survey` and in this order, `mag_`, `flux_nmgy_`, `asinh_mag_` (photulator
/// continuum, no zero points) and with `lines` `flux_lines_nmgy_` (continuum + Leistedt+23
/// line offsets) and `line_sigma_nmgy_` columns.
pub fn predict_photometry(
    source: &str,
    columns: &[(String, Vec<f64>)],
    survey: &SurveySpec,
    lines: bool,
    hub: &HubConfig,
) -> Result<Vec<(String, Vec<f64>)>> {
    let bad = |msg: String| Error::Invalid(format!("{source}: {msg}"));
    let find = |name: &str| columns.iter().find(|(c, _)| c == name);
    let (mass_name, mass, is_log10m) = match (find("N"), find("log10M")) {
        (Some((n, v)), _) => (n.as_str(), v, false),
        (None, Some((n, v))) => (n.as_str(), v, true),
        (None, None) => return Err(bad("needs a column 'N' or 'log10M'".into())),
    };
    let mut picked: Vec<(&str, &Vec<f64>)> = vec![(mass_name, mass)];
    for name in &PARAM_NAMES[1..] {
        let (_, v) = find(name).ok_or_else(|| {
            bad(format!(
                "missing column '{name}' (expected N or log10M, then {})",
                PARAM_NAMES[1..].join(", ")
            ))
        })?;
        picked.push((name, v));
    }
    let n = mass.len();
    if let Some((name, v)) = picked.iter().find(|(_, v)| v.len() != n) {
        return Err(bad(format!(
            "column '{name}' has {} rows, '{mass_name}' has {n}",
            v.len()
        )));
    }
    if n == 0 {
        return Err(bad("no parameter rows".into()));
    }
    let mut theta: Vec<f32> = Vec::with_capacity(n * N_PARAMS);
    for r in 0..n {
        let mut row = [0.0f64; N_PARAMS];
        for (p, (name, v)) in picked.iter().enumerate() {
            let x = v[r];
            let at = |what: String| bad(format!("row {}, column '{name}': {what}", r + 1));
            if !x.is_finite() {
                return Err(at("value must be finite".into()));
            }
            let (lo, hi) = match p {
                0 if is_log10m => LOG10M_RANGE,
                0 => N_RANGE,
                _ => (params::LOWER[p], params::UPPER[p]),
            };
            if !(lo..=hi).contains(&x) {
                let range = if p == 0 { "accepted" } else { "emulators'" };
                return Err(at(format!("{x} is outside the {range} range [{lo}, {hi}]")));
            }
            row[p] = x;
        }
        if is_log10m {
            row[0] = popcosmos_sps::n_from_log10_mass(row[0], row[params::IDX_Z]);
        }
        theta.extend(row.iter().map(|v| *v as f32));
    }
    let device = Device::Cpu;
    let survey = survey.build_defined()?;
    let sps = SpsSpec::default().build(&survey, hub, &device)?;
    let theta = Tensor::from_vec(theta, (n, N_PARAMS), &device)?;
    let x = photulator::theta_to_photulator_input(&theta)?;
    let n_param = theta.narrow(1, 0, 1)?.contiguous()?;
    let mag = sps.photulator().magnitudes(&x, &n_param)?;
    let flux = photulator::mag_to_flux_nmgy(&mag)?;
    let soft: Vec<f32> = survey
        .bands()
        .iter()
        .map(|b| b.flux_softening_nmgy as f32)
        .collect();
    let soft = Tensor::from_vec(soft, survey.bands().len(), &device)?;
    let asinh = photulator::flux_to_asinh_mag(&flux, &soft)?;
    let mut blocks = vec![("mag_", mag), ("flux_nmgy_", flux), ("asinh_mag_", asinh)];
    if lines {
        let m = sps.photometry(&theta)?;
        blocks.push(("flux_lines_nmgy_", m.flux_nmgy));
        if let Some(s) = m.line_sigma_nmgy {
            blocks.push(("line_sigma_nmgy_", s));
        }
    }
    let mut out = Vec::new();
    for (prefix, values) in blocks {
        // Band-major: one output column per band.
        let values = values.to_dtype(DType::F64)?.t()?.to_vec2::<f64>()?;
        for (band, v) in survey.bands().iter().zip(values) {
            out.push((format!("{prefix}{}", band.name), v));
        }
    }
    Ok(out)
}
