//! The batch loop of `popcosmos-cli run`: catalogue chunks → posterior → sampler → summaries.
//!
//! Determinism and resume: the catalogue is cut into fixed batches of
//! `galaxies_per_batch` rows (batch b = rows b·B … (b+1)·B − 1); batch b draws from its own
//! random stream derived from `(seed, b)`, and its results are written as one atomic part
//! file. A resumed run skips batches whose galaxies are all present and recomputes the
//! rest, so its output equals that of an uninterrupted run with the same seed. A sharded
//! run (`RunOptions::shard`) takes a contiguous range of these batches with their global
//! indices, so its galaxies equal the unsharded run's too (see [`crate::shard`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use popcosmos_api::{
    Device, Error, HostRng, Likelihood, LogDensity, N_PARAMS, PARAM_NAMES, Prior, Result, Survey,
    Tensor, params::phi_to_theta,
};
use popcosmos_catalog::{CatalogueReader, ObservedChunk, ResultSchema, ResultTable, TableFormat};
use popcosmos_models::HubConfig;
use popcosmos_samplers::{
    Chain, ClusteredGlobalMove, EnsembleSampler, FittedProposal, LocalMove, MoveKind, RunConfig,
    Thresholds, WarmupConfig, diagnose_chain,
};
use popcosmos_sps::{PhotulatorSps, StellarMassEmulator, derived_from_tensor};
use serde::{Deserialize, Serialize};

use crate::init::InitLibrary;
use crate::likelihood::PhotometricLikelihood;
use crate::manifest::{Manifest, MoveSpec, OutputFormat, SamplerKind};
use crate::posterior::Posterior;
use crate::reparam::InSamplingSpace;

/// Percentiles reported for every quantity.
pub const PERCENTILES: [(f64, &str); 5] = [
    (2.5, "p2.5"),
    (16.0, "p16"),
    (50.0, "p50"),
    (84.0, "p84"),
    (97.5, "p97.5"),
];

/// Derived quantities summarised besides the 16 parameters.
pub const DERIVED_NAMES: [&str; 5] = [
    "log10M_formed",
    "log10M_remaining",
    "log10SFR",
    "log10sSFR",
    "mw_age_gyr",
];

/// `{quantity}_{percentile}` for z, the derived quantities and the other 15 parameters.
pub(crate) fn percentile_columns() -> Vec<String> {
    let mut quantities: Vec<&str> = vec!["z"];
    quantities.extend(DERIVED_NAMES);
    quantities.extend(PARAM_NAMES.iter().filter(|n| **n != "z"));
    quantities
        .into_iter()
        .flat_map(|q| PERCENTILES.map(|(_, p)| format!("{q}_{p}")))
        .collect()
}

/// How each of [`DERIVED_NAMES`] is read from the derived quantities (same order).
pub(crate) const DERIVED_GETTERS: [fn(&popcosmos_sps::DerivedQuantities) -> f64; 5] = [
    |q| q.log10_mass_formed,
    |q| q.log10_mass_remaining,
    |q| q.log10_sfr,
    |q| q.log10_ssfr_formed,
    |q| q.mass_weighted_age_gyr,
];

/// Everything a run needs, built once from a manifest.
pub struct Pipeline {
    /// The run's manifest (validated, paths resolved).
    pub manifest: Manifest,
    /// Where tensors live (`manifest.device`).
    pub device: Device,
    /// The survey: bands and calibration.
    pub survey: Box<dyn Survey>,
    /// The photulator SPS model restricted to the survey's bands.
    pub sps: PhotulatorSps,
    /// The bundled surviving-stellar-mass-fraction emulator, for the derived masses.
    pub stellar_mass: StellarMassEmulator,
    /// The population prior over φ.
    pub prior: Box<dyn Prior>,
    /// The start library's proposal (`init.proposal`), if any.
    pub proposal: Option<Box<dyn Prior>>,
    /// The photometric likelihood with the survey's calibration.
    pub likelihood: PhotometricLikelihood,
}

/// Options of one `run` invocation.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue a previous run in the same output folder.
    pub resume: bool,
    /// Stop after this many newly computed batches (used to test interruption).
    pub max_batches: Option<usize>,
    /// Process only this shard's batches, into `output.dir/shard-IIIII-of-NNNNN`
    /// (see [`crate::Shard`]).
    pub shard: Option<crate::shard::Shard>,
}

