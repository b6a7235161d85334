//! A diffusion model on a standardised variable: loading, probability-flow log-density,
//! ODE and SDE sampling.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use popcosmos_api::{Error, RandomSource, Result, Shape};
use serde::{Deserialize, Serialize};

use super::config::{Activation, DiffusionConfig, SdeConfig};
use super::ode::{self, OdeSolver, OdeStats, VectorField};
use super::score_net::ScoreNet;

/// safetensors `format` metadata of files written by this crate and by `import-torch`.
pub const FORMAT: &str = "popcosmos/diffusion/v1";
/// Format of the bundled pop-cosmos uncertainty model (config implied).
pub const NOISE_MODEL_FORMAT: &str = "pop-cosmos-rs/noise-model/v1";

/// How the divergence ∇·f̃ is computed along the log-density ODE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Divergence {
    /// Exact trace of the D×D Jacobian (one batched forward-mode sweep).
    #[default]
    Exact,
    /// Hutchinson: vᵀJv with one Rademacher probe per row, fixed along the trajectory.
    Hutchinson,
}

/// Options of [`DiffusionModel::log_prob`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogProbOptions {
    /// The ODE solver of the log-density ODE.
    #[serde(default)]
    pub solver: OdeSolver,
    /// How the divergence is computed.
    #[serde(default)]
    pub divergence: Divergence,
}

/// Result of a log-density solve.
#[derive(Debug, Clone)]
pub struct LogProbOutput {
    /// ln p(x) in standardised x space `[n]` (the reference's convention).
    pub log_prob: Tensor,
    /// x(T), the recovered base point `[n, D]`.
    pub x_t: Tensor,
    /// ∫ ∇·f̃ dt `[n]`.
    pub delta_log_prob: Tensor,
    /// Work done by the solve.
    pub stats: OdeStats,
}

/// A score-based diffusion model with its input standardisation.
#[derive(Debug, Clone)]
pub struct DiffusionModel {
    config: DiffusionConfig,
    net: ScoreNet,
    x_shift: Tensor,
    x_scale: Tensor,
    cond_shift: Option<Tensor>,
    cond_scale: Option<Tensor>,
    /// Every tensor of the file (for extras such as the noise model's clamps).
    extras: HashMap<String, Tensor>,
}

impl DiffusionModel {
    crate::weights_io::standardised_model_methods! {
        /// Read a `popcosmos/diffusion/v1` (or bundled noise-model) safetensors file.
        typed_by: net
    }

    /// Build from a config and named tensors (`score_net.*`, `x_shift`, `x_scale`,
    /// optional `conditional_shift`, `conditional_scale`).
    pub fn from_tensors(
        config: DiffusionConfig,
        tensors: HashMap<String, Tensor>,
        name: &str,
        device: &Device,
    ) -> Result<Self> {
        let get =
            |key: &str, len: usize| crate::weights_io::vector(&tensors, key, len, name, device);
        let (d, c) = (config.dim, config.conditional_dim);
        let x_shift = get("x_shift", d)?;
        let x_scale = get("x_scale", d)?;
        let cond = if c > 0 {
            Some((get("conditional_shift", c)?, get("conditional_scale", c)?))
        } else {
            None
        };
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
        let net = ScoreNet::new(&config, vb.pp("score_net")).map_err(|e| Error::Format {
            file: name.to_string(),
            message: format!("score network does not match its config: {e}"),
        })?;
        let model = Self::from_parts(config, net, x_shift, x_scale, cond);
        Ok(Self {
            extras: tensors,
            ..model
        })
    }

    /// Parse safetensors bytes; `name` is used in error messages.
    pub fn from_bytes(bytes: &[u8], name: &str, device: &Device) -> Result<Self> {
        use crate::weights_io;
        let meta = weights_io::read_metadata(bytes, name)?;
        let tensors = weights_io::read_tensors(bytes, name, device)?;
        let fmt_err = |message: String| Error::Format {
            file: name.to_string(),
            message,
        };
        let config = if meta.get("format").map(String::as_str) == Some(NOISE_MODEL_FORMAT) {
            noise_model_config(&tensors).map_err(fmt_err)?
        } else {
            weights_io::check_format(&meta, FORMAT, name)?;
            weights_io::read_config::<DiffusionConfig>(&meta, name)?
        };
        config.sde.validate().map_err(fmt_err)?;
        Self::from_tensors(config, tensors, name, device)
    }

