//! Sharded runs (`run --shard I/N`) and their merge (`merge OUTDIR`).
//!
//! ## Partition
//! The catalogue is cut into the run's fixed batches of `galaxies_per_batch` rows (batch b =
//! rows b·B … (b+1)·B − 1, see [`crate::pipeline`]). With `n_b` batches, shard I of N
//! (0-based, `0 ≤ I < N`, the numbering of `$SLURM_ARRAY_TASK_ID` in `--array=0-(N-1)`) takes
//! the contiguous batch range `⌊I·n_b/N⌋ … ⌊(I+1)·n_b/N⌋ − 1`. Shards therefore differ by at
//! most one batch, never split a batch, and together cover every row exactly once.
//!
//! Why whole batches: a galaxy's chain depends on the random stream of its batch (seeded by
//! the *global* batch index) and on its batch-mates (the sampler draws `[walkers, galaxies]`
//! tensors), so keeping batches intact makes every galaxy's result bit-identical to an
//! unsharded run with the same seed, whatever N is.
//!
//! ## Layout
//! Shard I of N writes into `<output.dir>/shard-IIIII-of-NNNNN/` (its own part files,
//! `chains/` and `run.json`, whose `summary.shard` holds a [`ShardRecord`]), so tasks never
//! touch each other's files and each can be resumed on its own.
//!
//! ## Merge
//! [`merge_shards`] checks the shards (all N present and complete, one partition, one seed,
//! every id once, counts equal to the row ranges and, where the catalogue is readable, the
//! ids of every shard's rows) before writing anything, then writes one Parquet part per
//! shard, `<output.dir>/part-IIIII.parquet` with an Int64 `shard` column after `id` (rows in
//! catalogue order), merged chains under `chains/`, and a merged `run.json`. The merged
//! folder reads like an unsharded run's (`read_results`, `evaluate`). The id check keeps
//! every id in memory (≈ 60 bytes per galaxy).

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use popcosmos_catalog::{CatalogError, list_parts, merge_parts_tagged, part_ids, read_ids};
use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::record::{RecordSummary, RunRecord};

/// One shard of a run: `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based index I of the shard, `I < count`.
    pub index: u64,
    /// Number of shards N the run is split into.
    pub count: u64,
}