/// Progress events for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Total galaxies in the catalogue (sent once, before the first batch).
    Total(usize),
    /// `n` more galaxies are finished (computed or found complete on resume).
    Done(usize),
    /// A message (library built, batch skipped, …).
    Stage(&'static str),
}

/// What a run did (stored in `run.json` as [`RunRecord::summary`](crate::RunRecord::summary)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Galaxies in the catalogue (or the shard).
    pub galaxies_total: usize,
    /// Galaxies sampled by this invocation.
    pub galaxies_computed: usize,
    /// Galaxies skipped because their batch was already on disk (`--resume`).
    pub galaxies_skipped: usize,
    /// Galaxies computed by this invocation with at least one flag.
    pub galaxies_flagged: usize,
    /// Batches sampled and committed by this invocation.
    pub batches_computed: usize,
    /// Wall-clock seconds spent building the initialisation library.
    pub seconds_library: f64,
    /// Wall-clock seconds spent on the computed batches (sampling, summaries, writing).
    pub seconds_sampling: f64,
    /// Wall-clock seconds of the whole invocation.
    pub seconds_total: f64,
    /// The folder the parts went to (`output.dir`, or its shard folder).
    pub output_dir: PathBuf,
    /// The shard's place in the catalogue (sharded runs only); `galaxies_total` is then
    /// the shard's row count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::shard::ShardRecord>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seed of batch `b`'s random stream (SplitMix64 of seed and index).
