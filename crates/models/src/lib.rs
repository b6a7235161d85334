//! # popcosmos-models — weight references, model cards, the Hugging Face cache, verification
//!
//! Trained emulator weights are data that users fetch, pin and share. This crate turns a
//! weight reference into verified bytes:
//!
//! * [`WeightRef`] parses the three reference forms: a local path, `builtin:NAME` (a model
//!   bundled in the binary, [`BUILTIN`]) and `hf://ORG/REPO[@REVISION]/FILE`.
//! * [`ModelCard`] is the YAML/JSON sidecar of every model file (`x.safetensors` →
//!   `x.card.yaml`): architecture, parameter order and bounds, band names, units, provenance,
//!   licence, and the file's `size_bytes` and `sha256`.
//! * [`load`] resolves a reference and returns a [`LoadedModel`] whose bytes have passed the
//!   card's size and sha256 checks (truncated or corrupted files are rejected with an error
//!   naming the file). [`locate`] only finds the files.
//! * [`HubConfig`] says where the hub is (`HF_ENDPOINT`), where the cache is (`HF_HUB_CACHE`,
//!   `HF_HOME`, …) and whether the network may be used (`HF_HUB_OFFLINE`). Binaries build it
//!   with [`HubConfig::from_env`]; libraries and tests pass it explicitly.
//! * [`hub`]: the standard Hugging Face cache layout (`models--ORG--REPO/{refs,blobs,snapshots}`),
//!   offline lookup and verified downloads through hf-hub: nothing reaches the cache before
//!   it matched its card.
//! * [`sha256_hex`], [`verify_bytes`] and a structural safetensors check
//!   ([`inspect_safetensors`]).
//!
//! ```no_run
//! use popcosmos_models::{HubConfig, WeightRef, load};
//! let r: WeightRef = "hf://cosmo-pop/photulators@v1/cosmos26.safetensors".parse()?;
//! let model = load(&r, &HubConfig::from_env())?;
//! println!("{} bands, sha256 {}", model.card.bands.len(), model.card.sha256);
//! # Ok::<(), popcosmos_models::ModelError>(())
//! ```
//!
//! Every failure is a typed [`ModelError`]; nothing here panics on malformed input.

#![warn(missing_docs)]

mod builtin;
mod card;
mod error;
// Namespace: free functions over the Hugging Face cache (`hub::resolve`, `hub::list_cached`, …).
pub mod hub;
mod load;
// Namespace: test helpers (`mock_hub::MockHub`), behind the `mock-hub` feature.
#[cfg(feature = "mock-hub")]
pub mod mock_hub;
mod reference;
mod verify;

pub use builtin::{BUILTIN, BuiltinModel, builtin};
pub use card::{
    Architecture, CARD_SCHEMA, ModelCard, Parameter, Provenance, Units, WeightFormat, card_path_for,
};
pub use error::{ModelError, Result};
pub use hub::HubConfig;
pub use load::{LoadedModel, Location, load, load_location, locate};
pub use reference::{HubRef, WeightRef};
pub use verify::{SafetensorsSummary, inspect_safetensors, sha256_hex, verify_bytes};
