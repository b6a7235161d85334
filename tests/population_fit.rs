//! `fit-population` and `simulate-population` through the CLI: a short fit on a mock KiDS
//! catalogue writes a population that loads as a prior, its card and a calibration file that
//! a run manifest accepts, and the plots; bad input is refused with the file, the band or the
//! count named, and nothing is overwritten.

mod common;

use std::path::{Path, PathBuf};

use common::{repo, run, stderr, tempdir};

fn manifest(dir: &Path, catalogue: &Path, extra: &str) -> PathBuf {
    let m = dir.join(format!("m{}.yaml", extra.len()));
    std::fs::write(
        &m,
        format!(
            "survey: {{name: kids}}\ncatalogue: {{path: {}, id_column: id, units: nanomaggies, \
             truth_columns: [zspec], missing_values: [-99.0, 1.0e+29]}}\n\
             sps: {{kind: photulator, weights: \"builtin:photulator_kids9\", emission_lines: true}}\n\
             prior: {{kind: prospector-alpha}}\noutput: {{dir: {}}}\nseed: 3\n{extra}",
            catalogue.display(),
            dir.join("out").display()
        ),
    )
    .unwrap();
    m
}

/// 600 mock KiDS galaxies (errors and missing bands from the bundled 41 real ones) with a
/// `zspec` column of text that would fail to parse if anything read it.
fn mock_catalogue(dir: &Path) -> PathBuf {
    let real = repo().join("examples/data/kids_demo.csv");
    let m = manifest(dir, &real, "");
    let raw = dir.join("raw.csv");
    let o = run(&[
        "simulate-population",
        m.to_str().unwrap(),
        "-o",
        raw.to_str().unwrap(),
        "-n",
        "600",
        "--tilt",
        "0.2,0.5",
        "--zero-point-offsets",
        "g=1.05",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&raw).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.contains("flux_Ks") && header.contains("true_log10M_formed"),
        "{header}"
    );
    let mut out = format!("{header},zspec\n");
    for l in lines {
        out += &format!("{l},not-a-redshift\n");
    }
    let cat = dir.join("mock.csv");
    std::fs::write(&cat, out).unwrap();
    cat
}

#[test]
fn a_short_fit_writes_a_usable_population_card_calibration_and_plots() {
    let dir = tempdir("fit-population");
    let cat = mock_catalogue(&dir);
    let m = manifest(&dir, &cat, "");
    let out = dir.join("pop.safetensors");
    let plots = dir.join("plots");
    let args = [
        "fit-population",
        m.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--steps",
        "4",
        "--batch-size",
        "64",
        "--checkpoint-every",
        "2",
        "--plots",
        plots.to_str().unwrap(),
    ];
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no redshift column read"),
        "{}",
        stderr(&o)
    );
    for f in [
        "pop.safetensors",
        "pop.card.yaml",
        "pop.calibration.yaml",
        "pop.fit.json",
        "pop.checkpoint.safetensors",
        "plots/counts.png",
        "plots/colours.png",
        "plots/population.png",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let card = std::fs::read_to_string(dir.join("pop.card.yaml")).unwrap();
    assert!(
        card.contains("no redshift") && card.contains("sha256"),
        "{card}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pop.fit.json")).unwrap()).unwrap();
    assert_eq!(report["steps_done"], 4);
    assert_eq!(report["rows_used"], 600);
    // KiDS is not one of the noise model's surveys: `auto` learns the errors from the rows.
    assert!(
        report["error_model"]
            .as_str()
            .unwrap()
            .starts_with("empirical")
            && card.contains("Flux errors: empirical"),
        "{}",
        report["error_model"]
    );
    let zp = report["zero_points"].as_array().unwrap();
    assert_eq!(zp.len(), 9);
    // The geometric mean of the zero points is held at the start (1).
    let ln_mean: f64 = zp.iter().map(|z| z.as_f64().unwrap().ln()).sum::<f64>() / 9.0;
    assert!(ln_mean.abs() < 1e-5, "{zp:?}");
    // The population and its calibration file are accepted by a run manifest.
    let use_it = manifest(&dir, &cat, "# uses the fit\n");
    let text = std::fs::read_to_string(&use_it)
        .unwrap()
        .replace(
            "prior: {kind: prospector-alpha}",
            &format!("prior: {{kind: flow, weights: {}}}", out.display()),
        )
        .replace(
            "survey: {name: kids}",
            &format!(
                "survey: {{name: kids, calibration_file: {}}}",
                dir.join("pop.calibration.yaml").display()
            ),
        )
        .replace("truth_columns: [zspec], ", "");
    std::fs::write(&use_it, text).unwrap();
    let o = run(&["validate", use_it.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Nothing is overwritten without --resume; --resume continues to more steps.
    let o = run(&args);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("pop.safetensors exists"),
        "{}",
        stderr(&o)
    );
    let mut more = args.to_vec();
    more[5] = "6";
    more.push("--resume");
    let o = run(&more);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pop.fit.json")).unwrap()).unwrap();
    assert_eq!(report["steps_done"], 6);
}

