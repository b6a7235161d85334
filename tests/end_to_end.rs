//! End-to-end runs of the CLI: results schema, determinism, kill-and-resume.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

fn read(dir: &Path) -> popcosmos_catalog::ResultTable {
    popcosmos_catalog::read_results(dir).unwrap()
}

/// The 6-galaxy test catalogue (3 batches of 2).
fn tiny_catalogue() -> PathBuf {
    repo().join("tests/data/cosmos_tiny.csv")
}

/// `popcosmos-cli ARGS`, which must succeed.
fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// Write [`tiny_manifest`] over the tiny catalogue, edited by `edit`, to `dir/{stem}.yaml`
/// with output folder `dir/{stem}`; returns (manifest, output folder).
fn write_tiny(dir: &Path, stem: &str, edit: impl FnOnce(String) -> String) -> (PathBuf, PathBuf) {
    let (m, out) = (dir.join(format!("{stem}.yaml")), dir.join(stem));
    std::fs::write(&m, edit(tiny_manifest(&tiny_catalogue(), &out, ""))).unwrap();
    (m, out)
}

/// [`write_tiny`] (stem `out`), then `run` it to completion.
fn run_tiny(dir: &Path, edit: impl FnOnce(String) -> String) -> (PathBuf, PathBuf) {
    let (m, out) = write_tiny(dir, "out", edit);
    ok(&["run", m.to_str().unwrap(), "--quiet"]);
    (m, out)
}

/// `reweight RUN --to PRIOR -o OUT EXTRA..`.
fn reweight(run_dir: &Path, to: &str, out: &Path, extra: &[&str]) -> Output {
    let (run_dir, out) = (run_dir.to_str().unwrap(), out.to_str().unwrap());
    run(&[&["reweight", run_dir, "--to", to, "-o", out][..], extra].concat())
}

