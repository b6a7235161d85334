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
        /// The checkpoint.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The file is not a readable zip archive (legacy non-zip `torch.save` files, truncated or
    /// corrupt archives, compressed entries).
    #[error("{}: not a readable PyTorch zip checkpoint: {reason}", path.display())]
    Archive {
        /// The checkpoint.
        path: PathBuf,
        /// What the zip reader said.
        reason: String,
    },

    /// The archive has no `<root>/data.pkl` (so it is no `torch.save` checkpoint).
    #[error("{}: no `<root>/data.pkl` in the archive (not a torch.save zip checkpoint)", path.display())]
    MissingPickle {
        /// The checkpoint.
        path: PathBuf,
    },

    /// The pickle stream is malformed, truncated or uses something this reader does not support.
    #[error("{}: malformed pickle `{entry}`: {reason}", path.display())]
    Pickle {
        /// The checkpoint.
        path: PathBuf,
        /// The pickle's name in the archive (`<root>/data.pkl`).
        entry: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The pickle's top object is neither a module instance nor a dict.
    #[error(
        "{}: unsupported top-level pickle object ({found}); expected a module saved with torch.save(module)",
        path.display()
    )]
    UnsupportedTopObject {
        /// The checkpoint.
        path: PathBuf,
        /// A description of the object found.
        found: String,
    },

    /// A tensor's storage reference, shape or data is invalid.
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    Tensor {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's state-dict name.
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The module is not of the kind the importer expects.
    #[error("{}: not a {expected} (top-level class `{found}`)", path.display())]
    WrongKind {
        /// The checkpoint.
        path: PathBuf,
        /// The kind of model the importer wanted, in words.
        expected: &'static str,
        /// The top-level class found.
        found: String,
    },

    /// A tensor or attribute the importer needs is absent.
    #[error("{}: missing {what} `{key}`", path.display())]
    Missing {
        /// The checkpoint.
        path: PathBuf,
        /// `tensor`, `attribute`, …
        what: &'static str,
        /// Its dotted name.
        key: String,
    },

    /// A tensor or attribute is present but has the wrong type, shape or value.
    #[error("{}: `{key}`: {reason}", path.display())]
    Invalid {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's or attribute's dotted name.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The score network's activation has no name in the `popcosmos/diffusion/v1` format.
    #[error("{}: `{key}`: unknown or unsupported activation `{class}`", path.display())]
    UnknownActivation {
        /// The checkpoint.
        path: PathBuf,
        /// The activation attribute's dotted name.
        key: String,
        /// Its class (or the function it refers to).
        class: String,
    },

    /// The SDE class is none of VPSDE, subVPSDE, VESDE.
    #[error("{}: `{key}`: unknown SDE class `{class}`", path.display())]
    UnknownSde {
        /// The checkpoint.
        path: PathBuf,
        /// The SDE attribute's dotted name.
        key: String,
        /// Its class.
        class: String,
    },

    /// `import_photulators` was given no files.
    #[error("no input files given")]
    NoInputs,

    /// The output could not be serialised or written.
    #[error("{}: cannot write: {reason}", path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// A bug guard: a panic inside a dependency while parsing this file was caught.
    #[error("{}: internal error while parsing (please report): {reason}", path.display())]
    Internal {
        /// The checkpoint.
        path: PathBuf,
        /// The panic message.
        reason: String,
    },
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
