//! A run's output folder as a unit: per-batch atomic commits of the summary and chain
//! parts, and an advisory lock against two runs writing one folder (the protocol is
//! described in the crate docs, *Commits and the lock*).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CatalogError, Result};
use crate::results::{ResultSchema, ResultTable, ResultsWriter, TableFormat, list_parts, part_ids};

/// Folder of the per-batch commit markers inside an output folder.
pub const COMMIT_DIR: &str = "commits";
/// Folder of the chain parts inside an output folder.
pub const CHAINS_DIR: &str = "chains";
/// The lock file of an output folder.
pub const LOCK_FILE: &str = ".popcosmos.lock";

/// Testing only: abort the process (as a kill would) right after the N-th rename (1-based)
/// that [`RunOutput::commit_batch`] performs in this process.
pub const FAILPOINT_ENV: &str = "POPCOSMOS_FAILPOINT_COMMIT_RENAME";

/// The marker of one committed batch (`commits/batch-BBBBBBBBBB.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCommit {
    /// Global batch index (seeds the batch's random stream).
    pub batch: u64,
    /// Galaxies in the batch (rows of the summary part).
    pub galaxies: usize,
    /// Summary part file name, relative to the output folder.
    pub summary_part: String,
    /// Chain part, relative to the output folder (`chains/part-NNNNN.ext`), if chains are
    /// written and the batch kept any draw.
    pub chain_part: Option<String>,
}

fn marker_name(batch: u64) -> String {
    format!("batch-{batch:010}.json")
}

