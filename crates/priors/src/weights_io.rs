//! Shared safetensors I/O of the learned priors: every model file carries its `format` and a
//! JSON `config` in the safetensors metadata, and is written atomically. Also the pieces of
//! training state the trainers share (standardisation, learning rate, EMA, checkpoints).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use popcosmos_api::{Error, Result};
use serde::{Serialize, de::DeserializeOwned};

fn format_error(file: &str, message: String) -> Error {
    Error::Format {
        file: file.to_string(),
        message,
    }
}

/// The metadata map of a safetensors buffer (empty if it has none).
pub fn read_metadata(bytes: &[u8], file: &str) -> Result<HashMap<String, String>> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| format_error(file, format!("not a valid safetensors file: {e}")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// The JSON `config` entry of `meta`, parsed.
pub fn read_config<C: DeserializeOwned>(meta: &HashMap<String, String>, file: &str) -> Result<C> {
    let json = meta
        .get("config")
        .ok_or_else(|| format_error(file, "metadata has no `config` entry".into()))?;
    serde_json::from_str::<C>(json)
        .map_err(|e| format_error(file, format!("metadata `config`: {e}")))
}

/// Check the `format` entry is `expected`.
pub fn check_format(meta: &HashMap<String, String>, expected: &str, file: &str) -> Result<()> {
    match meta.get("format").map(String::as_str) {
        Some(f) if f == expected => Ok(()),
        other => Err(format_error(
            file,
            format!("unknown format {other:?} (expected `{expected}`)"),
        )),
    }
}

/// Every tensor of a safetensors buffer on `device`, as f32.
pub fn read_tensors(bytes: &[u8], file: &str, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load_buffer(bytes, device)
        .map_err(|e| format_error(file, format!("not a valid safetensors file: {e}")))?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect()
}

/// The tensor `key` of `tensors`, or a missing-tensor error naming `file`.
pub fn tensor<'a>(
    tensors: &'a HashMap<String, Tensor>,
    key: &str,
    file: &str,
) -> Result<&'a Tensor> {
    tensors.get(key).ok_or_else(|| Error::MissingTensor {
        file: file.to_string(),
        tensor: key.to_string(),
    })
}

/// The tensor `key` of `tensors`, which must hold `len` elements, flattened on `device`.
pub fn vector(
    tensors: &HashMap<String, Tensor>,
    key: &str,
    len: usize,
    file: &str,
    device: &Device,
) -> Result<Tensor> {
    let t = tensor(tensors, key, file)?;
    if t.elem_count() != len {
        return Err(Error::TensorShape {
            file: file.to_string(),
            tensor: key.to_string(),
            expected: vec![len],
            found: t.dims().to_vec(),
        });
    }
    Ok(t.flatten_all()?.to_device(device)?)
}

/// The `config` of a model file of format `format` (checked by `validate`, whose message
/// becomes a format error) and its tensors (f32 on `device`).
pub fn read_model<C: DeserializeOwned>(
    bytes: &[u8],
    file: &str,
    format: &str,
    device: &Device,
    validate: impl FnOnce(&C) -> std::result::Result<(), String>,
) -> Result<(C, HashMap<String, Tensor>)> {
    let meta = read_metadata(bytes, file)?;
    check_format(&meta, format, file)?;
    let config: C = read_config(&meta, file)?;
    validate(&config).map_err(|message| format_error(file, message))?;
    Ok((config, read_tensors(bytes, file, device)?))
}

/// The standardisation `(x_shift, x_scale)` of a model file, `dim` elements each, on `device`.
pub fn standardisation(
    tensors: &HashMap<String, Tensor>,
    dim: usize,
    file: &str,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let get = |key: &str| vector(tensors, key, dim, file, device);
    Ok((get("x_shift")?, get("x_scale")?))
}

/// The methods every learned model over a standardised variable shares, for a type with
/// `x_shift` and `x_scale` fields and a `from_bytes` constructor: `load` (with the doc
/// comment given), `dtype` and `device` (those of the field `$typed`), the standardisation
/// and its two maps.
macro_rules! standardised_model_methods {
    ($(#[$load_doc:meta])* typed_by: $typed:ident) => {
        $(#[$load_doc])*
        pub fn load(path: impl AsRef<std::path::Path>, device: &Device) -> Result<Self> {
            let path = path.as_ref();
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            Self::from_bytes(&bytes, &path.display().to_string(), device)
        }
        /// The dtype of the weights.
        pub fn dtype(&self) -> DType {
            self.$typed.dtype()
        }
        /// The device the weights live on.
        pub fn device(&self) -> &Device {
            self.$typed.device()
        }
        /// Shift of the standardisation, `[D]`: standardised x = (x − shift) / scale.
        pub fn x_shift(&self) -> &Tensor {
            &self.x_shift
        }
        /// Scale of the standardisation, `[D]`.
        pub fn x_scale(&self) -> &Tensor {
            &self.x_scale
        }
        /// Physical → standardised x.
        pub fn standardise(&self, x: &Tensor) -> Result<Tensor> {
            Ok(x.broadcast_sub(&self.x_shift)?
                .broadcast_div(&self.x_scale)?)
        }
        /// Standardised → physical x.
        pub fn unstandardise(&self, x: &Tensor) -> Result<Tensor> {
            Ok(x.broadcast_mul(&self.x_scale)?
                .broadcast_add(&self.x_shift)?)
        }
    };
}
pub(crate) use standardised_model_methods;

/// The training step stored by a trainer's checkpoint (`train_step` metadata).
pub fn checkpoint_step(meta: &HashMap<String, String>, file: &str) -> Result<usize> {
    meta.get("train_step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format_error(
                file,
                "not a training checkpoint (no `train_step` metadata)".into(),
            )
        })
}

