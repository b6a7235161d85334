//! Model cards: the YAML (or JSON) sidecar that describes and pins a weights file.
//!
//! `x.safetensors` has its card in `x.card.yaml` (or `x.card.json`) next to it; in a hub repo
//! the card sits next to the file under the same name. The card is the trust anchor: its
//! `sha256` and `size_bytes` are checked before the weights are parsed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The card schema version this crate reads and writes.
pub const CARD_SCHEMA: u32 = 1;

/// Everything a user needs to know about one model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// Always [`CARD_SCHEMA`].
    pub schema: u32,
    /// Short identifier (the builtin name for bundled models).
    pub name: String,
    /// One-line human description of what the model computes.
    pub description: String,
    /// File name of the weights the card describes (no directories).
    pub file: String,
    /// How the weights are stored.
    pub format: WeightFormat,
    /// Exact length of the file in bytes.
    pub size_bytes: u64,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    /// What the network is, for the loader and the reader.
    pub architecture: Architecture,
    /// Network inputs in order, with physical bounds where they exist.
    pub parameters: Vec<Parameter>,
    /// Output band (filter) names in order; empty for models without band outputs.
    #[serde(default)]
    pub bands: Vec<String>,
    /// What the inputs and outputs mean physically.
    pub units: Units,
    /// Where the model came from and how it was made.
    pub provenance: Provenance,
    /// Full references of the papers to cite when using the model (e.g. Alsing+20, Alsing+24).
    #[serde(default)]
    pub citations: Vec<String>,
    /// SPDX identifier or licence text.
    pub license: String,
}

/// Weight file formats understood by the loaders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// A safetensors file (`format: safetensors`).
    Safetensors,
}

/// The network a card describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// `photulator`, `emission-lines`, `stellar-mass`, … (what the loader builds).
    pub kind: String,
    /// Layer widths, input first.
    pub layers: Vec<usize>,
    /// The activation, in words (free text for readers; loaders do not parse it).
    pub activation: String,
}

/// One network input: its name, unit and trained range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// Parameter name, e.g. `log10Z`, `z`.
    pub name: String,
    /// Unit in words, e.g. `dex (log10 Z*/Zsun)`, `redshift`.
    pub unit: String,
    /// Lower bound of the trained range; absent for unbounded inputs.
    #[serde(default)]
    pub min: Option<f64>,
    /// Upper bound of the trained range; absent for unbounded inputs.
    #[serde(default)]
    pub max: Option<f64>,
}

/// The physical meaning of the network's inputs and outputs, in words.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Units {
    /// What the input vector is, e.g. θ₁₅ with √dust2.
    pub input: String,
    /// What the output is, e.g. absolute AB magnitude per M☉ formed, per band.
    pub output: String,
}

/// Where a model was published and how this file was made from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Where the trained model was published.
    pub source: String,
    /// Commit of `source` the model was taken from, if known.
    #[serde(default)]
    pub commit: Option<String>,
    /// Code that defines the network, if different from `source`.
    #[serde(default)]
    pub code: Option<String>,
    /// The original files this one was converted from, if it was converted.
    #[serde(default)]
    pub converted_from: Option<String>,
    /// Free-text notes: how it was trained or converted, and how well it reproduces its source.
    #[serde(default)]
    pub notes: Option<String>,
}