fn is_marker_name(name: &str) -> bool {
    name.strip_prefix("batch-")
        .and_then(|r| r.strip_suffix(".json"))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

fn rel_name(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Read every commit marker of `dir` (empty if there is no `commits/` folder).
pub fn read_commits(dir: impl AsRef<Path>) -> Result<Vec<(PathBuf, BatchCommit)>> {
    let cdir = dir.as_ref().join(COMMIT_DIR);
    if !cdir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(&cdir).map_err(|e| CatalogError::io(&cdir, e))? {
        let path = entry.map_err(|e| CatalogError::io(&cdir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !is_marker_name(name) {
            continue;
        }
        let text = fs::read_to_string(&path).map_err(|e| CatalogError::io(&path, e))?;
        let c: BatchCommit = serde_json::from_str(&text)
            .map_err(|e| CatalogError::format(&path, format!("not a batch commit marker: {e}")))?;
        out.push((path, c));
    }
    out.sort_by_key(|(_, c)| c.batch);
    Ok(out)
}

/// What [`check_commits`] found in an output folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Whether the folder has a `commits/` folder at all (outputs of older versions do not).
    pub has_commits: bool,
    /// Committed batches.
    pub batches: usize,
    /// Part files (relative paths) that no marker names: a batch interrupted mid-commit.
    pub uncommitted_parts: Vec<String>,
    /// Markers whose parts are missing (relative paths of the markers).
    pub broken_markers: Vec<String>,
}

impl CommitReport {
    /// True when every part is committed and every marker complete.
    pub fn is_clean(&self) -> bool {
        self.uncommitted_parts.is_empty() && self.broken_markers.is_empty()
    }

    /// One line describing the problems (empty when clean).
    pub fn problems(&self) -> String {
        let mut p = Vec::new();
        if !self.uncommitted_parts.is_empty() {
            p.push(format!(
                "uncommitted part(s) of an interrupted batch: {}",
                self.uncommitted_parts.join(", ")
            ));
        }
        if !self.broken_markers.is_empty() {
            p.push(format!(
                "commit marker(s) whose parts are missing: {}",
                self.broken_markers.join(", ")
            ));
        }
        p.join("; ")
    }
}

/// Compare the parts of `dir` (and `dir/chains`) with its commit markers, changing nothing.
pub fn check_commits(dir: impl AsRef<Path>) -> Result<CommitReport> {
    let dir = dir.as_ref();
    let commits = read_commits(dir)?;
    let mut named: HashSet<String> = HashSet::new();
    let mut report = CommitReport {
        has_commits: dir.join(COMMIT_DIR).is_dir(),
        ..Default::default()
    };
    for (path, c) in &commits {
        let parts: Vec<&String> = std::iter::once(&c.summary_part)
            .chain(c.chain_part.as_ref())
            .collect();
        if parts.iter().all(|p| dir.join(p).is_file()) {
            report.batches += 1;
            named.extend(parts.into_iter().cloned());
        } else {
            report.broken_markers.push(rel_name(dir, path));
        }
    }
    for part in list_parts(dir)?
        .into_iter()
        .chain(list_parts(dir.join(CHAINS_DIR))?)
    {
        let rel = rel_name(dir, &part);
        if !named.contains(&rel) {
            report.uncommitted_parts.push(rel);
        }
    }
    Ok(report)
}

/// What [`RunOutput::open`] kept and removed.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Galaxy ids of committed batches (their batches are done).
    pub done_ids: HashSet<String>,
    /// Global indices of committed batches.
    pub batches: BTreeSet<u64>,
    /// Files deleted: uncommitted parts and broken markers (relative paths).
    pub removed: Vec<String>,
}

/// The summary and chain writers of one output folder, committed batch by batch.
#[derive(Debug)]
pub struct RunOutput {
    dir: PathBuf,
    summary: ResultsWriter,
    chains: Option<ResultsWriter>,
    renames: usize,
    failpoint: Option<usize>,
}

impl RunOutput {
    /// Open `dir` for writing. Without `resume` a folder holding parts (or chain parts) is
    /// refused. With `resume`, uncommitted parts and broken markers are deleted (see the
    /// crate docs) and the committed batches returned; a folder with parts but no
    /// `commits/` folder (written by an older version) is refused, since which of its
    /// batches are complete cannot be told.
    pub fn open(
        dir: impl AsRef<Path>,
        schema: ResultSchema,
        format: TableFormat,
        chains: bool,
        resume: bool,
    ) -> Result<(Self, Recovered)> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| CatalogError::io(&dir, e))?;
        let mut recovered = Recovered::default();
        if resume {
            let has_parts =
                !list_parts(&dir)?.is_empty() || !list_parts(dir.join(CHAINS_DIR))?.is_empty();
            if has_parts && !dir.join(COMMIT_DIR).is_dir() {
                return Err(CatalogError::format(
                    &dir,
                    "holds result parts without commit markers (commits/), written by an older \
                     popcosmos; which batches are complete cannot be told, so it cannot be resumed \
                     — start a fresh output folder",
                ));
            }
            let report = check_commits(&dir)?;
            let mut doomed: Vec<PathBuf> = Vec::new();
            let commits = read_commits(&dir)?;
            for (path, c) in &commits {
                let rel = rel_name(&dir, path);
                if report.broken_markers.contains(&rel) {
                    // Its parts are no longer named by anything: delete marker and parts.
                    doomed.push(path.clone());
                    for p in std::iter::once(&c.summary_part).chain(c.chain_part.as_ref()) {
                        let p = dir.join(p);
                        if p.exists() {
                            doomed.push(p);
                        }
                    }
                    continue;
                }
                recovered.batches.insert(c.batch);
                recovered
                    .done_ids
                    .extend(part_ids(dir.join(&c.summary_part))?);
            }
            // (a broken marker's parts are also uncommitted parts: remove each file once)
            doomed.extend(report.uncommitted_parts.iter().map(|p| dir.join(p)));
            doomed.sort();
            doomed.dedup();
            for p in doomed {
                fs::remove_file(&p).map_err(|e| CatalogError::io(&p, e))?;
                recovered.removed.push(rel_name(&dir, &p));
            }
        }
        let summary = ResultsWriter::create(&dir, schema, format, resume)?;
        let chains = if chains {
            Some(ResultsWriter::create(
                dir.join(CHAINS_DIR),
                ResultSchema::chains(),
                format,
                resume,
            )?)
        } else {
            None
        };
        let cdir = dir.join(COMMIT_DIR);
        fs::create_dir_all(&cdir).map_err(|e| CatalogError::io(&cdir, e))?;
        for entry in fs::read_dir(&cdir).map_err(|e| CatalogError::io(&cdir, e))? {
            let path = entry.map_err(|e| CatalogError::io(&cdir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(".batch-") && name.ends_with(".tmp") {
                fs::remove_file(&path).map_err(|e| CatalogError::io(&path, e))?;
            }
        }
        if !resume {
            // A fresh run: markers of an earlier run without parts mean nothing.
            for (path, _) in read_commits(&dir)? {
                fs::remove_file(&path).map_err(|e| CatalogError::io(&path, e))?;
            }
        }
        let failpoint = std::env::var(FAILPOINT_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok());
        Ok((
            Self {
                dir,
                summary,
                chains,
                renames: 0,
                failpoint,
            },
            recovered,
        ))
    }

    /// The output folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn renamed(&mut self) {
        self.renames += 1;
        if self.failpoint == Some(self.renames) {
            eprintln!("{FAILPOINT_ENV}: aborting after rename {}", self.renames);
            std::process::abort();
        }
    }

    /// Write batch `batch`'s summary rows and (when the folder has chains) its chain rows,
    /// then its commit marker: the batch counts as done only once the marker is on disk.
    pub fn commit_batch(
        &mut self,
        batch: u64,
        summary: &ResultTable,
        chains: Option<&ResultTable>,
    ) -> Result<()> {
        let Some(summary_path) = self.summary.write_chunk(summary)? else {
            return Ok(()); // an empty batch has nothing to commit
        };
        self.renamed();
        let chain_path = match (self.chains.as_mut(), chains) {
            (Some(w), Some(rows)) => w.write_chunk(rows)?,
            (Some(_), None) => {
                return Err(CatalogError::format(
                    &self.dir,
                    format!("batch {batch}: chain rows missing for a folder with chains"),
                ));
            }
            _ => None,
        };
        if chain_path.is_some() {
            self.renamed();
        }
        let marker = BatchCommit {
            batch,
            galaxies: summary.len(),
            summary_part: rel_name(&self.dir, &summary_path),
            chain_part: chain_path.map(|p| rel_name(&self.dir, &p)),
        };
        let cdir = self.dir.join(COMMIT_DIR);
        let name = marker_name(batch);
        let path = cdir.join(&name);
        let tmp = cdir.join(format!(".{name}.tmp"));
        let text =
            serde_json::to_string_pretty(&marker).map_err(|e| CatalogError::format(&path, e))?;
        let mut f = File::create(&tmp).map_err(|e| CatalogError::io(&tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| CatalogError::io(&tmp, e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| CatalogError::io(&path, e))?;
        if let Ok(d) = File::open(&cdir) {
            let _ = d.sync_all();
        }
        self.renamed();
        Ok(())
    }
}

/// Committed galaxy counts per batch, for reports.
pub fn committed_batches(dir: impl AsRef<Path>) -> Result<BTreeMap<u64, usize>> {
    Ok(read_commits(dir)?
        .into_iter()
        .map(|(_, c)| (c.batch, c.galaxies))
        .collect())
}

/// An exclusive advisory lock on an output folder, held until dropped (or the process ends).
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
    path: PathBuf,
}

impl OutputLock {
    /// Lock `dir` (created if missing) for one run. Fails at once, naming the folder and the
    /// holder's pid, when another process holds the lock.
    pub fn acquire(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|e| CatalogError::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| CatalogError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("another process ({holder})")
                };
                return Err(CatalogError::format(
                    dir,
                    format!(
                        "output folder is in use by {who}, which holds {}; wait for that run to \
                         finish or choose another output folder",
                        path.display()
                    ),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(CatalogError::io(&path, e)),
        }
        // Record the holder for the message above (the lock, not this text, is what counts).
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "pid {}", std::process::id());
        let _ = file.flush();
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
