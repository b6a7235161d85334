//! Resolve a [`WeightRef`] to verified bytes plus its card.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::builtin::builtin;
use crate::card::{ModelCard, card_path_for};
use crate::error::{ModelError, Result};
use crate::hub::{self, HubConfig};
use crate::reference::WeightRef;
use crate::verify::verify_bytes;

/// Where a reference's card and weights live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Compiled into the binary.
    Builtin {
        /// The `NAME` of `builtin:NAME`.
        name: String,
    },
    /// On disk: a local file or a file in the Hugging Face cache.
    Files {
        /// The model card.
        card: PathBuf,
        /// The weights file.
        weights: PathBuf,
    },
}

/// A model whose weights passed the size and sha256 checks of its card. `bytes` are exactly
/// the verified bytes, so nothing can change between the check and the parse.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The model's card.
    pub card: ModelCard,
    /// The verified weight bytes (borrowed for bundled models).
    pub bytes: Cow<'static, [u8]>,
    /// Human-readable origin for error messages (path, or `builtin:NAME`).
    pub source: String,
    /// Where the card and weights were found.
    pub location: Location,
}

/// Find the card and weights of `r`, downloading hub files when needed and allowed; local
/// files must exist and have a card.
pub fn locate(r: &WeightRef, cfg: &HubConfig) -> Result<Location> {
    match r {
        WeightRef::Builtin(name) => builtin(name).map(|m| Location::Builtin {
            name: m.name.to_string(),
        }),
        WeightRef::Path(p) => {
            let card = card_path_for(p);
            if !p.exists() {
                return Err(ModelError::io(
                    p,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "weights file not found"),
                ));
            }
            if !card.exists() {
                return Err(ModelError::MissingCard {
                    file: p.clone(),
                    card,
                });
            }
            Ok(Location::Files {
                card,
                weights: p.clone(),
            })
        }
        WeightRef::Hub(h) => {
            let c = hub::resolve(h, cfg, false)?;
            Ok(Location::Files {
                card: c.card,
                weights: c.weights,
            })
        }
    }
}

/// Resolve `r`, read its card and weights, and verify the weights against the card.
pub fn load(r: &WeightRef, cfg: &HubConfig) -> Result<LoadedModel> {
    load_location(locate(r, cfg)?)
}

/// Read and verify what [`locate`] found.
pub fn load_location(location: Location) -> Result<LoadedModel> {
    match &location {
        Location::Builtin { name } => {
            let m = builtin(name)?;
            let card = ModelCard::from_bytes(m.card_text.as_bytes(), m.card_file)?;
            let source = format!("builtin:{name}");
            verify_bytes(m.bytes, &card, &source)?;
            Ok(LoadedModel {
                card,
                bytes: Cow::Borrowed(m.bytes),
                source,
                location,
            })
        }
        Location::Files { card, weights } => {
            let card_parsed = ModelCard::from_path(card)?;
            check_card_names_file(&card_parsed, card, weights)?;
            let bytes = std::fs::read(weights).map_err(|e| ModelError::io(weights, e))?;
            let source = weights.display().to_string();
            verify_bytes(&bytes, &card_parsed, &source)?;
            Ok(LoadedModel {
                card: card_parsed,
                bytes: Cow::Owned(bytes),
                source,
                location,
            })
        }
    }
}

/// A card copied next to the wrong file would otherwise fail with a confusing checksum error.
fn check_card_names_file(card: &ModelCard, card_path: &Path, weights: &Path) -> Result<()> {
    let base = weights
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if card.file != base {
        return Err(ModelError::Card {
            file: card_path.display().to_string(),
            message: format!("describes '{}', not '{base}'", card.file),
        });
    }
    Ok(())
}
