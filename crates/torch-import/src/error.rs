//! [`ImportError`]: every failure of this crate, always naming the file (and the tensor or
//! attribute key where one is involved).

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = ImportError> = std::result::Result<T, E>;

/// Why a `.pt` checkpoint could not be read or imported, or an output not written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not a readable zip archive (legacy non-zip `torch.save` files, truncated or
    /// corrupt archives, compressed entries).
    #[error("{}: not a readable PyTorch zip checkpoint: {reason}", path.display())]
    Archive { path: PathBuf, reason: String },

    /// The archive has no `<root>/data.pkl` (so it is no `torch.save` checkpoint).
    #[error("{}: no `<root>/data.pkl` in the archive (not a torch.save zip checkpoint)", path.display())]
    MissingPickle { path: PathBuf },

    /// The pickle stream is malformed, truncated or uses something this reader does not support.
    #[error("{}: malformed pickle `{entry}`: {reason}", path.display())]
    Pickle {
        path: PathBuf,
        entry: String,
        reason: String,
    },

    /// The pickle's top object is neither a module instance nor a dict.
    #[error(
        "{}: unsupported top-level pickle object ({found}); expected a module saved with torch.save(module)",
        path.display()
    )]
    UnsupportedTopObject { path: PathBuf, found: String },

    /// A tensor's storage reference, shape or data is invalid.
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },

    /// The module is not of the kind the importer expects.
    #[error("{}: not a {expected} (top-level class `{found}`)", path.display())]
    WrongKind {
        path: PathBuf,
        expected: &'static str,
        found: String,
    },

    /// A tensor or attribute the importer needs is absent.
    #[error("{}: missing {what} `{key}`", path.display())]
    Missing {
        path: PathBuf,
        what: &'static str,
        key: String,
    },

    /// A tensor or attribute is present but has the wrong type, shape or value.
    #[error("{}: `{key}`: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },

    /// The score network's activation has no name in the `popcosmos/diffusion/v1` format.
    #[error("{}: `{key}`: unknown or unsupported activation `{class}`", path.display())]
    UnknownActivation {
        path: PathBuf,
        key: String,
        class: String,
    },

    /// The SDE class is none of VPSDE, subVPSDE, VESDE.
    #[error("{}: `{key}`: unknown SDE class `{class}`", path.display())]
    UnknownSde {
        path: PathBuf,
        key: String,
        class: String,
    },

    /// `import_photulators` was given no files.
    #[error("no input files given")]
    NoInputs,

    /// The output could not be serialised or written.
    #[error("{}: cannot write: {reason}", path.display())]
    Write { path: PathBuf, reason: String },

    /// A bug guard: a panic inside a dependency while parsing this file was caught.
    #[error("{}: internal error while parsing (please report): {reason}", path.display())]
    Internal { path: PathBuf, reason: String },
}

impl ImportError {
    /// The file the error is about (`None` only for [`ImportError::NoInputs`]).
    pub fn path(&self) -> Option<&std::path::Path> {
        use ImportError::*;
        match self {
            Io { path, .. }
            | Archive { path, .. }
            | MissingPickle { path }
            | Pickle { path, .. }
            | UnsupportedTopObject { path, .. }
            | Tensor { path, .. }
            | WrongKind { path, .. }
            | Missing { path, .. }
            | Invalid { path, .. }
            | UnknownActivation { path, .. }
            | UnknownSde { path, .. }
            | Write { path, .. }
            | Internal { path, .. } => Some(path),
            NoInputs => None,
        }
    }
}
