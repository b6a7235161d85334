//! Per-batch commits of summary + chain parts, resume after a crash between the renames,
//! and the output-folder lock.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use popcosmos_catalog::*;
use popcosmos_catalog::{COMMIT_DIR, LOCK_FILE};

fn schema() -> ResultSchema {
    ResultSchema::new(vec!["z_med".into()])
}

fn summary(ids: &[&str]) -> ResultTable {
    ResultTable {
        ids: ids.iter().map(|s| s.to_string()).collect(),
        columns: BTreeMap::from([("z_med".to_string(), vec![1.0; ids.len()])]),
        ints: BTreeMap::new(),
        strings: BTreeMap::from([("flags".to_string(), vec![String::new(); ids.len()])]),
    }
}

/// Two draws per galaxy.
fn chains(ids: &[&str]) -> ResultTable {
    let schema = ResultSchema::chains();
    let n = ids.len() * 2;
    let mut t = ResultTable {
        ids: ids
            .iter()
            .flat_map(|s| [s.to_string(), s.to_string()])
            .collect(),
        ..Default::default()
    };
    for c in &schema.columns {
        t.columns.insert(c.clone(), vec![0.5; n]);
    }
    t.ints.insert("step".into(), vec![0; n]);
    t.ints
        .insert("walker".into(), (0..n as i64).map(|i| i % 2).collect());
    t
}

fn counts(ids: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for id in ids {
        *m.entry(id.clone()).or_default() += 1;
    }
    m
}

fn open(dir: &Path, resume: bool) -> (RunOutput, Recovered) {
    RunOutput::open(dir, schema(), TableFormat::Parquet, true, resume).unwrap()
}

/// Batch 0 committed, then batch 1 interrupted after `renames` of its renames
/// (1: summary part only; 2: summary and chain parts, no marker).
fn half_committed(dir: &Path, renames: usize) {
    let (mut out, _) = open(dir, false);
    out.commit_batch(0, &summary(&["a", "b"]), Some(&chains(&["a", "b"])))
        .unwrap();
    drop(out);
    // The state a kill between the renames leaves: parts written by the plain writers.
    let mut w = ResultsWriter::create(dir, schema(), TableFormat::Parquet, true).unwrap();
    w.write_chunk(&summary(&["c", "d"])).unwrap();
    if renames >= 2 {
        let mut w = ResultsWriter::create(
            dir.join("chains"),
            ResultSchema::chains(),
            TableFormat::Parquet,
            true,
        )
        .unwrap();
        w.write_chunk(&chains(&["c", "d"])).unwrap();
    }
}

#[test]
fn resume_recomputes_a_batch_interrupted_between_its_part_renames() {
    for renames in [1, 2] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        half_committed(&dir, renames);
        let report = check_commits(&dir).unwrap();
        assert_eq!(report.batches, 1);
        assert_eq!(report.uncommitted_parts.len(), renames, "{report:?}");
        assert!(!report.is_clean());

        let (mut out, rec) = open(&dir, true);
        // Only the committed batch counts as done; the stray parts are gone.
        assert_eq!(
            rec.done_ids,
            ["a", "b"].iter().map(|s| s.to_string()).collect()
        );
        assert_eq!(rec.batches.iter().copied().collect::<Vec<_>>(), vec![0]);
        assert_eq!(rec.removed.len(), renames, "{:?}", rec.removed);
        out.commit_batch(1, &summary(&["c", "d"]), Some(&chains(&["c", "d"])))
            .unwrap();
        drop(out);

        assert!(check_commits(&dir).unwrap().is_clean());
        let s = read_results(&dir).unwrap();
        assert_eq!(
            counts(&s.ids),
            HashMap::from([
                ("a".into(), 1),
                ("b".into(), 1),
                ("c".into(), 1),
                ("d".into(), 1)
            ])
        );
        let c = read_results(dir.join("chains")).unwrap();
        assert_eq!(
            counts(&c.ids),
            HashMap::from([
                ("a".into(), 2),
                ("b".into(), 2),
                ("c".into(), 2),
                ("d".into(), 2)
            ])
        );
    }
}

#[test]
fn a_marker_whose_parts_are_missing_is_not_a_finished_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let (mut out, _) = open(&dir, false);
    out.commit_batch(0, &summary(&["a"]), Some(&chains(&["a"])))
        .unwrap();
    out.commit_batch(1, &summary(&["b"]), Some(&chains(&["b"])))
        .unwrap();
    drop(out);
    fs::remove_file(dir.join("chains/part-00001.parquet")).unwrap();
    let report = check_commits(&dir).unwrap();
    assert_eq!(report.broken_markers, vec!["commits/batch-0000000001.json"]);
    let (_, rec) = open(&dir, true);
    assert_eq!(rec.done_ids, ["a".to_string()].into_iter().collect());
    assert!(
        !dir.join("part-00001.parquet").exists(),
        "stray summary removed"
    );
    assert!(!dir.join(COMMIT_DIR).join("batch-0000000001.json").exists());
}

#[test]
fn parts_without_commit_markers_are_not_resumed_and_fresh_runs_refuse_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("old");
    let mut w = ResultsWriter::create(&dir, schema(), TableFormat::Parquet, false).unwrap();
    w.write_chunk(&summary(&["a"])).unwrap();
    let e = RunOutput::open(&dir, schema(), TableFormat::Parquet, true, true).unwrap_err();
    assert!(e.to_string().contains("without commit markers"), "{e}");
    assert!(dir.join("part-00000.parquet").exists(), "nothing deleted");
    let e = RunOutput::open(&dir, schema(), TableFormat::Parquet, true, false).unwrap_err();
    assert!(e.to_string().contains("resume"), "{e}");
}

#[test]
fn output_lock_refuses_a_second_holder_and_is_released_on_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let lock = OutputLock::acquire(&dir).unwrap();
    assert!(dir.join(LOCK_FILE).exists());
    let e = OutputLock::acquire(&dir).unwrap_err().to_string();
    assert!(e.contains("in use by another process"), "{e}");
    assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
    drop(lock);
    // A lock file left behind (as by a killed run) does not block the next run.
    assert!(dir.join(LOCK_FILE).exists());
    let _again = OutputLock::acquire(&dir).unwrap();
}