impl ModelCard {
    /// Parse card bytes (YAML; JSON when `source` ends in `.json`), then check the schema.
    /// Never panics; every error names `source`.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self> {
        let err = |message: String| ModelError::Card {
            file: source.to_string(),
            message,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| err(format!("not UTF-8 text: {e}")))?;
        let card: ModelCard = if source.ends_with(".json") {
            serde_json::from_str(text).map_err(|e| err(e.to_string()))?
        } else {
            serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?
        };
        card.validate().map_err(err)?;
        Ok(card)
    }

    /// Read and parse a card file.
    pub fn from_path(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// The card of the weights file `weights` as it is on disk: its name (the file name without
    /// `.safetensors`), file name, size and sha256 are read from the file, the architecture is
    /// given; description, parameters, bands, units, provenance and citations are blank and the
    /// licence is MIT (the project's), for the caller to fill in with struct update syntax.
    pub fn for_weights(weights: &Path, architecture: Architecture) -> Result<Self> {
        let bytes = std::fs::read(weights).map_err(|e| ModelError::io(weights, e))?;
        let file = weights
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| ModelError::Card {
                file: weights.display().to_string(),
                message: "the weights path has no UTF-8 file name".into(),
            })?
            .to_string();
        Ok(Self {
            schema: CARD_SCHEMA,
            name: file.trim_end_matches(".safetensors").to_string(),
            description: String::new(),
            file,
            format: WeightFormat::Safetensors,
            size_bytes: bytes.len() as u64,
            sha256: crate::verify::sha256_hex(&bytes),
            architecture,
            parameters: Vec::new(),
            bands: Vec::new(),
            units: Units::default(),
            provenance: Provenance::default(),
            citations: Vec::new(),
            license: "MIT".into(),
        })
    }

    /// Write the card next to `weights` (where [`card_path_for`] looks: an existing
    /// `x.card.json` is replaced as JSON, otherwise `x.card.yaml`); returns its path.
    pub fn write_beside(&self, weights: &Path) -> Result<PathBuf> {
        let path = card_path_for(weights);
        let text = if path.extension().is_some_and(|e| e == "json") {
            serde_json::to_string_pretty(self).map_err(|e| ModelError::Card {
                file: path.display().to_string(),
                message: e.to_string(),
            })?
        } else {
            self.to_yaml()
        };
        std::fs::write(&path, text).map_err(|e| ModelError::io(&path, e))?;
        Ok(path)
    }

    /// The card as YAML.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# cannot serialise card: {e}"))
    }

    /// Schema rules serde cannot express.
    fn validate(&self) -> std::result::Result<(), String> {
        if self.schema != CARD_SCHEMA {
            return Err(format!(
                "schema {} is not supported (expected {CARD_SCHEMA})",
                self.schema
            ));
        }
        if self.name.trim().is_empty() {
            return Err("name is empty".into());
        }
        if self.file.is_empty() || self.file.contains(['/', '\\']) || self.file.starts_with('.') {
            return Err(format!("file '{}' must be a plain file name", self.file));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("sha256 '{}' is not 64 hex digits", self.sha256));
        }
        if self.sha256.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("sha256 must be lowercase hex".into());
        }
        if self.architecture.layers.is_empty() || self.architecture.layers.contains(&0) {
            return Err(format!(
                "architecture.layers {:?} must be non-empty positive widths",
                self.architecture.layers
            ));
        }
        let mut seen = HashSet::new();
        for (i, p) in self.parameters.iter().enumerate() {
            if p.name.is_empty() || !seen.insert(p.name.as_str()) {
                return Err(format!(
                    "parameters[{i}]: name '{}' is empty or repeated",
                    p.name
                ));
            }
            for b in [p.min, p.max].into_iter().flatten() {
                if !b.is_finite() {
                    return Err(format!(
                        "parameters[{i}] ({}): bound {b} is not finite",
                        p.name
                    ));
                }
            }
            if let (Some(lo), Some(hi)) = (p.min, p.max)
                && lo >= hi
            {
                return Err(format!(
                    "parameters[{i}] ({}): min {lo} must be below max {hi}",
                    p.name
                ));
            }
        }
        let mut bands = HashSet::new();
        if let Some(b) = self
            .bands
            .iter()
            .find(|b| b.is_empty() || !bands.insert(*b))
        {
            return Err(format!("band '{b}' is empty or repeated"));
        }
        Ok(())
    }
}