fn batch_seed(seed: u64, batch: u64) -> u64 {
    let mut z = seed ^ batch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Column names of the per-galaxy results table (besides `id` and `flags`) for the ensemble
/// and HMC samplers.
pub fn result_columns() -> Vec<String> {
    result_columns_with(MCMC_COLUMNS.iter().map(|c| c.to_string()))
}

/// Column names of the results of a run with `manifest`'s sampler (SMC and library runs
/// report evidence, SMC diagnostics and p(z) instead of R̂ and ESS).
pub fn result_columns_of(manifest: &Manifest) -> Vec<String> {
    if !manifest.sampler.kind.is_smc() {
        return result_columns();
    }
    let mut cols = result_columns_with(crate::smc::SMC_COLUMNS.iter().map(|c| c.to_string()));
    cols.extend(crate::smc::pz_columns(manifest.output.pz_step));
    cols
}

/// Sampler diagnostics of the ensemble and HMC (after the MAP log-probability).
const MCMC_COLUMNS: [&str; 5] = [
    "acceptance",
    "rhat_max",
    "ess_bulk_min",
    "ess_tail_min",
    "autocorr_time_max",
];

fn result_columns_with(sampler_columns: impl Iterator<Item = String>) -> Vec<String> {
    let mut cols = percentile_columns();
    cols.push("z_odds".into());
    for n in PARAM_NAMES {
        cols.push(format!("map_{n}"));
    }
    cols.push("map_log_prob".into());
    cols.extend(sampler_columns);
    cols.push("n_bands_used".into());
    cols
}

/// Per-galaxy sampler columns (in [`result_columns_of`] order, after `map_log_prob`) and flags.
pub(crate) struct SamplerReport {
    pub columns: Vec<Vec<f64>>,
    pub flags: Vec<Vec<String>>,
}

impl Pipeline {
    /// Build the survey, the SPS model, the prior and the likelihood of `manifest`; weight
    /// references are resolved through `hub`.
    pub fn new(manifest: Manifest, hub: &HubConfig) -> Result<Self> {
        let device = popcosmos_api::parse_device(&manifest.device)?;
        let survey = manifest.survey.build_defined()?;
        let sps = manifest.sps.build(&survey, hub, &device)?;
        let stellar_mass = StellarMassEmulator::builtin(&device)?;
        let prior = crate::manifest::build_prior(&manifest.prior, &device, hub)?;
        let proposal = manifest
            .init
            .proposal
            .as_ref()
            .map(|spec| {
                crate::manifest::build_prior_at("init.proposal.weights", spec, &device, hub)
            })
            .transpose()?;
        let likelihood =
            PhotometricLikelihood::new(manifest.likelihood, survey.calibration(), &device)?;
        Ok(Self {
            manifest,
            device,
            survey: Box::new(survey),
            sps,
            stellar_mass,
            prior,
            proposal,
            likelihood,
        })
    }

    fn open_reader(&self) -> Result<CatalogueReader> {
        Ok(CatalogueReader::open(
            &self.manifest.catalogue,
            &self.survey.band_names(),
        )?)
    }

    /// Count catalogue rows (one streaming pass) and check every value.
    pub fn scan_catalogue(&self) -> Result<usize> {
        let mut reader = self.open_reader()?;
        let mut n = 0;
        while let Some(c) = reader.next_chunk(65536)? {
            n += c.len();
        }
        Ok(n)
    }

    /// Run the whole catalogue.
    pub fn run(
        &self,
        options: &RunOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<RunSummary> {
        let t0 = Instant::now();
        let m = &self.manifest;
        let out_dir = match options.shard {
            Some(s) => m.output.dir.join(s.dir_name()),
            None => m.output.dir.clone(),
        };
        if !options.resume
            && out_dir.exists()
            && !popcosmos_catalog::list_parts(&out_dir)?.is_empty()
        {
            return Err(Error::config(
                "output.dir",
                format!(
                    "{} already holds results; use --resume to continue that run or choose \
                     another folder",
                    out_dir.display()
                ),
            ));
        }
        std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
        // One run per output folder at a time; the kernel drops the lock when this process
        // ends, however it ends.
        let _lock = popcosmos_catalog::OutputLock::acquire(&out_dir)
            .map_err(|e| Error::config("output.dir", e.to_string()))?;
        if options.resume {
            // Before anything is deleted: the stored settings must match the manifest.
            crate::record::check_resume(&out_dir, m)?;
        }
        let format = match m.output.format {
            OutputFormat::Parquet => TableFormat::Parquet,
            OutputFormat::Csv => TableFormat::Csv,
        };
        // Summary and chain parts commit together, batch by batch (a marker written last);
        // on resume only committed batches count as done, stray parts are recomputed.
        let (mut output, recovered) = popcosmos_catalog::RunOutput::open(
            &out_dir,
            ResultSchema::new(result_columns_of(m)),
            format,
            m.output.chains,
            options.resume,
        )?;
        let done = recovered.done_ids;

        let total = self.scan_catalogue()?;
        if total == 0 {
            return Err(Error::config(
                "catalogue.path",
                format!("{} has no galaxies", m.catalogue.path.display()),
            ));
        }
        // Batches (global indices, so seeds match an unsharded run) and rows of this run.
        let batch_size = m.galaxies_per_batch as u64;
        let shard_record = options.shard.map(|s| s.record(total as u64, batch_size));
        let (batches, total) = match &shard_record {
            Some(r) => (
                r.first_batch..r.end_batch,
                (r.end_row - r.first_row) as usize,
            ),
            None => (0..(total as u64).div_ceil(batch_size), total),
        };
        progress(Progress::Total(total));

        let mut summary = RunSummary {
            shard: shard_record,
            galaxies_total: total,
            galaxies_computed: 0,
            galaxies_skipped: 0,
            galaxies_flagged: 0,
            batches_computed: 0,
            seconds_library: 0.0,
            seconds_sampling: 0.0,
            seconds_total: 0.0,
            output_dir: out_dir.clone(),
        };
        let started = unix_now();
        let mut batch_seconds = Vec::new();
        // The record exists before the first part, so a resume can always check settings.
        self.write_record(&out_dir, started, &summary, &batch_seconds, false)?;
        let mut library: Option<InitLibrary> = None;
        let mut reader = self.open_reader()?;
        let mut batch_index = 0u64;
        while let Some(chunk) = reader.next_chunk(m.galaxies_per_batch)? {
            let b = batch_index;
            batch_index += 1;
            if b >= batches.end {
                break;
            }
            if b < batches.start {
                continue;
            }
            if chunk.ids.iter().all(|id| done.contains(id)) {
                summary.galaxies_skipped += chunk.len();
                progress(Progress::Done(chunk.len()));
                continue;
            }
            if options
                .max_batches
                .is_some_and(|k| summary.batches_computed >= k)
            {
                break;
            }
            if library.is_none() {
                progress(Progress::Stage("building the initialisation library"));
                let t = Instant::now();
                library = Some(self.init_library()?);
                summary.seconds_library = t.elapsed().as_secs_f64();
                progress(Progress::Stage("sampling"));
            }
            let t = Instant::now();
            let (table, chains) =
                self.process_batch(&chunk, b, library.as_ref().expect("built above"))?;
            summary.galaxies_flagged += table.strings["flags"]
                .iter()
                .filter(|f| !f.is_empty())
                .count();
            output.commit_batch(b, &table, chains.as_ref())?;
            let dt = t.elapsed().as_secs_f64();
            batch_seconds.push(dt);
            summary.seconds_sampling += dt;
            summary.galaxies_computed += chunk.len();
            summary.batches_computed += 1;
            summary.seconds_total = t0.elapsed().as_secs_f64();
            self.write_record(&out_dir, started, &summary, &batch_seconds, false)?;
            progress(Progress::Done(chunk.len()));
        }
        summary.seconds_total = t0.elapsed().as_secs_f64();
        let complete = summary.galaxies_computed + summary.galaxies_skipped == total;
        self.write_record(&out_dir, started, &summary, &batch_seconds, complete)?;
        Ok(summary)
    }

    /// The initialisation library of every batch, from its own random stream (so it is the
    /// same whichever batches a run computes).
    pub(crate) fn init_library(&self) -> Result<InitLibrary> {
        let m = &self.manifest;
        let mut rng = HostRng::seed_from_u64(batch_seed(m.seed, u64::MAX));
        if let Some(proposal) = &self.proposal {
            return InitLibrary::build_with_proposal(
                self.prior.as_ref(),
                proposal.as_ref(),
                m.init.proposal_fraction,
                &self.sps,
                m.init.library_size,
                m.sps.rows_per_call(&self.device),
                &mut rng,
            );
        }
        InitLibrary::build(
            self.prior.as_ref(),
            // SMC starts from prior draws only.
            (!m.sampler.kind.is_smc())
                .then_some(&popcosmos_priors::UniformPrior::new() as &dyn Prior),
            &self.sps,
            m.init.library_size,
            m.sps.rows_per_call(&self.device),
            &mut rng,
        )
    }

    fn write_record(
        &self,
        dir: &Path,
        started: u64,
        summary: &RunSummary,
        batch_seconds: &[f64],
        complete: bool,
    ) -> Result<()> {
        crate::record::RunRecord {
            popcosmos_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: self.manifest.clone(),
            seed: self.manifest.seed,
            device: format!("{:?}", self.device),
            started_unix: started,
            summary: summary.clone(),
            batch_seconds: batch_seconds.to_vec(),
            complete,
        }
        .write(dir)
    }

    /// Posterior for one batch of observations.
    pub fn posterior<'a>(&'a self, obs: &'a popcosmos_api::Observations) -> Posterior<'a> {
        Posterior {
            sps: &self.sps,
            likelihood: &self.likelihood as &dyn Likelihood,
            prior: self.prior.as_ref(),
            obs,
            max_rows: self.manifest.sps.rows_per_call(&self.device),
        }
    }

    /// Sample one batch; returns the results rows and (optionally) thinned chain rows.
    pub fn process_batch(
        &self,
        chunk: &ObservedChunk,
        batch: u64,
        library: &InitLibrary,
    ) -> Result<(ResultTable, Option<ResultTable>)> {
        let m = &self.manifest;
        let obs = chunk.to_observations(&self.device)?;
        let posterior = self.posterior(&obs);
        let mut rng = HostRng::seed_from_u64(batch_seed(m.seed, batch));
        if m.sampler.kind.is_smc() {
            return self.process_batch_smc(chunk, &posterior, library, &mut rng);
        }
        let init = library.initial_walkers(
            &posterior,
            m.sampler.walkers,
            m.init.top_k,
            m.init.jitter,
            &mut rng,
        )?;
        let init = if m.init.adam_steps > 0 {
            crate::adam::refine_walkers(
                &posterior,
                &init,
                m.init.adam_steps,
                m.init.adam_learning_rate,
                m.init.jitter,
                &mut rng,
            )?
        } else {
            init
        };
        let config = RunConfig {
            n_steps: m.sampler.steps,
            burn_in: m.sampler.burn_in,
            thin: m.sampler.thin,
        };
        let chain = self.sample_posterior(init, &posterior, library, &mut rng, &config)?;
        let table = self.summarise(chunk, &chain)?;
        let chains = if m.output.chains {
            Some(self.chain_rows(chunk, &chain))
        } else {
            None
        };
        Ok((table, chains))
    }

    /// The manifest's sampler settings as the samplers' warm-up configuration.
    pub(crate) fn warmup(&self) -> WarmupConfig {
        let s = &self.manifest.sampler;
        WarmupConfig {
            moves: s.moves().iter().map(sampler_move).collect(),
            temperatures: s.temperatures,
            max_temperature: s.max_temperature,
            prune_deficit: s.prune_deficit,
            hmc_leapfrog_steps: s.leapfrog_steps,
            hmc_target_accept: s.target_accept,
            hmc_adapt_steps: Some(s.burn_in),
            ..WarmupConfig::default()
        }
    }

    /// The manifest's ensemble moves; `fit` freezes the proposals of `global` moves (without
    /// it they fit the complementary half at every step).
    pub(crate) fn ensemble_moves(&self, fit: Option<&FittedProposal>) -> Result<EnsembleSampler> {
        self.warmup().ensemble(fit)
    }

    /// Run the manifest's sampler on `target` (a density over φ) from `init` φ
    /// `[walkers, galaxies, 16]`, in the library's prior-whitened coordinates when
    /// `sampler.whiten` is on; the returned chain is in φ with log-densities of `target`.
    pub fn sample_posterior(
        &self,
        init: Tensor,
        target: &dyn LogDensity,
        library: &InitLibrary,
        rng: &mut HostRng,
        config: &RunConfig,
    ) -> Result<Chain> {
        let (s, warmup) = (&self.manifest.sampler, self.warmup());
        let run = |init: Tensor, target: &dyn LogDensity, rng: &mut HostRng| match s.kind {
            SamplerKind::Ensemble => warmup.run_ensemble(init, target, rng, config),
            SamplerKind::Hmc => warmup.run_hmc(init, target, rng, config),
            SamplerKind::Smc | SamplerKind::Library => Err(Error::config(
                "sampler.kind",
                "SMC runs start from the library, not from walkers",
            )),
        };
        if !s.whiten {
            return run(init, target, rng);
        }
        let space = &library.sampling_space;
        let psi = space.from_phi(&init)?;
        let chain = run(psi, &InSamplingSpace { target, space }, rng)?;
        space.chain_to_phi(&chain)
    }

    /// Per-galaxy summaries: percentiles, MAP, the MCMC diagnostics and flags.
    pub fn summarise(&self, chunk: &ObservedChunk, chain: &Chain) -> Result<ResultTable> {
        let diagnostics = diagnose_chain(chain);
        let thresholds = Thresholds {
            max_rhat: self.manifest.diagnostics.max_rhat,
            min_ess_bulk: self.manifest.diagnostics.min_ess_bulk,
            min_ess_tail: self.manifest.diagnostics.min_ess_bulk * 0.5,
            min_acceptance: self.manifest.diagnostics.min_acceptance,
            ..Thresholds::default()
        };
        let report = SamplerReport {
            columns: vec![
                chain.acceptance.clone(),
                diagnostics.iter().map(|d| d.max_rhat()).collect(),
                diagnostics.iter().map(|d| d.min_ess_bulk()).collect(),
                diagnostics.iter().map(|d| d.min_ess_tail()).collect(),
                diagnostics.iter().map(|d| d.max_autocorr_time()).collect(),
            ],
            flags: diagnostics.iter().map(|d| thresholds.flags(d)).collect(),
        };
        self.summarise_with(chunk, chain, report, &result_columns())
    }

    /// Percentiles, MAP, `report`'s sampler columns, bands used and flags, in `columns` order.
    pub(crate) fn summarise_with(
        &self,
        chunk: &ObservedChunk,
        chain: &Chain,
        report: SamplerReport,
        columns: &[String],
    ) -> Result<ResultTable> {
        let (k, w, g, d) = (chain.kept, chain.walkers, chain.galaxies, chain.dim);
        let phi = chain
            .samples_tensor(&self.device)?
            .reshape((k * w * g, d))?;
        let theta = phi_to_theta(&phi)?;
        let derived = derived_from_tensor(&theta, Some(&self.stellar_mass))?;
        let theta = theta
            .to_dtype(popcosmos_api::DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let mut out: Vec<Vec<f64>> = vec![Vec::with_capacity(g); columns.len()];
        let mut flags = Vec::with_capacity(g);
        let n_samples = k * w;
        let mut buf = vec![0.0; n_samples];
        for gal in 0..g {
            // Sample s = (kept, walker) of galaxy gal sits at row (s·g + gal).
            let row = |s: usize| s * g + gal;
            let mut col = 0;
            let mut push_quantity = |buf: &mut Vec<f64>, out: &mut Vec<Vec<f64>>| {
                let q = percentiles(buf);
                for v in q {
                    out[col].push(v);
                    col += 1;
                }
            };
            for (s, b) in buf.iter_mut().enumerate() {
                *b = theta[row(s) * N_PARAMS + popcosmos_api::params::IDX_Z];
            }
            let odds = z_odds(&buf, None);
            push_quantity(&mut buf, &mut out);
            for get in DERIVED_GETTERS {
                for (s, b) in buf.iter_mut().enumerate() {
                    *b = get(&derived[row(s)]);
                }
                push_quantity(&mut buf, &mut out);
            }
            for p in (0..N_PARAMS).filter(|p| *p != popcosmos_api::params::IDX_Z) {
                for (s, b) in buf.iter_mut().enumerate() {
                    *b = theta[row(s) * N_PARAMS + p];
                }
                push_quantity(&mut buf, &mut out);
            }
            out[col].push(odds);
            col += 1;
            // MAP: the stored draw with the highest log posterior.
            let (best, best_lp) = (0..n_samples)
                .map(|s| (s, chain.log_prob[row(s)] as f64))
                .fold((0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
            for p in 0..N_PARAMS {
                out[col].push(theta[row(best) * N_PARAMS + p]);
                col += 1;
            }
            out[col].push(best_lp);
            col += 1;
            for values in &report.columns {
                out[col].push(values[gal]);
                col += 1;
            }
            let n_used: f64 = chunk.mask[gal * chunk.n_bands..(gal + 1) * chunk.n_bands]
                .iter()
                .map(|v| *v as f64)
                .sum();
            out[col].push(n_used);
            let mut f = report.flags[gal].clone();
            if n_used == 0.0 {
                f.push("no_usable_bands: every band is missing or masked".into());
            }
            if !best_lp.is_finite() {
                f.push("no_finite_posterior: no draw has a finite log posterior".into());
            }
            if n_used == 0.0 || !best_lp.is_finite() {
                // The "posterior" is the prior, or nothing: no numbers that look like a
                // measurement.
                for values in &mut out[..col] {
                    if let Some(v) = values.last_mut() {
                        *v = f64::NAN;
                    }
                }
            }
            flags.push(f.join("; "));
        }
        let mut table = ResultTable {
            ids: chunk.ids.clone(),
            ..Default::default()
        };
        // Extra columns (p(z)) are filled by the caller.
        for (name, values) in columns.iter().zip(out) {
            if values.len() == g {
                table.columns.insert(name.clone(), values);
            }
        }
        table.strings.insert("flags".into(), flags);
        Ok(table)
    }

    /// Thinned chains in long format (id, step, walker, 16 physical parameters, log_prob).
    pub(crate) fn chain_rows(&self, chunk: &ObservedChunk, chain: &Chain) -> ResultTable {
        let (k, w, g, d) = (chain.kept, chain.walkers, chain.galaxies, chain.dim);
        let thin = self.manifest.output.chain_thin;
        let mut t = ResultTable::default();
        let mut params: Vec<Vec<f64>> = vec![Vec::new(); d];
        let mut lp = Vec::new();
        let mut step = Vec::new();
        let mut walker = Vec::new();
        let phi: Vec<f64> = chain.samples.iter().map(|v| *v as f64).collect();
        for gal in 0..g {
            for s in (0..k).step_by(thin) {
                for j in 0..w {
                    let r = (s * w + j) * g + gal;
                    let th = popcosmos_api::params::phi_row_to_theta(&phi[r * d..(r + 1) * d]);
                    for (p, v) in th.iter().enumerate() {
                        params[p].push(*v);
                    }
                    lp.push(chain.log_prob[r] as f64);
                    step.push(s as i64);
                    walker.push(j as i64);
                    t.ids.push(chunk.ids[gal].clone());
                }
            }
        }
        for (name, v) in PARAM_NAMES.iter().zip(params) {
            t.columns.insert(name.to_string(), v);
        }
        t.columns.insert("log_prob".into(), lp);
        t.ints.insert("step".into(), step);
        t.ints.insert("walker".into(), walker);
        t
    }
}

/// A manifest move as the samplers' move and its weight.
fn sampler_move(spec: &MoveSpec) -> (MoveKind, f64) {
    match *spec {
        MoveSpec::Stretch { a, weight } => (MoveKind::Stretch { a }, weight),
        MoveSpec::DifferentialEvolution { gamma, weight } => {
            (MoveKind::DifferentialEvolution { gamma }, weight)
        }
        MoveSpec::Global { nu, scale, weight } => (MoveKind::Global { nu, scale }, weight),
        MoveSpec::Ridge { degree, weight } => (
            MoveKind::Ridge {
                axis: popcosmos_api::params::IDX_Z,
                degree,
            },
            weight,
        ),
        MoveSpec::Local {
            neighbours,
            scale,
            shrinkage,
            weight,
        } => (
            MoveKind::Local(LocalMove {
                neighbours,
                scale,
                shrinkage,
            }),
            weight,
        ),
        MoveSpec::Clustered {
            components,
            nu,
            scale,
            weight,
        } => (
            MoveKind::Clustered(ClusteredGlobalMove {
                components,
                nu,
                scale,
            }),
            weight,
        ),
    }
}

/// `z_odds`: the share of the posterior within 0.15 (1 + z_50) of its median z_50, BPZ's
/// ODDS (Benítez 2000) at the catastrophic-outlier width, so 1 − z_odds is the posterior
/// probability that z_50 is a catastrophic outlier. A low value says the median sits in a
/// broad or multi-peaked p(z), where it is neither safe nor reproducible
/// (docs/validation.md, "Which medians move"). `weights` (normalised or not)
/// default to equal; NaN draws are ignored; NaN without a finite draw.
pub fn z_odds(z: &[f64], weights: Option<&[f64]>) -> f64 {
    let weight = |i: usize| weights.map_or(1.0, |w| w[i]);
    let finite: Vec<usize> = (0..z.len())
        .filter(|&i| z[i].is_finite() && weight(i) > 0.0)
        .collect();
    if finite.is_empty() {
        return f64::NAN;
    }
    let values: Vec<f64> = finite.iter().map(|&i| z[i]).collect();
    let w: Vec<f64> = finite.iter().map(|&i| weight(i)).collect();
    let z50 = match weights {
        None => popcosmos_api::stats::median(&values),
        Some(_) => crate::reweight::weighted_percentiles(&values, &w)[2],
    };
    let half = popcosmos_catalog::OUTLIER_THRESHOLD * (1.0 + z50);
    let inside: f64 = values
        .iter()
        .zip(&w)
        .filter(|(v, _)| (*v - z50).abs() <= half)
        .map(|(_, w)| w)
        .sum();
    inside / w.iter().sum::<f64>()
}

/// Linear-interpolated percentiles [`PERCENTILES`] (numpy's default); NaNs are ignored.
pub fn percentiles(values: &[f64]) -> [f64; 5] {
    popcosmos_api::stats::quantiles(values, PERCENTILES.map(|(p, _)| p / 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_seeds_differ_and_repeat() {
        assert_eq!(batch_seed(1, 3), batch_seed(1, 3));
        assert_ne!(batch_seed(1, 3), batch_seed(1, 4));
        assert_ne!(batch_seed(1, 3), batch_seed(2, 3));
    }

    #[test]
    fn z_odds_by_hand() {
        // The 6 finite draws have median (1.0 + 1.2)/2 = 1.1, window ±0.315: 0.8, 1.0, 1.2
        // and 1.3 are inside, 0.1 and 3.0 outside; the NaN draw is ignored.
        let z = [0.1, 0.8, 1.0, 1.2, 1.3, 3.0, f64::NAN];
        assert!((z_odds(&z, None) - 4.0 / 6.0).abs() < 1e-15);
        // Weighted: CDF midpoints 0.05, 0.3, 0.7, 0.95 put the median at 1.025, window
        // ±0.30375: the two middle draws (weight 0.8) are inside.
        let w = [0.1, 0.4, 0.4, 0.1];
        let o = z_odds(&[0.1, 1.0, 1.05, 3.0], Some(&w));
        assert!((o - 0.8).abs() < 1e-15, "{o}");
        // Zero-weight draws do not count; no finite draw gives NaN.
        assert_eq!(z_odds(&[1.0, 5.0], Some(&[1.0, 0.0])), 1.0);
        assert!(z_odds(&[f64::NAN], None).is_nan());
    }

    #[test]
    fn result_columns_are_unique() {
        let c = result_columns();
        let set: std::collections::HashSet<_> = c.iter().collect();
        assert_eq!(set.len(), c.len());
        assert!(c.contains(&"z_p50".to_string()) && c.contains(&"log10M_formed_p16".to_string()));
    }
}
