//! The coupling flow: loading and writing, exact log-density in one batched pass, and
//! sampling by the inverse pass.
//!
//! Direction convention: the *forward* pass maps standardised data x to the base point z
//! (x → z, as used by the log-density); the *inverse* pass maps z → x (sampling).
//! ln q(x_std) = ln 𝒩(z; 0, I) + Σ_layers ln|det ∂(layer output)/∂(layer input)|.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use popcosmos_api::{Error, RandomSource, Result, Shape};

use super::config::FlowConfig;
use super::spline::{SplineConfig, rq_spline};

/// safetensors `format` metadata of flow files.
pub const FORMAT: &str = "popcosmos/flow/v1";

/// One layer: optional per-dimension affine map, then a spline coupling.
#[derive(Debug, Clone)]
struct Coupling {
    /// Conditioning coordinates `[D − m]` (u32).
    cond_idx: Tensor,
    /// Transformed coordinates `[m]` (u32).
    trans_idx: Tensor,
    /// Inverse of the permutation `cond_idx ++ trans_idx` `[D]` (u32).
    inv_perm: Tensor,
    n_trans: usize,
    /// Conditioner MLP (SiLU after every layer but the last).
    net: Vec<Linear>,
    /// `(log_scale [D], shift [D])` of `y = x e^{log_scale} + shift`.
    actnorm: Option<(Tensor, Tensor)>,
}

impl Coupling {
    fn conditioner(&self, x_a: &Tensor, spline: &SplineConfig) -> Result<Tensor> {
        let mut h = x_a.clone();
        let last = self.net.len() - 1;
        for (i, layer) in self.net.iter().enumerate() {
            h = layer.forward(&h)?;
            if i < last {
                h = h.silu()?;
            }
        }
        Ok(h.reshape((x_a.dim(0)?, self.n_trans, spline.n_params()))?)
    }

    /// x → z direction (`inverse = false`) or z → x; returns the output and ln|det| `[n]`
    /// of the map applied.
    fn apply(&self, x: &Tensor, spline: &SplineConfig, inverse: bool) -> Result<(Tensor, Tensor)> {
        let mut x = x.clone();
        let mut affine_ld: Option<Tensor> = None;
        if let (false, Some((s, b))) = (inverse, &self.actnorm) {
            x = x.broadcast_mul(&s.exp()?)?.broadcast_add(b)?;
            affine_ld = Some(s.sum_keepdim(0)?);
        }
        let x_a = x.index_select(&self.cond_idx, 1)?;
        let x_b = x.index_select(&self.trans_idx, 1)?;
        let params = self.conditioner(&x_a, spline)?;
        let (y_b, ld) = rq_spline(&x_b, &params, spline, inverse)?;
        let mut y = Tensor::cat(&[x_a, y_b], 1)?.index_select(&self.inv_perm, 1)?;
        let mut ld = ld.sum(1)?;
        if let (true, Some((s, b))) = (inverse, &self.actnorm) {
            y = y.broadcast_sub(b)?.broadcast_mul(&s.neg()?.exp()?)?;
            affine_ld = Some(s.sum_keepdim(0)?.neg()?);
        }
        if let Some(a) = affine_ld {
            ld = ld.broadcast_add(&a)?;
        }
        Ok((y, ld))
    }

    fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let net = self
            .net
            .iter()
            .map(|l| {
                let b = l.bias().map(|b| b.to_dtype(dtype)).transpose()?;
                Ok(Linear::new(l.weight().to_dtype(dtype)?, b))
            })
            .collect::<Result<Vec<_>>>()?;
        let actnorm = match &self.actnorm {
            Some((s, b)) => Some((s.to_dtype(dtype)?, b.to_dtype(dtype)?)),
            None => None,
        };
        Ok(Self {
            net,
            actnorm,
            ..self.clone()
        })
    }
}

/// A rational-quadratic spline coupling flow over a standardised variable, base 𝒩(0, I).
#[derive(Debug, Clone)]
pub struct FlowModel {
    config: FlowConfig,
    layers: Vec<Coupling>,
    x_shift: Tensor,
    x_scale: Tensor,
    /// Σ ln x_scale (host f64).
    log_scale_sum: f64,
}

fn index_tensor(v: &[usize], device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = v.iter().map(|&i| i as u32).collect();
    let n = v.len();
    Ok(Tensor::from_vec(v, n, device)?)
}

