//! The typed errors of this crate. Every variant that concerns a file names it, so a user can
//! tell a truncated download from a typo in a card from an offline cache miss.

use std::path::PathBuf;

/// Everything that can go wrong while resolving, fetching, verifying or parsing a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A weight reference string that is neither a path, `builtin:NAME` nor `hf://ORG/REPO[@REV]/FILE`.
    #[error("bad weight reference '{reference}': {reason}")]
    BadReference {
        /// The reference as given.
        reference: String,
        /// Why it does not parse.
        reason: String,
    },
    /// `builtin:NAME` with a name that is not bundled.
    #[error("no bundled model '{name}' (bundled: {available})")]
    UnknownBuiltin {
        /// The requested `NAME`.
        name: String,
        /// The bundled names, comma-separated.
        available: String,
    },
    /// A file could not be read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A weights file without its model card next to it.
    #[error(
        "{}: no model card; expected {} (a card records the file's sha256, see docs/models.md)",
        file.display(),
        card.display()
    )]
    MissingCard {
        /// The weights file.
        file: PathBuf,
        /// Where its card was looked for.
        card: PathBuf,
    },
    /// A model card that does not parse or violates the schema.
    #[error("{file}: bad model card: {message}")]
    Card {
        /// The card file.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// The file has a different length than its card says: truncated or corrupted.
    #[error(
        "{file}: size {found} bytes, but the model card says {expected} bytes (truncated or corrupted file)"
    )]
    SizeMismatch {
        /// The weights file.
        file: String,
        /// `size_bytes` of the card.
        expected: u64,
        /// The file's actual length in bytes.
        found: u64,
    },
    /// The file's sha256 differs from its card's: corrupted or a different model.
    #[error("{file}: sha256 {found} does not match the model card's {expected} (corrupted file)")]
    ChecksumMismatch {
        /// The weights file.
        file: String,
        /// `sha256` of the card (lowercase hex).
        expected: String,
        /// The file's actual sha256 (lowercase hex).
        found: String,
    },
    /// The bytes are not a readable safetensors file.
    #[error("{file}: not a valid safetensors file: {message}")]
    Safetensors {
        /// The weights file.
        file: String,
        /// What the safetensors reader said.
        message: String,
    },
    /// `HF_HUB_OFFLINE=1` and the reference is not in the cache.
    #[error(
        "{reference}: not in the Hugging Face cache {} and HF_HUB_OFFLINE is set; \
         run `popcosmos-cli models fetch {reference}` while online",
        cache_dir.display()
    )]
    OfflineCacheMiss {
        /// The `hf://` reference.
        reference: String,
        /// The Hugging Face cache that was searched.
        cache_dir: PathBuf,
    },
    /// The hub could not be reached or refused the request.
    #[error("{reference}: download from {endpoint} failed: {source}")]
    Download {
        /// The `hf://` reference.
        reference: String,
        /// The hub endpoint (`HF_ENDPOINT`).
        endpoint: String,
        /// What hf-hub said.
        #[source]
        source: Box<hf_hub::api::sync::ApiError>,
    },
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