/// Errors of shard parsing and merging; every message names the shard or galaxy id.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A `--shard` argument that is not `I/N` with `0 ≤ I < N` (holds the argument).
    #[error("--shard {0}: expected I/N with 0 ≤ I < N (e.g. 0/4 … 3/4)")]
    Parse(String),
    /// The output folder has no shard folders.
    #[error("{dir}: no shard folders (shard-IIIII-of-NNNNN) to merge")]
    NoShards {
        /// The output folder.
        dir: String,
    },
    /// Shard folders of different N lie side by side.
    #[error(
        "{dir}: shard folders of different partitions ({first} and {other} shards); remove the stale ones"
    )]
    MixedCounts {
        /// The output folder.
        dir: String,
        /// N of the first partition found.
        first: u64,
        /// N of another partition.
        other: u64,
    },
    /// A shard of the partition has no folder.
    #[error(
        "gap: shard {shard} ({dir}) is missing; run it with `run MANIFEST --shard {shard} --resume`"
    )]
    MissingShard {
        /// The shard, `I/N`.
        shard: String,
        /// The folder it should have.
        dir: String,
    },
    /// A shard has no `run.json`, has not finished, or has uncommitted parts.
    #[error(
        "gap: shard {shard} ({dir}) is incomplete: {message}; rerun it with `run MANIFEST --shard {shard} --resume`"
    )]
    Incomplete {
        /// The shard, `I/N`.
        shard: String,
        /// The shard's folder.
        dir: String,
        /// What is missing.
        message: String,
    },
    /// A shard does not belong to the same run or partition (record, seed, catalogue,
    /// batching, row range, or a galaxy found in the wrong shard).
    #[error("shard {shard}: {message}")]
    Mismatch {
        /// The shard, `I/N`.
        shard: String,
        /// What differs.
        message: String,
    },
    /// A galaxy id appears twice across the shards' parts.
    #[error("duplicate galaxy id '{id}': in shard {first} and in shard {second}")]
    Duplicate {
        /// The repeated galaxy id.
        id: String,
        /// Shard and part file of its first occurrence.
        first: String,
        /// Shard and part file of the repeat.
        second: String,
    },
    /// A shard lacks results for some of its catalogue rows.
    #[error("gap: shard {shard}: {message}")]
    Gap {
        /// The shard, `I/N`.
        shard: String,
        /// Which galaxies or how many are missing.
        message: String,
    },
    /// The output folder already holds parts that an earlier merge did not write.
    #[error("{dir}: holds results that are not a merge of shards; merge into a fresh output.dir")]
    NotMergeOutput {
        /// The output folder.
        dir: String,
    },
    /// A `run.json` cannot be read as the expected record, or the merged one cannot be
    /// serialised.
    #[error("{file}: {message}")]
    Record {
        /// The record file.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// Reading or writing a part failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A file or folder could not be read, written or removed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path, source: std::io::Error) -> ShardError {
    ShardError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, ShardError> {
        let bad = || ShardError::Parse(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index = i.trim().parse().map_err(|_| bad())?;
        let count = n.trim().parse().map_err(|_| bad())?;
        Shard::new(index, count).ok_or_else(bad)
    }
}

impl Shard {
    /// `None` unless `index < count`.
    pub fn new(index: u64, count: u64) -> Option<Self> {
        (index < count).then_some(Self { index, count })
    }

    /// Batch indices of this shard when the catalogue has `n_batches` batches.
    pub fn batches(&self, n_batches: u64) -> Range<u64> {
        // u128: I·n_b overflows u64 for absurd but representable inputs.
        let at = |i: u64| (i as u128 * n_batches as u128 / self.count as u128) as u64;
        at(self.index)..at(self.index + 1)
    }

    /// Catalogue rows of this shard (0-based, end exclusive).
    pub fn rows(&self, total_rows: u64, batch_size: u64) -> Range<u64> {
        let b = self.batches(total_rows.div_ceil(batch_size));
        (b.start * batch_size).min(total_rows)..(b.end * batch_size).min(total_rows)
    }

    /// Folder of this shard inside `output.dir`: `shard-00001-of-00004`.
    pub fn dir_name(&self) -> String {
        format!("shard-{:05}-of-{:05}", self.index, self.count)
    }

    /// Inverse of [`Shard::dir_name`].
    pub fn from_dir_name(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("shard-")?;
        let (i, n) = rest.split_once("-of-")?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(i) || !digits(n) {
            return None;
        }
        Shard::new(i.parse().ok()?, n.parse().ok()?)
    }

    /// The record stored in the shard's `run.json`.
    pub fn record(&self, total_rows: u64, batch_size: u64) -> ShardRecord {
        let rows = self.rows(total_rows, batch_size);
        let batches = self.batches(total_rows.div_ceil(batch_size));
        ShardRecord {
            index: self.index,
            count: self.count,
            catalogue_rows: total_rows,
            galaxies_per_batch: batch_size,
            first_row: rows.start,
            end_row: rows.end,
            first_batch: batches.start,
            end_batch: batches.end,
        }
    }
}

/// Where a shard sits in the catalogue (`run.json` → `summary.shard`; ends exclusive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// 0-based shard index I.
    pub index: u64,
    /// Number of shards N.
    pub count: u64,
    /// Rows of the whole catalogue.
    pub catalogue_rows: u64,
    /// The run's batch size B.
    pub galaxies_per_batch: u64,
    /// First catalogue row of the shard (0-based).
    pub first_row: u64,
    /// One past the shard's last catalogue row.
    pub end_row: u64,
    /// First global batch index of the shard.
    pub first_batch: u64,
    /// One past the shard's last global batch index.
    pub end_batch: u64,
}