impl FlowModel {
    /// Build the flow with weights from `vb` (`layers.{l}.net.{i}.{weight,bias}`,
    /// `layers.{l}.actnorm.{log_scale,shift}`) and the standardisation `x_shift`, `x_scale`
    /// `[D]`. With a `VarMap`-backed builder the variables are created: hidden layers with
    /// candle's default initialisation, the last conditioner layer and the affine maps at
    /// zero, so a fresh flow is exactly the identity map (ln q = ln 𝒩 of the standardised x).
    pub fn new(
        config: FlowConfig,
        vb: VarBuilder,
        x_shift: Tensor,
        x_scale: Tensor,
    ) -> Result<Self> {
        config.validate().map_err(Error::Invalid)?;
        let d = config.dim;
        let device = vb.device().clone();
        let check = |t: &Tensor, what: &str| -> Result<Tensor> {
            if t.elem_count() != d {
                return Err(Error::Invalid(format!(
                    "{what} has {} elements for a {d}-D flow",
                    t.elem_count()
                )));
            }
            Ok(t.flatten_all()?.to_device(&device)?.to_dtype(vb.dtype())?)
        };
        let x_shift = check(&x_shift, "x_shift")?;
        let x_scale = check(&x_scale, "x_scale")?;
        let scales: Vec<f64> = x_scale.to_dtype(DType::F64)?.to_vec1()?;
        if let Some(i) = scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::Invalid(format!(
                "x_scale[{i}] = {} must be finite and > 0",
                scales[i]
            )));
        }
        let log_scale_sum = scales.iter().map(|s| s.ln()).sum();
        let p = config.spline.n_params();
        let mut layers = Vec::with_capacity(config.layers());
        for (l, mask) in config.masks.iter().enumerate() {
            let vbl = vb.pp(format!("layers.{l}"));
            let cond: Vec<usize> = (0..d).filter(|i| !mask.contains(i)).collect();
            let perm: Vec<usize> = cond.iter().chain(mask.iter()).copied().collect();
            let mut inv = vec![0usize; d];
            for (j, &i) in perm.iter().enumerate() {
                inv[i] = j;
            }
            let mut widths = vec![cond.len()];
            widths.extend(&config.hidden);
            widths.push(mask.len() * p);
            let last = widths.len() - 2;
            let net = widths
                .windows(2)
                .enumerate()
                .map(|(i, w)| {
                    let vbi = vbl.pp(format!("net.{i}"));
                    let (wi, bi) = if i == last {
                        (Init::Const(0.0), Init::Const(0.0))
                    } else {
                        let bound = 1.0 / (w[0] as f64).sqrt();
                        (
                            candle_nn::init::DEFAULT_KAIMING_NORMAL,
                            Init::Uniform {
                                lo: -bound,
                                up: bound,
                            },
                        )
                    };
                    let weight = vbi.get_with_hints((w[1], w[0]), "weight", wi)?;
                    let bias = vbi.get_with_hints(w[1], "bias", bi)?;
                    Ok(Linear::new(weight, Some(bias)))
                })
                .collect::<Result<Vec<_>>>()?;
            let actnorm = if config.actnorm {
                let va = vbl.pp("actnorm");
                Some((
                    va.get_with_hints(d, "log_scale", Init::Const(0.0))?,
                    va.get_with_hints(d, "shift", Init::Const(0.0))?,
                ))
            } else {
                None
            };
            layers.push(Coupling {
                cond_idx: index_tensor(&cond, &device)?,
                trans_idx: index_tensor(mask, &device)?,
                inv_perm: index_tensor(&inv, &device)?,
                n_trans: mask.len(),
                net,
                actnorm,
            });
        }
        Ok(Self {
            config,
            layers,
            x_shift,
            x_scale,
            log_scale_sum,
        })
    }

    /// A flow with seeded random weights (see [`init_tensors`]); `output_std` = 0 gives the
    /// identity map, larger values a random non-trivial flow (for tests).
    pub fn random(
        config: FlowConfig,
        x_shift: Tensor,
        x_scale: Tensor,
        output_std: f64,
        rng: &mut dyn RandomSource,
        device: &Device,
    ) -> Result<Self> {
        let tensors = init_tensors(&config, output_std, rng, device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::new(config, vb, x_shift, x_scale)
    }

    crate::weights_io::standardised_model_methods! {
        /// Read a `popcosmos/flow/v1` safetensors file.
        typed_by: x_scale
    }

    /// Parse safetensors bytes; `name` is used in error messages.
    pub fn from_bytes(bytes: &[u8], name: &str, device: &Device) -> Result<Self> {
        let validate = |c: &FlowConfig| c.validate().map_err(|e| format!("metadata `config`: {e}"));
        let (config, tensors) =
            crate::weights_io::read_model(bytes, name, FORMAT, device, validate)?;
        Self::from_tensors(config, tensors, name, device)
    }

    /// The flow of `config` with the weights `tensors` (the layout of [`FlowModel::tensors`],
    /// any float type and device); `name` labels errors.
    pub fn from_tensors(
        config: FlowConfig,
        tensors: HashMap<String, Tensor>,
        name: &str,
        device: &Device,
    ) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?.to_device(device)?)))
            .collect::<Result<_>>()?;
        let (x_shift, x_scale) =
            crate::weights_io::standardisation(&tensors, config.dim, name, device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::new(config, vb, x_shift, x_scale).map_err(|e| Error::Format {
            file: name.to_string(),
            message: format!("flow weights do not match their config: {e}"),
        })
    }

    /// Every tensor of the model by name (f32), as written to its file.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut t = HashMap::new();
        let f32 = |x: &Tensor| x.to_dtype(DType::F32);
        for (l, layer) in self.layers.iter().enumerate() {
            for (i, lin) in layer.net.iter().enumerate() {
                t.insert(format!("layers.{l}.net.{i}.weight"), f32(lin.weight())?);
                if let Some(b) = lin.bias() {
                    t.insert(format!("layers.{l}.net.{i}.bias"), f32(b)?);
                }
            }
            if let Some((s, b)) = &layer.actnorm {
                t.insert(format!("layers.{l}.actnorm.log_scale"), f32(s)?);
                t.insert(format!("layers.{l}.actnorm.shift"), f32(b)?);
            }
        }
        t.insert("x_shift".into(), f32(&self.x_shift)?);
        t.insert("x_scale".into(), f32(&self.x_scale)?);
        Ok(t)
    }

    /// Write the model (format `popcosmos/flow/v1`) atomically; see [`write_model`].
    pub fn save(&self, path: &Path, extra_metadata: &HashMap<String, String>) -> Result<()> {
        write_model(self, self.tensors()?, extra_metadata.clone(), path)
    }

    /// The same model in another float type (f64 for finite-difference checks).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            config: self.config.clone(),
            layers: self
                .layers
                .iter()
                .map(|l| l.to_dtype(dtype))
                .collect::<Result<_>>()?,
            x_shift: self.x_shift.to_dtype(dtype)?,
            x_scale: self.x_scale.to_dtype(dtype)?,
            log_scale_sum: self.log_scale_sum,
        })
    }

    /// The flow's architecture.
    pub fn config(&self) -> &FlowConfig {
        &self.config
    }
    /// Dimension D of the modelled variable.
    pub fn dim(&self) -> usize {
        self.config.dim
    }
    /// Σ ln x_scale: ln q(physical x) = ln q(standardised x) − this.
    pub fn log_scale_sum(&self) -> f64 {
        self.log_scale_sum
    }

    fn check_input(&self, x: &Tensor) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        if d != self.config.dim {
            let expected = format!("[n, {}] (the model's dim)", self.config.dim);
            return Err(Error::shape("flow input", expected, [n, d]));
        }
        Ok(x.to_device(self.device())?.to_dtype(self.dtype())?)
    }

    /// Standardised x `[n, D]` → base point z `[n, D]` and ln|det ∂z/∂x| `[n]`.
    pub fn forward_standardised(&self, x_std: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut h = self.check_input(x_std)?;
        let mut ld: Option<Tensor> = None;
        for layer in &self.layers {
            let (y, l) = layer.apply(&h, &self.config.spline, false)?;
            h = y;
            ld = Some(match ld {
                None => l,
                Some(acc) => (acc + l)?,
            });
        }
        Ok((h, ld.expect("at least one layer")))
    }

    /// Base point z `[n, D]` → standardised x `[n, D]` and ln|det ∂x/∂z| `[n]`.
    pub fn inverse_standardised(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut h = self.check_input(z)?;
        let mut ld: Option<Tensor> = None;
        for layer in self.layers.iter().rev() {
            let (y, l) = layer.apply(&h, &self.config.spline, true)?;
            h = y;
            ld = Some(match ld {
                None => l,
                Some(acc) => (acc + l)?,
            });
        }
        Ok((h, ld.expect("at least one layer")))
    }

    /// ln 𝒩(z; 0, I) `[n]`.
    fn base_log_prob(&self, z: &Tensor) -> Result<Tensor> {
        let d = self.config.dim as f64;
        Ok((z.sqr()?.sum(1)? * -0.5)?.affine(1.0, -0.5 * d * (2.0 * std::f64::consts::PI).ln())?)
    }

    /// ln q `[n]` of the *standardised* variable at standardised `x_std` `[n, D]`.
    pub fn log_prob_standardised(&self, x_std: &Tensor) -> Result<Tensor> {
        let (z, ld) = self.forward_standardised(x_std)?;
        Ok((self.base_log_prob(&z)? + ld)?)
    }

    /// ln q `[n]` of the **physical** variable at physical `x` `[n, D]` (the standardised
    /// density minus Σ ln x_scale — unlike `DiffusionModel::log_prob`, which returns the
    /// standardised density). One batched pass through all layers, differentiable.
    pub fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.check_input(x)?;
        Ok((self.log_prob_standardised(&self.standardise(&x)?)? - self.log_scale_sum)?)
    }

    /// Physical samples `[n, D]` from base draws `z` `[n, D]` (inverse pass).
    pub fn sample_from_base(&self, z: &Tensor) -> Result<Tensor> {
        let (x, _) = self.inverse_standardised(z)?;
        self.unstandardise(&x)
    }

    /// `n` physical samples `[n, D]` on the model's device.
    pub fn sample(&self, n: usize, rng: &mut dyn RandomSource) -> Result<Tensor> {
        let z = rng.normal(&Shape::from((n, self.config.dim)), self.device())?;
        self.sample_from_base(&z)
    }

    /// Physical samples `[n, D]` and their physical ln q `[n]` from base draws `z`.
    pub fn sample_with_log_prob(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let z = self.check_input(z)?;
        let (x, ld) = self.inverse_standardised(&z)?;
        let lp = ((self.base_log_prob(&z)? - ld)? - self.log_scale_sum)?;
        Ok((self.unstandardise(&x)?, lp))
    }
}