#[test]
fn bad_catalogues_are_refused_by_count_band_and_row() {
    let dir = tempdir("fit-population-bad");
    let fit = |cat: &Path, min: &str| {
        let m = manifest(&dir, cat, "");
        let out = dir.join(format!(
            "p{}.safetensors",
            cat.file_stem().unwrap().to_string_lossy()
        ));
        run(&[
            "fit-population",
            m.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--steps",
            "1",
            "--batch-size",
            "32",
            "--min-galaxies",
            min,
        ])
    };
    // 41 real galaxies: fewer than the default 500 usable rows.
    let real = repo().join("examples/data/kids_demo.csv");
    // The COSMOS noise model is refused for KiDS's bands, naming the survey and its bands.
    let m = manifest(&dir, &real, "");
    let o = run(&[
        "fit-population",
        m.to_str().unwrap(),
        "-o",
        dir.join("nm.safetensors").to_str().unwrap(),
        "--error-model",
        "noise-model",
        "--min-galaxies",
        "10",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--error-model noise-model")
            && e.contains("survey 'kids' has 9 bands")
            && !dir.join("nm.safetensors").exists(),
        "{e}"
    );
    let o = fit(&real, "500");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("kids_demo.csv") && e.contains("only 41 usable rows") && e.contains("500"),
        "{e}"
    );
    // A band with no valid flux in any row is named.
    let text = std::fs::read_to_string(&real).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let ks = header.iter().position(|c| *c == "flux_Ks").unwrap();
    let blank = |row: &str, cols: &[usize]| -> String {
        row.split(',')
            .enumerate()
            .map(|(i, v)| if cols.contains(&i) { "-99" } else { v })
            .collect::<Vec<_>>()
            .join(",")
    };
    let no_ks: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i == 0 { l.to_string() } else { blank(l, &[ks, ks + 1]) } + "\n")
        .collect();
    let cat = dir.join("noks.csv");
    std::fs::write(&cat, no_ks).unwrap();
    let o = fit(&cat, "10");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("band 'Ks'") && stderr(&o).contains("no valid flux"),
        "{}",
        stderr(&o)
    );
    // Rows without any measured band are skipped and counted.
    let fluxes: Vec<usize> = (0..header.len())
        .filter(|&i| header[i].starts_with("flux"))
        .collect();
    let mut with_empty = text.clone();
    for k in 0..3 {
        let first = text.lines().nth(1).unwrap();
        let row = blank(first, &fluxes);
        let (_, rest) = row.split_once(',').unwrap();
        with_empty += &format!("empty{k},{rest}\n");
    }
    let cat = dir.join("empty.csv");
    std::fs::write(&cat, with_empty).unwrap();
    let o = fit(&cat, "10");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("41 usable rows (3 without any measured band skipped"),
        "{}",
        stderr(&o)
    );
}

/// Medians of z and log10 M_formed over `n` draws of a bundled population.
fn bundled_medians(name: &str, n: usize) -> (f64, f64) {
    use popcosmos_api::params::{IDX_N, IDX_Z, phi_to_theta};
    use popcosmos_api::{HostRng, Prior};
    let m = popcosmos_models::builtin(name).unwrap();
    let model =
        popcosmos_priors::flow::FlowModel::from_bytes(m.bytes, name, &candle_core::Device::Cpu)
            .unwrap();
    let prior = popcosmos_priors::flow::FlowPrior::new(model, name).unwrap();
    let phi = prior
        .sample(n, &mut HostRng::seed_from_u64(4), &candle_core::Device::Cpu)
        .unwrap();
    let theta: Vec<Vec<f32>> = phi_to_theta(&phi).unwrap().to_vec2().unwrap();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let z = theta.iter().map(|t| t[IDX_Z] as f64).collect();
    let log_m = theta
        .iter()
        .map(|t| popcosmos_sps::log10_mass_formed(t[IDX_N] as f64, t[IDX_Z] as f64))
        .collect();
    (median(z), median(log_m))
}

