//! # popcosmos-torch-import — whole-module PyTorch `.pt` checkpoints → safetensors
//!
//! The pop-cosmos models were released as `torch.save(module)` pickles (not state dicts), so
//! they can only be read in Python with the original classes importable. This crate reads them
//! natively — a zip with `<root>/data.pkl` (pickle protocol 2) and `<root>/data/<key>` storages
//! — with candle's pickle reader and a walker over the module tree, and converts the two kinds
//! the port needs into self-describing safetensors files:
//!
//! * [`read_torch_module`]`(path) -> `[`TorchModule`]: every tensor under its state-dict name
//!   (`model.model.NN.0.weight`; on CPU, dtype as stored; `_parameters`, `_buffers` and
//!   `_modules` are transparent, tensors held as plain attributes are included), and the plain
//!   attributes by dotted name as [`AttrValue`]s: ints, floats (e.g. VPSDE's
//!   `model.sde.beta_min` = 0.1), strings, bools, lists, dicts, and the class of every
//!   submodule (`model.model.activation` → `Object("torch.nn.modules.activation.Tanh")`).
//!   [`read_torch_module_from_bytes`] does the same for a checkpoint in memory.
//! * [`import_diffusion`]`(path) -> `[`ImportedFile`]: a flowfusion
//!   `PopulationModelDiffusion[Conditional]`, at the top level or wrapped (pop_cosmos
//!   `NoiseModel` holds it under `model`), in the `popcosmos/diffusion/v1` layout:
//!   `score_net.time_embedding.W [E/2]`, `score_net.layer.{i}.weight [out,in]` / `.bias [out]`,
//!   `x_shift`/`x_scale [D]`, and if conditional `conditional_shift`/`conditional_scale [C]`,
//!   all f32; metadata `format` = `popcosmos/diffusion/v1` and `config` = JSON
//!   `{"dim","conditional_dim","embedding_dim","hidden","activation","no_sigma","sde"}` with
//!   `sde` one of `{"kind":"vp"|"sub-vp","beta_min","beta_max","t_max","epsilon"}` or
//!   `{"kind":"ve","sigma_min","sigma_max","t_max","epsilon"}`; every value is read from the
//!   pickle (tensor-valued scalars are the stored f32 widened exactly to f64). Also metadata
//!   `source_class` (the top-level class) and, when the model stores them, `solver`
//!   (`{"method":…, "options":{…}}`). For a `NoiseModel` wrapper the file also holds the
//!   wrapper's `error_floor`, `f_b`, `log_error_min/max`, `magnitude_min/max`, `zp_star` and
//!   `sde.T`/`sde.beta_min`/`sde.beta_max`/`sde.epsilon` (0-d values as `[1]`), i.e. every
//!   tensor of the converted `noise_model.safetensors`, bit for bit.
//! * [`import_photulators`]`(paths) -> `[`ImportedFile`]: one speculator `Photulator` `.pt`
//!   per band, stacked in the order given into the `pop-cosmos-rs/photulator-stack/v1` layout
//!   of `photulator_cosmos26.safetensors`: `band.{k}.layer.{i}.weight [out,in]` (the
//!   transpose of speculator's `W [in,out]`), `.bias`, `.alpha`, `.beta`,
//!   `band.{k}.input_shift/input_scale`, `band.{k}.output_shift/output_scale` (the band's
//!   `magnitudes_shift/scale`) and `band.{k}.f_b` as `[1]`, the stacked `output_shift`,
//!   `output_scale`, `f_b [K]`, and `input_shift/input_scale` once when all bands agree;
//!   metadata `format` and `bands` (JSON list of each file's `filters` entry).
//! * [`detect_kind`] says which importer fits a file (from its classes).
//! * [`ImportedFile::write`] writes the safetensors file atomically (temp file + rename).
//!
//! ```no_run
//! let noise = popcosmos_torch_import::import_diffusion("noiseModel.pt")?;
//! println!("{}", noise.metadata["config"]);
//! noise.write("noise_model.safetensors")?;
//! # Ok::<(), popcosmos_torch_import::ImportError>(())
//! ```
//!
//! Every failure is a typed [`ImportError`] naming the file (and the tensor or attribute):
//! non-zip, truncated or corrupt archives, a missing `data.pkl`, malformed pickles (a shadow
//! pass rejects over-long integers, nesting deeper than 200 levels and memo expansion past
//! 4 M objects before candle parses the stream), an unsupported top-level object, storages
//! that are missing or too short for their views. Nothing here panics on malformed input (a
//! panic inside a dependency would be caught and returned as [`ImportError::Internal`]).
//!
//! Limits: pickle protocol 2 only (what `torch.save` writes by default); little-endian
//! archives; objects shared by reference (pickle memo) are seen in full only at their first
//! occurrence (later references carry only their class), as candle's reader copies memo
//! entries when they are stored; bool/complex/int8 storages are listed in
//! [`TorchModule::skipped`] instead of loaded.

#![warn(missing_docs)]

mod diffusion;
mod error;
mod module;
mod photulator;
mod scan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