/// Seeded initial weights of a flow (names as [`FlowModel::tensors`], without `x_shift` /
/// `x_scale`): hidden conditioner layers Kaiming-normal weights (σ = √(2/fan_in)) and
/// U(±1/√fan_in) biases, the last conditioner layer 𝒩(0, output_std²) weights and zero
/// biases, affine maps zero (identity). Deterministic given the random source.
pub fn init_tensors(
    config: &FlowConfig,
    output_std: f64,
    rng: &mut dyn RandomSource,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    config.validate().map_err(Error::Invalid)?;
    let d = config.dim;
    let p = config.spline.n_params();
    let mut t = HashMap::new();
    for (l, mask) in config.masks.iter().enumerate() {
        let mut widths = vec![d - mask.len()];
        widths.extend(&config.hidden);
        widths.push(mask.len() * p);
        let last = widths.len() - 2;
        for (i, w) in widths.windows(2).enumerate() {
            let (fan_in, out) = (w[0], w[1]);
            let (weight, bias) = if i == last {
                (
                    (rng.normal(&Shape::from((out, fan_in)), device)? * output_std)?,
                    Tensor::zeros(out, DType::F32, device)?,
                )
            } else {
                let bound = 1.0 / (fan_in as f64).sqrt();
                (
                    (rng.normal(&Shape::from((out, fan_in)), device)?
                        * (2.0 / fan_in as f64).sqrt())?,
                    rng.uniform(&Shape::from(out), device)?
                        .affine(2.0 * bound, -bound)?,
                )
            };
            t.insert(format!("layers.{l}.net.{i}.weight"), weight);
            t.insert(format!("layers.{l}.net.{i}.bias"), bias);
        }
        if config.actnorm {
            t.insert(
                format!("layers.{l}.actnorm.log_scale"),
                Tensor::zeros(d, DType::F32, device)?,
            );
            t.insert(
                format!("layers.{l}.actnorm.shift"),
                Tensor::zeros(d, DType::F32, device)?,
            );
        }
    }
    Ok(t)
}

/// Write `tensors` (normally [`FlowModel::tensors`], plus e.g. training state) with the
/// model's config as `popcosmos/flow/v1`, atomically (temporary file + rename).
pub fn write_model(
    model: &FlowModel,
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    crate::weights_io::write_model_file(tensors, meta, FORMAT, model.config(), path)
}
