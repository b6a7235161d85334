//! Plugins through the real binary: `plugins inspect`, and manifests with
//! `prior: {kind: plugin, …}` / `survey: {plugin: …}` (paths relative to the manifest).
//! Builds the example plugins (std + popcosmos-plugin-abi only, a few seconds).

#[path = "../../../tests/common.rs"]
mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Build the example plugins (and the broken test plugins) once; returns their folder.
fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-test");
        for m in [
            "plugins/example-survey/Cargo.toml",
            "plugins/example-prior/Cargo.toml",
            "crates/plugin-host/tests/test-plugins/Cargo.toml",
        ] {
            let o = std::process::Command::new(env!("CARGO"))
                .args(["build", "--offline", "--quiet", "--manifest-path"])
                .arg(repo().join(m))
                .arg("--target-dir")
                .arg(&target)
                .output()
                .unwrap();
            assert!(o.status.success(), "{m}: {}", stderr(&o));
        }
        target.join("debug")
    })
}

fn lib_name(package: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        package.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn inspect_prints_kind_abi_and_contents() {
    let survey = plugin_dir().join(lib_name("example-survey"));
    let o = run(&["plugins", "inspect", survey.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "kind     survey",
        "abi      1 (this popcosmos: 1)",
        "package  example-survey 0.1.0",
        "name     sdss",
        "bands    5",
        "0.963829", // Z_u = 10^(−0.4·0.04)
        "1.018591", // Z_z = 10^(+0.4·0.02)
    ] {
        assert!(out.contains(want), "missing '{want}' in\n{out}");
    }
    assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
        == ["4", "sdss_z", "z", "0.74", "1.018591", "0.01", "-"]));

    let prior = plugin_dir().join(lib_name("example-prior"));
    let o = run(&[
        "plugins",
        "inspect",
        prior.to_str().unwrap(),
        "--config",
        "n_mean=17.5; n_sigma=2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("kind     prior") && out.contains("gaussian-n(n_mean=17.5, n_sigma=2)"),
        "{out}"
    );
    assert!(
        out.contains("1000 draws (seed 0): 1000 with finite ln p"),
        "{out}"
    );
    // E[ln p] = −ln σ − 8 ln 2π − 16/2 for this prior; 1000 draws: SE ≈ √(16/2)/√1000 ≈ 0.09.
    let mean_lp: f64 = out
        .split("mean ln p ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let expect = -(2f64.ln()) - 8.0 * (2.0 * std::f64::consts::PI).ln() - 8.0;
    assert!((mean_lp - expect).abs() < 0.5, "{mean_lp} vs {expect}");

    // A refused plugin is an error exit with the reason, not a crash.
    let bad = plugin_dir().join(lib_name("bad-version"));
    let o = run(&["plugins", "inspect", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("plugin ABI version 2"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn run_with_a_plugin_prior_and_manifest_errors() {
    let dir = tempdir("plugin-prior");
    // The library next to the manifest, named relatively: resolved against its folder.
    let lib = lib_name("example-prior");
    std::fs::copy(plugin_dir().join(&lib), dir.join(&lib)).unwrap();
    let cat = repo().join("tests/data/cosmos_tiny.csv");
    let out = dir.join("out");
    let manifest = tiny_manifest(&cat, &out, "").replace(
        "prior: {kind: prospector-alpha}",
        &format!("prior: {{kind: plugin, path: {lib}, config: \"n_mean=19; n_sigma=3\"}}"),
    );
    assert!(manifest.contains("kind: plugin"));
    let m = dir.join("m.yaml");
    std::fs::write(&m, &manifest).unwrap();
    let o = run(&["run", m.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let res = popcosmos_catalog::read_results(&out).unwrap();
    assert_eq!(res.len(), 6);
    for &zm in res.column("z_p50").unwrap() {
        assert!(zm.is_finite() && (0.0..=6.0).contains(&zm), "z median {zm}");
    }
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let prior = &record["manifest"]["prior"];
    assert_eq!(prior["kind"], "plugin", "{prior}");
    assert_eq!(prior["config"], "n_mean=19; n_sigma=3", "{prior}");

    // Missing library: the manifest key and the file.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, manifest.replace(&lib, "missing-plugin.so")).unwrap();
    let o = run(&["validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("prior.path:") && e.contains("missing-plugin.so"),
        "{e}"
    );

    // HMC needs the prior's gradient: refused when the manifest is read.
    std::fs::write(
        &bad,
        manifest.replace(
            "sampler: {walkers: 32, steps: 16, burn_in: 8}",
            "sampler: {kind: hmc, walkers: 4, steps: 16, burn_in: 8}",
        ),
    )
    .unwrap();
    let o = run(&["validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("sampler.kind: hmc needs the prior's gradient"),
        "{e}"
    );

    // A survey plugin is loaded from the manifest: its SDSS bands reach the SPS check,
    // which names the first band the COSMOS emulators do not have.
    let slib = lib_name("example-survey");
    std::fs::copy(plugin_dir().join(&slib), dir.join(&slib)).unwrap();
    let s = dir.join("survey.yaml");
    std::fs::write(
        &s,
        manifest.replace(
            "survey: {name: cosmos}",
            &format!("survey: {{plugin: {slib}}}"),
        ),
    )
    .unwrap();
    let o = run(&["validate", s.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("survey band 'sdss_u' is not a band of the emulator set"),
        "{e}"
    );
    // And a wrong plugin kind names the manifest key.
    std::fs::write(
        &s,
        manifest.replace(
            "survey: {name: cosmos}",
            &format!("survey: {{plugin: {lib}}}"),
        ),
    )
    .unwrap();
    let o = run(&["validate", s.to_str().unwrap()]);
    let e = stderr(&o);
    assert!(
        e.contains("survey.plugin:") && e.contains("is a prior plugin"),
        "{e}"
    );
}
