//! speculator `Photulator` `.pt` files (one per band) → `pop-cosmos-rs/photulator-stack/v1`

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;

use crate::diffusion::last_segment;
use crate::error::{ImportError, Result};
use crate::module::{AttrValue, TorchModule, read_torch_module};
use crate::{ImportedFile, f32_tensor};

/// `format` metadata of an imported photulator stack.
pub const PHOTULATOR_FORMAT: &str = "pop-cosmos-rs/photulator-stack/v1";

pub(crate) fn is_photulator(class: &str) -> bool {
    last_segment(class) == "Photulator"
}

/// Reads one Photulator `.pt` per band and stacks them in the order given (see the crate docs).
pub fn import_photulators<P: AsRef<Path>>(paths: &[P]) -> Result<ImportedFile> {
    let modules = paths
        .iter()
        .map(read_torch_module)
        .collect::<Result<Vec<_>>>()?;
    import_photulator_modules(&modules)
}

/// One band's converted tensors.
struct Band {
    name: String,
    tensors: Vec<(String, Tensor)>,
    input_shift: Tensor,
    input_scale: Tensor,
    output_shift: Tensor,
    output_scale: Tensor,
    f_b: Tensor,
}

fn band(m: &TorchModule, k: usize) -> Result<Band> {
    let path = m.path.as_path();
    if !is_photulator(&m.class_name) {
        return Err(ImportError::WrongKind {
            path: path.to_path_buf(),
            expected: "speculator Photulator",
            found: m.class_name.clone(),
        });
    }
    let invalid = |key: &str, reason: String| ImportError::Invalid {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason,
    };
    let get = |key: &str| {
        m.tensor(key).ok_or_else(|| ImportError::Missing {
            path: path.to_path_buf(),
            what: "tensor",
            key: key.to_string(),
        })
    };
    let vector = |key: &str, n: usize| -> Result<Tensor> {
        let t = get(key)?;
        if t.dims() != [n] {
            return Err(invalid(
                key,
                format!("shape {:?}, expected [{n}]", t.dims()),
            ));
        }
        f32_tensor(path, key, t)
    };
    let one = |key: &str| -> Result<Tensor> {
        let t = get(key)?;
        if t.elem_count() != 1 || t.rank() > 1 {
            return Err(invalid(
                key,
                format!("shape {:?}, expected one value", t.dims()),
            ));
        }
        f32_tensor(path, key, t)
    };

    let name = match m.attr("filters") {
        Some(AttrValue::List(l)) if l.len() == 1 && l[0].as_str().is_some() => {
            l[0].as_str().unwrap_or_default().to_string()
        }
        Some(other) => {
            return Err(invalid(
                "filters",
                format!("expected a list of one band name, found {other:?}"),
            ));
        }
        None => {
            return Err(ImportError::Missing {
                path: path.to_path_buf(),
                what: "attribute",
                key: "filters".into(),
            });
        }
    };

    let mut tensors = Vec::new();
    let mut width: Option<usize> = None;
    let mut n_inputs = 0;
    let mut n_layers = 0;
    while m.tensor(&format!("W.{n_layers}")).is_some() || n_layers == 0 {
        let i = n_layers;
        let wk = format!("W.{i}");
        let w = get(&wk)?;
        let [inp, out] = w.dims() else {
            return Err(invalid(
                &wk,
                format!("shape {:?}, expected [in, out]", w.dims()),
            ));
        };
        let (inp, out) = (*inp, *out);
        match width {
            Some(prev) if prev != inp => {
                return Err(invalid(
                    &wk,
                    format!("shape [{inp}, {out}]: {inp} inputs, expected {prev}"),
                ));
            }
            None => n_inputs = inp,
            _ => {}
        }
        width = Some(out);
        // speculator applies x @ W; the stack stores torch.nn.Linear's [out, in].
        let weight = f32_tensor(path, &wk, w)?
            .t()
            .and_then(|t| t.contiguous())
            .map_err(|e| invalid(&wk, e.to_string()))?;
        let prefix = format!("band.{k}.layer.{i}");
        tensors.push((format!("{prefix}.weight"), weight));
        tensors.push((format!("{prefix}.bias"), vector(&format!("b.{i}"), out)?));
        tensors.push((
            format!("{prefix}.alpha"),
            vector(&format!("alphas.{i}"), out)?,
        ));
        tensors.push((
            format!("{prefix}.beta"),
            vector(&format!("betas.{i}"), out)?,
        ));
        n_layers += 1;
    }
    if let Some(a) = m.attr("n_layers")
        && a.as_i64() != Some(n_layers as i64)
    {
        return Err(invalid(
            "n_layers",
            format!("{a:?}, but {n_layers} layers were found"),
        ));
    }
    if width != Some(1) {
        let key = format!("W.{}", n_layers - 1);
        return Err(invalid(
            &key,
            format!("{width:?} outputs, expected 1 (one band per file)"),
        ));
    }

    let input_shift = vector("parameters_shift", n_inputs)?;
    let input_scale = vector("parameters_scale", n_inputs)?;
    let output_shift = one("magnitudes_shift")?;
    let output_scale = one("magnitudes_scale")?;
    let f_b = one("f_b")?;
    tensors.push((format!("band.{k}.input_shift"), input_shift.clone()));
    tensors.push((format!("band.{k}.input_scale"), input_scale.clone()));
    tensors.push((format!("band.{k}.output_shift"), output_shift.clone()));
    tensors.push((format!("band.{k}.output_scale"), output_scale.clone()));
    tensors.push((format!("band.{k}.f_b"), f_b.clone()));
    Ok(Band {
        name,
        tensors,
        input_shift,
        input_scale,
        output_shift,
        output_scale,
        f_b,
    })
}

