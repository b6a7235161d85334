//! flowfusion `PopulationModelDiffusion[Conditional]` → `popcosmos/diffusion/v1`.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::error::{ImportError, Result};
use crate::module::{AttrValue, TorchModule, read_torch_module};
use crate::{ImportedFile, f32_tensor};

/// `format` metadata of an imported diffusion model.
pub const DIFFUSION_FORMAT: &str = "popcosmos/diffusion/v1";

/// pop_cosmos `NoiseModel` tensors copied next to the diffusion model (0-d ones as `[1]`).
const NOISE_MODEL_EXTRAS: [&str; 7] = [
    "error_floor",
    "f_b",
    "log_error_min",
    "log_error_max",
    "magnitude_min",
    "magnitude_max",
    "zp_star",
];

pub(crate) fn last_segment(class: &str) -> &str {
    class.rsplit('.').next().unwrap_or(class)
}

fn is_diffusion_class(class: &str) -> bool {
    matches!(
        last_segment(class),
        "PopulationModelDiffusion" | "PopulationModelDiffusionConditional"
    )
}

/// The attribute prefix (`""` or `"name."`) of the diffusion model inside `m`: the top level,
/// else the shallowest instance of a diffusion class (preferring one whose score network
/// tensors were read, as memo-shared references carry none).
pub(crate) fn find_diffusion(m: &TorchModule) -> Option<String> {
    if is_diffusion_class(&m.class_name) {
        return Some(String::new());
    }
    let mut candidates: Vec<&String> = m
        .attributes
        .iter()
        .filter(|(_, v)| v.class_name().is_some_and(is_diffusion_class))
        .map(|(k, _)| k)
        .collect();
    candidates.sort_by_key(|k| {
        let has_net = m.tensor(&format!("{k}.model.W")).is_some();
        (!has_net, k.split('.').count(), k.len(), (*k).clone())
    });
    candidates.first().map(|k| format!("{k}."))
}

/// Reads `path` and converts the diffusion model in it (see the crate docs).
pub fn import_diffusion(path: impl AsRef<Path>) -> Result<ImportedFile> {
    import_diffusion_module(&read_torch_module(path)?)
}

struct Ctx<'a> {
    m: &'a TorchModule,
    path: &'a Path,
}