#[test]
fn run_writes_summaries_and_resume_after_kill_matches_uninterrupted_run() {
    let dir = tempdir("resume");
    // Uninterrupted reference run.
    let (m_full, full_out) = write_tiny(&dir, "full", |m| m);
    ok(&["run", m_full.to_str().unwrap(), "--quiet"]);
    let full = read(&full_out);
    assert_eq!(full.len(), 6);
    // Percentiles are ordered and z lies in the prior range.
    for i in 0..full.len() {
        let q: Vec<f64> = ["z_p2.5", "z_p16", "z_p50", "z_p84", "z_p97.5"]
            .iter()
            .map(|c| full.column(c).unwrap()[i])
            .collect();
        assert!(q.windows(2).all(|w| w[0] <= w[1]), "{q:?}");
        assert!(q[0] >= 0.0 && q[4] <= 6.0);
        let m = full.column("log10M_formed_p50").unwrap()[i];
        assert!((7.0..13.0).contains(&m), "log M {m}");
        assert!(full.column("acceptance").unwrap()[i] > 0.0);
    }
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full_out.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["complete"], true);
    assert_eq!(record["seed"], 7);

    // Interrupted run: kill the process as soon as the first part is on disk.
    let (m, out) = write_tiny(&dir, "killed", |m| m);
    let mut child = cli()
        .args(["run", m.to_str().unwrap(), "--quiet"])
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let parts = popcosmos_catalog::list_parts(&out).unwrap_or_default();
        if !parts.is_empty() || t0.elapsed() > Duration::from_secs(300) {
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let partial = read(&out);
    assert!(
        partial.len() < 6 || partial.len() == 6,
        "partial results readable"
    );
    // Without --resume the folder is refused, naming the key.
    let o = run(&["run", m.to_str().unwrap(), "--quiet"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("output.dir") && stderr(&o).contains("--resume"),
        "{}",
        stderr(&o)
    );
    ok(&["run", m.to_str().unwrap(), "--resume", "--quiet"]);
    let resumed = read(&out);
    // Every galaxy exactly once, identical to the uninterrupted run.
    let mut ids = resumed.ids.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    assert_eq!(resumed.len(), 6);
    for (i, id) in resumed.ids.iter().enumerate() {
        let j = full.ids.iter().position(|x| x == id).unwrap();
        for (name, col) in &resumed.columns {
            let (a, b) = (col[i], full.columns[name][j]);
            assert!(
                a == b || (a.is_nan() && b.is_nan()),
                "{id} {name}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn evaluate_reports_metrics_as_json() {
    let dir = tempdir("evaluate");
    let cat = tiny_catalogue();
    let (_, out) = run_tiny(&dir, |m| m);
    let json = dir.join("metrics.json");
    let truth = format!("{}:zspec", cat.display());
    let o = ok(&[
        "evaluate",
        out.to_str().unwrap(),
        "--truth",
        &truth,
        "--json",
        json.to_str().unwrap(),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // Recompute the metrics from the results and the truth column.
    let res = read(&out);
    let ids = popcosmos_catalog::read_ids(&cat, "id").unwrap();
    let zs = popcosmos_catalog::read_column_f64(&cat, "zspec").unwrap();
    let mut dz: Vec<f64> = res
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let j = ids.iter().position(|x| x == id).unwrap();
            (res.column("z_p50").unwrap()[i] - zs[j]) / (1.0 + zs[j])
        })
        .collect();
    dz.sort_by(f64::total_cmp);
    let median = (dz[2] + dz[3]) / 2.0;
    assert_eq!(v["n"], 6);
    assert!((v["bias"].as_f64().unwrap() - median).abs() < 1e-12);
    let outliers = dz.iter().filter(|d| d.abs() > 0.15).count() as f64 / 6.0;
    assert!((v["outlier_fraction"].as_f64().unwrap() - outliers).abs() < 1e-12);
    // The clean-sample row counts the galaxies with z_odds ≥ 0.95.
    let clean = res
        .column("z_odds")
        .unwrap()
        .iter()
        .filter(|o| **o >= 0.95)
        .count();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "| z_odds ≥ 0.95: galaxies / σ_NMAD / outliers | {clean} of 6 /"
        )),
        "{text}"
    );
}

#[test]
fn predict_reproduces_photulator_fixture_rows() {
    use popcosmos_api::PARAM_NAMES;
    let fx = candle_core::safetensors::load(
        repo().join("tests/fixtures/photulator_fixture.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let theta = fx["theta"].to_vec2::<f32>().unwrap();
    let mag = fx["mag"].to_vec2::<f32>().unwrap();
    let realistic = fx["realistic"].to_vec1::<u8>().unwrap();
    let dir = tempdir("predict");
    let input = dir.join("params.csv");
    let mut text = PARAM_NAMES.join(",") + "\n";
    let rows: Vec<usize> = (3..200).filter(|&r| realistic[r] == 1).take(20).collect();
    for &r in &rows {
        text += &theta[r]
            .iter()
            .map(|v| format!("{v:.9e}"))
            .collect::<Vec<_>>()
            .join(",");
        text += "\n";
    }
    std::fs::write(&input, text).unwrap();
    let output = dir.join("fluxes.csv");
    ok(&[
        "predict",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    let mut rdr = csv::Reader::from_path(&output).unwrap();
    let header = rdr.headers().unwrap().clone();
    assert_eq!(header.get(0), Some("mag_u_megaprime_sagem"));
    assert!(header.iter().any(|h| h == "flux_lines_nmgy_irac2_cosmos"));
    for (k, rec) in rdr.records().enumerate() {
        let rec = rec.unwrap();
        for b in 0..26 {
            let m: f64 = rec[b].parse().unwrap();
            assert!(
                (m - mag[rows[k]][b] as f64).abs() < 1e-3,
                "row {} band {b}: {m} vs {}",
                rows[k],
                mag[rows[k]][b]
            );
            let f: f64 = rec[26 + b].parse().unwrap();
            assert!((f / 10f64.powf((22.5 - m) / 2.5) - 1.0).abs() < 1e-5);
        }
    }
}

#[test]
fn hmc_sampler_runs_from_the_manifest_and_adapts_its_step_size() {
    // The HMC kernel through the whole pipeline (autograd through emulators, lines,
    // likelihood and prior). Dual averaging targets 0.8 acceptance during burn-in; the
    // post-burn-in acceptance must land near it for every galaxy.
    let (_, out) = run_tiny(&tempdir("hmc"), |m| {
        let m = m.replace(
            "sampler: {walkers: 32, steps: 16, burn_in: 8}",
            "sampler: {kind: hmc, walkers: 4, steps: 60, burn_in: 40, leapfrog_steps: 4, target_accept: 0.8}",
        );
        assert!(m.contains("kind: hmc"));
        m
    });
    let res = read(&out);
    let acc = res.column("acceptance").unwrap();
    let z = res.column("z_p50").unwrap();
    eprintln!("HMC acceptance per galaxy: {acc:?}, z medians {z:?}");
    assert_eq!(acc.len(), res.len());
    for (&a, &zm) in acc.iter().zip(z) {
        assert!((0.5..=1.0).contains(&a), "acceptance {a}");
        assert!(zm.is_finite() && (0.0..=6.0).contains(&zm));
    }
}

#[test]
fn diffusion_prior_runs_from_the_manifest() {
    // `prior: {kind: diffusion}` with the bundled population prior, cheap fixed-step solvers.
    let (_, out) = run_tiny(&tempdir("diffusion"), |m| {
        let m = m
            .replace(
                "prior: {kind: prospector-alpha}",
                "prior: {kind: diffusion, log_prob: {solver: {method: rk4, steps: 4}}, sample_solver: {method: rk4, steps: 8}}",
            )
            .replace("sampler: {walkers: 32, steps: 16, burn_in: 8}", "sampler: {walkers: 32, steps: 6, burn_in: 3}")
            .replace("library_size: 1500", "library_size: 200");
        assert!(m.contains("kind: diffusion") && m.contains("library_size: 200"));
        m
    });
    let res = read(&out);
    assert_eq!(res.len(), 6);
    for &zm in res.column("z_p50").unwrap() {
        assert!(zm.is_finite() && (0.0..=6.0).contains(&zm), "z median {zm}");
    }
    let record = std::fs::read_to_string(out.join("run.json")).unwrap_or_default()
        + &std::fs::read_to_string(out.join("run_record.json")).unwrap_or_default();
    assert!(record.contains("diffusion"), "run record names the prior");
}

#[test]
fn flow_prior_runs_from_the_manifest_with_hmc() {
    // `prior: {kind: flow, weights: PATH}` under HMC: the flow's log-density is differentiable,
    // so the prior's gradient enters the leapfrog steps. The flow here is a small seeded one
    // centred on Prospector-α draws (with its model card), written by the test.
    use popcosmos_api::{HostRng, Prior};
    let dir = tempdir("flow");
    let mut rng = HostRng::seed_from_u64(4);
    let dev = candle_core::Device::Cpu;
    let draws = popcosmos_priors::ProspectorAlphaPrior::new()
        .sample(4000, &mut rng, &dev)
        .unwrap();
    let mean = draws.mean(0).unwrap();
    let sd = draws
        .broadcast_sub(&mean)
        .unwrap()
        .sqr()
        .unwrap()
        .mean(0)
        .unwrap()
        .sqrt()
        .unwrap();
    let cfg = popcosmos_priors::flow::FlowConfig::new(16, 4, vec![32], Default::default());
    let flow =
        popcosmos_priors::flow::FlowModel::random(cfg, mean, sd, 0.05, &mut rng, &dev).unwrap();
    let weights = dir.join("flow.safetensors");
    flow.save(&weights, &Default::default()).unwrap();
    let bytes = std::fs::read(&weights).unwrap();
    let mut card = popcosmos_models::ModelCard::from_bytes(
        popcosmos_models::builtin("popcosmos_prior_diffusion")
            .unwrap()
            .card_text
            .as_bytes(),
        "template",
    )
    .unwrap();
    card.name = "flow".into();
    card.file = "flow.safetensors".into();
    card.architecture.kind = "flow".into();
    card.size_bytes = bytes.len() as u64;
    card.sha256 = popcosmos_models::sha256_hex(&bytes);
    std::fs::write(dir.join("flow.card.yaml"), card.to_yaml()).unwrap();

    let (m, out) = run_tiny(&dir, |m| {
        let m = m
            .replace(
                "prior: {kind: prospector-alpha}",
                &format!("prior: {{kind: flow, weights: {}}}", weights.display()),
            )
            .replace(
                "sampler: {walkers: 32, steps: 16, burn_in: 8}",
                "sampler: {kind: hmc, walkers: 4, steps: 30, burn_in: 20, leapfrog_steps: 4, target_accept: 0.8}",
            );
        assert!(m.contains("kind: flow") && m.contains("kind: hmc"));
        m
    });
    let res = read(&out);
    assert_eq!(res.len(), 6);
    for (&a, &zm) in res
        .column("acceptance")
        .unwrap()
        .iter()
        .zip(res.column("z_p50").unwrap())
    {
        assert!(
            a > 0.3 && zm.is_finite() && (0.0..=6.0).contains(&zm),
            "acc {a} z {zm}"
        );
    }
    // The same weights under the wrong kind are refused by their card.
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("kind: flow", "kind: diffusion");
    std::fs::write(&m, text).unwrap();
    let o = run(&["validate", m.to_str().unwrap()]);
    assert!(
        !o.status.success() && stderr(&o).contains("not a diffusion prior"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn reweight_swaps_the_prior_on_a_runs_chains() {
    // A run with stored chains under the uniform prior, reweighted to Prospector-α: every
    // galaxy keeps its draws, the summary file has the run's percentile columns plus the
    // importance diagnostics; reweighting to the run's own prior gives equal weights.
    let dir = tempdir("reweight");
    let (_, out) = run_tiny(&dir, |m| {
        m.replace("prior: {kind: prospector-alpha}", "prior: {kind: uniform}")
            .replace(
                "output: {dir: ",
                "output: {chains: true, chain_thin: 2, dir: ",
            )
    });
    let same = dir.join("same.parquet");
    let o = reweight(&out, "uniform", &same, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = popcosmos_catalog::read_results(&same).unwrap();
    assert_eq!(t.len(), 6);
    let (n, ess) = (
        t.column("n_draws").unwrap(),
        t.column("importance_ess").unwrap(),
    );
    // 32 walkers × 8 kept steps, every 2nd stored.
    assert!(n.iter().all(|v| *v == 128.0), "{n:?}");
    assert!(
        n.iter().zip(ess).all(|(a, b)| (a - b).abs() < 1e-9),
        "{ess:?}"
    );
    let swapped = dir.join("swapped.parquet");
    let o = reweight(&out, "prospector-alpha", &swapped, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("median |Δ|/σ"));
    let t = popcosmos_catalog::read_results(&swapped).unwrap();
    let ess = t.column("importance_ess").unwrap();
    assert!(ess.iter().all(|e| *e > 0.0 && *e < 128.0), "{ess:?}");
    assert!(t.column("z_p50").unwrap().iter().all(|z| z.is_finite()));
    // No chains → a clear error naming the folder.
    let o = reweight(&dir, "uniform", &swapped, &["--from", "uniform"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("chains"), "{}", stderr(&o));
}

#[test]
fn compare_reports_seed_agreement_ln_z_and_the_pz_split() {
    let dir = tempdir("compare");
    let first = dir.join("first.csv");
    let second = dir.join("second.csv");
    let head = "id,z_p50,log_evidence,pz_0.100,pz_0.300,pz_0.500\n";
    // d's p(z) is flat over the three bins: its ODDS (mass within 0.15 (1 + z_50) of z_50)
    // is 1/3, so it is the one broad galaxy; x and y are in one run only.
    let rows = [
        (
            &first,
            "a,0.30,-10.0,0.0,1.0,0.0\nb,0.50,-12.0,0.0,0.0,1.0\nc,0.10,-11.0,1.0,0.0,0.0\n\
                  d,0.30,-9.0,1.0,1.0,1.0\nx,0.20,-9.0,1.0,1.0,1.0\n",
        ),
        (
            &second,
            "y,0.20,-9.0,1.0,1.0,1.0\nd,0.60,-9.4,2.0,2.0,2.0\nc,0.10,-11.2,1.0,0.0,0.0\n\
                   b,0.52,-12.0,0.0,0.0,3.0\na,0.303,-10.5,0.0,1.0,0.0\n",
        ),
    ];
    for (path, body) in rows {
        std::fs::write(path, format!("{head}{body}")).unwrap();
    }
    let json = dir.join("compare.json");
    let o = ok(&[
        "compare",
        first.to_str().unwrap(),
        second.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("| all: median z within 0.01 (1+z) | 50.0% |")
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let f = |p: &str| v.pointer(p).and_then(|x| x.as_f64()).unwrap();
    assert_eq!(v["matched"], 4);
    assert_eq!(v["only_first"], 1);
    assert_eq!(v["only_second"], 1);
    // |Δz|/(1 + z̄): a 0.003/1.3015, b 0.02/1.51, c 0, d 0.3/1.45.
    assert_eq!(f("/median_z/within_tolerance"), 0.5);
    assert_eq!(f("/median_z/beyond_outlier"), 0.25);
    let want = 0.5 * (0.003 / 1.3015 + 0.02 / 1.51);
    assert!((f("/median_z/median_abs_dz") - want).abs() < 1e-12);
    // |Δ ln Z| = 0.5, 0, 0.2, 0.4: median 0.3, 90th percentile 0.4 + 0.7 × 0.1.
    assert!((f("/abs_dlog_evidence/0") - 0.3).abs() < 1e-12);
    assert!((f("/abs_dlog_evidence/1") - 0.47).abs() < 1e-12);
    // Normalised p(z) are equal pair by pair.
    assert_eq!(f("/pz/total_variation/0"), 0.0);
    assert_eq!(v["pz"]["peaked"]["n"], 3);
    assert!((f("/pz/peaked/within_tolerance") - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(v["pz"]["broad"]["n"], 1);
    assert_eq!(f("/pz/broad/beyond_outlier"), 1.0);

    // Bad input names the path, and runs over different galaxies are refused.
    let missing = dir.join("no-such-run");
    let o = run(&[
        "compare",
        first.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no-such-run") && stderr(&o).contains("no such results"));
    let other = dir.join("other.csv");
    std::fs::write(&other, format!("{head}q,0.20,-9.0,1.0,1.0,1.0\n")).unwrap();
    let o = run(&["compare", first.to_str().unwrap(), other.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no galaxy id"), "{}", stderr(&o));
}
