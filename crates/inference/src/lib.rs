//! # popcosmos-inference — the data model and the run
//!
//! * [`PhotometricLikelihood`] ([`LikelihoodSpec`]): the Student-t / Gaussian photometric
//!   likelihood with zero points, error floors and emission-line uncertainty, masking missing
//!   bands.
//! * [`Posterior`]: ln P(φ) = ln L(θ(φ)) + ln p(φ) over `[walkers, galaxies, 16]`.
//! * [`InitLibrary`]: walker starts from a library of prior draws with precomputed photometry;
//!   [`refine_walkers`]: optional gradient refinement of the start points.
//! * [`Manifest`]: the YAML run manifest (unknown keys rejected, errors with line/column).
//! * [`Pipeline`]: the batch loop — catalogue chunks → sampler → per-galaxy percentiles,
//!   MAP, diagnostics and flags → atomic Parquet/CSV parts, a run record, `--resume`.
//! * Runs on in-memory tables (the Python package): [`Pipeline::fit_reader`]
//!   (`run`'s summaries and chains, bit-identical, without an output folder), `predict`
//!   ([`predict_photometry`]) and `sample-prior` ([`prior_draws`]) as functions.
//! * [`RunRecord`]: the typed run record `run.json` and the `--resume` settings check.
//! * [`reweight`]: prior swap on stored chains by importance weights p_new/p_run (e.g. the
//!   posterior under the diffusion prior from a run made with its distilled flow).
//! * [`calibrate`]: per-band zero points (and error floors) from spec-z galaxies with the
//!   redshift pinned at the truth (`popcosmos-cli calibrate`).
//! * [`Shard`]: `run --shard I/N` (contiguous, batch-aligned row ranges whose results are
//!   bit-identical to an unsharded run) and [`merge_shards`] for `merge OUTDIR`.
//! * [`mock`]: mock catalogues through the full data model (`popcosmos-cli mock`).

#![warn(missing_docs)]

mod adam;
mod calibration;
mod init;
mod likelihood;
mod manifest;
mod memory;
// Namespace: mock catalogues (`mock::simulate`, `mock::Selection`, `mock::NoiseModel`).
pub mod mock;
mod pipeline;
mod posterior;
mod record;
mod reparam;
// Namespace: the prior swap (`reweight::summarise`, `reweight::summary_columns`, …).
pub mod reweight;
mod shard;
mod smc;

pub use adam::refine_walkers;
pub use calibration::{
    BandResidual, CalibrationOptions, CalibrationOutcome, LINE_GROUPS, LineGroupFit, calibrate,
    line_group, line_group_indices, line_name, subset,
};
pub use init::{InitLibrary, MIN_WHITENING_DRAWS};
pub use likelihood::{LikelihoodSpec, PhotometricLikelihood};
pub use manifest::{
    DiagnosticsSpec, InitSpec, Manifest, MoveSpec, OutputFormat, OutputSpec, SamplerKind,
    SamplerSpec, SpsSpec, build_prior, load_weights,
};
pub use memory::{Fit, LOG10M_RANGE, N_RANGE, predict_photometry, prior_draws, prior_table};
pub use pipeline::{
    PERCENTILES, Pipeline, Progress, RunOptions, RunSummary, percentiles, result_columns_of,
};
pub use posterior::Posterior;
pub use record::RunRecord;
pub use reparam::{InSamplingSpace, SamplingSpace};
pub use shard::{MergeSummary, Shard, ShardError, ShardRecord, merge_shards};