/// The `run.json` of a merged folder, written by [`merge_shards`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergedRecord {
    /// Version of popcosmos that merged.
    pub popcosmos_version: String,
    /// Always true: tells a merge from an unsharded run's [`RunRecord`].
    pub merged: bool,
    /// Time of the merge, seconds since the Unix epoch.
    pub merged_unix: u64,
    /// The manifest of shard 0 (all shards share seed, catalogue and batching).
    pub manifest: Manifest,
    /// The run's master seed.
    pub seed: u64,
    /// Number of shards N.
    pub shard_count: u64,
    /// Whether every shard's ids were checked against the catalogue's rows.
    pub checked_against_catalogue: bool,
    /// Totals over the shards.
    pub summary: MergedSummary,
    /// Each shard's place, folder and own summary, in shard order.
    pub shards: Vec<MergedShard>,
    /// Always true: a merge is only written when every shard is complete.
    pub complete: bool,
}

/// Totals over the shards of a merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedSummary {
    /// Galaxies in the merged parts.
    pub galaxies_total: u64,
    /// Sum of the shards' flagged-galaxy counts.
    pub galaxies_flagged: u64,
    /// Across all attempts of every shard's last run (resumed runs count only their own work).
    pub seconds_sampling: f64,
    /// Seconds building the initialisation library, summed over the shards.
    pub seconds_library: f64,
}

/// One shard of a merge, from its own `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergedShard {
    /// Where the shard sits in the catalogue.
    pub shard: ShardRecord,
    /// The shard's folder.
    pub dir: PathBuf,
    /// The device that sampled it.
    pub device: String,
    /// Start of the shard's last invocation, seconds since the Unix epoch.
    pub started_unix: u64,
    /// The shard's own counts and timings.
    pub summary: RecordSummary,
}

/// What [`merge_shards`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct MergeSummary {
    /// Number of shards merged.
    pub shards: u64,
    /// Galaxies in the merged parts.
    pub galaxies: u64,
    /// Flagged galaxies over all shards.
    pub galaxies_flagged: u64,
    /// Whether the catalogue ids were compared too (false when it could not be read).
    pub checked_against_catalogue: bool,
    /// The merged summary parts written, one per non-empty shard.
    pub parts: Vec<PathBuf>,
    /// The merged `run.json`.
    pub record: PathBuf,
}

/// One shard folder with its parsed run record.
struct ShardRun {
    shard: Shard,
    dir: PathBuf,
    record: RunRecord,
    info: ShardRecord,
}

fn read_record(path: &Path) -> Result<RunRecord, ShardError> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ShardError::Record {
        file: path.display().to_string(),
        message: format!("not a popcosmos run record: {e}"),
    })
}

/// A folder's `run.json` as the record of a merge; `None` when it is another record (an
/// unsharded run's). Errors name the file.
fn read_merged(path: &Path) -> Result<Option<MergedRecord>, ShardError> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    match serde_json::from_str::<MergedRecord>(&text) {
        Ok(r) => Ok(Some(r).filter(|r| r.merged)),
        Err(e) if e.classify() == serde_json::error::Category::Data => Ok(None),
        Err(e) => Err(ShardError::Record {
            file: path.display().to_string(),
            message: e.to_string(),
        }),
    }
}

