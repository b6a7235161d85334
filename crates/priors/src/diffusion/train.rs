//! Denoising score-matching training of a [`DiffusionModel`]: Adam with cosine
//! learning-rate decay, an exponential moving average (EMA) of the weights, held-out loss,
//! and checkpoints that a later run resumes from.
//!
//! Loss: t ~ U(ε, T), z ~ 𝒩(0, I), x_t = μ(t) x₀ + σ(t) z,
//! ℓ = mean_batch Σ_dims (z + σ(t) s_θ(x_t, t))², x₀ standardised by the data's mean and std.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, ParamsAdamW, VarBuilder, VarMap};
use popcosmos_api::{Error, RandomSource, Result, Shape};
use serde::{Deserialize, Serialize};

use super::config::{Activation, DiffusionConfig, SdeConfig};
use super::model::{DiffusionModel, FORMAT};
use super::score_net::ScoreNet;
use crate::weights_io::{
    checkpoint, cosine_learning_rate, mean_std, read_checkpoint, restore_raw, snapshot, tensor,
    update_ema,
};

/// Architecture and optimiser settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// Hidden layer widths of the score network.
    pub hidden: Vec<usize>,
    /// Activation after every layer except the last.
    pub activation: Activation,
    /// Length E of the Fourier time embedding.
    pub embedding_dim: usize,
    /// Standard deviation of the fixed Fourier frequencies (flowfusion: 16).
    pub fourier_scale: f64,
    /// If true the network output is the score; otherwise score = output / σ(t).
    pub no_sigma: bool,
    /// The forward SDE.
    pub sde: SdeConfig,
    /// Optimiser steps.
    pub steps: usize,
    /// Rows per mini-batch.
    pub batch_size: usize,
    /// Initial Adam learning rate.
    pub learning_rate: f64,
    /// Final learning rate as a fraction of the initial one (cosine decay).
    pub final_lr_fraction: f64,
    /// Decay of the exponential moving average of the weights (the model returned).
    pub ema_decay: f64,
    /// Seed of the initial weights and Fourier frequencies; [`fit`] also derives its hold-out
    /// split and mini-batch draws from it.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            hidden: vec![256, 256, 256],
            activation: Activation::Silu,
            embedding_dim: 16,
            fourier_scale: 16.0,
            no_sigma: false,
            sde: SdeConfig::vp_default(),
            steps: 20_000,
            batch_size: 1024,
            learning_rate: 2e-3,
            final_lr_fraction: 0.02,
            ema_decay: 0.999,
            seed: 1,
        }
    }
}

/// A training run in progress.
pub struct Trainer {
    opts: TrainOptions,
    config: DiffusionConfig,
    varmap: VarMap,
    net: ScoreNet,
    optimizer: candle_nn::AdamW,
    ema: Vec<(String, Tensor)>,
    /// Standardised training data `[n, D]` and conditions `[n, C]`.
    data: Tensor,
    cond: Option<Tensor>,
    x_shift: Tensor,
    x_scale: Tensor,
    cond_norm: Option<(Tensor, Tensor)>,
    step: usize,
    device: Device,
}

