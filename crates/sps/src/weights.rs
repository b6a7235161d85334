//! Loading and validating safetensors weight files.
//!
//! Every model in this crate reads its tensors through [`WeightFile`], which turns a missing
//! tensor or a tensor of the wrong shape into [`Error::MissingTensor`] / [`Error::TensorShape`]
//! naming the file and the tensor, so a wrong or truncated weights file fails at load time
//! rather than producing silently wrong photometry.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use popcosmos_api::{Error, Result};

/// The tensors of one safetensors file, plus the name used in error messages.
#[derive(Debug)]
pub struct WeightFile {
    name: String,
    tensors: HashMap<String, Tensor>,
}

impl WeightFile {
    /// Read a safetensors file from disk onto `device`.
    pub fn from_path(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path.display().to_string(), device)
    }

    /// Parse an in-memory safetensors buffer (e.g. bundled with `include_bytes!`); `name` is the
    /// file name reported in errors.
    pub fn from_bytes(bytes: &[u8], name: impl Into<String>, device: &Device) -> Result<Self> {
        let name = name.into();
        let tensors =
            candle_core::safetensors::load_buffer(bytes, device).map_err(|e| Error::Format {
                file: name.clone(),
                message: format!("not a valid safetensors file: {e}"),
            })?;
        Ok(Self { name, tensors })
    }

    /// File name used in error messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the file contains `tensor`.
    pub fn contains(&self, tensor: &str) -> bool {
        self.tensors.contains_key(tensor)
    }

    /// A tensor of exactly `shape`, converted to f32.
    pub fn get(&self, tensor: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get_any(tensor)?;
        if t.dims() != shape {
            return Err(Error::TensorShape {
                file: self.name.clone(),
                tensor: tensor.to_string(),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        Ok(t.to_dtype(DType::F32)?)
    }

    /// A tensor of any shape and its original dtype.
    pub fn get_any(&self, tensor: &str) -> Result<Tensor> {
        self.tensors
            .get(tensor)
            .cloned()
            .ok_or_else(|| Error::MissingTensor {
                file: self.name.clone(),
                tensor: tensor.to_string(),
            })
    }

    /// The bands `keep` (in that order) of a stacked per-band model: tensors `band.{b}.*`
    /// renumbered, the per-band `stacked` tensors (band = first axis) row-selected, the others
    /// shared.
    pub fn select_bands(&self, keep: &[usize], stacked: &[&str]) -> Result<Self> {
        let idx: Vec<u32> = keep.iter().map(|&b| b as u32).collect();
        let mut tensors = HashMap::new();
        for (key, t) in &self.tensors {
            let band = key
                .strip_prefix("band.")
                .and_then(|rest| rest.split_once('.'))
                .and_then(|(b, tail)| Some((b.parse::<usize>().ok()?, tail)));
            if let Some((b, tail)) = band {
                if let Some(new) = keep.iter().position(|&k| k == b) {
                    tensors.insert(format!("band.{new}.{tail}"), t.clone());
                }
            } else if stacked.contains(&key.as_str()) {
                let idx = Tensor::from_slice(&idx, idx.len(), t.device())?;
                tensors.insert(key.clone(), t.index_select(&idx, 0)?.contiguous()?);
            } else {
                tensors.insert(key.clone(), t.clone());
            }
        }
        Ok(Self {
            name: self.name.clone(),
            tensors,
        })
    }

    /// A tensor of `shape` copied to the host as f32 values (for constants used in host code).
    pub fn get_host(&self, tensor: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(self.get(tensor, shape)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// Parse a JSON model card ("sidecar") into a config type, naming the file on failure.
pub(crate) fn parse_card<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Format {
        file: file.to_string(),
        message: format!("bad model card: {e}"),
    })
}

/// Read the JSON sidecar next to a weights file (`x.safetensors` → `x.json`), if present.
pub(crate) fn read_sidecar(weights: &Path) -> Result<Option<(String, String)>> {
    let card = weights.with_extension("json");
    if !card.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&card).map_err(|e| Error::io(&card, e))?;
    Ok(Some((text, card.display().to_string())))
}
