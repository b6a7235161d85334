//! Maximum-likelihood training of a [`FlowModel`] on samples: Adam (candle_nn::AdamW) with
//! cosine learning-rate decay, optional gradient-norm clipping, an optional exponential
//! moving average (EMA) of the weights, held-out NLL, and checkpoints that a later run
//! resumes from (as [`crate::diffusion::Trainer`]).
//!
//! Loss: the mean negative log-likelihood of a random batch, −mean ln q(x); samples are
//! standardised by their mean and standard deviation, which the model stores.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW, VarBuilder, VarMap};
use popcosmos_api::{Error, RandomSource, Result};
use serde::{Deserialize, Serialize};

use super::config::{FlowConfig, default_masks};
use super::model::{FlowModel, init_tensors, write_model};
use super::spline::SplineConfig;
use crate::weights_io::{
    checkpoint, cosine_learning_rate, mean_std, read_checkpoint, restore_raw, snapshot,
    sorted_vars, tensor, update_ema,
};

/// Architecture and optimiser settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// Number of coupling layers (masks: [`default_masks`]).
    pub layers: usize,
    /// Hidden widths of each conditioner MLP.
    pub hidden: Vec<usize>,
    /// Shape of the coupling splines.
    pub spline: SplineConfig,
    /// Per-dimension affine map before every coupling.
    pub actnorm: bool,
    /// Optimiser steps.
    pub steps: usize,
    /// Rows per mini-batch.
    pub batch_size: usize,
    /// Initial learning rate.
    pub learning_rate: f64,
    /// Final learning rate as a fraction of the initial one (cosine decay).
    pub final_lr_fraction: f64,
    /// Clip the global gradient norm to this value (0 = no clipping).
    pub max_grad_norm: f64,
    /// Decoupled weight decay of AdamW (0 = Adam).
    #[serde(default)]
    pub weight_decay: f64,
    /// EMA decay of the weights (0 = no EMA: the model is the raw weights).
    pub ema_decay: f64,
    /// Seed of the weight initialisation.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            layers: 8,
            hidden: vec![128, 128],
            spline: SplineConfig::default(),
            actnorm: true,
            steps: 20_000,
            batch_size: 1024,
            learning_rate: 1e-3,
            final_lr_fraction: 0.02,
            max_grad_norm: 5.0,
            weight_decay: 0.0,
            ema_decay: 0.999,
            seed: 1,
        }
    }
}

impl TrainOptions {
    /// The flow config these options give for `dim` columns.
    pub fn flow_config(&self, dim: usize, names: Vec<String>) -> FlowConfig {
        FlowConfig {
            dim,
            hidden: self.hidden.clone(),
            spline: self.spline,
            actnorm: self.actnorm,
            masks: default_masks(dim, self.layers),
            names,
        }
    }

    /// Check the settings (names the offending key).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.layers == 0 {
            return Err("layers must be >= 1".into());
        }
        if self.batch_size == 0 {
            return Err("batch_size must be >= 1".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(format!(
                "learning_rate must be > 0 (got {})",
                self.learning_rate
            ));
        }
        if !(0.0..=1.0).contains(&self.final_lr_fraction) {
            return Err("final_lr_fraction must be in [0, 1]".into());
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err("ema_decay must be in [0, 1)".into());
        }
        if self.max_grad_norm.is_nan()
            || self.max_grad_norm < 0.0
            || self.weight_decay.is_nan()
            || self.weight_decay < 0.0
        {
            return Err("max_grad_norm and weight_decay must be >= 0".into());
        }
        Ok(())
    }
}

/// A training run in progress.
pub struct Trainer {
    opts: TrainOptions,
    config: FlowConfig,
    varmap: VarMap,
    /// The variables sorted by name (a fixed order keeps the gradient norm reproducible).
    vars: Vec<Var>,
    /// The flow whose weights are the trainable variables.
    flow: FlowModel,
    optimizer: candle_nn::AdamW,
    ema: Vec<(String, Tensor)>,
    /// Standardised training data `[n, D]`.
    data: Tensor,
    x_shift: Tensor,
    x_scale: Tensor,
    step: usize,
    device: Device,
}