    /// Assemble from parts (used by training).
    pub(crate) fn from_parts(
        config: DiffusionConfig,
        net: ScoreNet,
        x_shift: Tensor,
        x_scale: Tensor,
        cond: Option<(Tensor, Tensor)>,
    ) -> Self {
        let (cond_shift, cond_scale) = match cond {
            Some((s, k)) => (Some(s), Some(k)),
            None => (None, None),
        };
        Self {
            config,
            net,
            x_shift,
            x_scale,
            cond_shift,
            cond_scale,
            extras: HashMap::new(),
        }
    }

    /// The same model in another float type (f64 for tight reference solves).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let cv = |t: &Option<Tensor>| t.as_ref().map(|t| t.to_dtype(dtype)).transpose();
        Ok(Self {
            config: self.config.clone(),
            net: self.net.to_dtype(dtype)?,
            x_shift: self.x_shift.to_dtype(dtype)?,
            x_scale: self.x_scale.to_dtype(dtype)?,
            cond_shift: cv(&self.cond_shift)?,
            cond_scale: cv(&self.cond_scale)?,
            extras: self.extras.clone(),
        })
    }

    /// Architecture and SDE.
    pub fn config(&self) -> &DiffusionConfig {
        &self.config
    }
    /// The forward SDE.
    pub fn sde(&self) -> &SdeConfig {
        &self.config.sde
    }
    /// The score network.
    pub fn score_net(&self) -> &ScoreNet {
        &self.net
    }
    /// (shift, scale) of the conditioning inputs, for conditional models.
    pub fn conditional_norm(&self) -> Option<(&Tensor, &Tensor)> {
        self.cond_shift.as_ref().zip(self.cond_scale.as_ref())
    }
    /// A tensor of the weights file by name (e.g. the noise model's `log_error_min`).
    pub fn extra(&self, key: &str) -> Option<&Tensor> {
        self.extras.get(key)
    }

    /// Physical conditioning → standardised (None for unconditional models).
    pub fn standardise_conditional(&self, c: Option<&Tensor>) -> Result<Option<Tensor>> {
        match (c, &self.cond_shift, &self.cond_scale) {
            (None, None, _) => Ok(None),
            (Some(c), Some(s), Some(k)) => Ok(Some(c.broadcast_sub(s)?.broadcast_div(k)?)),
            (None, Some(_), _) => Err(Error::Invalid(format!(
                "this diffusion model needs {} conditioning inputs",
                self.config.conditional_dim
            ))),
            (Some(_), None, _) | (Some(_), Some(_), None) => Err(Error::Invalid(
                "conditioning inputs given to an unconditional diffusion model".into(),
            )),
        }
    }

    /// [`Self::standardise_conditional`] of `c` converted to the model's float type.
    fn conditional_in_dtype(&self, c: Option<&Tensor>) -> Result<Option<Tensor>> {
        let c = c.map(|c| c.to_dtype(self.dtype())).transpose()?;
        self.standardise_conditional(c.as_ref())
    }

    fn time_column(&self, t: &[f64]) -> Result<Tensor> {
        Ok(Tensor::from_vec(t.to_vec(), t.len(), self.device())?.to_dtype(self.dtype())?)
    }

    fn per_row(&self, t: &[f64], f: impl Fn(f64) -> f64) -> Result<Tensor> {
        let v: Vec<f64> = t.iter().map(|&t| f(t)).collect();
        Ok(Tensor::from_vec(v, (t.len(), 1), self.device())?.to_dtype(self.dtype())?)
    }

    /// Score s_θ(x, t) `[n, D]` in standardised space (`c` standardised).
    pub fn score(&self, t: &[f64], x: &Tensor, c: Option<&Tensor>) -> Result<Tensor> {
        let out = self.net.forward(&self.time_column(t)?, x, c)?;
        if self.config.no_sigma {
            return Ok(out);
        }
        let sigma = self.per_row(t, |t| self.config.sde.marginal(t).1)?;
        Ok(out.broadcast_div(&sigma)?)
    }

    /// Probability-flow drift f̃ = a(t) x − ½ g(t)² s_θ(x, t) `[n, D]`.
    pub fn ode_drift(&self, t: &[f64], x: &Tensor, c: Option<&Tensor>) -> Result<Tensor> {
        let sde = self.config.sde;
        let s = self.score(t, x, c)?;
        let a = self.per_row(t, |t| sde.drift_coeff(t))?;
        let half_g2 = self.per_row(t, |t| 0.5 * sde.g2(t))?;
        Ok((x.broadcast_mul(&a)? - s.broadcast_mul(&half_g2)?)?)
    }

    /// ln p(x) by the probability-flow ODE from ε to T, for physical `x` `[n, D]`
    /// and physical conditioning `c` `[n, C]`. The density is that of the *standardised* x,
    /// as in the reference; subtract Σ ln x_scale for the physical density.
    pub fn log_prob(
        &self,
        x: &Tensor,
        c: Option<&Tensor>,
        opts: &LogProbOptions,
        rng: Option<&mut dyn RandomSource>,
    ) -> Result<LogProbOutput> {
        let x_std = self.standardise(&x.to_dtype(self.dtype())?)?;
        let c_std = self.conditional_in_dtype(c)?;
        self.log_prob_standardised(&x_std, c_std.as_ref(), opts, rng)
    }

    /// [`Self::log_prob`] on already standardised inputs.
    pub fn log_prob_standardised(
        &self,
        x_std: &Tensor,
        c_std: Option<&Tensor>,
        opts: &LogProbOptions,
        rng: Option<&mut dyn RandomSource>,
    ) -> Result<LogProbOutput> {
        let (n, d) = x_std.dims2()?;
        let probe = match opts.divergence {
            Divergence::Exact => None,
            Divergence::Hutchinson => {
                let rng = rng.ok_or_else(|| {
                    Error::Invalid("the Hutchinson divergence needs a random source".into())
                })?;
                // Rademacher probe: the sign of a standard normal (as flowfusion).
                let z = rng.normal(&Shape::from((n, d)), self.device())?;
                Some(z.ge(0.0)?.to_dtype(self.dtype())?.affine(2.0, -1.0)?)
            }
        };
        let field = AugmentedFlow {
            model: self,
            cond: c_std,
            probe: probe.as_ref(),
        };
        let y0 = Tensor::cat(
            &[
                x_std.clone(),
                Tensor::zeros((n, 1), self.dtype(), self.device())?,
            ],
            1,
        )?;
        let sde = &self.config.sde;
        let (y, stats) = ode::integrate(&field, &y0, sde.epsilon(), sde.t_max(), &opts.solver)?;
        let x_t = y.narrow(1, 0, d)?;
        let delta = y.narrow(1, d, 1)?.squeeze(1)?;
        let s = sde.prior_std();
        let base = ((x_t.sqr()?.sum(1)? * (-0.5 / (s * s)))?
            - (d as f64) * (0.5 * (2.0 * std::f64::consts::PI).ln() + s.ln()))?;
        Ok(LogProbOutput {
            log_prob: (&delta + base)?,
            x_t,
            delta_log_prob: delta,
            stats,
        })
    }

    /// Sample by the probability-flow ODE from T to ε, starting from `base` `[n, D]` standard
    /// normal draws (scaled by the base σ); returns physical x.
    pub fn sample_ode(
        &self,
        base: &Tensor,
        c: Option<&Tensor>,
        solver: &OdeSolver,
    ) -> Result<(Tensor, OdeStats)> {
        let c_std = self.conditional_in_dtype(c)?;
        let x_t = (base.to_dtype(self.dtype())? * self.config.sde.prior_std())?;
        let (x0, stats) = self.solve_standardised(&x_t, c_std.as_ref(), solver, None)?;
        Ok((self.unstandardise(&x0)?, stats))
    }

    /// Integrate the PF-ODE in standardised space from T to ε; `grid` overrides the solver's
    /// uniform grid for fixed-step methods (e.g. torchdiffeq's float32 grid).
    pub fn solve_standardised(
        &self,
        x_t: &Tensor,
        c_std: Option<&Tensor>,
        solver: &OdeSolver,
        grid: Option<&[f64]>,
    ) -> Result<(Tensor, OdeStats)> {
        let field = Flow {
            model: self,
            cond: c_std,
        };
        let sde = &self.config.sde;
        match grid {
            Some(g) => ode::integrate_grid(&field, x_t, g, solver),
            None => ode::integrate(&field, x_t, sde.t_max(), sde.epsilon(), solver),
        }
    }

    /// Sample the reverse-time SDE with `steps` Euler–Maruyama predictor steps from T to ε,
    /// each optionally followed by `corrector_steps` Langevin corrector steps at
    /// signal-to-noise ratio `snr` (Song et al. 2021, predictor–corrector); returns physical x.
    pub fn sample_sde(
        &self,
        n: usize,
        c: Option<&Tensor>,
        steps: usize,
        corrector_steps: usize,
        snr: f64,
        rng: &mut dyn RandomSource,
    ) -> Result<Tensor> {
        if steps == 0 {
            return Err(Error::Invalid("sample_sde: steps must be >= 1".into()));
        }
        let c_std = self.conditional_in_dtype(c)?;
        let c_std = c_std.as_ref();
        let sde = self.config.sde;
        let d = self.config.dim;
        let dev = self.device().clone();
        let dt_ = self.dtype();
        let normal = |rng: &mut dyn RandomSource| -> Result<Tensor> {
            Ok(rng.normal(&Shape::from((n, d)), &dev)?.to_dtype(dt_)?)
        };
        let mut x = (normal(rng)? * sde.prior_std())?;
        let (t_hi, t_lo) = (sde.t_max(), sde.epsilon());
        let dt = (t_hi - t_lo) / steps as f64;
        for k in 0..steps {
            let t = t_hi - k as f64 * dt;
            let tv = vec![t; n];
            // Predictor: x ← x − [f − g² s] dt + g √dt z  (time runs backwards).
            let s = self.score(&tv, &x, c_std)?;
            let drift = ((&x * sde.drift_coeff(t))? - (s * sde.g2(t))?)?;
            let mean = (&x - (drift * dt)?)?;
            x = if k + 1 == steps {
                mean // no noise on the last step (denoised output)
            } else {
                (mean + (normal(rng)? * (sde.g2(t) * dt).sqrt())?)?
            };
            // Corrector: Langevin MCMC on p_t with step set by the target SNR.
            let t_next = t - dt;
            for _ in 0..corrector_steps {
                let tv = vec![t_next; n];
                let g = self.score(&tv, &x, c_std)?;
                let z = normal(rng)?;
                let g_norm = g.sqr()?.sum(1)?.sqrt()?.mean_all()?.to_scalar_f64()?;
                let z_norm = z.sqr()?.sum(1)?.sqrt()?.mean_all()?.to_scalar_f64()?;
                let alpha = match sde {
                    SdeConfig::Ve { .. } => 1.0,
                    _ => 1.0 - sde.g2(t_next) * dt, // α_i = 1 − β_i of the discretised VP chain
                };
                let eps = 2.0 * alpha * (snr * z_norm / g_norm.max(1e-30)).powi(2);
                x = ((&x + (g * eps)?)? + (z * (2.0 * eps).sqrt())?)?;
            }
        }
        self.unstandardise(&x)
    }
}

