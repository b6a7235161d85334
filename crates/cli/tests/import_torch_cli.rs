//! `popcosmos-cli import-torch` as a user runs it: the 26 original COSMOS Photulator `.pt`
//! files become a stack identical to the bundled one, with a card that `models verify`
//! accepts and a manifest can use; the noise model `.pt` becomes a loadable diffusion model.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_popcosmos-cli"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn photulators_import_verify_and_load_in_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("crates/torch-import/tests/data");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("assets/models/photulator_cosmos26.json")).unwrap(),
    )
    .unwrap();
    let bands: Vec<String> = json["bands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    assert_eq!(bands.len(), 26);
    let out = dir.path().join("cosmos_imported.safetensors");
    let mut args: Vec<String> = vec!["import-torch".into()];
    args.extend(bands.iter().map(|b| {
        data.join(format!("model_4x128_alsing20_{b}_cpu.pt"))
            .display()
            .to_string()
    }));
    args.extend(["-o".into(), out.display().to_string()]);
    let o = cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Same tensors as the bundled stack (the header metadata differs: it lists the bands).
    let ours = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    let bundled = candle_core::safetensors::load(
        repo().join("assets/models/photulator_cosmos26.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(ours.len(), bundled.len());
    for (k, v) in &bundled {
        let d = (&ours[k] - v).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{k}");
    }
    let o = cli(&["models", "verify", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A manifest using the imported weights validates.
    let m = dir.path().join("m.yaml");
    let text = format!(
        "survey: {{name: cosmos}}\ncatalogue: {{path: {cat}, id_column: id, units: mjy, flux_pattern: \"flux_{{band}}\", error_pattern: \"fluxerr_{{band}}\", upper_limits: negative_error}}\nsps: {{kind: photulator, weights: {w}}}\nprior: {{kind: prospector-alpha}}\nsampler: {{walkers: 32, steps: 4, burn_in: 2}}\noutput: {{dir: {o}}}\n",
        cat = repo().join("tests/data/cosmos_tiny.csv").display(),
        w = out.display(),
        o = dir.path().join("out").display()
    );
    std::fs::write(&m, text).unwrap();
    let o = cli(&["validate", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn noise_model_imports_as_a_diffusion_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("noise.safetensors");
    let pt = repo().join("crates/torch-import/tests/data/noiseModel.pt");
    let o = cli(&[
        "import-torch",
        pt.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(&["models", "info", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("diffusion [60, 256, 256, 256, 256, 256, 26]"),
        "{text}"
    );
    // A 26-D conditional model is not a population prior: the manifest says why.
    let err = cli(&[
        "compare-priors",
        "--model",
        &format!("{{kind: diffusion, weights: {}}}", out.display()),
        "-n",
        "10",
    ]);
    let e = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success() && e.contains("16 latent parameters"),
        "{e}"
    );
    // Not a .pt at all: the error names the file.
    let bad = dir.path().join("bad.pt");
    std::fs::write(&bad, b"not a zip").unwrap();
    let o = cli(&[
        "import-torch",
        bad.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("bad.pt"), "{e}");
}
