//! # popcosmos-catalog — catalogue input, results output, photo-z metrics
//!
//! One job: move galaxy tables in and out of popcosmos. Fluxes leave this crate in
//! **nanomaggies** (1 nmgy = 3.631 µJy, m_AB = 22.5 − 2.5 log10 f).
//!
//! ## Input: [`CatalogueSpec`] → [`CatalogueReader`] → [`ObservedChunk`]
//! * [`CatalogueSpec`] is the `catalogue:` section of the manifest (serde,
//!   `deny_unknown_fields`): `path`, `format` (csv | fits | parquet, else from the
//!   extension), `id_column`, `units` ([`FluxUnit`]), band columns as an explicit
//!   `bands: [{band, flux, error}]` list or `flux_pattern`/`error_pattern` (`"flux_{band}"`),
//!   `upper_limits` ([`UpperLimitConvention`]), `missing_values` (sentinels) and
//!   `truth_columns`.
//! * [`CatalogueReader::open`]`(&spec, &band_names)` checks every column exists, then
//!   [`CatalogueReader::next_chunk`]`(max_rows)` streams validated rows: CSV row by row,
//!   Parquet by record batches, FITS BINTABLE row by row (a small built-in reader).
//!   Missing (NaN / empty / sentinel) and upper-limit entries are masked (flux 0, σ 1,
//!   mask 0); so is any band whose flux or σ is at least [`ABSURD_FLUX_NMGY`] (1e20 nmgy,
//!   AB −27.5) after unit conversion, such as KiDS' 1e29 "no measurement". Bad input is a [`CatalogError`] naming file, row (1-based data row) and
//!   column: unparseable cells, NaN / negative / zero σ on a present flux (unless the
//!   upper-limit convention covers it), duplicate or empty ids, an empty catalogue.
//! * [`ObservedChunk::to_observations`] makes the `[galaxies, bands]` tensors of
//!   [`popcosmos_api::Observations`].
//! * [`read_column_f64`] / [`read_ids`] read single columns (truth tables).
//! * [`CatalogueReader::from_memory`] streams a [`MemoryTable`] (named in-memory columns, as
//!   the Python package passes them) through the same checks.
//!
//! ## Output: [`ResultsWriter`]
//! * [`ResultsWriter::create`]`(dir, schema, format, resume)`; each
//!   [`ResultsWriter::write_chunk`] writes one `part-NNNNN.parquet|csv` atomically (temp
//!   file, fsync, rename). [`ResultsWriter::completed_ids`] lists the ids on disk;
//!   [`read_results`] reads a directory (all parts, in order) or one file into a
//!   [`ResultTable`]; [`merge_parts`] concatenates parts into one Parquet file
//!   ([`merge_parts_tagged`] adds a constant column such as the shard index);
//!   [`part_ids`] reads the ids of one part (duplicate/gap checks of sharded runs).
//! * [`ResultSchema::chains`] is the long-format thinned-chain table (id, step, walker,
//!   16 parameters, log_prob), written with the same writer into e.g. `chains/`.
//!
//! * [`RunOutput`] commits a run's summary and chain parts batch by batch (a marker in
//!   `commits/` written last; uncommitted parts are recomputed on resume) and
//!   [`OutputLock`] keeps a second run out of the folder (see *Commits and the lock*).
//!
//! ## Commits and the lock
//! A batch writes its summary part (`part-NNNNN.ext`), then its chain part
//! (`chains/part-NNNNN.ext`), each atomically (temporary file, fsync, rename), and *last* a
//! commit marker `commits/batch-BBBBBBBBBB.json` naming both parts. A batch is done only when
//! its marker exists and every part it names is on disk. On resume ([`RunOutput::open`]
//! with `resume`), parts no marker names are stray (a run killed between two renames) and
//! are deleted, so their batch is recomputed and never counted as done; a marker whose parts
//! are missing is deleted with its parts for the same reason. [`check_commits`] reports the
//! same problems without changing anything (for readers such as `reweight`).
//!
//! [`OutputLock::acquire`] takes an exclusive `flock` on `<dir>/.popcosmos.lock` (released
//! by the kernel when the process exits or is killed, so a stale lock file never blocks a
//! later run); a second run on the same folder is refused with a message naming the folder
//! and the holder's pid.
//!
//! ## Metrics
//! [`photoz_metrics`] (bias, σ_NMAD, outlier fraction, n), [`match_by_id`], [`coverage`].
//!
//! ```no_run
//! use popcosmos_catalog::*;
//! let spec: CatalogueSpec = serde_json::from_str(r#"{"path": "cat.csv", "units": "mjy",
//!     "flux_pattern": "flux_{band}", "error_pattern": "fluxerr_{band}",
//!     "upper_limits": "negative_error"}"#).unwrap();
//! let bands = vec!["hsc_g".to_string(), "hsc_r".to_string()];
//! let mut reader = CatalogueReader::open(&spec, &bands)?;
//! while let Some(chunk) = reader.next_chunk(1024)? {
//!     assert_eq!(chunk.flux_nmgy.len(), chunk.len() * bands.len());
//! }
//! # Ok::<(), CatalogError>(())
//! ```

#![warn(missing_docs)]

mod commit;
mod error;
mod fits;
mod memory;
mod metrics;
mod reader;
mod results;
mod source;
mod spec;

pub use commit::{
    BatchCommit, CHAINS_DIR, COMMIT_DIR, CommitReport, FAILPOINT_ENV, LOCK_FILE, OutputLock,
    Recovered, RunOutput, check_commits, committed_batches, read_commits,
};
pub use error::{CatalogError, Result};
pub use memory::MemoryTable;
pub use metrics::{
    AGREEMENT_TOLERANCE, Agreement, OUTLIER_THRESHOLD, PhotozMetrics, coverage, match_by_id,
    median, median_agreement, photoz_metrics, pz_odds, scaled_differences, total_variation,
};
pub use reader::{ABSURD_FLUX_NMGY, CatalogueReader, ObservedChunk};
pub use results::{
    ID_COLUMN, ResultSchema, ResultTable, ResultsWriter, TableFormat, list_parts, merge_parts,
    merge_parts_tagged, part_ids, read_results, write_table,
};
pub use source::{read_column_f64, read_ids};
pub use spec::{
    BandColumns, CatalogueFormat, CatalogueSpec, FluxUnit, NMGY_IN_JY, UpperLimitConvention,
    default_missing_values,
};