/// Check and merge the shard folders of `dir` (see the module docs). Nothing is written
/// unless every check passes.
pub fn merge_shards(dir: &Path) -> Result<MergeSummary, ShardError> {
    let shown = || dir.display().to_string();
    let mut found: Vec<(Shard, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(s) = Shard::from_dir_name(name).filter(|_| path.is_dir()) {
            found.push((s, path));
        }
    }
    found.sort_by_key(|(s, _)| (s.count, s.index));
    let Some(count) = found.first().map(|(s, _)| s.count) else {
        return Err(ShardError::NoShards { dir: shown() });
    };
    if let Some((other, _)) = found.iter().find(|(s, _)| s.count != count) {
        return Err(ShardError::MixedCounts {
            dir: shown(),
            first: count,
            other: other.count,
        });
    }
    let mut runs = Vec::new();
    for index in 0..count {
        let shard = Shard { index, count };
        let Some((_, sdir)) = found.iter().find(|(s, _)| s.index == index) else {
            return Err(ShardError::MissingShard {
                shard: shard.to_string(),
                dir: dir.join(shard.dir_name()).display().to_string(),
            });
        };
        let incomplete = |message: String| ShardError::Incomplete {
            shard: shard.to_string(),
            dir: sdir.display().to_string(),
            message,
        };
        let rec_path = sdir.join("run.json");
        if !rec_path.exists() {
            return Err(incomplete("no run.json".into()));
        }
        let record = read_record(&rec_path)?;
        let info: ShardRecord = record
            .summary
            .shard
            .clone()
            .ok_or_else(|| ShardError::Record {
                file: rec_path.display().to_string(),
                message: "summary.shard: missing (not the record of a shard)".into(),
            })?;
        if !record.complete {
            return Err(incomplete(format!(
                "{} of {} galaxies done",
                record.galaxies_done(),
                info.end_row - info.first_row
            )));
        }
        if (info.index, info.count) != (index, count) {
            return Err(ShardError::Mismatch {
                shard: shard.to_string(),
                message: format!(
                    "{} records shard {}/{}",
                    rec_path.display(),
                    info.index,
                    info.count
                ),
            });
        }
        runs.push(ShardRun {
            shard,
            dir: sdir.clone(),
            record,
            info,
        });
    }

    // One run split N ways: same seed, catalogue and batching, contiguous row ranges.
    let first = &runs[0];
    let key = |r: &RunRecord| {
        (
            r.seed,
            r.manifest.catalogue.path.clone(),
            r.manifest.galaxies_per_batch,
        )
    };
    let mut next_row = 0;
    for r in &runs {
        let mismatch = |message: String| ShardError::Mismatch {
            shard: r.shard.to_string(),
            message,
        };
        if key(&r.record) != key(&first.record)
            || r.info.catalogue_rows != first.info.catalogue_rows
        {
            return Err(mismatch(format!(
                "seed, catalogue or batching differ from shard {} (run.json); all shards must come from one manifest",
                first.shard
            )));
        }
        let expected = r
            .shard
            .record(r.info.catalogue_rows, r.info.galaxies_per_batch);
        if r.info != expected || r.info.first_row != next_row {
            return Err(mismatch(format!(
                "rows {}..{} do not follow the partition (expected {}..{})",
                r.info.first_row, r.info.end_row, expected.first_row, expected.end_row
            )));
        }
        next_row = r.info.end_row;
    }

    // Every id exactly once, shard by shard.
    let mut seen: HashMap<String, (u64, String)> = HashMap::new();
    let mut counts = vec![0u64; runs.len()];
    for (k, r) in runs.iter().enumerate() {
        for part in list_parts(&r.dir)? {
            let pname = part
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            for id in part_ids(&part)? {
                let here = format!("{} ({})", r.shard, pname);
                if let Some((_, there)) = seen.get(&id) {
                    return Err(ShardError::Duplicate {
                        id,
                        first: there.clone(),
                        second: here,
                    });
                }
                seen.insert(id, (r.shard.index, here));
                counts[k] += 1;
            }
        }
    }
    // With the catalogue at hand, name the missing galaxies; otherwise compare counts.
    let catalogue = Some(first.record.manifest.catalogue.path.clone());
    let id_column = first.record.manifest.catalogue.id_column.clone();
    let catalogue_ids = catalogue
        .as_ref()
        .and_then(|p| read_ids(p, &id_column).ok())
        .filter(|ids| ids.len() as u64 == first.info.catalogue_rows);
    if let Some(ids) = &catalogue_ids {
        for r in &runs {
            for row in r.info.first_row..r.info.end_row {
                let id = &ids[row as usize];
                match seen.get(id) {
                    Some((s, _)) if *s == r.shard.index => {}
                    Some((_, there)) => {
                        return Err(ShardError::Mismatch {
                            shard: r.shard.to_string(),
                            message: format!(
                                "galaxy '{id}' (catalogue row {row}) belongs to this shard but was found in shard {there}"
                            ),
                        });
                    }
                    None => {
                        return Err(ShardError::Gap {
                            shard: r.shard.to_string(),
                            message: format!(
                                "galaxy '{id}' (catalogue row {row}) has no result in {}",
                                r.dir.display()
                            ),
                        });
                    }
                }
            }
        }
    }
    for (r, n) in runs.iter().zip(&counts) {
        let expected = r.info.end_row - r.info.first_row;
        if *n != expected {
            // Only reachable without the catalogue, or with ids foreign to it.
            return Err(ShardError::Gap {
                shard: r.shard.to_string(),
                message: format!(
                    "{} holds {n} galaxies but its catalogue rows {}..{} are {expected}",
                    r.dir.display(),
                    r.info.first_row,
                    r.info.end_row
                ),
            });
        }
    }

    // Every part committed (ids alone cannot show a batch whose chain part was lost).
    for r in &runs {
        let commits = popcosmos_catalog::check_commits(&r.dir)?;
        if !commits.is_clean() {
            return Err(ShardError::Incomplete {
                shard: r.shard.to_string(),
                dir: r.dir.display().to_string(),
                message: commits.problems(),
            });
        }
    }

    // Write: refuse to mix with an unsharded run's parts; replace an earlier merge.
    let merged_record = dir.join("run.json");
    let old_parts = list_parts(dir)?;
    if !old_parts.is_empty() {
        let earlier_merge = merged_record.exists() && read_merged(&merged_record)?.is_some();
        if !earlier_merge {
            return Err(ShardError::NotMergeOutput { dir: shown() });
        }
        for p in old_parts {
            std::fs::remove_file(&p).map_err(|e| io(&p, e))?;
        }
    }
    let chains_out = dir.join("chains");
    for p in list_parts(&chains_out)? {
        std::fs::remove_file(&p).map_err(|e| io(&p, e))?;
    }
    let mut parts = Vec::new();
    for r in runs.iter().filter(|r| r.info.end_row > r.info.first_row) {
        let out = dir.join(format!("part-{:05}.parquet", r.shard.index));
        merge_parts_tagged(&r.dir, &out, Some(("shard", r.shard.index as i64)))?;
        parts.push(out);
        let chains = r.dir.join("chains");
        if !list_parts(&chains)?.is_empty() {
            std::fs::create_dir_all(&chains_out).map_err(|e| io(&chains_out, e))?;
            let out = chains_out.join(format!("part-{:05}.parquet", r.shard.index));
            merge_parts_tagged(&chains, &out, Some(("shard", r.shard.index as i64)))?;
        }
    }
    let sum = |get: fn(&RecordSummary) -> f64| -> f64 {
        runs.iter().map(|r| get(&r.record.summary)).sum()
    };
    let flagged = sum(|s| s.galaxies_flagged as f64) as u64;
    let galaxies: u64 = counts.iter().sum();
    let record = MergedRecord {
        popcosmos_version: env!("CARGO_PKG_VERSION").into(),
        merged: true,
        merged_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        manifest: first.record.manifest.clone(),
        seed: first.record.seed,
        shard_count: count,
        checked_against_catalogue: catalogue_ids.is_some(),
        summary: MergedSummary {
            galaxies_total: galaxies,
            galaxies_flagged: flagged,
            seconds_sampling: sum(|s| s.seconds_sampling),
            seconds_library: sum(|s| s.seconds_library),
        },
        shards: runs
            .iter()
            .map(|r| MergedShard {
                shard: r.info.clone(),
                dir: r.dir.clone(),
                device: r.record.device.clone(),
                started_unix: r.record.started_unix,
                summary: r.record.summary.clone(),
            })
            .collect(),
        complete: true,
    };
    let tmp = dir.join(".run.json.tmp");
    // Through a `Value`: keys sorted at every level, as merged records have always been.
    let text = serde_json::to_value(&record)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .map_err(|e| ShardError::Record {
            file: merged_record.display().to_string(),
            message: e.to_string(),
        })?;
    std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &merged_record).map_err(|e| io(&merged_record, e))?;
    Ok(MergeSummary {
        shards: count,
        galaxies,
        galaxies_flagged: flagged,
        checked_against_catalogue: catalogue_ids.is_some(),
        parts,
        record: merged_record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::from_yaml(
            "survey: {name: cosmos}\ncatalogue: {path: x.csv, units: nanomaggies}\nprior: {kind: uniform}\n\
             output: {dir: out}\n",
            "m.yaml",
        )
        .unwrap()
    }

    fn merged_record() -> MergedRecord {
        let shard = Shard { index: 1, count: 2 }.record(10, 3);
        let summary = RecordSummary {
            galaxies_total: 4,
            galaxies_computed: 4,
            galaxies_skipped: 0,
            galaxies_flagged: 1,
            batches_computed: 2,
            seconds_library: 0.5,
            seconds_sampling: 1.25,
            seconds_total: 2.0,
            output_dir: "out/shard-00001-of-00002".into(),
            shard: Some(shard.clone()),
        };
        MergedRecord {
            popcosmos_version: "0.1.0".into(),
            merged: true,
            merged_unix: 1_700_000_000,
            manifest: manifest(),
            seed: 7,
            shard_count: 2,
            checked_against_catalogue: true,
            summary: MergedSummary {
                galaxies_total: 10,
                galaxies_flagged: 1,
                seconds_sampling: 1.25,
                seconds_library: 0.5,
            },
            shards: vec![MergedShard {
                shard,
                dir: "out/shard-00001-of-00002".into(),
                device: "cpu".into(),
                started_unix: 1_699_999_000,
                summary,
            }],
            complete: true,
        }
    }

    #[test]
    fn merged_run_json_round_trips_as_the_struct() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let record = merged_record();
        let text = serde_json::to_string_pretty(&serde_json::to_value(&record).unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        let back = read_merged(&path).unwrap().expect("a merged record");
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&record).unwrap()
        );
        assert_eq!(back.summary, record.summary);
        assert_eq!(back.shards[0].shard, record.shards[0].shard);
        assert_eq!(back.shards[0].summary, record.shards[0].summary);
        assert_eq!(back.manifest.seed, record.manifest.seed);

        // An unsharded run's record is not a merge; a broken file is an error naming it.
        let run = RunRecord {
            popcosmos_version: "0.1.0".into(),
            manifest: manifest(),
            seed: 7,
            device: "cpu".into(),
            started_unix: 0,
            summary: record.shards[0].summary.clone(),
            batch_seconds: vec![],
            complete: true,
        };
        std::fs::write(&path, serde_json::to_string(&run).unwrap()).unwrap();
        assert!(read_merged(&path).unwrap().is_none());
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let e = read_merged(&path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
    }

    #[test]
    fn parses_and_rejects_shard_specs() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["4/4", "1", "a/2", "1/0", "-1/3", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let s = Shard {
            index: 3,
            count: 12,
        };
        assert_eq!(s.dir_name(), "shard-00003-of-00012");
        assert_eq!(Shard::from_dir_name(&s.dir_name()), Some(s));
        assert_eq!(Shard::from_dir_name("shard-3-of-3"), None);
        assert_eq!(Shard::from_dir_name("shard-x-of-3"), None);
    }

    #[test]
    fn shards_cover_every_row_once_in_whole_batches() {
        for total in [1u64, 7, 10, 100, 2000, 2001] {
            for batch in [1u64, 3, 50] {
                for count in [1u64, 2, 3, 4, 7, 64] {
                    let mut next = 0;
                    let mut sizes = Vec::new();
                    for index in 0..count {
                        let r = Shard { index, count }.rows(total, batch);
                        assert_eq!(r.start, next, "{total} {batch} {count}");
                        assert!(r.start.is_multiple_of(batch), "starts on a batch boundary");
                        next = r.end;
                        sizes.push(r.end.div_ceil(batch) - r.start / batch);
                    }
                    assert_eq!(next, total);
                    let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                    assert!(hi - lo <= 1, "balanced to one batch: {sizes:?}");
                }
            }
        }
    }
}
