//! # popcosmos-inference — the data model and the run
//!
//! * [`likelihood`]: the Student-t / Gaussian photometric likelihood with zero points, error
//!   floors and emission-line uncertainty, masking missing bands.
//! * [`posterior`]: ln P(φ) = ln L(θ(φ)) + ln p(φ) over `[walkers, galaxies, 16]`.
//! * [`init`]: walker starts from a library of prior draws with precomputed photometry;
//!   [`adam`]: optional gradient refinement of the start points.
//! * [`manifest`]: the YAML run manifest (unknown keys rejected, errors with line/column).
//! * [`pipeline`]: the batch loop — catalogue chunks → sampler → per-galaxy percentiles,
//!   MAP, diagnostics and flags → atomic Parquet/CSV parts, a run record, `--resume`.
//! * [`memory`]: runs on in-memory tables (the Python package): [`Pipeline::fit_reader`]
//!   (`run`'s summaries and chains, bit-identical, without an output folder), `predict` and
//!   `sample-prior` as functions.
//! * [`record`]: the typed run record `run.json` and the `--resume` settings check.
//! * [`reweight`]: prior swap on stored chains by importance weights p_new/p_run (e.g. the
//!   posterior under the diffusion prior from a run made with its distilled flow).
//! * [`calibration`]: per-band zero points (and error floors) from spec-z galaxies with the
//!   redshift pinned at the truth (`popcosmos-cli calibrate`).
//! * [`shard`]: `run --shard I/N` (contiguous, batch-aligned row ranges whose results are
//!   bit-identical to an unsharded run) and [`shard::merge_shards`] for `merge OUTDIR`.

#![warn(missing_docs)]

pub mod adam;
pub mod calibration;
pub mod init;
pub mod likelihood;
pub mod manifest;
pub mod memory;
pub mod mock;
pub mod pipeline;
pub mod posterior;
pub mod record;
pub mod reparam;
pub mod reweight;
pub mod shard;
pub mod smc;

pub use likelihood::{LikelihoodSpec, PhotometricLikelihood};
pub use manifest::Manifest;
pub use pipeline::{Pipeline, Progress, RunOptions, RunSummary};
pub use posterior::Posterior;
pub use shard::{Shard, ShardError};
