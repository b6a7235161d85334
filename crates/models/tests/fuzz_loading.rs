//! Property-based fuzzing of the loading path: model cards, the safetensors check, the card
//! checks and the SPS weight parser must return errors, never panic, on arbitrary bytes.

use popcosmos_models::{
    BUILTIN, BuiltinModel, HubConfig, ModelCard, ModelError, WeightRef, builtin,
    inspect_safetensors, load, verify_bytes,
};
use proptest::prelude::*;

/// The bundled model these tests mutate (small, with a card).
fn stellar_mass() -> &'static BuiltinModel {
    builtin("stellar_mass_emulator").unwrap()
}

fn card() -> ModelCard {
    let m = stellar_mass();
    ModelCard::from_bytes(m.card_text.as_bytes(), m.card_file).unwrap()
}

/// A valid safetensors header followed by garbage is the interesting case for the parser, so
/// mix pure noise with mutations of a real file.
fn mutated_weights() -> impl Strategy<Value = Vec<u8>> {
    let real = stellar_mass().bytes;
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        (0..real.len()).prop_map(move |n| real[..n].to_vec()),
        (0..2048usize, any::<u8>()).prop_map(move |(i, b)| {
            let mut v = real.to_vec();
            v[i] = b;
            v
        }),
        // An 8-byte header length pointing anywhere, then noise.
        (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..256)).prop_map(|(n, rest)| {
            let mut v = n.to_le_bytes().to_vec();
            v.extend(rest);
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn card_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        for name in ["x.card.yaml", "x.card.json"] {
            if let Err(e) = ModelCard::from_bytes(&bytes, name) {
                prop_assert!(e.to_string().starts_with(&format!("{name}: bad model card")), "{}", e);
            }
        }
    }

    #[test]
    fn mutated_cards_parse_or_fail_cleanly(cut in 0usize..3000, pos in 0usize..3000, byte in any::<u8>()) {
        let text = stellar_mass().card_text.as_bytes();
        let mut v = text[..cut.min(text.len())].to_vec();
        if !v.is_empty() {
            let i = pos % v.len();
            v[i] = byte;
        }
        match ModelCard::from_bytes(&v, "m.card.yaml") {
            Ok(c) => prop_assert_eq!(c.schema, 1),
            Err(e) => prop_assert!(matches!(e, ModelError::Card { .. }), "{}", e),
        }
    }

    #[test]
    fn weights_are_checked_and_parsed_without_panics(bytes in mutated_weights()) {
        let card = card();
        match verify_bytes(&bytes, &card, "w.safetensors") {
            Ok(()) => prop_assert_eq!(&bytes[..], stellar_mass().bytes),
            Err(e) => {
                prop_assert!(
                    matches!(e, ModelError::SizeMismatch { .. } | ModelError::ChecksumMismatch { .. }),
                    "{}", e
                );
                prop_assert!(e.to_string().starts_with("w.safetensors: "), "{}", e);
            }
        }
        if let Err(e) = inspect_safetensors(&bytes, "w.safetensors") {
            prop_assert!(e.to_string().starts_with("w.safetensors: not a valid safetensors file"), "{}", e);
        }
        // The parser the SPS emulators use behind the checksum gate.
        let parsed = popcosmos_sps::WeightFile::from_bytes(&bytes, "w.safetensors", &candle_core::Device::Cpu);
        if let Err(e) = parsed {
            prop_assert!(e.to_string().starts_with("w.safetensors: "), "{}", e);
        }
    }

    /// Local files: whatever lands on disk next to a valid card is either the real model or an
    /// error that names the file.
    #[test]
    fn local_files_load_or_name_the_file(bytes in mutated_weights()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stellar_mass_emulator.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        std::fs::write(dir.path().join("stellar_mass_emulator.card.yaml"), stellar_mass().card_text).unwrap();
        let r = WeightRef::Path(path.clone());
        match load(&r, &HubConfig::new(dir.path().join("hub"))) {
            Ok(m) => prop_assert_eq!(&*m.bytes, stellar_mass().bytes),
            Err(e) => prop_assert!(e.to_string().starts_with(&path.display().to_string()), "{}", e),
        }
    }
}

#[test]
fn local_file_without_card_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    std::fs::write(&path, stellar_mass().bytes).unwrap();
    let e = load(&WeightRef::Path(path), &HubConfig::new(dir.path())).unwrap_err();
    assert!(matches!(e, ModelError::MissingCard { .. }), "{e}");
    assert!(e.to_string().contains("w.card.yaml"), "{e}");
}

#[test]
fn bundled_models_load_through_their_references() {
    let cfg = HubConfig::new("/nonexistent");
    for m in BUILTIN {
        let r: WeightRef = format!("builtin:{}", m.name).parse().unwrap();
        let loaded = load(&r, &cfg).unwrap();
        assert_eq!(loaded.card.name, m.name);
    }
    let e = load(&"builtin:nope".parse().unwrap(), &cfg).unwrap_err();
    assert!(e.to_string().contains("photulator_cosmos26"), "{e}");
}
