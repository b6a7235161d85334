//! Sharded runs (`run --shard I/N`) and `merge`: bit-identical to an unsharded run, every
//! galaxy exactly once, and merge refusing duplicates, gaps and unfinished shards.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn read(dir: &Path) -> popcosmos_catalog::ResultTable {
    popcosmos_catalog::read_results(dir).unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn merge(out: &Path) -> std::process::Output {
    run(&["merge", out.to_str().unwrap()])
}

/// Write [`tiny_manifest`] over the 6-galaxy test catalogue to `dir/{stem}.yaml`, with
/// output folder `dir/{stem}`; returns (manifest, output folder).
fn write_tiny(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let (m, out) = (dir.join(format!("{stem}.yaml")), dir.join(stem));
    let cat = repo().join("tests/data/cosmos_tiny.csv");
    std::fs::write(&m, tiny_manifest(&cat, &out, "")).unwrap();
    (m, out)
}

#[test]
fn four_shards_merge_to_the_unsharded_run_and_merge_refuses_duplicates_and_gaps() {
    let dir = tempdir("shard");
    // 6 real galaxies in batches of 2 → 3 batches; 4 shards get 0, 1, 1 and 1 batches.
    let (m_single, single) = write_tiny(&dir, "single");
    let o = run(&["run", m_single.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let (m, out) = write_tiny(&dir, "sharded");
    // Shards in reverse order: the partition must not depend on which ran first.
    for i in (0..4).rev() {
        let spec = format!("{i}/4");
        let o = run(&["run", m.to_str().unwrap(), "--shard", &spec, "--quiet"]);
        assert!(o.status.success(), "shard {spec}: {}", stderr(&o));
    }
    let shard_dir = |i: u64| out.join(format!("shard-{i:05}-of-00004"));
    // Shard 0 is empty but recorded as complete; the others hold rows 0-1, 2-3, 4-5.
    assert!(
        popcosmos_catalog::list_parts(shard_dir(0))
            .unwrap()
            .is_empty()
    );
    for (i, rows) in [(0u64, 0..0), (1, 0..2), (2, 2..4), (3, 4..6)] {
        let rec = json(&shard_dir(i).join("run.json"));
        assert_eq!(rec["complete"], true);
        assert_eq!(rec["summary"]["shard"]["index"], i);
        assert_eq!(rec["summary"]["shard"]["first_row"], rows.start);
        assert_eq!(rec["summary"]["shard"]["end_row"], rows.end);
        assert_eq!(rec["summary"]["galaxies_total"], rows.end - rows.start);
    }
    // Before merging, the output folder itself holds no results.
    assert!(popcosmos_catalog::list_parts(&out).unwrap().is_empty());

    let o = merge(&out);
    assert!(o.status.success(), "{}", stderr(&o));
    let full = read(&single);
    let merged = read(&out);
    assert_eq!(full.len(), 6);
    let mut ids = merged.ids.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every galaxy exactly once");
    assert_identical(&merged, &full);
    assert_eq!(merged.ints["shard"], vec![1, 1, 2, 2, 3, 3]);
    let rec = json(&out.join("run.json"));
    assert_eq!(rec["merged"], true);
    assert_eq!(rec["complete"], true);
    assert_eq!(rec["shard_count"], 4);
    assert_eq!(rec["checked_against_catalogue"], true);
    assert_eq!(rec["summary"]["galaxies_total"], 6);
    assert_eq!(rec["shards"].as_array().unwrap().len(), 4);

    let parts = |i: u64| popcosmos_catalog::list_parts(shard_dir(i)).unwrap();
    let refused = |needles: &[&str]| {
        let o = merge(&out);
        assert!(!o.status.success(), "merge should fail");
        let e = stderr(&o);
        for n in needles {
            assert!(e.contains(n), "'{n}' not in: {e}");
        }
    };
    let id_of = |i: u64| popcosmos_catalog::part_ids(&parts(i)[0]).unwrap()[0].clone();

    // Duplicate inside a shard (a part written twice) and across shards.
    let twice = shard_dir(2).join("part-00042.parquet");
    std::fs::copy(&parts(2)[0], &twice).unwrap();
    refused(&[
        "duplicate",
        &id_of(2),
        "2/4 (part-00000.parquet)",
        "2/4 (part-00042.parquet)",
    ]);
    std::fs::rename(&twice, shard_dir(3).join("part-00042.parquet")).unwrap();
    refused(&["duplicate", &id_of(2), "shard 2/4", "shard 3/4"]);
    std::fs::remove_file(shard_dir(3).join("part-00042.parquet")).unwrap();

    // Gaps: a lost part (the missing galaxy is named), a shard never run, a shard unfinished.
    let lost = parts(3)[0].clone();
    let missing_id = id_of(3);
    let aside = dir.join("lost.parquet");
    std::fs::rename(&lost, &aside).unwrap();
    refused(&["gap", "shard 3/4", &missing_id]);
    std::fs::rename(&aside, &lost).unwrap();
    let moved = dir.join("shard1-aside");
    std::fs::rename(shard_dir(1), &moved).unwrap();
    refused(&["gap", "shard 1/4", "missing"]);
    std::fs::rename(&moved, shard_dir(1)).unwrap();
    let rec_path = shard_dir(3).join("run.json");
    let good = std::fs::read_to_string(&rec_path).unwrap();
    std::fs::write(
        &rec_path,
        good.replace("\"complete\": true", "\"complete\": false"),
    )
    .unwrap();
    refused(&["gap", "shard 3/4", "incomplete", "--resume"]);
    std::fs::write(&rec_path, good).unwrap();
    // A stale shard folder of another partition.
    std::fs::create_dir_all(out.join("shard-00000-of-00003")).unwrap();
    refused(&["different partitions"]);
    std::fs::remove_dir_all(out.join("shard-00000-of-00003")).unwrap();

    // The refused merges left the earlier merge alone; merging again reproduces it.
    assert_identical(&read(&out), &full);
    let o = merge(&out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_identical(&read(&out), &full);
    // A folder holding an unsharded run's results is never overwritten by a merge.
    let o = merge(&single);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no shard folders"), "{}", stderr(&o));
}

#[test]
fn bad_shard_specs_are_rejected_by_the_cli() {
    let (m, _) = write_tiny(&tempdir("shard-bad"), "out");
    for bad in ["4/4", "1", "x/2"] {
        let o = run(&["run", m.to_str().unwrap(), "--shard", bad, "--quiet"]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("0 ≤ I < N"), "{bad}: {}", stderr(&o));
    }
}

#[test]
fn slurm_writes_an_array_script_over_the_manifest() {
    let dir = tempdir("slurm-script");
    let (m, out) = write_tiny(&dir, "out");
    let script = dir.join("job.sbatch");
    // `slurm m.yaml --array 4 --time TIME EXTRA..`
    let slurm = |time: &str, extra: &[&str]| {
        let array = ["slurm", m.to_str().unwrap(), "--array", "4", "--time", time];
        run(&[&array[..], extra].concat())
    };
    let o = slurm("01:00:00", &["-o", script.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = std::fs::read_to_string(&script).unwrap();
    assert!(s.contains("#SBATCH --array=0-3\n") && s.contains("#SBATCH --requeue\n"));
    assert!(!s.contains("gpus"), "CPU manifest asks for no GPU");
    let log = out.join("slurm/%A_%a.log");
    assert!(s.contains(&format!("#SBATCH --output={}\n", log.display())));
    assert!(
        out.join("slurm").is_dir(),
        "log folder exists before sbatch"
    );
    // The task line runs the same binary over the manifest, shard by shard, resuming.
    let m_abs = m.canonicalize().unwrap();
    assert!(s.contains(&format!(
        "run '{}' --shard \"${{shard}}/4\" --resume",
        m_abs.display()
    )));
    let o = slurm("24h", &[]);
    assert!(!o.status.success() && stderr(&o).contains("HH:MM:SS"));
    // The planner needs no manifest.
    let o = run(&["slurm", "--plan", "1e6", "--time", "24:00:00"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("shards (array tasks): 12 of 83400"));
}