/// The card of a local weights file: `x.card.yaml`, else `x.card.json`, next to it.
/// Returns the YAML name when neither exists (for the error message).
pub fn card_path_for(weights: &Path) -> PathBuf {
    let base = weights
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let yaml = weights.with_file_name(crate::reference::card_name_for(&base));
    if yaml.exists() {
        return yaml;
    }
    let json = yaml.with_extension("json");
    if json.exists() { json } else { yaml }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::BUILTIN;

    /// Equal up to the last bits of the bounds: neither serde-saphyr's nor serde_json's default
    /// float round trip is guaranteed to be exact.
    fn assert_same(mut a: ModelCard, b: &ModelCard) {
        for (p, q) in a.parameters.iter_mut().zip(&b.parameters) {
            for (x, y) in [(&mut p.min, q.min), (&mut p.max, q.max)] {
                if let (Some(xv), Some(yv)) = (*x, y) {
                    assert!(
                        (xv - yv).abs() <= 4.0 * f64::EPSILON * yv.abs(),
                        "{xv} {yv}"
                    );
                    *x = y;
                }
            }
        }
        assert_eq!(&a, b);
    }

    #[test]
    fn bundled_cards_parse_and_round_trip() {
        for m in BUILTIN {
            let card = ModelCard::from_bytes(m.card_text.as_bytes(), m.card_file).unwrap();
            assert_eq!(card.name, m.name);
            assert_same(
                ModelCard::from_bytes(card.to_yaml().as_bytes(), "again.yaml").unwrap(),
                &card,
            );
            let json = serde_json::to_string(&card).unwrap();
            assert_same(
                ModelCard::from_bytes(json.as_bytes(), "c.card.json").unwrap(),
                &card,
            );
        }
    }

    #[test]
    fn cards_for_written_weights_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("net.safetensors");
        std::fs::write(&weights, b"not really weights").unwrap();
        let arch = Architecture {
            kind: "flow".into(),
            layers: vec![16, 16],
            activation: "silu".into(),
        };
        let card = ModelCard {
            description: "test".into(),
            ..ModelCard::for_weights(&weights, arch).unwrap()
        };
        assert_eq!(
            (card.name.as_str(), card.file.as_str()),
            ("net", "net.safetensors")
        );
        assert_eq!(card.size_bytes, 18);
        assert_eq!(
            card.sha256,
            crate::verify::sha256_hex(b"not really weights")
        );
        let path = card.write_beside(&weights).unwrap();
        assert_eq!(path, dir.path().join("net.card.yaml"));
        assert_eq!(ModelCard::from_path(&path).unwrap(), card);
        // A JSON card already there stays JSON.
        std::fs::remove_file(&path).unwrap();
        let json = dir.path().join("net.card.json");
        std::fs::write(&json, "{}").unwrap();
        assert_eq!(card.write_beside(&weights).unwrap(), json);
        assert_eq!(ModelCard::from_path(&json).unwrap(), card);
        assert!(ModelCard::for_weights(&dir.path().join("missing"), card.architecture).is_err());
    }

    fn edited(find: &str, replace: &str) -> String {
        let text = BUILTIN[0].card_text;
        assert!(text.contains(find), "{find}");
        let e = ModelCard::from_bytes(
            text.replacen(find, replace, 1).as_bytes(),
            "edited.card.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("edited.card.yaml: bad model card"), "{e}");
        e
    }

    #[test]
    fn schema_violations_are_named() {
        assert!(edited("schema: 1", "schema: 2").contains("schema 2"));
        assert!(edited("sha256: 9019", "sha256: 019").contains("64 hex"));
        assert!(edited("sha256: 9", "sha256: 9X").contains("64 hex"));
        assert!(edited("min: -1.98", "min: 0.5").contains("log10Z"));
        assert!(edited("license: MIT", "licence: MIT").contains("licence"));
        assert!(edited("format: safetensors", "format: pickle").contains("pickle"));
        assert!(edited("file: photulator", "file: ../photulator").contains("plain file"));
        assert!(edited("  - hsc_r\n", "  - hsc_g\n").contains("hsc_g"));
    }
}
