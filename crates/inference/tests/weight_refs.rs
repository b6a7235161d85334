//! `sps.weights` references in a manifest: parsing, path resolution and loading through a card.

use std::path::Path;

use popcosmos_api::SpsModel;
use popcosmos_inference::Manifest;
use popcosmos_inference::SpsSpec;
use popcosmos_models::{HubConfig, WeightRef};

fn demo_with_weights(weights: &str) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cosmos-demo.yaml"),
    )
    .unwrap();
    assert!(text.contains("  emission_lines: true\n"));
    text.replace(
        "  emission_lines: true\n",
        &format!("  emission_lines: true\n  weights: {weights}\n"),
    )
}

#[test]
fn references_survive_path_resolution_and_paths_are_made_absolute() {
    let base = Path::new("/data/run");
    for (weights, expected) in [
        (
            "builtin:photulator_cosmos26",
            WeightRef::Builtin("photulator_cosmos26".into()),
        ),
        (
            "hf://org/repo@v2/x.safetensors",
            "hf://org/repo@v2/x.safetensors".parse().unwrap(),
        ),
        (
            "w/x.safetensors",
            WeightRef::Path(base.join("w/x.safetensors")),
        ),
    ] {
        let mut m = Manifest::from_yaml(&demo_with_weights(weights), "m.yaml").unwrap();
        m.resolve_paths(base);
        assert_eq!(m.sps.weight_ref().unwrap(), expected, "{weights}");
    }
}

#[test]
fn malformed_references_fail_validation_naming_the_key() {
    let e = Manifest::from_yaml(&demo_with_weights("hf://org"), "m.yaml").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("sps.weights: bad weight reference"),
        "{e}"
    );
    // The former spelling of the bundled set, which skipped the card check.
    let e = Manifest::from_yaml(&demo_with_weights("builtin"), "m.yaml").unwrap_err();
    assert!(
        e.to_string().starts_with("sps.weights: 'builtin'")
            && e.to_string().contains("builtin:photulator_cosmos26"),
        "{e}"
    );
}

#[test]
fn local_weights_are_verified_against_their_card() {
    let (dev, hub) = (candle_core::Device::Cpu, HubConfig::from_env());
    let cosmos = popcosmos_surveys::SurveySpec::named("cosmos")
        .build_defined()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = popcosmos_models::builtin("photulator_cosmos26").unwrap();
    let path = dir.path().join("photulator_cosmos26.safetensors");
    let mut spec = Manifest::from_yaml(&demo_with_weights(path.to_str().unwrap()), "m.yaml")
        .unwrap()
        .sps;

    std::fs::write(&path, m.bytes).unwrap();
    let e = spec.build(&cosmos, &hub, &dev).unwrap_err().to_string();
    assert!(e.contains("no model card"), "{e}");

    std::fs::write(
        dir.path().join("photulator_cosmos26.card.yaml"),
        m.card_text,
    )
    .unwrap();
    let p = spec.build(&cosmos, &hub, &dev).unwrap();
    assert_eq!(p.band_names().len(), 26);

    std::fs::write(&path, &m.bytes[..m.bytes.len() / 2]).unwrap();
    let e = spec.build(&cosmos, &hub, &dev).unwrap_err().to_string();
    assert!(
        e.contains(path.to_str().unwrap()) && e.contains("truncated"),
        "{e}"
    );

    // A card of another kind is refused before its tensors are looked at.
    let SpsSpec::Photulator { weights, .. } = &mut spec;
    *weights = "builtin:stellar_mass_emulator".into();
    let e = spec.build(&cosmos, &hub, &dev).unwrap_err().to_string();
    assert!(e.contains("'stellar-mass' model, not a photulator"), "{e}");
}
