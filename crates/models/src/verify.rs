//! Integrity checks: size and sha256 against the card, and a structural safetensors check.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::card::ModelCard;
use crate::error::{ModelError, Result};

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Check `bytes` (read from `file`) against the card: the length first, because a short file
/// is the common failure (interrupted copy) and gives the clearer message, then the sha256.
pub fn verify_bytes(bytes: &[u8], card: &ModelCard, file: &str) -> Result<()> {
    let found = bytes.len() as u64;
    if found != card.size_bytes {
        return Err(ModelError::SizeMismatch {
            file: file.to_string(),
            expected: card.size_bytes,
            found,
        });
    }
    let sha = sha256_hex(bytes);
    if sha != card.sha256 {
        return Err(ModelError::ChecksumMismatch {
            file: file.to_string(),
            expected: card.sha256.clone(),
            found: sha,
        });
    }
    Ok(())
}

/// What a safetensors file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsSummary {
    /// Number of tensors.
    pub tensors: usize,
    /// Total number of scalar values.
    pub values: u64,
    /// Distinct dtypes, e.g. `{"F32"}`.
    pub dtypes: BTreeSet<String>,
}

/// Parse the safetensors header and check every tensor's byte range. Never panics.
pub fn inspect_safetensors(bytes: &[u8], file: &str) -> Result<SafetensorsSummary> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| ModelError::Safetensors {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    let mut values = 0u64;
    let mut dtypes = BTreeSet::new();
    let mut tensors = 0;
    for (_, view) in st.tensors() {
        tensors += 1;
        let n = view
            .shape()
            .iter()
            .fold(1u64, |acc, &d| acc.saturating_mul(d as u64));
        values = values.saturating_add(n);
        dtypes.insert(format!("{:?}", view.dtype()));
    }
    Ok(SafetensorsSummary {
        tensors,
        values,
        dtypes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::BUILTIN;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bundled_weights_match_their_cards() {
        for m in BUILTIN {
            let card = ModelCard::from_bytes(m.card_text.as_bytes(), m.card_file).unwrap();
            verify_bytes(m.bytes, &card, m.name).unwrap();
            let s = inspect_safetensors(m.bytes, m.name).unwrap();
            assert!(s.tensors > 0 && s.values > 0, "{s:?}");
        }
    }

    #[test]
    fn truncation_and_bit_flips_are_rejected_with_the_file_name() {
        let m = crate::builtin::builtin("stellar_mass_emulator").unwrap();
        let card = ModelCard::from_bytes(m.card_text.as_bytes(), m.card_file).unwrap();
        let e = verify_bytes(&m.bytes[..m.bytes.len() - 1], &card, "w.safetensors").unwrap_err();
        assert!(matches!(e, ModelError::SizeMismatch { .. }));
        assert!(e.to_string().starts_with("w.safetensors: size"), "{e}");
        let mut flipped = m.bytes.to_vec();
        flipped[1000] ^= 1;
        let e = verify_bytes(&flipped, &card, "w.safetensors").unwrap_err();
        assert!(matches!(e, ModelError::ChecksumMismatch { .. }), "{e}");
        assert!(e.to_string().contains("corrupted"));
    }
}