trait ToScalarF64 {
    fn to_scalar_f64(&self) -> Result<f64>;
}
impl ToScalarF64 for Tensor {
    fn to_scalar_f64(&self) -> Result<f64> {
        Ok(self.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    }
}

fn pick(t: Option<&Tensor>, rows: Option<&Tensor>) -> Result<Option<Tensor>> {
    Ok(match (t, rows) {
        (None, _) => None,
        (Some(t), None) => Some(t.clone()),
        (Some(t), Some(r)) => Some(t.index_select(r, 0)?),
    })
}

/// The PF-ODE alone (sampling).
struct Flow<'a> {
    model: &'a DiffusionModel,
    cond: Option<&'a Tensor>,
}

impl VectorField for Flow<'_> {
    fn eval(&self, t: &[f64], y: &Tensor, rows: Option<&Tensor>) -> Result<Tensor> {
        let c = pick(self.cond, rows)?;
        self.model.ode_drift(t, y, c.as_ref())
    }
}

/// The PF-ODE augmented with dℓ/dt = ∇·f̃ (log-density).
struct AugmentedFlow<'a> {
    model: &'a DiffusionModel,
    cond: Option<&'a Tensor>,
    probe: Option<&'a Tensor>,
}

impl VectorField for AugmentedFlow<'_> {
    fn eval(&self, t: &[f64], y: &Tensor, rows: Option<&Tensor>) -> Result<Tensor> {
        let m = self.model;
        let d = m.config.dim;
        let sde = m.config.sde;
        let x = y.narrow(1, 0, d)?;
        let c = pick(self.cond, rows)?;
        let tt = m.time_column(t)?;
        let (out, trace) = match pick(self.probe, rows)? {
            None => m.net.forward_with_trace(&tt, &x, c.as_ref())?,
            Some(v) => {
                let (out, jv) = m.net.forward_with_jvp(&tt, &x, c.as_ref(), &v)?;
                let est = ScoreNet::dot_rows(&v, &jv)?;
                (out, est)
            }
        };
        // score = out (no_sigma) or out / σ(t); its divergence scales the same way.
        let inv_sigma = m.per_row(t, |t| {
            if m.config.no_sigma {
                1.0
            } else {
                1.0 / sde.marginal(t).1
            }
        })?;
        let a = m.per_row(t, |t| sde.drift_coeff(t))?;
        let half_g2 = m.per_row(t, |t| 0.5 * sde.g2(t))?;
        let coef = (half_g2 * inv_sigma)?;
        let drift = (x.broadcast_mul(&a)? - out.broadcast_mul(&coef)?)?;
        let div = ((a * d as f64)? - trace.unsqueeze(1)?.broadcast_mul(&coef)?)?;
        Ok(Tensor::cat(&[drift, div], 1)?)
    }

    fn error_groups(&self, width: usize) -> Vec<(usize, usize)> {
        vec![(0, width - 1), (width - 1, 1)]
    }
}

