//! Slurm integration: a real one-node Slurm cluster runs a 4-task array over a
//! 2,000-galaxy mock catalogue; one task is killed mid-way and requeued; the merged result
//! must hold every galaxy exactly once and equal a single-process run with the same seed.
//!
//! Needs root and apt (it installs Debian's slurm-wlm and starts slurmctld/slurmd), so it is
//! ignored by default:
//!
//! ```text
//! sudo -E cargo test -p popcosmos-cli --test slurm -- --ignored --nocapture
//! ```
//!
//! The orchestration is `scripts/slurm-integration.sh`; this test runs it with the test
//! build of `popcosmos-cli` and checks what it left behind.

mod common;
use common::*;

use std::path::Path;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
#[ignore = "needs root and apt: installs slurm-wlm and runs slurmctld/slurmd on localhost"]
fn slurm_array_with_a_killed_and_requeued_task_merges_to_the_single_process_run() {
    let work = tempdir("slurm");
    let t = std::time::Instant::now();
    let status = std::process::Command::new("bash")
        .arg(repo().join("scripts/slurm-integration.sh"))
        .arg(&work)
        .env("POPCOSMOS_CLI", env!("CARGO_BIN_EXE_popcosmos-cli"))
        .env("GALAXIES", "2000")
        .env("SHARDS", "4")
        .env("KILL_SHARD", "1")
        .status()
        .expect("run scripts/slurm-integration.sh");
    assert!(status.success(), "slurm-integration.sh failed: {status}");
    println!("slurm integration: {:.1} s", t.elapsed().as_secs_f64());

    let env: std::collections::HashMap<String, String> =
        std::fs::read_to_string(work.join("result.env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    println!("{env:?}");

    // Every catalogue galaxy exactly once, in catalogue order, tagged with its shard.
    let catalogue = popcosmos_catalog::read_ids(work.join("mock.csv"), "id").unwrap();
    assert_eq!(catalogue.len(), 2000);
    let merged = popcosmos_catalog::read_results(work.join("out")).unwrap();
    let mut unique = merged.ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), merged.len(), "no galaxy twice");
    assert_eq!(merged.ids, catalogue, "every galaxy, in catalogue order");
    // 2000 rows in batches of 25 = 80 batches, 20 per shard.
    let expected_shard: Vec<i64> = (0..2000).map(|r| r / 500).collect();
    assert_eq!(merged.ints["shard"], expected_shard);

    // Bit-identical to the single-process run with the same seed.
    let single = popcosmos_catalog::read_results(work.join("single")).unwrap();
    assert_identical(&merged, &single);

    // The killed task really stopped mid-way and its requeued run resumed from its parts.
    let killed_after: usize = env["KILLED_AFTER_PARTS"].parse().unwrap();
    assert!(
        (1..20).contains(&killed_after),
        "killed after {killed_after} of 20 batches"
    );
    let rec = json(&work.join("out/shard-00001-of-00004/run.json"));
    assert_eq!(rec["complete"], true);
    let skipped = rec["summary"]["galaxies_skipped"].as_u64().unwrap();
    let computed = rec["summary"]["galaxies_computed"].as_u64().unwrap();
    assert!(
        skipped >= 25 * killed_after as u64,
        "resume kept the finished batches: {skipped}"
    );
    assert_eq!(skipped + computed, 500);
    // --open-mode=append: the task's log holds both attempts.
    let logs: Vec<String> = std::fs::read_dir(work.join("out/slurm"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name()?.to_str()?.to_string();
            name.ends_with("_1.log")
                .then(|| std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    assert_eq!(logs.len(), 1);
    assert!(
        logs[0].contains("restart 0") && logs[0].contains("restart 1"),
        "{}",
        logs[0]
    );
    // The merged record accounts for all four shards.
    let rec = json(&work.join("out/run.json"));
    assert_eq!(rec["shard_count"], 4);
    assert_eq!(rec["summary"]["galaxies_total"], 2000);
    assert_eq!(rec["checked_against_catalogue"], true);
}