impl Ctx<'_> {
    fn tensor(&self, key: &str) -> Result<&Tensor> {
        self.m.tensor(key).ok_or_else(|| ImportError::Missing {
            path: self.path.to_path_buf(),
            what: "tensor",
            key: key.to_string(),
        })
    }

    fn attr(&self, key: &str) -> Result<&AttrValue> {
        self.m.attr(key).ok_or_else(|| ImportError::Missing {
            path: self.path.to_path_buf(),
            what: "attribute",
            key: key.to_string(),
        })
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> ImportError {
        ImportError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// Shape check: `t` must have exactly `dims`.
    fn shape(&self, key: &str, t: &Tensor, dims: &[usize]) -> Result<()> {
        if t.dims() != dims {
            return Err(self.invalid(key, format!("shape {:?}, expected {dims:?}", t.dims())));
        }
        Ok(())
    }

    fn vector_len(&self, key: &str, t: &Tensor) -> Result<usize> {
        match t.dims() {
            [n] => Ok(*n),
            d => Err(self.invalid(key, format!("shape {d:?}, expected a vector"))),
        }
    }

    /// A number stored as a Python float/int attribute or as a one-element tensor.
    fn scalar(&self, key: &str) -> Result<f64> {
        let value = if let Some(a) = self.m.attr(key) {
            a.as_f64()
                .ok_or_else(|| self.invalid(key, format!("expected a number, found {a:?}")))?
        } else if let Some(t) = self.m.tensor(key) {
            if t.elem_count() != 1 {
                return Err(self.invalid(key, format!("shape {:?}, expected one value", t.dims())));
            }
            let v = t
                .flatten_all()
                .and_then(|t| t.to_dtype(DType::F64))
                .and_then(|t| t.to_vec1::<f64>())
                .map_err(|e| self.invalid(key, e.to_string()))?;
            v[0]
        } else {
            return Err(ImportError::Missing {
                path: self.path.to_path_buf(),
                what: "attribute or tensor",
                key: key.to_string(),
            });
        };
        if !value.is_finite() {
            return Err(self.invalid(key, format!("{value} is not finite")));
        }
        Ok(value)
    }

    fn optional_int(&self, key: &str) -> Result<Option<usize>> {
        match self.m.attr(key) {
            None | Some(AttrValue::None) => Ok(None),
            Some(a) => a
                .as_i64()
                .and_then(|i| usize::try_from(i).ok())
                .map(Some)
                .ok_or_else(|| self.invalid(key, format!("expected an int, found {a:?}"))),
        }
    }

    fn activation(&self, key: &str) -> Result<String> {
        let class = match self.attr(key)? {
            AttrValue::Object(c) | AttrValue::Global(c) => c.clone(),
            other => {
                return Err(self.invalid(
                    key,
                    format!("expected a module or function, found {other:?}"),
                ));
            }
        };
        let unknown = || ImportError::UnknownActivation {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            class: class.clone(),
        };
        Ok(match last_segment(&class).to_ascii_lowercase().as_str() {
            "tanh" => "tanh",
            "silu" => "silu",
            "relu" => "relu",
            "sigmoid" => "sigmoid",
            "gelu" => match self
                .m
                .attr(&format!("{key}.approximate"))
                .and_then(AttrValue::as_str)
            {
                None | Some("none") => "gelu",
                Some("tanh") => "gelu_tanh",
                Some(_) => return Err(unknown()),
            },
            _ => return Err(unknown()),
        }
        .to_string())
    }
}

/// Converts an already read module (see [`import_diffusion`]).
pub fn import_diffusion_module(m: &TorchModule) -> Result<ImportedFile> {
    let path = m.path.as_path();
    let p = find_diffusion(m).ok_or_else(|| ImportError::WrongKind {
        path: path.to_path_buf(),
        expected: "flowfusion diffusion model (PopulationModelDiffusion[Conditional])",
        found: m.class_name.clone(),
    })?;
    let cx = Ctx { m, path };
    let k = |s: &str| format!("{p}{s}");
    let mut out: Vec<(String, Tensor)> = Vec::new();

    // Fourier time embedding.
    let w_key = k("model.W");
    let w = cx.tensor(&w_key)?;
    let half = w.elem_count();
    if half == 0 || w.rank() > 1 {
        return Err(cx.invalid(
            &w_key,
            format!("shape {:?}, expected a non-empty vector", w.dims()),
        ));
    }
    let e = 2 * half;
    let w = f32_tensor(path, &w_key, w)?;
    out.push(("score_net.time_embedding.W".into(), w));

    // Standardisation and the conditional inputs.
    let (shift_key, scale_key) = (k("shift"), k("scale"));
    let shift = cx.tensor(&shift_key)?;
    let d = cx.vector_len(&shift_key, shift)?;
    let scale = cx.tensor(&scale_key)?;
    cx.shape(&scale_key, scale, &[d])?;
    let (cshift_key, cscale_key) = (k("conditional_shift"), k("conditional_scale"));
    let c = match (m.tensor(&cshift_key), m.tensor(&cscale_key)) {
        (None, None) => 0,
        (Some(cs), _) => {
            let c = cx.vector_len(&cshift_key, cs)?;
            cx.shape(&cscale_key, cx.tensor(&cscale_key)?, &[c])?;
            c
        }
        (None, Some(_)) => cx.tensor(&cshift_key).map(|_| 0)?,
    };
    let dims_key = k("model.n_dimensions");
    if let Some(n) = cx.optional_int(&dims_key)?
        && n != d
    {
        return Err(cx.invalid(&dims_key, format!("{n}, but `{shift_key}` has {d} values")));
    }
    let cond_key = k("model.n_conditionals");
    if let Some(n) = cx.optional_int(&cond_key)?
        && n != c
    {
        return Err(cx.invalid(
            &cond_key,
            format!("{n}, but the conditional standardisation has {c} values"),
        ));
    }

    // Score network layers: torch Linear weights are already [out, in].
    let mut widths = vec![e + d + c];
    for i in 0.. {
        let wk = k(&format!("model.NN.{i}.weight"));
        let Some(weight) = m.tensor(&wk) else {
            if i == 0 {
                cx.tensor(&wk)?;
            }
            break;
        };
        let bk = k(&format!("model.NN.{i}.bias"));
        let bias = cx.tensor(&bk)?;
        let input = *widths.last().unwrap_or(&0);
        let [o, inp] = weight.dims() else {
            return Err(cx.invalid(
                &wk,
                format!("shape {:?}, expected [out, in]", weight.dims()),
            ));
        };
        if *inp != input {
            return Err(cx.invalid(
                &wk,
                format!("shape {:?}: {inp} inputs, expected {input}", weight.dims()),
            ));
        }
        cx.shape(&bk, bias, &[*o])?;
        widths.push(*o);
        out.push((
            format!("score_net.layer.{i}.weight"),
            f32_tensor(path, &wk, weight)?,
        ));
        out.push((
            format!("score_net.layer.{i}.bias"),
            f32_tensor(path, &bk, bias)?,
        ));
    }
    let n_layers = widths.len() - 1;
    let last_key = k(&format!("model.NN.{}.weight", n_layers - 1));
    if widths[n_layers] != d {
        return Err(cx.invalid(
            &last_key,
            format!("{} outputs, expected D = {d}", widths[n_layers]),
        ));
    }
    let nl_key = k("model.n_layers");
    if let Some(n) = cx.optional_int(&nl_key)?
        && n != n_layers
    {
        return Err(cx.invalid(&nl_key, format!("{n}, but {n_layers} layers were found")));
    }
    let arch_key = k("model.architecture");
    if let Some(a) = m.attr(&arch_key) {
        let arch: Option<Vec<usize>> = a.as_list().and_then(|l| {
            l.iter()
                .map(|x| x.as_i64().and_then(|i| usize::try_from(i).ok()))
                .collect()
        });
        if arch.as_ref() != Some(&widths) {
            return Err(cx.invalid(&arch_key, format!("{a:?}, but the layers give {widths:?}")));
        }
    }
    let hidden = widths[1..n_layers].to_vec();

    let activation = cx.activation(&k("model.activation"))?;
    let no_sigma_key =
        if m.attr(&k("score_model.no_sigma")).is_some() || m.attr(&k("no_sigma")).is_none() {
            k("score_model.no_sigma")
        } else {
            k("no_sigma")
        };
    let no_sigma = cx
        .attr(&no_sigma_key)?
        .as_bool()
        .ok_or_else(|| cx.invalid(&no_sigma_key, "expected a bool"))?;

    // SDE.
    let sde_key = k("sde");
    let sde_class = cx
        .attr(&sde_key)?
        .class_name()
        .ok_or_else(|| cx.invalid(&sde_key, "expected an SDE object"))?
        .to_string();
    let s = |name: &str| cx.scalar(&format!("{sde_key}.{name}"));
    let (sde, sde_tensors) = match last_segment(&sde_class).to_ascii_lowercase().as_str() {
        kind @ ("vpsde" | "subvpsde") => {
            let (beta_min, beta_max, t, eps) =
                (s("beta_min")?, s("beta_max")?, s("T")?, s("epsilon")?);
            let kind = if kind == "vpsde" { "vp" } else { "sub-vp" };
            (
                json!({"kind": kind, "beta_min": beta_min, "beta_max": beta_max, "t_max": t, "epsilon": eps}),
                vec![
                    ("T", t),
                    ("beta_min", beta_min),
                    ("beta_max", beta_max),
                    ("epsilon", eps),
                ],
            )
        }
        "vesde" => {
            let (sigma_min, sigma_max, t, eps) =
                (s("sigma_min")?, s("sigma_max")?, s("T")?, s("epsilon")?);
            (
                json!({"kind": "ve", "sigma_min": sigma_min, "sigma_max": sigma_max, "t_max": t, "epsilon": eps}),
                vec![
                    ("T", t),
                    ("sigma_min", sigma_min),
                    ("sigma_max", sigma_max),
                    ("epsilon", eps),
                ],
            )
        }
        _ => {
            return Err(ImportError::UnknownSde {
                path: path.to_path_buf(),
                key: sde_key,
                class: sde_class,
            });
        }
    };

    out.push(("x_shift".into(), f32_tensor(path, &shift_key, shift)?));
    out.push(("x_scale".into(), f32_tensor(path, &scale_key, scale)?));
    if c > 0 {
        out.push((
            "conditional_shift".into(),
            f32_tensor(path, &cshift_key, cx.tensor(&cshift_key)?)?,
        ));
        out.push((
            "conditional_scale".into(),
            f32_tensor(path, &cscale_key, cx.tensor(&cscale_key)?)?,
        ));
    }

    // The pop_cosmos NoiseModel wrapper's own tensors and the SDE scalars as [1] tensors.
    if p == "model." && last_segment(&m.class_name) == "NoiseModel" {
        for name in NOISE_MODEL_EXTRAS {
            out.push((name.to_string(), f32_tensor(path, name, cx.tensor(name)?)?));
        }
        for (name, v) in sde_tensors {
            let t = Tensor::new(&[v as f32], &Device::Cpu)
                .map_err(|e| cx.invalid(&sde_key, e.to_string()))?;
            out.push((format!("sde.{name}"), t));
        }
    }

    let config = json!({
        "dim": d,
        "conditional_dim": c,
        "embedding_dim": e,
        "hidden": hidden,
        "activation": activation,
        "no_sigma": no_sigma,
        "sde": sde,
    });
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), DIFFUSION_FORMAT.to_string());
    metadata.insert("config".to_string(), config.to_string());
    metadata.insert("source_class".to_string(), m.class_name.clone());
    if let Some(method) = m.attr(&k("method")).and_then(AttrValue::as_str) {
        let options = m
            .attr(&k("options"))
            .map(AttrValue::to_json)
            .filter(|o| o.is_object())
            .unwrap_or_else(|| json!({}));
        metadata.insert(
            "solver".to_string(),
            json!({"method": method, "options": options}).to_string(),
        );
    }
    Ok(ImportedFile {
        tensors: out,
        metadata,
    })
}