impl Trainer {
    /// Prepare training on `samples` `[n, D]` (physical units) with optional conditions
    /// `[n, C]`; `names`/`conditional_names` are stored in the model's config.
    pub fn new(
        samples: &Tensor,
        conditions: Option<&Tensor>,
        names: Vec<String>,
        conditional_names: Vec<String>,
        opts: TrainOptions,
        device: &Device,
    ) -> Result<Self> {
        opts.sde.validate().map_err(Error::Invalid)?;
        if opts.embedding_dim == 0 || !opts.embedding_dim.is_multiple_of(2) {
            return Err(Error::Invalid("embedding_dim must be even and > 0".into()));
        }
        let samples = samples.to_dtype(DType::F32)?.to_device(device)?;
        let (n, d) = samples.dims2()?;
        if n < 2 {
            return Err(Error::Invalid("need at least 2 training samples".into()));
        }
        let (x_shift, x_scale) = mean_std(&samples, "sample")?;
        let data = samples.broadcast_sub(&x_shift)?.broadcast_div(&x_scale)?;
        let (cond, cond_norm, c) = match conditions {
            Some(c) => {
                let c = c.to_dtype(DType::F32)?.to_device(device)?;
                if c.dim(0)? != n {
                    return Err(Error::Invalid(format!(
                        "{} condition rows for {n} samples",
                        c.dim(0)?
                    )));
                }
                let (s, k) = mean_std(&c, "conditional")?;
                let cs = c.broadcast_sub(&s)?.broadcast_div(&k)?;
                let width = c.dim(1)?;
                (Some(cs), Some((s, k)), width)
            }
            None => (None, None, 0),
        };
        let config = DiffusionConfig {
            dim: d,
            conditional_dim: c,
            embedding_dim: opts.embedding_dim,
            hidden: opts.hidden.clone(),
            activation: opts.activation,
            no_sigma: opts.no_sigma,
            sde: opts.sde,
            names,
            conditional_names,
        };
        let mut rng = popcosmos_api::HostRng::seed_from_u64(opts.seed);
        let freqs =
            (rng.normal(&Shape::from(opts.embedding_dim / 2), device)? * opts.fourier_scale)?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let net = ScoreNet::with_frequencies(&config, freqs, vb)?;
        crate::weights_io::seed_weights(&varmap, &mut rng)?;
        let optimizer = candle_nn::AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: opts.learning_rate,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let ema = snapshot(&varmap)?;
        Ok(Self {
            opts,
            config,
            varmap,
            net,
            optimizer,
            ema,
            data,
            cond,
            x_shift,
            x_scale,
            cond_norm,
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

    /// Denoising score-matching loss on rows `idx` of the standardised data.
    fn loss(&self, rows: &[u32], rng: &mut dyn RandomSource) -> Result<Tensor> {
        let b = rows.len();
        let d = self.config.dim;
        let idx = Tensor::from_vec(rows.to_vec(), b, &self.device)?;
        let x0 = self.data.index_select(&idx, 0)?;
        let c = self
            .cond
            .as_ref()
            .map(|c| c.index_select(&idx, 0))
            .transpose()?;
        let sde = self.config.sde;
        let (eps, t_max) = (sde.epsilon(), sde.t_max());
        let t: Vec<f64> = (0..b)
            .map(|_| eps + (t_max - eps) * rng.next_f64())
            .collect();
        let (mean, std): (Vec<f32>, Vec<f32>) = t
            .iter()
            .map(|&t| {
                let (m, s) = sde.marginal(t);
                (m as f32, s as f32)
            })
            .unzip();
        let col = |v: Vec<f32>| Tensor::from_vec(v, (b, 1), &self.device);
        let (mean, std) = (col(mean)?, col(std)?);
        let tt = Tensor::from_vec(
            t.iter().map(|&t| t as f32).collect::<Vec<_>>(),
            b,
            &self.device,
        )?;
        let z = rng.normal(&Shape::from((b, d)), &self.device)?;
        let xt = (x0.broadcast_mul(&mean)? + z.broadcast_mul(&std)?)?;
        let out = self.net.forward(&tt, &xt, c.as_ref())?;
        // σ s_θ = σ · out (no_sigma) or out (score = out / σ).
        let sigma_score = if self.config.no_sigma {
            out.broadcast_mul(&std)?
        } else {
            out
        };
        Ok((sigma_score + z)?.sqr()?.sum(1)?.mean(0)?)
    }

    /// One optimiser step on a random batch; returns the batch loss.
    pub fn step(&mut self, rng: &mut dyn RandomSource) -> Result<f64> {
        let n = self.data.dim(0)?;
        let rows = rng.indices(self.opts.batch_size, n);
        let o = &self.opts;
        let lr = cosine_learning_rate(o.learning_rate, o.final_lr_fraction, self.step, o.steps);
        self.optimizer.set_learning_rate(lr);
        let loss = self.loss(&rows, rng)?;
        self.optimizer.backward_step(&loss)?;
        update_ema(&self.varmap, &mut self.ema, self.opts.ema_decay)?;
        self.step += 1;
        Ok(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    }

    /// Mean loss of the EMA model over `batches` random batches drawn from `samples`
    /// (physical units, e.g. held-out draws), standardised with the training statistics.
    pub fn evaluate(
        &self,
        samples: &Tensor,
        conditions: Option<&Tensor>,
        batches: usize,
        rng: &mut dyn RandomSource,
    ) -> Result<f64> {
        let model = self.model()?;
        let probe = Self {
            opts: self.opts.clone(),
            config: self.config.clone(),
            varmap: VarMap::new(),
            net: model.score_net().clone(),
            optimizer: candle_nn::AdamW::new(vec![], ParamsAdamW::default())?,
            ema: vec![],
            data: model.standardise(&samples.to_dtype(DType::F32)?.to_device(&self.device)?)?,
            cond: conditions
                .map(|c| -> Result<Tensor> {
                    let (s, k) = self.cond_norm.as_ref().expect("conditional model");
                    Ok(c.to_dtype(DType::F32)?
                        .to_device(&self.device)?
                        .broadcast_sub(s)?
                        .broadcast_div(k)?)
                })
                .transpose()?,
            x_shift: self.x_shift.clone(),
            x_scale: self.x_scale.clone(),
            cond_norm: self.cond_norm.clone(),
            step: 0,
            device: self.device.clone(),
        };
        let n = probe.data.dim(0)?;
        let mut total = 0.0;
        for _ in 0..batches {
            let rows = rng.indices(self.opts.batch_size.min(n), n);
            total += probe
                .loss(&rows, rng)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
        Ok(total / batches as f64)
    }

    /// The model with the EMA weights.
    pub fn model(&self) -> Result<DiffusionModel> {
        let ema: HashMap<String, Tensor> = self.ema.iter().cloned().collect();
        let vb = VarBuilder::from_tensors(ema, DType::F32, &self.device);
        let net = ScoreNet::with_frequencies(&self.config, self.net.frequencies().clone(), vb)?;
        Ok(DiffusionModel::from_parts(
            self.config.clone(),
            net,
            self.x_shift.clone(),
            self.x_scale.clone(),
            self.cond_norm.clone(),
        ))
    }

    /// Write the EMA model (format `popcosmos/diffusion/v1`) plus, under `train.*`, the raw
    /// weights and the step count so that [`Trainer::resume`] can continue. `extra`
    /// (e.g. the training data's description) is stored alongside.
    pub fn save(&self, path: &Path, extra: &HashMap<String, String>) -> Result<()> {
        let model = self.model()?;
        let mut tensors = model_tensors(&model)?;
        let meta = checkpoint(&self.varmap, &mut tensors, extra, self.step, &self.opts)?;
        write_model(&model, tensors, meta, path)
    }

    /// Continue from a checkpoint written by [`Trainer::save`] (weights, EMA and step; the
    /// Adam moments restart, a short transient).
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        let (_, tensors, step) = read_checkpoint(path, &self.device)?;
        let file = path.display().to_string();
        restore_raw(&self.varmap, &tensors, &file)?;
        for (name, e) in self.ema.iter_mut() {
            *e = tensor(&tensors, &format!("score_net.{name}"), &file)?.clone();
        }
        let w = tensor(&tensors, "score_net.time_embedding.W", &file)?;
        let vb = VarBuilder::from_varmap(&self.varmap, DType::F32, &self.device);
        self.net = ScoreNet::with_frequencies(&self.config, w.clone(), vb)?;
        self.step = step;
        Ok(())
    }
}

/// A whole training run on a table of samples ([`fit`]).
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Architecture and optimiser settings.
    pub train: TrainOptions,
    /// Fraction of rows held out (a seeded permutation) to measure the loss on unseen draws;
    /// at least one row and at most half of them.
    pub holdout: f64,
    /// Where the resumable checkpoint goes, written every `checkpoint_every` steps (0: never).
    pub checkpoint: Option<std::path::PathBuf>,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Continue from `checkpoint` instead of starting afresh.
    pub resume: bool,
    /// Extra metadata stored in checkpoints and the final model (e.g. the samples' source).
    pub metadata: HashMap<String, String>,
}

/// What [`fit`] returns: the EMA model, its denoising score-matching losses and the metadata
/// to store with it ([`Fitted::write`]).
pub struct Fitted {
    /// The EMA model.
    pub model: DiffusionModel,
    /// Denoising score-matching loss of the EMA model on the held-out rows.
    pub heldout_loss: f64,
    /// The same loss on the training rows.
    pub train_loss: f64,
    /// Optimiser steps taken in all, resumed ones included.
    pub steps: usize,
    /// `FitOptions::metadata` plus the run's own entries (rows, steps, losses, options).
    pub metadata: HashMap<String, String>,
}

impl Fitted {
    /// Write the model with its metadata as `popcosmos/diffusion/v1`, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_model(
            &self.model,
            model_tensors(&self.model)?,
            self.metadata.clone(),
            path,
        )
    }
}

/// Fewest sample rows [`fit`] trains on.
pub const MIN_FIT_ROWS: usize = 100;

/// Train a diffusion model on `samples` (`[n, names.len()]` row-major, physical units) with
/// optional `conditions` (`[n, conditional_names.len()]`): seeded hold-out split, the
/// optimiser loop with checkpoints (and resume), then the EMA model's held-out and training
/// losses (20 batches each). `on_step(step, smoothed_loss)` is called once before the first
/// step (loss NaN; the step is where a resumed run starts) and after every step, with an
/// exponential moving average (weight 0.01) of the batch losses.
pub fn fit(
    samples: &[f32],
    conditions: Option<&[f32]>,
    names: Vec<String>,
    conditional_names: Vec<String>,
    opts: &FitOptions,
    device: &Device,
    on_step: &mut dyn FnMut(usize, f64),
) -> Result<Fitted> {
    use rand::seq::SliceRandom;
    let (d, w) = (names.len(), conditional_names.len());
    let n = samples.len() / d.max(1);
    if n < MIN_FIT_ROWS {
        return Err(Error::Invalid(format!(
            "only {n} rows; need at least {MIN_FIT_ROWS} samples"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(popcosmos_api::HostRng::seed_from_u64(opts.train.seed ^ 0x401d).inner());
    let n_hold = ((n as f64 * opts.holdout).round() as usize).clamp(1, n / 2);
    let (hold_idx, train_idx) = order.split_at(n_hold);
    let rows = |idx: &[usize], src: &[f32], w: usize| -> Result<Tensor> {
        let v: Vec<f32> = idx
            .iter()
            .flat_map(|&i| src[i * w..(i + 1) * w].iter().copied())
            .collect();
        Ok(Tensor::from_vec(v, (idx.len(), w), device)?)
    };
    let (train_x, hold_x) = (rows(train_idx, samples, d)?, rows(hold_idx, samples, d)?);
    let (train_c, hold_c) = match conditions {
        Some(c) => (Some(rows(train_idx, c, w)?), Some(rows(hold_idx, c, w)?)),
        None => (None, None),
    };
    let mut trainer = Trainer::new(
        &train_x,
        train_c.as_ref(),
        names,
        conditional_names,
        opts.train.clone(),
        device,
    )?;
    if let (true, Some(ckpt)) = (opts.resume, &opts.checkpoint) {
        trainer
            .resume(ckpt)
            .map_err(|e| Error::Invalid(format!("resuming from {}: {e}", ckpt.display())))?;
    }
    let mut meta = opts.metadata.clone();
    meta.insert("train_rows".to_string(), train_idx.len().to_string());
    // A different stream after a resume, so resumed runs do not replay the same batches.
    let mut rng = popcosmos_api::HostRng::seed_from_u64(
        opts.train.seed.wrapping_add(trainer.step_count() as u64),
    );
    let mut smooth = f64::NAN;
    on_step(trainer.step_count(), smooth);
    while trainer.step_count() < opts.train.steps {
        let loss = trainer.step(&mut rng)?;
        smooth = if smooth.is_nan() {
            loss
        } else {
            0.99 * smooth + 0.01 * loss
        };
        on_step(trainer.step_count(), smooth);
        if let Some(ckpt) = &opts.checkpoint
            && opts.checkpoint_every > 0
            && trainer.step_count() % opts.checkpoint_every == 0
        {
            trainer.save(ckpt, &meta)?;
        }
    }
    let mut eval_rng = popcosmos_api::HostRng::seed_from_u64(7);
    let heldout_loss = trainer.evaluate(&hold_x, hold_c.as_ref(), 20, &mut eval_rng)?;
    let train_loss = trainer.evaluate(&train_x, train_c.as_ref(), 20, &mut eval_rng)?;
    meta.insert("train_step".into(), trainer.step_count().to_string());
    meta.insert("heldout_dsm_loss".into(), format!("{heldout_loss:.5}"));
    meta.insert("train_dsm_loss".into(), format!("{train_loss:.5}"));
    meta.insert(
        "train_options".into(),
        serde_json::to_string(trainer.options())
            .map_err(|e| Error::Invalid(format!("train_options: {e}")))?,
    );
    Ok(Fitted {
        model: trainer.model()?,
        heldout_loss,
        train_loss,
        steps: trainer.step_count(),
        metadata: meta,
    })
}

/// The tensors of a model in the `popcosmos/diffusion/v1` layout.
pub fn model_tensors(model: &DiffusionModel) -> Result<HashMap<String, Tensor>> {
    let mut t = HashMap::new();
    let f32 = |x: &Tensor| x.to_dtype(DType::F32);
    t.insert(
        "score_net.time_embedding.W".to_string(),
        f32(model.score_net().frequencies())?,
    );
    for (i, (w, b)) in model.score_net().layers().enumerate() {
        t.insert(format!("score_net.layer.{i}.weight"), f32(w)?);
        if let Some(b) = b {
            t.insert(format!("score_net.layer.{i}.bias"), f32(b)?);
        }
    }
    t.insert("x_shift".into(), f32(model.x_shift())?);
    t.insert("x_scale".into(), f32(model.x_scale())?);
    if let Some((s, k)) = model.conditional_norm() {
        t.insert("conditional_shift".into(), f32(s)?);
        t.insert("conditional_scale".into(), f32(k)?);
    }
    Ok(t)
}

/// Write `tensors` with the model's config as `popcosmos/diffusion/v1`, atomically.
pub fn write_model(
    model: &DiffusionModel,
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    crate::weights_io::write_model_file(tensors, meta, FORMAT, model.config(), path)
}