/// The implied config of the bundled pop-cosmos uncertainty model.
fn noise_model_config(t: &HashMap<String, Tensor>) -> std::result::Result<DiffusionConfig, String> {
    let len = |k: &str| {
        t.get(k)
            .map(|v| v.elem_count())
            .ok_or_else(|| format!("missing tensor `{k}`"))
    };
    let scalar = |k: &str| -> std::result::Result<f64, String> {
        t.get(k)
            .ok_or_else(|| format!("missing tensor `{k}`"))?
            .flatten_all()
            .and_then(|v| v.get(0))
            .and_then(|v| v.to_dtype(DType::F64))
            .and_then(|v| v.to_scalar::<f64>())
            .map_err(|e| format!("tensor `{k}`: {e}"))
    };
    let mut hidden = Vec::new();
    let mut i = 0;
    while let Some(w) = t.get(&format!("score_net.layer.{i}.weight")) {
        if t.contains_key(&format!("score_net.layer.{}.weight", i + 1)) {
            hidden.push(w.dim(0).map_err(|e| e.to_string())?);
        }
        i += 1;
    }
    Ok(DiffusionConfig {
        dim: len("x_shift")?,
        conditional_dim: len("conditional_shift")?,
        embedding_dim: 2 * len("score_net.time_embedding.W")?,
        hidden,
        activation: Activation::Tanh,
        no_sigma: true,
        sde: SdeConfig::Vp {
            beta_min: scalar("sde.beta_min")?,
            beta_max: scalar("sde.beta_max")?,
            t_max: scalar("sde.T")?,
            epsilon: scalar("sde.epsilon")?,
        },
        names: Vec::new(),
        conditional_names: Vec::new(),
    })
}
