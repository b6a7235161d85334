//! The run record `run.json` of an output folder: one typed definition, written by
//! [`crate::Pipeline::run`] and read back by `--resume`, [`crate::shard::merge_shards`] and
//! the CLI.
//!
//! `--resume` compares the manifest with the record ([`resume_mismatches`]): every manifest
//! setting except those in [`RESUME_FREE_KEYS`] (where the output lives, which device runs
//! it) changes the results, so a resume whose settings differ is refused, naming each key.

use std::path::Path;

use popcosmos_api::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::pipeline::RunSummary;

/// File name of the record inside an output folder.
pub const RECORD_FILE: &str = "run.json";

/// Manifest keys a resumed run may change: where the output folder is and which device
/// samples. Every other key affects the results.
pub const RESUME_FREE_KEYS: [&str; 2] = ["output.dir", "device"];

/// `run.json` of a run (or of one shard).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Version of popcosmos that wrote the record.
    pub popcosmos_version: String,
    /// The run's manifest (paths resolved).
    pub manifest: Manifest,
    /// The master seed (`manifest.seed`).
    pub seed: u64,
    /// The device that sampled, as its debug text.
    pub device: String,
    /// Start of the invocation that wrote the record, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Counts and timings so far.
    pub summary: RecordSummary,
    /// Wall-clock seconds of each batch computed by the latest invocation, in order.
    #[serde(default)]
    pub batch_seconds: Vec<f64>,
    /// Every galaxy of the run (or shard) has committed results.
    pub complete: bool,
}

/// [`RunSummary`] as stored in the record.
pub type RecordSummary = RunSummary;

impl RunRecord {
    /// Read `path` (a `run.json`); errors name the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Format {
            file: path.display().to_string(),
            message: format!("not a popcosmos run record: {e}"),
        })
    }

    /// Write `dir/run.json` atomically (temporary file, fsync, rename).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(RECORD_FILE);
        let tmp = dir.join(format!(".{RECORD_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Format {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        Ok(())
    }

    /// Galaxies done (computed in the last attempt or found done by it).
    pub fn galaxies_done(&self) -> usize {
        self.summary.galaxies_computed + self.summary.galaxies_skipped
    }
}

fn to_value(m: &Manifest) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap_or(serde_json::Value::Null);
    for key in RESUME_FREE_KEYS {
        let mut node = &mut v;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            let Some(obj) = node.as_object_mut() else {
                break;
            };
            if i + 1 == parts.len() {
                obj.remove(*p);
                break;
            }
            match obj.get_mut(*p) {
                Some(next) => node = next,
                None => break,
            }
        }
    }
    v
}

fn short(v: Option<&serde_json::Value>) -> String {
    match v {
        None => "absent".into(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 60 {
                format!("{}…", s.chars().take(60).collect::<String>())
            } else {
                s
            }
        }
    }
}

fn diff(
    path: &str,
    a: Option<&serde_json::Value>,
    b: Option<&serde_json::Value>,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(&p, x.get(k), y.get(k), out);
            }
        }
        (x, y) if x == y => {}
        (x, y) => out.push(format!(
            "{path} (run.json: {}, manifest: {})",
            short(x),
            short(y)
        )),
    }
}

/// Result-affecting manifest keys (dotted paths, with both values) whose values differ
/// between the stored and the current manifest; empty when a resume is safe.
pub fn resume_mismatches(stored: &Manifest, current: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    diff(
        "",
        Some(&to_value(stored)),
        Some(&to_value(current)),
        &mut out,
    );
    out
}

/// Before `--resume` into `dir`: the stored record must exist when results do, and its
/// manifest must agree with `current` on every result-affecting key.
pub fn check_resume(dir: &Path, current: &Manifest) -> Result<()> {
    let path = dir.join(RECORD_FILE);
    if !path.exists() {
        let has_parts = !popcosmos_catalog::list_parts(dir)?.is_empty();
        if has_parts {
            return Err(Error::Invalid(format!(
                "--resume: {} holds results but no {RECORD_FILE}, so the settings they were made \
                 with cannot be checked; start a fresh output.dir",
                dir.display()
            )));
        }
        return Ok(());
    }
    let record = RunRecord::load(&path)?;
    let differ = resume_mismatches(&record.manifest, current);
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "--resume: the manifest differs from the run in {} ({}) in {} result-affecting \
         setting(s): {}; resuming would mix results made with different settings — restore \
         those values, or run into a new output.dir",
        dir.display(),
        path.display(),
        differ.len(),
        differ.join("; ")
    )))
}