pub use diffusion::{DIFFUSION_FORMAT, import_diffusion, import_diffusion_module};
pub use error::{ImportError, Result};
pub use module::{AttrValue, TorchModule, read_torch_module, read_torch_module_from_bytes};
pub use photulator::{PHOTULATOR_FORMAT, import_photulator_modules, import_photulators};

/// Which importer a checkpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A flowfusion `PopulationModelDiffusion[Conditional]`, possibly wrapped.
    Diffusion,
    /// A speculator `Photulator` (one band).
    Photulator,
}

impl ModelKind {
    /// The kind of an already read module, `None` if neither importer applies.
    pub fn of(module: &TorchModule) -> Option<ModelKind> {
        if photulator::is_photulator(&module.class_name) {
            Some(ModelKind::Photulator)
        } else if diffusion::find_diffusion(module).is_some() {
            Some(ModelKind::Diffusion)
        } else {
            None
        }
    }
}

/// Reads `path` and says which importer fits it ([`ImportError::WrongKind`] if none).
pub fn detect_kind(path: impl AsRef<Path>) -> Result<ModelKind> {
    let module = read_torch_module(path)?;
    ModelKind::of(&module).ok_or_else(|| ImportError::WrongKind {
        path: module.path.clone(),
        expected: "flowfusion diffusion model or speculator Photulator",
        found: module.class_name.clone(),
    })
}

/// Tensors plus string metadata, ready to be written as one safetensors file.
#[derive(Debug, Clone)]
pub struct ImportedFile {
    /// Name → tensor (CPU), in a stable order.
    pub tensors: Vec<(String, Tensor)>,
    /// The safetensors `__metadata__` entries (`format`, `config`, `bands`, …).
    pub metadata: BTreeMap<String, String>,
}

impl ImportedFile {
    /// The tensor with this name.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The `format` metadata entry.
    pub fn format(&self) -> Option<&str> {
        self.metadata.get("format").map(String::as_str)
    }

    /// The safetensors bytes (tensors sorted as the `safetensors` crate does).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.serialize(Path::new("<memory>"))
    }

    fn serialize(&self, path: &Path) -> Result<Vec<u8>> {
        let err = |reason: String| ImportError::Write {
            path: path.to_path_buf(),
            reason,
        };
        let mut seen = HashSet::new();
        for (name, t) in &self.tensors {
            if !seen.insert(name.as_str()) {
                return Err(err(format!("tensor `{name}` appears twice")));
            }
            if !matches!(
                t.dtype(),
                DType::U8
                    | DType::U32
                    | DType::I16
                    | DType::I32
                    | DType::I64
                    | DType::F16
                    | DType::BF16
                    | DType::F32
                    | DType::F64
            ) {
                return Err(err(format!(
                    "tensor `{name}`: dtype {:?} is not supported",
                    t.dtype()
                )));
            }
        }
        let metadata: HashMap<String, String> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let bytes = safetensors::serialize(
            self.tensors.iter().map(|(n, t)| (n.as_str(), t)),
            Some(metadata),
        )
        .map_err(|e| err(e.to_string()))?;
        canonical_header(bytes).map_err(err)
    }

    /// Writes the safetensors file: a temporary file next to `path`, synced, then renamed over
    /// `path`, so readers never see a partial file.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.serialize(path)?;
        let err = |reason: String| ImportError::Write {
            path: path.to_path_buf(),
            reason,
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| err("not a file path".into()))?
            .to_string_lossy()
            .into_owned();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!(".{file_name}.tmp-{}-{nanos}", std::process::id()));
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, path)
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e.to_string())
        })
    }
}

/// The same safetensors file with its JSON header keys sorted (`safetensors` writes the
/// metadata from a `HashMap`, so its order changes from run to run): identical inputs give
/// identical bytes. Tensor data and offsets are unchanged.
fn canonical_header(bytes: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    let n = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or("serialised file too short")? as usize;
    let header = bytes.get(8..8 + n).ok_or("serialised header truncated")?;
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let mut header = serde_json::to_vec(&sorted_keys(value)).map_err(|e| e.to_string())?;
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + header.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// `v` with every object's keys inserted in sorted order (whether or not serde_json's
/// `preserve_order` feature is on somewhere in the build).
fn sorted_keys(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, sorted_keys(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        other => other,
    }
}

/// A tensor converted to f32 (exact for f32, round-to-nearest from f64) and reshaped: 0-d →
/// `[1]`. `key` names it in errors.
pub(crate) fn f32_tensor(path: &Path, key: &str, t: &Tensor) -> Result<Tensor> {
    let candle = |e: candle_core::Error| ImportError::Invalid {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason: e.to_string(),
    };
    let t = if t.dtype() == DType::F32 {
        t.clone()
    } else if matches!(t.dtype(), DType::F64 | DType::F16 | DType::BF16) {
        t.to_dtype(DType::F32).map_err(candle)?
    } else {
        return Err(ImportError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason: format!("expected a floating-point tensor, found {:?}", t.dtype()),
        });
    };
    if t.rank() == 0 {
        t.reshape(1).map_err(candle)
    } else {
        Ok(t)
    }
}
