//! Bad input must fail with a message naming the manifest key, file, row or column.

mod common;
use common::*;

fn validate_text(name: &str, manifest: &str) -> String {
    let dir = tempdir(name);
    let m = dir.join("m.yaml");
    std::fs::write(&m, manifest).unwrap();
    let o = run(&["validate", m.to_str().unwrap()]);
    assert!(!o.status.success(), "{name}: validate should fail");
    stderr(&o)
}

fn catalogue(name: &str, text: &str) -> std::path::PathBuf {
    let p = tempdir(name).join("cat.csv");
    std::fs::write(&p, text).unwrap();
    p
}

fn demo_header_and_rows(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("tests/data/cosmos_tiny.csv")).unwrap();
    text.lines().take(n + 1).map(String::from).collect()
}

#[test]
fn valid_manifest_passes_validation() {
    let dir = tempdir("valid");
    let m = dir.join("m.yaml");
    std::fs::write(
        &m,
        tiny_manifest(
            &repo().join("tests/data/cosmos_tiny.csv"),
            &dir.join("out"),
            "",
        ),
    )
    .unwrap();
    let o = run(&["validate", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("6 galaxies") && s.contains("26 bands"), "{s}");
}

#[test]
fn malformed_yaml_reports_line_and_column() {
    let err = validate_text("malformed", "survey: {name: cosmos\ncatalogue: [\n");
    assert!(err.contains("m.yaml") && err.contains("line"), "{err}");
}

#[test]
fn unknown_key_is_rejected_with_its_name_and_position() {
    let cat = repo().join("tests/data/cosmos_tiny.csv");
    let text = tiny_manifest(&cat, std::path::Path::new("/tmp/x"), "walkrs: 10\n");
    let err = validate_text("unknown-key", &text);
    assert!(err.contains("walkrs") && err.contains("line 15"), "{err}");
    insta::assert_snapshot!(
        "unknown_key_first_line",
        err.lines()
            .next()
            .unwrap()
            .split("m.yaml: ")
            .last()
            .unwrap()
    );
}

#[test]
fn unknown_survey_names_the_key() {
    let cat = repo().join("tests/data/cosmos_tiny.csv");
    let text = tiny_manifest(&cat, std::path::Path::new("/tmp/x"), "")
        .replace("name: cosmos", "name: sdss");
    let err = validate_text("unknown-survey", &text);
    assert!(
        err.contains("survey.name") && err.contains("sdss") && err.contains("cosmos"),
        "{err}"
    );
}

#[test]
fn semantic_errors_name_the_key() {
    let cat = repo().join("tests/data/cosmos_tiny.csv");
    let base = tiny_manifest(&cat, std::path::Path::new("/tmp/x"), "");
    let err = validate_text("burnin", &base.replace("burn_in: 8", "burn_in: 40"));
    assert!(err.contains("sampler.burn_in"), "{err}");
    let err = validate_text("walkers", &base.replace("walkers: 32", "walkers: 7"));
    assert!(err.contains("sampler.walkers"), "{err}");
    let err = validate_text(
        "temperatures",
        &base.replace("walkers: 32", "walkers: 32, temperatures: 0"),
    );
    assert!(err.contains("sampler.temperatures"), "{err}");
    let err = validate_text(
        "global-scale",
        &base.replace(
            "walkers: 32",
            "walkers: 32, moves: [{kind: global, scale: -1}]",
        ),
    );
    assert!(err.contains("sampler.moves[0].scale"), "{err}");
    let err = validate_text("units", &base.replace("units: mjy", "units: furlongs"));
    assert!(err.contains("furlongs") && err.contains("units"), "{err}");
    let err = validate_text("device", &(base.clone() + "device: tpu\n"));
    assert!(err.contains("device") && err.contains("tpu"), "{err}");
    let diffusion = |spec: &str| base.replace("prior: {kind: prospector-alpha}", spec);
    let err = validate_text(
        "prior-weights",
        &diffusion("prior: {kind: diffusion, weights: /nonexistent/prior.safetensors}"),
    );
    assert!(
        err.contains("prior.weights") && err.contains("/nonexistent/prior"),
        "{err}"
    );
    let err = validate_text(
        "prior-solver",
        &diffusion("prior: {kind: diffusion, log_prob: {solver: {method: rk4, steps: 0}}}"),
    );
    assert!(err.contains("prior.log_prob.solver"), "{err}");
    // A weights file of the wrong kind (the photulator) is refused by its card's kind.
    let err = validate_text(
        "prior-kind",
        &diffusion("prior: {kind: diffusion, weights: \"builtin:photulator_cosmos26\"}"),
    );
    assert!(
        err.contains("prior.weights") && err.contains("not a diffusion prior"),
        "{err}"
    );
}

#[test]
fn missing_column_is_named_with_the_file() {
    let rows = demo_header_and_rows(3);
    let header = rows[0].replace("fluxerr_hsc_r,", "fluxerr_hsc_rr,");
    let cat = catalogue(
        "missing-col",
        &([header]
            .into_iter()
            .chain(rows[1..].iter().cloned())
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"),
    );
    let err = validate_text(
        "missing-col-m",
        &tiny_manifest(&cat, std::path::Path::new("/tmp/x"), ""),
    );
    assert!(
        err.contains("fluxerr_hsc_r") && err.contains("cat.csv"),
        "{err}"
    );
}

#[test]
fn nan_and_negative_errors_name_row_and_column() {
    let rows = demo_header_and_rows(3);
    let cols: Vec<&str> = rows[0].split(',').collect();
    let k = cols.iter().position(|c| *c == "fluxerr_hsc_g").unwrap();
    for (name, bad) in [("nan-err", "nan"), ("neg-err", "-0.001")] {
        let mut r2: Vec<String> = rows[2].split(',').map(String::from).collect();
        r2[k] = bad.to_string();
        let text = [
            rows[0].clone(),
            rows[1].clone(),
            r2.join(","),
            rows[3].clone(),
        ]
        .join("\n")
            + "\n";
        let cat = catalogue(name, &text);
        // negative errors are upper limits under `negative_error`; test without that convention.
        let m = tiny_manifest(&cat, std::path::Path::new("/tmp/x"), "")
            .replace("upper_limits: negative_error", "upper_limits: none");
        let err = validate_text(&format!("{name}-m"), &m);
        assert!(
            err.contains("row 2") && err.contains("fluxerr_hsc_g"),
            "{name}: {err}"
        );
    }
}

#[test]
fn non_numeric_cell_names_row_and_column() {
    let rows = demo_header_and_rows(2);
    let mut r1: Vec<String> = rows[1].split(',').map(String::from).collect();
    r1[4] = "bright".into();
    let cat = catalogue(
        "nonnum",
        &([rows[0].clone(), r1.join(",")].join("\n") + "\n"),
    );
    let err = validate_text(
        "nonnum-m",
        &tiny_manifest(&cat, std::path::Path::new("/tmp/x"), ""),
    );
    assert!(err.contains("row 1") && err.contains("bright"), "{err}");
}

#[test]
fn empty_catalogue_is_an_error() {
    let rows = demo_header_and_rows(0);
    let cat = catalogue("empty", &(rows[0].clone() + "\n"));
    let err = validate_text(
        "empty-m",
        &tiny_manifest(&cat, std::path::Path::new("/tmp/x"), ""),
    );
    assert!(
        err.contains("cat.csv") && (err.contains("empty") || err.contains("no galaxies")),
        "{err}"
    );
}

#[test]
fn predict_rejects_out_of_range_parameters() {
    let dir = tempdir("predict-bad");
    let p = dir.join("p.csv");
    let header = popcosmos_api::PARAM_NAMES.join(",");
    let row = "20,0,0,0,0,0,0,0,0.5,0,1,-3,3,-1,-2,9.5"; // z = 9.5 > 6
    std::fs::write(&p, format!("{header}\n{row}\n")).unwrap();
    let o = run(&[
        "predict",
        p.to_str().unwrap(),
        "-o",
        dir.join("o.csv").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("row 1") && e.contains("'z'"), "{e}");
}

#[test]
fn predict_rejects_out_of_range_mass_and_n() {
    let dir = tempdir("predict-bad-n");
    let rest = "0,0,0,0,0,0,0,0.5,0,1,-3,3,-1,-2,1.0";
    for (col, value, row_ok) in [
        ("N", "1e40", "20"),
        ("N", "-1e40", "20"),
        ("log10M", "1e40", "10"),
        ("log10M", "-3", "10"),
    ] {
        let header = std::iter::once(col)
            .chain(popcosmos_api::PARAM_NAMES[1..].iter().copied())
            .collect::<Vec<_>>()
            .join(",");
        let p = dir.join("p.csv");
        // The bad value is on row 2, after a valid row.
        std::fs::write(&p, format!("{header}\n{row_ok},{rest}\n{value},{rest}\n")).unwrap();
        let out = dir.join("o.csv");
        let o = run(&["predict", p.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{col} = {value}: {e}");
        assert!(
            e.contains("row 2") && e.contains(&format!("'{col}'")) && e.contains(value),
            "{col} = {value}: {e}"
        );
        assert!(!out.exists(), "{col} = {value}: nothing written");
    }
}
