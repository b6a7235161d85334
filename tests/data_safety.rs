//! Data safety: `demo --output` never deletes user files, batches commit their
//! summary and chain parts together (kill at any rename, then resume), `reweight` refuses
//! incomplete chains.

mod common;
use common::*;

use std::collections::HashMap;
use std::path::Path;

fn read(dir: &Path) -> popcosmos_catalog::ResultTable {
    popcosmos_catalog::read_results(dir).unwrap()
}

fn id_counts(ids: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for id in ids {
        *m.entry(id.clone()).or_default() += 1;
    }
    m
}

/// The tiny manifest with chains (every stored draw: 32 walkers × 8 kept steps).
fn chains_manifest(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let cat = repo().join("tests/data/cosmos_tiny.csv"); // 6 galaxies → 3 batches of 2
    let out = dir.join(name);
    let m = dir.join(format!("{name}.yaml"));
    let text = tiny_manifest(&cat, &out, "").replace(
        "output: {dir: ",
        "output: {chains: true, chain_thin: 1, dir: ",
    );
    std::fs::write(&m, text).unwrap();
    (m, out)
}

#[test]
fn demo_refuses_a_non_empty_folder_it_did_not_create_and_deletes_nothing() {
    let dir = tempdir("demo-foreign");
    let mine = dir.join("mydir");
    std::fs::create_dir_all(mine.join("sub")).unwrap();
    std::fs::write(mine.join("notes.txt"), "x").unwrap();
    std::fs::write(mine.join("sub/data.csv"), "a,b\n1,2\n").unwrap();
    let o = run(&["demo", "--output", mine.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("not a previous popcosmos output") && e.contains("nothing was deleted"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "x"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("sub/data.csv")).unwrap(),
        "a,b\n1,2\n"
    );
    assert_eq!(
        std::fs::read_dir(&mine).unwrap().count(),
        2,
        "nothing added"
    );
}

/// Crash state of a batch whose summary part was renamed but whose chain part was not: the
/// last batch's chain part (and its commit marker, written after it) removed, the record
/// not complete. `reweight` must refuse; `--resume` must recompute the batch.
#[test]
fn resume_after_a_kill_between_the_summary_and_chain_renames_restores_the_chains() {
    let dir = tempdir("half-commit");
    let (m_full, full_out) = chains_manifest(&dir, "full");
    let o = run(&["run", m_full.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let full = read(&full_out);
    let full_chains = read(&full_out.join("chains"));

    let (m, out) = chains_manifest(&dir, "half");
    let o = run(&["run", m.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let last_chain = popcosmos_catalog::list_parts(out.join("chains"))
        .unwrap()
        .pop()
        .unwrap();
    std::fs::remove_file(&last_chain).unwrap();
    let _ = std::fs::remove_file(out.join("commits/batch-0000000002.json"));
    let rec_path = out.join("run.json");
    let mut rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rec_path).unwrap()).unwrap();
    rec["complete"] = serde_json::Value::Bool(false);
    std::fs::write(&rec_path, rec.to_string()).unwrap();

    // reweight refuses the incomplete chains, even when the record is (wrongly) complete.
    let swapped = dir.join("swapped.parquet");
    let reweight = |out: &Path| {
        run(&[
            "reweight",
            out.to_str().unwrap(),
            "--to",
            "uniform",
            "-o",
            swapped.to_str().unwrap(),
        ])
    };
    let o = reweight(&out);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not complete"), "{}", stderr(&o));
    rec["complete"] = serde_json::Value::Bool(true);
    std::fs::write(&rec_path, rec.to_string()).unwrap();
    let o = reweight(&out);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("chains are incomplete"),
        "{}",
        stderr(&o)
    );
    assert!(!swapped.exists());
    rec["complete"] = serde_json::Value::Bool(false);
    std::fs::write(&rec_path, rec.to_string()).unwrap();

    let o = run(&["run", m.to_str().unwrap(), "--resume", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_identical(&read(&out), &full);
    let chains = read(&out.join("chains"));
    assert_eq!(id_counts(&chains.ids), id_counts(&full_chains.ids));
    assert!(id_counts(&chains.ids).values().all(|n| *n == 32 * 8));
    assert!(popcosmos_catalog::check_commits(&out).unwrap().is_clean());
}

/// Kill the run right after each rename of the batch commits (summary part, chain part,
/// commit marker of each of the 3 batches), resume, and check every galaxy and its chains
/// are present exactly once and equal to an uninterrupted run.
#[test]
fn kill_at_every_commit_rename_then_resume_gives_every_galaxy_and_chain_once() {
    let dir = tempdir("kill-every-rename");
    let (m_full, full_out) = chains_manifest(&dir, "full");
    let o = run(&["run", m_full.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let full = read(&full_out);
    let full_chains = read(&full_out.join("chains"));
    for n in 1..=9 {
        let (m, out) = chains_manifest(&dir, &format!("kill{n}"));
        let o = cli()
            .args(["run", m.to_str().unwrap(), "--quiet"])
            .env(popcosmos_catalog::FAILPOINT_ENV, n.to_string())
            .output()
            .unwrap();
        assert!(!o.status.success(), "rename {n}: the run was killed");
        let rec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
        assert_eq!(rec["complete"], false, "rename {n}");
        let o = run(&["run", m.to_str().unwrap(), "--resume", "--quiet"]);
        assert!(o.status.success(), "rename {n}: {}", stderr(&o));
        assert_identical(&read(&out), &full);
        let chains = read(&out.join("chains"));
        assert_eq!(
            id_counts(&chains.ids),
            id_counts(&full_chains.ids),
            "rename {n}"
        );
        assert!(
            popcosmos_catalog::check_commits(&out).unwrap().is_clean(),
            "rename {n}"
        );
    }
}

/// A results file for the galaxies of `tests/data/cosmos_tiny.csv` (z_p50 = z_spec + 0.01)
/// and a copy of its id/zspec columns, optionally with every zspec cell empty.
fn results_and_truth(dir: &Path, empty_truth: bool) -> (std::path::PathBuf, std::path::PathBuf) {
    let cat = repo().join("tests/data/cosmos_tiny.csv");
    let ids = popcosmos_catalog::read_ids(&cat, "id").unwrap();
    let zs = popcosmos_catalog::read_column_f64(&cat, "zspec").unwrap();
    let cols = ["z_p2.5", "z_p16", "z_p50", "z_p84", "z_p97.5"];
    let mut t = popcosmos_catalog::ResultTable {
        ids: ids.clone(),
        ..Default::default()
    };
    for (k, c) in cols.iter().enumerate() {
        let dz = (k as f64 - 2.0) * 0.1 + 0.01;
        t.columns
            .insert(c.to_string(), zs.iter().map(|z| z + dz).collect());
    }
    t.strings
        .insert("flags".into(), vec![String::new(); ids.len()]);
    let schema = popcosmos_catalog::ResultSchema::new(cols.iter().map(|c| c.to_string()).collect());
    let results = dir.join("results.parquet");
    popcosmos_catalog::write_table(&results, &schema, &t).unwrap();
    let truth = dir.join("truth.csv");
    let mut text = String::from("id,zspec\n");
    for (id, z) in ids.iter().zip(&zs) {
        if empty_truth {
            text.push_str(&format!("{id},\n"));
        } else {
            text.push_str(&format!("{id},{z}\n"));
        }
    }
    std::fs::write(&truth, text).unwrap();
    (results, truth)
}

#[test]
fn evaluate_into_a_closed_pipe_exits_quietly_and_still_writes_its_json() {
    let dir = tempdir("evaluate-pipe");
    let (results, truth) = results_and_truth(&dir, false);
    let json = dir.join("metrics.json");
    let mut child = cli()
        .args([
            "evaluate",
            results.to_str().unwrap(),
            "--truth",
            &format!("{}:zspec", truth.display()),
            "--json",
            json.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before evaluate writes (as `| head -0` would).
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert!(!e.contains("panicked") && !e.contains("Broken pipe"), "{e}");
    assert!(o.status.success(), "{:?} {e}", o.status);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["n"], 6);
}

#[test]
fn evaluate_refuses_an_all_empty_truth_column_and_names_a_missing_results_path() {
    let dir = tempdir("evaluate-errors");
    let (results, truth) = results_and_truth(&dir, true);
    let json = dir.join("metrics.json");
    let truth_arg = format!("{}:zspec", truth.display());
    let o = run(&[
        "evaluate",
        results.to_str().unwrap(),
        "--truth",
        &truth_arg,
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "all-empty truth is an error");
    assert!(stderr(&o).contains("no finite value"), "{}", stderr(&o));
    assert!(!json.exists(), "no NaN metrics written");

    let missing = dir.join("no-such-run");
    let o = run(&["evaluate", missing.to_str().unwrap(), "--truth", &truth_arg]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("no such results folder or file"), "{e}");
    assert!(e.contains("no-such-run"), "{e}");
    assert!(!e.contains("format:"), "{e}");
}

#[test]
fn resume_with_changed_result_settings_is_refused_naming_the_keys() {
    let dir = tempdir("resume-settings");
    let cat = repo().join("tests/data/cosmos_tiny.csv");
    let out = dir.join("out");
    let m = dir.join("m.yaml");
    let manifest = tiny_manifest(&cat, &out, "");
    std::fs::write(&m, &manifest).unwrap();
    let o = run(&["run", m.to_str().unwrap(), "--quiet", "--max-batches", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&out).len(), 2);
    let changed = manifest
        .replace("galaxies_per_batch: 2", "galaxies_per_batch: 3")
        .replace("seed: 7", "seed: 8")
        .replace("steps: 16", "steps: 18");
    std::fs::write(&m, &changed).unwrap();
    let o = run(&["run", m.to_str().unwrap(), "--resume", "--quiet"]);
    assert!(
        !o.status.success(),
        "a resume with other settings is refused"
    );
    let e = stderr(&o);
    for key in ["galaxies_per_batch", "seed", "sampler.steps"] {
        assert!(e.contains(key), "{key}: {e}");
    }
    assert!(
        !e.contains("catalogue"),
        "unchanged keys are not named: {e}"
    );
    assert_eq!(read(&out).len(), 2, "nothing written");
    // The original settings resume; every galaxy once.
    std::fs::write(&m, &manifest).unwrap();
    let o = run(&["run", m.to_str().unwrap(), "--resume", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = read(&out);
    assert_eq!(t.len(), 6);
    assert!(id_counts(&t.ids).values().all(|n| *n == 1));
    let rec = popcosmos_inference::RunRecord::load(&out.join("run.json")).unwrap();
    assert!(rec.complete);
    assert_eq!(rec.manifest.galaxies_per_batch, 2);
}

#[test]
fn a_second_run_on_a_locked_output_folder_is_refused_and_writes_nothing() {
    let dir = tempdir("lock");
    let cat = repo().join("tests/data/cosmos_tiny.csv");
    let out = dir.join("out");
    let m = dir.join("m.yaml");
    std::fs::write(&m, tiny_manifest(&cat, &out, "")).unwrap();
    // Another run holds the folder.
    let lock = popcosmos_catalog::OutputLock::acquire(&out).unwrap();
    for args in [
        vec!["run", m.to_str().unwrap(), "--quiet"],
        vec!["run", m.to_str().unwrap(), "--resume", "--quiet"],
    ] {
        let o = run(&args);
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(
            e.contains("output.dir") && e.contains("in use by another process"),
            "{e}"
        );
        assert!(!out.join("run.json").exists());
        assert!(popcosmos_catalog::list_parts(&out).unwrap().is_empty());
    }
    // The holder finishes (or dies): its lock file stays behind and does not block.
    drop(lock);
    let o = run(&["run", m.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&out).len(), 6);
}