fn bits(t: &Tensor) -> Option<Vec<u32>> {
    t.to_vec1::<f32>()
        .ok()
        .map(|v| v.into_iter().map(f32::to_bits).collect())
}

/// Stacks already read Photulator modules (see [`import_photulators`]).
pub fn import_photulator_modules(modules: &[TorchModule]) -> Result<ImportedFile> {
    let Some(first) = modules.first() else {
        return Err(ImportError::NoInputs);
    };
    let mut bands: Vec<Band> = Vec::with_capacity(modules.len());
    for (k, m) in modules.iter().enumerate() {
        let b = band(m, k)?;
        if let Some(j) = bands.iter().position(|o| o.name == b.name) {
            return Err(ImportError::Invalid {
                path: m.path.clone(),
                key: "filters".into(),
                reason: format!(
                    "band `{}` is also band {j} ({})",
                    b.name,
                    modules[j].path.display()
                ),
            });
        }
        bands.push(b);
    }

    let stack = |pick: fn(&Band) -> &Tensor, name: &str| -> Result<Tensor> {
        let parts: Vec<&Tensor> = bands.iter().map(pick).collect();
        Tensor::cat(&parts, 0).map_err(|e| ImportError::Invalid {
            path: first.path.clone(),
            key: name.to_string(),
            reason: e.to_string(),
        })
    };
    let output_shift = stack(|b| &b.output_shift, "magnitudes_shift")?;
    let output_scale = stack(|b| &b.output_scale, "magnitudes_scale")?;
    let f_b = stack(|b| &b.f_b, "f_b")?;
    let same_inputs = bands.iter().all(|b| {
        bits(&b.input_shift) == bits(&bands[0].input_shift)
            && bits(&b.input_scale) == bits(&bands[0].input_scale)
    });

    let mut tensors = Vec::new();
    let names: Vec<String> = bands.iter().map(|b| b.name.clone()).collect();
    let (input_shift, input_scale) = (bands[0].input_shift.clone(), bands[0].input_scale.clone());
    for b in bands {
        tensors.extend(b.tensors);
    }
    tensors.push(("output_shift".into(), output_shift));
    tensors.push(("output_scale".into(), output_scale));
    tensors.push(("f_b".into(), f_b));
    if same_inputs {
        tensors.push(("input_shift".into(), input_shift));
        tensors.push(("input_scale".into(), input_scale));
    }

    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), PHOTULATOR_FORMAT.to_string());
    metadata.insert(
        "bands".to_string(),
        serde_json::Value::from(names).to_string(),
    );
    Ok(ImportedFile { tensors, metadata })
}