impl Trainer {
    /// Prepare training on `samples` `[n, D]` (physical units); `names` are stored in the
    /// model's config.
    pub fn new(
        samples: &Tensor,
        names: Vec<String>,
        opts: TrainOptions,
        device: &Device,
    ) -> Result<Self> {
        opts.validate().map_err(Error::Invalid)?;
        let samples = samples.to_dtype(DType::F32)?.to_device(device)?;
        let (n, d) = samples.dims2()?;
        if n < 2 {
            return Err(Error::Invalid("need at least 2 training samples".into()));
        }
        let config = opts.flow_config(d, names);
        config.validate().map_err(Error::Invalid)?;
        let (x_shift, x_scale) = mean_std(&samples, "sample")?;
        let data = samples.broadcast_sub(&x_shift)?.broadcast_div(&x_scale)?;
        let mut rng = popcosmos_api::HostRng::seed_from_u64(opts.seed);
        let varmap = VarMap::new();
        {
            let mut vars = varmap.data().lock().expect("varmap lock");
            for (name, t) in init_tensors(&config, 0.0, &mut rng, device)? {
                vars.insert(name, Var::from_tensor(&t)?);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let flow = FlowModel::new(config.clone(), vb, x_shift.clone(), x_scale.clone())?;
        let optimizer = candle_nn::AdamW::new(
            sorted_vars(&varmap),
            ParamsAdamW {
                lr: opts.learning_rate,
                weight_decay: opts.weight_decay,
                ..Default::default()
            },
        )?;
        let ema = snapshot(&varmap)?;
        let vars = sorted_vars(&varmap);
        Ok(Self {
            opts,
            config,
            varmap,
            vars,
            flow,
            optimizer,
            ema,
            data,
            x_shift,
            x_scale,
            step: 0,
            device: device.clone(),
        })
    }

    /// Optimiser steps taken (resumed ones included).
    pub fn step_count(&self) -> usize {
        self.step
    }
    /// The run's settings.
    pub fn options(&self) -> &TrainOptions {
        &self.opts
    }
    /// The architecture being trained.
    pub fn config(&self) -> &FlowConfig {
        &self.config
    }

    /// Learning rate at the current step (cosine decay to `final_lr_fraction`).
    pub fn learning_rate(&self) -> f64 {
        let o = &self.opts;
        cosine_learning_rate(o.learning_rate, o.final_lr_fraction, self.step, o.steps)
    }

    /// One optimiser step on a random batch; returns the batch's mean NLL of the
    /// **physical** variable (nats per sample), before the update.
    pub fn step(&mut self, rng: &mut dyn RandomSource) -> Result<f64> {
        let n = self.data.dim(0)?;
        let rows = rng.indices(self.opts.batch_size, n);
        let idx = Tensor::from_vec(rows, self.opts.batch_size, &self.device)?;
        let x = self.data.index_select(&idx, 0)?;
        let loss = self.flow.log_prob_standardised(&x)?.mean_all()?.neg()?;
        let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_value.is_finite() {
            return Err(Error::Invalid(format!(
                "flow training diverged at step {} (batch NLL {loss_value}); lower the learning rate",
                self.step
            )));
        }
        let mut grads = loss.backward()?;
        if self.opts.max_grad_norm > 0.0 {
            let mut sq = Vec::with_capacity(self.vars.len());
            for v in &self.vars {
                if let Some(g) = grads.get(v.as_tensor()) {
                    sq.push(g.sqr()?.sum_all()?);
                }
            }
            let total = Tensor::stack(&sq, 0)?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?
                .sqrt();
            if total > self.opts.max_grad_norm {
                let scale = self.opts.max_grad_norm / total;
                for v in &self.vars {
                    if let Some(g) = grads.remove(v.as_tensor()) {
                        grads.insert(v.as_tensor(), (g * scale)?);
                    }
                }
            }
        }
        self.optimizer.set_learning_rate(self.learning_rate());
        self.optimizer.step(&grads)?;
        if self.opts.ema_decay > 0.0 {
            update_ema(&self.varmap, &mut self.ema, self.opts.ema_decay)?;
        }
        self.step += 1;
        Ok(loss_value + self.flow.log_scale_sum())
    }

    /// Mean NLL −ln q (nats per sample, physical variable) of the current model (EMA
    /// weights if enabled) on physical `samples` `[n, D]`, e.g. held-out draws.
    pub fn evaluate(&self, samples: &Tensor) -> Result<f64> {
        mean_nll(&self.model()?, samples)
    }

    /// The model with the EMA weights (or the raw weights when `ema_decay` = 0).
    pub fn model(&self) -> Result<FlowModel> {
        let weights = if self.opts.ema_decay > 0.0 {
            self.ema.clone()
        } else {
            snapshot(&self.varmap)?
        };
        let mut t: HashMap<String, Tensor> = weights.into_iter().collect();
        t.insert("x_shift".into(), self.x_shift.clone());
        t.insert("x_scale".into(), self.x_scale.clone());
        FlowModel::from_tensors(self.config.clone(), t, "flow trainer", &self.device)
    }

    /// Write the (EMA) model as `popcosmos/flow/v1` plus, under `train.raw.*`, the raw
    /// weights and the step count so that [`Trainer::resume`] can continue.
    pub fn save(&self, path: &Path, extra: &HashMap<String, String>) -> Result<()> {
        let model = self.model()?;
        let mut tensors = model.tensors()?;
        let meta = checkpoint(&self.varmap, &mut tensors, extra, self.step, &self.opts)?;
        write_model(&model, tensors, meta, path)
    }

    /// Continue from a checkpoint written by [`Trainer::save`]: raw weights, EMA, step and the
    /// checkpoint's standardisation (the training data are re-standardised with it). The
    /// Adam moments restart (a short transient).
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        let file = path.display().to_string();
        let (bytes, tensors, step) = read_checkpoint(path, &self.device)?;
        let saved = FlowModel::from_bytes(&bytes, &file, &self.device)?;
        if saved.config() != &self.config {
            return Err(Error::Format {
                file,
                message: "checkpoint config differs from this trainer's options".into(),
            });
        }
        restore_raw(&self.varmap, &tensors, &file)?;
        for (name, e) in self.ema.iter_mut() {
            *e = tensor(&tensors, name, &file)?.clone();
        }
        // Re-standardise the data with the checkpoint's statistics.
        let physical = self
            .data
            .broadcast_mul(&self.x_scale)?
            .broadcast_add(&self.x_shift)?;
        self.x_shift = saved.x_shift().clone();
        self.x_scale = saved.x_scale().clone();
        self.data = saved.standardise(&physical)?;
        let vb = VarBuilder::from_varmap(&self.varmap, DType::F32, &self.device);
        self.flow = FlowModel::new(
            self.config.clone(),
            vb,
            self.x_shift.clone(),
            self.x_scale.clone(),
        )?;
        self.step = step;
        Ok(())
    }
}

/// Mean −ln q (physical) of `model` over `samples` `[n, D]`, in chunks of 16384 rows.
pub fn mean_nll(model: &FlowModel, samples: &Tensor) -> Result<f64> {
    let n = samples.dim(0)?;
    if n == 0 {
        return Err(Error::Invalid("mean_nll: no samples".into()));
    }
    let mut total = 0.0;
    let chunk = 16_384;
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let lp = model.log_prob(&samples.narrow(0, start, len)?.detach())?;
        total -= lp.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        start += len;
    }
    Ok(total / n as f64)
}