/// The shipped populations are the fitted ones (docs/population.md), not the start, and run
/// manifests accept them with their calibration files. The start (the Prospector-α-like
/// flow) has median z 2.31 and median log10 M_formed 7.61.
#[test]
fn shipped_populations_are_the_fitted_ones_and_load_with_their_calibration() {
    let (z, log_m) = bundled_medians("popcosmos_prior_flow", 20_000);
    assert!(
        (z - 2.31).abs() < 0.1 && (log_m - 7.61).abs() < 0.1,
        "start {z} {log_m}"
    );
    // KiDS: fitted n(z) quartiles 0.18 / 0.29 / 0.48 (spec-z of the same rows 0.16 / 0.27 /
    // 0.41), median log M 11.1.
    let (z, log_m) = bundled_medians("population_kids_kv450", 20_000);
    assert!((0.2..0.4).contains(&z), "KiDS median z {z}");
    assert!((10.6..11.6).contains(&log_m), "KiDS median log M {log_m}");
    // KiDS under the spec-z calibration (median z 0.32, median log M 10.9) and its second
    // round, the KiDS example's prior (0.31, 10.9).
    for name in [
        "population_kids_kv450_specz",
        "population_kids_kv450_specz_r2",
    ] {
        let (z, log_m) = bundled_medians(name, 20_000);
        assert!((0.25..0.4).contains(&z), "{name}: median z {z}");
        assert!(
            (10.6..11.2).contains(&log_m),
            "{name}: median log M {log_m}"
        );
    }
    // COSMOS z > 2.5: 43 % of the draws above z = 2.5 and a low-z mode; median log M 9.6.
    let (_, log_m) = bundled_medians("population_cosmos2020_zgt2p5", 20_000);
    assert!((9.1..10.1).contains(&log_m), "COSMOS median log M {log_m}");

    let dir = tempdir("shipped-populations");
    let kids = repo().join("examples/data/kids_demo.csv");
    let m = manifest(&dir, &kids, "");
    let template = std::fs::read_to_string(&m).unwrap();
    // Each KiDS population with its calibration file: the zero-points-at-1 fit, the
    // spec-z-calibrated one and its second round (the KiDS example's pair).
    for (weights, calibration) in [
        (
            "population_kids_kv450",
            "populations/kids_kv450.calibration.yaml",
        ),
        (
            "population_kids_kv450_specz",
            "calibrations/kids_kv450_specz_population.calibration.yaml",
        ),
        (
            "population_kids_kv450_specz_r2",
            "calibrations/kids_kv450_specz_population_r2.calibration.yaml",
        ),
    ] {
        let text = template
            .replace(
                "prior: {kind: prospector-alpha}",
                &format!("prior: {{kind: flow, weights: \"builtin:{weights}\"}}"),
            )
            .replace(
                "survey: {name: kids}",
                &format!(
                    "survey: {{name: kids, calibration_file: {}}}",
                    repo().join("examples").join(calibration).display()
                ),
            );
        assert!(
            text.contains(weights) && text.contains(calibration),
            "{text}"
        );
        std::fs::write(&m, &text).unwrap();
        let o = run(&["validate", m.to_str().unwrap()]);
        assert!(o.status.success(), "{weights}: {}", stderr(&o));
    }
    let cosmos = dir.join("cosmos.yaml");
    std::fs::write(
        &cosmos,
        format!(
            "survey: {{name: cosmos, calibration_file: {}}}\n\
             catalogue: {{path: {}, id_column: id, units: mjy, flux_pattern: \"flux_{{band}}\", \
             error_pattern: \"fluxerr_{{band}}\", upper_limits: negative_error, \
             truth_columns: [zspec]}}\n\
             sps: {{kind: photulator, emission_lines: true, igm_scatter: 0.5}}\n\
             prior: {{kind: flow, weights: \"builtin:population_cosmos2020_zgt2p5\"}}\n\
             output: {{dir: {}}}\n",
            repo()
                .join("examples/populations/cosmos2020_zgt2p5.calibration.yaml")
                .display(),
            repo().join("examples/data/cosmos2020_demo.csv").display(),
            dir.join("out-cosmos").display()
        ),
    )
    .unwrap();
    let o = run(&["validate", cosmos.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}