/// Column means and standard deviations of training data `x` `[n, D]`; an error names the
/// first column (of the `what` data) without a finite, positive spread.
pub fn mean_std(x: &Tensor, what: &str) -> Result<(Tensor, Tensor)> {
    let mean = x.mean(0)?;
    let std = x.broadcast_sub(&mean)?.sqr()?.mean(0)?.sqrt()?;
    let s: Vec<f32> = std.to_vec1()?;
    if let Some(i) = s.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(Error::Invalid(format!(
            "{what} column {i} has zero or non-finite spread; drop it or fix the samples"
        )));
    }
    Ok((mean, std))
}

/// The learning rate at `step` of `steps`: cosine decay from `lr` to `lr · final_fraction`.
pub fn cosine_learning_rate(lr: f64, final_fraction: f64, step: usize, steps: usize) -> f64 {
    let frac = step as f64 / steps.max(1) as f64;
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * frac.min(1.0)).cos());
    lr * (final_fraction + (1.0 - final_fraction) * cosine)
}

/// Move every `(name, average)` of `ema` towards the variable `name` of `varmap`:
/// a ← `decay` · a + (1 − `decay`) · v, detached (an EMA must not chain every step into one
/// autograd graph).
pub fn update_ema(varmap: &VarMap, ema: &mut [(String, Tensor)], decay: f64) -> Result<()> {
    let vars = varmap.data().lock().expect("varmap lock");
    for (name, e) in ema.iter_mut() {
        let v = vars[name.as_str()].as_tensor().detach();
        *e = ((&*e * decay)? + (v * (1.0 - decay))?)?.detach();
    }
    Ok(())
}

/// A trainer's variables sorted by name (a fixed order keeps the optimiser reproducible).
pub fn sorted_vars(varmap: &VarMap) -> Vec<Var> {
    let vars = varmap.data().lock().expect("varmap lock");
    let mut named: Vec<(&String, &Var)> = vars.iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    named.into_iter().map(|(_, v)| v.clone()).collect()
}

/// A trainer's variables: detached copies, sorted by name.
pub fn snapshot(varmap: &VarMap) -> Result<Vec<(String, Tensor)>> {
    let vars = varmap.data().lock().expect("varmap lock");
    let mut out: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().detach().copy()?)))
        .collect::<Result<_>>()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A trainer checkpoint's additions to a model file: the raw weights of `varmap` under
/// `train.raw.*` in `tensors`, and `extra` metadata plus `train_step` and `train_options`.
pub fn checkpoint<O: Serialize>(
    varmap: &VarMap,
    tensors: &mut HashMap<String, Tensor>,
    extra: &HashMap<String, String>,
    step: usize,
    options: &O,
) -> Result<HashMap<String, String>> {
    for (name, v) in snapshot(varmap)? {
        tensors.insert(format!("train.raw.{name}"), v);
    }
    let mut meta = extra.clone();
    meta.insert("train_step".into(), step.to_string());
    meta.insert(
        "train_options".into(),
        serde_json::to_string(options).expect("serialisable"),
    );
    Ok(meta)
}

/// A trainer checkpoint read back: its bytes, every tensor (f32 on `device`) and the step.
pub fn read_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(Vec<u8>, HashMap<String, Tensor>, usize)> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let step = checkpoint_step(&read_metadata(&bytes, &file)?, &file)?;
    let tensors = read_tensors(&bytes, &file, device)?;
    Ok((bytes, tensors, step))
}

/// Set a trainer's variables from a checkpoint's `train.raw.*` tensors.
pub fn restore_raw(varmap: &VarMap, tensors: &HashMap<String, Tensor>, file: &str) -> Result<()> {
    for (name, var) in varmap.data().lock().expect("varmap lock").iter() {
        var.set(tensor(tensors, &format!("train.raw.{name}"), file)?)?;
    }
    Ok(())
}

/// Write `tensors` (as f32, sorted by name, so the bytes are reproducible) with `format` and
/// `config` added to `meta`; a temporary file is renamed into place.
pub fn write_model_file<C: Serialize>(
    tensors: HashMap<String, Tensor>,
    mut meta: HashMap<String, String>,
    format: &str,
    config: &C,
    path: &Path,
) -> Result<()> {
    meta.insert("format".into(), format.into());
    meta.insert(
        "config".into(),
        serde_json::to_string(config).expect("serialisable config"),
    );
    let tmp = path.with_extension("safetensors.partial");
    let mut sorted: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    safetensors::serialize_to_file(sorted, Some(meta), &tmp).map_err(|e| {
        format_error(
            &tmp.display().to_string(),
            format!("cannot write safetensors: {e}"),
        )
    })?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// Re-draw a trainer's initial weights from the seeded stream, names sorted (candle's VarMap
/// initialisation uses an unseeded generator): weights 𝒩(0, 2/fan_in) (Kaiming), biases U(±1/√fan_in).
pub fn seed_weights(varmap: &VarMap, rng: &mut popcosmos_api::HostRng) -> Result<()> {
    use popcosmos_api::RandomSource as _;
    let vars = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name.as_str()];
        let shape = var.as_tensor().shape().clone();
        let dev = var.as_tensor().device().clone();
        let fresh = if name.ends_with("weight") {
            let fan_in = shape.dims()[1] as f64;
            (rng.normal(&shape, &dev)? * (2.0 / fan_in).sqrt())?
        } else {
            let fan_in = vars[name.replace("bias", "weight").as_str()]
                .as_tensor()
                .dim(1)? as f64;
            (rng.uniform(&shape, &dev)?.affine(2.0, -1.0)? / fan_in.sqrt())?
        };
        var.set(&fresh)?;
    }
    Ok(())
}
