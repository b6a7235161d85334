//! Consistency distillation (Song et al. 2023, Algorithm 2) of a [`DiffusionModel`] teacher.
//!
//! Discretisation: N times t_0 = ε < t_1 < … < t_{N−1} = T equally spaced in s^{1/ρ} (the
//! Karras et al. schedule in the EDM noise level s = σ/μ, ρ = 7). Each step draws data points
//! x₀ (standardised teacher samples), an index n (by default continuous, n ~ U(0, N − 2),
//! t_n = t(n); Song et al.'s integer n with `continuous_times: false`), z ~ 𝒩(0, I), sets
//! x_{t_{n+1}} = μ(t_{n+1}) x₀ + σ(t_{n+1}) z, takes one teacher probability-flow step
//! (Heun or Euler with `teacher.ode_drift`) to x̂_{t_n}, and minimises
//! mean_batch d(f_θ(x_{t_{n+1}}, t_{n+1}), f_{θ⁻}(x̂_{t_n}, t_n)) with AdamW (cosine learning
//! rate); d is ‖·‖² or the pseudo-Huber distance (default, [`CdLoss`]). The target θ⁻ is an
//! EMA of θ (decay `target_decay`, Song et al.'s μ); a second, slower EMA (`ema_decay`, with
//! warm-up) is the model that is returned and saved.
//!
//! Initial weights are drawn from the seeded stream of `seed` (candle's `VarMap` initialiser
//! is unseeded), so a run is reproducible given its options, teacher and random source.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use candle_nn::{Optimizer, ParamsAdamW, VarBuilder, VarMap};
use popcosmos_api::{Error, HostRng, RandomSource, Result, Shape};
use serde::{Deserialize, Serialize};

use super::model::{
    ConsistencyConfig, ConsistencyModel, consistency_fn, default_multistep_noise, noise_level,
    time_of_noise_level, write_model,
};
use crate::diffusion::{Activation, DiffusionModel, OdeSolver, ScoreNet, SdeConfig};
use crate::weights_io::{
    checkpoint, cosine_learning_rate, read_checkpoint, restore_raw, snapshot, sorted_vars, tensor,
    update_ema,
};

/// One probability-flow step of the teacher between adjacent discretisation times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeacherStep {
    /// Explicit Euler (one teacher evaluation).
    Euler,
    /// Explicit trapezoid (two teacher evaluations), as in Song et al.
    #[default]
    Heun,
}

/// The distance d(f_θ, f_θ⁻) between online and target outputs (per row, standardised units).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CdLoss {
    /// ‖Δ‖² (Song et al. 2023).
    L2,
    /// √(‖Δ‖² + c²) − c (Song & Dhariwal 2023): quadratic below c, linear above, so rare
    /// far-out teacher samples (the bundled prior's ODE draws reach 100+ standard deviations
    /// in a few logsfr_ratio rows) do not dominate the gradient.
    PseudoHuber {
        /// The scale c where the loss turns from quadratic to linear (standardised units).
        c: f64,
    },
}

impl Default for CdLoss {
    fn default() -> Self {
        CdLoss::PseudoHuber { c: 0.3 }
    }
}

/// Architecture, discretisation and optimiser settings of consistency distillation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// Hidden widths of F_θ (the Fourier embedding is the teacher's).
    pub hidden: Vec<usize>,
    /// Activation after every layer of F_θ except the last.
    pub activation: Activation,
    /// σ_d of the boundary parametrisation (1: the teacher's variable is standardised).
    pub sigma_data: f64,
    /// N, the number of discretisation times (N − 1 teacher steps from T to ε).
    pub n_points: usize,
    /// ρ of the Karras schedule.
    pub rho: f64,
    /// Draw the pair (t_{n+1}, t_n) at a continuous index n ~ U(0, N − 2) of the schedule
    /// (t(u) = s⁻¹((s_ε^{1/ρ} + u/(N−1) (s_T^{1/ρ} − s_ε^{1/ρ}))^ρ)) instead of integer n,
    /// so that f_θ is trained at every t and the multistep sampler may re-noise to any time.
    /// With integer n (`false`, Song et al.'s discrete CD) the model only learns the N
    /// schedule times and its multistep sampler snaps to them.
    pub continuous_times: bool,
    /// The teacher's step between adjacent times.
    pub teacher_step: TeacherStep,
    /// The consistency-distillation distance.
    pub loss: CdLoss,
    /// Optimiser steps.
    pub steps: usize,
    /// Rows per mini-batch.
    pub batch_size: usize,
    /// Initial learning rate.
    pub learning_rate: f64,
    /// Final learning rate as a fraction of the initial one (cosine decay).
    pub final_lr_fraction: f64,
    /// EMA decay μ of the target network θ⁻.
    pub target_decay: f64,
    /// EMA decay of the returned / saved model (warmed up: min(d, (1 + k)/(10 + k)) at step k).
    pub ema_decay: f64,
    /// Teacher samples x₀ drawn by [`Trainer::new`].
    pub n_data: usize,
    /// Rows per teacher ODE solve.
    pub chunk_size: usize,
    /// Solver of the teacher samples.
    pub data_solver: OdeSolver,
    /// Re-noising levels of the multistep sampler (stored in the model's config).
    pub multistep_noise: [f64; 2],
    /// Seed of the initial weights.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            hidden: vec![256, 256, 256],
            activation: Activation::Silu,
            sigma_data: 1.0,
            n_points: 18,
            rho: 7.0,
            continuous_times: true,
            teacher_step: TeacherStep::Heun,
            loss: CdLoss::default(),
            steps: 10_000,
            batch_size: 512,
            learning_rate: 1e-3,
            final_lr_fraction: 0.05,
            target_decay: 0.95,
            ema_decay: 0.999,
            n_data: 50_000,
            chunk_size: 4096,
            data_solver: OdeSolver::Rk4 { steps: 40 },
            multistep_noise: default_multistep_noise(),
            seed: 1,
        }
    }
}

impl TrainOptions {
    /// Check the settings (names the offending one).
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // the negations also reject NaN
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.n_points < 2 {
            return Err("n_points must be >= 2".into());
        }
        if !(self.rho > 0.0) {
            return Err("rho must be > 0".into());
        }
        if self.batch_size == 0 || self.chunk_size == 0 {
            return Err("batch_size and chunk_size must be >= 1".into());
        }
        if !(0.0..1.0).contains(&self.target_decay) || !(0.0..1.0).contains(&self.ema_decay) {
            return Err("target_decay and ema_decay must be in [0, 1)".into());
        }
        if let CdLoss::PseudoHuber { c } = self.loss
            && !(c > 0.0)
        {
            return Err("loss.c must be > 0".into());
        }
        if !(self.learning_rate > 0.0) {
            return Err("learning_rate must be > 0".into());
        }
        self.data_solver
            .validate()
            .map_err(|e| format!("data_solver: {e}"))
    }
}

/// The N discretisation times t_0 = ε < … < t_{N−1} = T, uniform in s^{1/ρ} (Karras et al.)
/// with s = σ(t)/μ(t) the EDM noise level.
pub fn karras_schedule(sde: &SdeConfig, n_points: usize, rho: f64) -> Vec<f64> {
    let n = n_points.max(2);
    (0..n).map(|i| karras_time(sde, n, rho, i as f64)).collect()
}

/// The time at (fractional) index `u` ∈ [0, N − 1] of the N-point Karras schedule; exactly ε
/// at u = 0 and T at u = N − 1.
pub fn karras_time(sde: &SdeConfig, n_points: usize, rho: f64, u: f64) -> f64 {
    let (eps, t_max) = (sde.epsilon(), sde.t_max());
    let last = (n_points.max(2) - 1) as f64;
    if u <= 0.0 {
        return eps;
    }
    if u >= last {
        return t_max;
    }
    let (a, b) = (
        noise_level(sde, eps).powf(1.0 / rho),
        noise_level(sde, t_max).powf(1.0 / rho),
    );
    time_of_noise_level(sde, (a + (b - a) * u / last).powf(rho))
}

/// `n` teacher samples `[n', D]` (physical; n' ≤ n after dropping non-finite rows) drawn by
/// the probability-flow ODE in chunks of `chunk_size` rows, on the teacher's device.
pub fn teacher_samples(
    teacher: &DiffusionModel,
    n: usize,
    chunk_size: usize,
    solver: &OdeSolver,
    rng: &mut dyn RandomSource,
) -> Result<Tensor> {
    let d = teacher.config().dim;
    let mut rows: Vec<f32> = Vec::with_capacity(n * d);
    let mut kept = 0usize;
    let mut done = 0usize;
    while done < n {
        let len = chunk_size.max(1).min(n - done);
        let base = rng.normal(&Shape::from((len, d)), teacher.device())?;
        let (x, _) = teacher.sample_ode(&base, None, solver)?;
        let x: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        for r in x.chunks_exact(d) {
            if r.iter().all(|v| v.is_finite()) {
                rows.extend_from_slice(r);
                kept += 1;
            }
        }
        done += len;
    }
    Ok(Tensor::from_vec(rows, (kept, d), teacher.device())?)
}

/// A consistency-distillation run in progress.
pub struct Trainer {
    opts: TrainOptions,
    config: ConsistencyConfig,
    teacher: DiffusionModel,
    varmap: VarMap,
    net: ScoreNet,
    optimizer: candle_nn::AdamW,
    /// θ⁻ (target network) and the slow EMA, sorted by name.
    target: Vec<(String, Tensor)>,
    ema: Vec<(String, Tensor)>,
    /// Standardised teacher samples `[n, D]`.
    data: Tensor,
    times: Vec<f64>,
    step: usize,
}

impl Trainer {
    /// Draw `opts.n_data` teacher samples with `opts.data_solver` (from `rng`) and prepare
    /// distillation. The teacher must be unconditional.
    pub fn new(
        teacher: &DiffusionModel,
        opts: TrainOptions,
        rng: &mut dyn RandomSource,
    ) -> Result<Self> {
        opts.validate().map_err(Error::Invalid)?;
        let x0 = teacher_samples(
            teacher,
            opts.n_data,
            opts.chunk_size,
            &opts.data_solver,
            rng,
        )?;
        Self::with_samples(teacher, &x0, opts)
    }

    /// Prepare distillation with given data points x₀ `[n, D]` (physical units, e.g. teacher
    /// samples drawn earlier); `opts.n_data`, `chunk_size` and `data_solver` are unused.
    pub fn with_samples(
        teacher: &DiffusionModel,
        samples: &Tensor,
        opts: TrainOptions,
    ) -> Result<Self> {
        opts.validate().map_err(Error::Invalid)?;
        let tcfg = teacher.config();
        if tcfg.conditional_dim != 0 {
            return Err(Error::Invalid(
                "consistency distillation: the teacher must be unconditional".into(),
            ));
        }
        let device = teacher.device().clone();
        let (n, d) = samples.dims2()?;
        if d != tcfg.dim || n < 1 {
            return Err(Error::shape(
                "consistency distillation: samples",
                format!("[n >= 1, {}]", tcfg.dim),
                [n, d],
            ));
        }
        // A private f32 copy of the teacher with detached weights (a model assembled from
        // trainable variables would otherwise extend every teacher evaluation's graph).
        let tensors: HashMap<String, Tensor> = crate::diffusion::model_tensors(teacher)?
            .into_iter()
            .map(|(k, v)| (k, v.detach()))
            .collect();
        let teacher = DiffusionModel::from_tensors(tcfg.clone(), tensors, "teacher", &device)?;
        let data = teacher
            .standardise(&samples.detach().to_device(&device)?.to_dtype(DType::F32)?)?
            .to_dtype(DType::F32)?;
        let config = ConsistencyConfig {
            dim: d,
            embedding_dim: tcfg.embedding_dim,
            hidden: opts.hidden.clone(),
            activation: opts.activation,
            sde: tcfg.sde,
            sigma_data: opts.sigma_data,
            multistep_noise: opts.multistep_noise,
            trained_times: if opts.continuous_times {
                Vec::new()
            } else {
                karras_schedule(&tcfg.sde, opts.n_points, opts.rho)
            },
            names: tcfg.names.clone(),
        };
        config.validate().map_err(Error::Invalid)?;
        let freqs = teacher.score_net().frequencies().to_dtype(DType::F32)?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let net = ScoreNet::with_frequencies(&config.net_config(), freqs, vb)?;
        crate::weights_io::seed_weights(&varmap, &mut HostRng::seed_from_u64(opts.seed))?;
        let optimizer = candle_nn::AdamW::new(
            sorted_vars(&varmap),
            ParamsAdamW {
                lr: opts.learning_rate,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let target = snapshot(&varmap)?;
        let ema = target.clone();
        let times = karras_schedule(&config.sde, opts.n_points, opts.rho);
        Ok(Self {
            opts,
            config,
            teacher,
            varmap,
            net,
            optimizer,
            target,
            ema,
            data,
            times,
            step: 0,
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
    /// The configuration of the model being trained.
    pub fn config(&self) -> &ConsistencyConfig {
        &self.config
    }
    /// The discretisation times t_0 = ε < … < t_{N−1} = T.
    pub fn schedule(&self) -> &[f64] {
        &self.times
    }
    /// Standardised data points x₀ `[n, D]`.
    pub fn data(&self) -> &Tensor {
        &self.data
    }

    fn learning_rate(&self) -> f64 {
        let o = &self.opts;
        cosine_learning_rate(o.learning_rate, o.final_lr_fraction, self.step, o.steps)
    }

    /// The consistency-distillation loss on a random batch (module docs), differentiable
    /// in the online weights.
    fn loss(&self, rng: &mut dyn RandomSource) -> Result<Tensor> {
        let b = self.opts.batch_size;
        let d = self.config.dim;
        let device = self.data.device();
        let rows = rng.indices(b, self.data.dim(0)?);
        let x0 = self
            .data
            .index_select(&Tensor::from_vec(rows, b, device)?, 0)?;
        let (t_hi, t_lo): (Vec<f64>, Vec<f64>) = if self.opts.continuous_times {
            let (np, rho) = (self.opts.n_points, self.opts.rho);
            (0..b)
                .map(|_| {
                    let u = rng.next_f64() * (np - 2) as f64;
                    (
                        karras_time(&self.config.sde, np, rho, u + 1.0),
                        karras_time(&self.config.sde, np, rho, u),
                    )
                })
                .unzip()
        } else {
            rng.indices(b, self.times.len() - 1)
                .iter()
                .map(|&i| (self.times[i as usize + 1], self.times[i as usize]))
                .unzip()
        };
        let sde = self.config.sde;
        let col = |v: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (b, 1), device)?.to_dtype(DType::F32)?)
        };
        let (mean, std): (Vec<f64>, Vec<f64>) = t_hi.iter().map(|&t| sde.marginal(t)).unzip();
        let z = rng.normal(&Shape::from((b, d)), device)?;
        let x_hi = (x0.broadcast_mul(&col(mean)?)? + z.broadcast_mul(&col(std)?)?)?;
        // One teacher PF-ODE step t_{n+1} → t_n.
        let h = col(t_lo.iter().zip(&t_hi).map(|(lo, hi)| lo - hi).collect())?;
        let d1 = self.teacher.ode_drift(&t_hi, &x_hi, None)?;
        let x_euler = (&x_hi + d1.broadcast_mul(&h)?)?;
        let x_lo = match self.opts.teacher_step {
            TeacherStep::Euler => x_euler,
            TeacherStep::Heun => {
                let d2 = self.teacher.ode_drift(&t_lo, &x_euler, None)?;
                (&x_hi + (d1 + d2)?.broadcast_mul(&(h * 0.5)?)?)?
            }
        };
        let target_net = self.net_from(&self.target)?;
        let y_target = consistency_fn(&target_net, &self.config, &x_lo.detach(), &t_lo)?.detach();
        let y = consistency_fn(&self.net, &self.config, &x_hi, &t_hi)?;
        let sq = (y - y_target)?.sqr()?.sum(1)?;
        let per_row = match self.opts.loss {
            CdLoss::L2 => sq,
            CdLoss::PseudoHuber { c } => ((sq + c * c)?.sqrt()? - c)?,
        };
        Ok(per_row.mean(0)?)
    }

    /// One optimiser step; returns the batch loss (mean over rows of d(f_θ, f_θ⁻)).
    pub fn step(&mut self, rng: &mut dyn RandomSource) -> Result<f64> {
        self.optimizer.set_learning_rate(self.learning_rate());
        let loss = self.loss(rng)?;
        self.optimizer.backward_step(&loss)?;
        update_ema(&self.varmap, &mut self.target, self.opts.target_decay)?;
        // The slow EMA warms up (decay min(d, (1 + k)/(10 + k)) at step k) so that short
        // runs do not keep a share of the random initial weights.
        let k = self.step as f64;
        let ema_decay = self.opts.ema_decay.min((1.0 + k) / (10.0 + k));
        update_ema(&self.varmap, &mut self.ema, ema_decay)?;
        self.step += 1;
        Ok(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    }

    /// Mean loss of the current EMA model over `batches` random batches (a noisy
    /// progress measure; the target network is the EMA model too).
    pub fn evaluate(&self, batches: usize, rng: &mut dyn RandomSource) -> Result<f64> {
        let probe = Self {
            opts: self.opts.clone(),
            config: self.config.clone(),
            teacher: self.teacher.clone(),
            varmap: VarMap::new(),
            net: self.net_from(&self.ema)?,
            optimizer: candle_nn::AdamW::new(vec![], ParamsAdamW::default())?,
            target: self.ema.clone(),
            ema: vec![],
            data: self.data.clone(),
            times: self.times.clone(),
            step: self.step,
        };
        let mut total = 0.0;
        for _ in 0..batches.max(1) {
            total += probe.loss(rng)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        }
        Ok(total / batches.max(1) as f64)
    }

    fn net_from(&self, weights: &[(String, Tensor)]) -> Result<ScoreNet> {
        let map: HashMap<String, Tensor> = weights.iter().cloned().collect();
        let vb = VarBuilder::from_tensors(map, DType::F32, self.data.device());
        ScoreNet::with_frequencies(
            &self.config.net_config(),
            self.net.frequencies().clone(),
            vb,
        )
    }

    /// The model with the slow-EMA weights.
    pub fn model(&self) -> Result<ConsistencyModel> {
        Ok(ConsistencyModel::from_parts(
            self.config.clone(),
            self.net_from(&self.ema)?,
            self.teacher.x_shift().to_dtype(DType::F32)?,
            self.teacher.x_scale().to_dtype(DType::F32)?,
        ))
    }

    /// Write the EMA model (a loadable `popcosmos/consistency/v1` file) plus, under
    /// `train.raw.*` / `train.target.*`, the online and target weights and the step count, so
    /// that [`Trainer::resume`] can continue.
    pub fn save(&self, path: &Path, extra: &HashMap<String, String>) -> Result<()> {
        let model = self.model()?;
        let mut tensors = model.tensors()?;
        for (name, v) in &self.target {
            tensors.insert(format!("train.target.{name}"), v.clone());
        }
        let meta = checkpoint(&self.varmap, &mut tensors, extra, self.step, &self.opts)?;
        write_model(&model, tensors, meta, path)
    }

    /// Continue from a checkpoint written by [`Trainer::save`] (online, target and EMA weights
    /// and the step; the AdamW moments restart). Build the trainer with the same teacher and
    /// options first.
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        let (_, tensors, step) = read_checkpoint(path, self.data.device())?;
        let file = path.display().to_string();
        restore_raw(&self.varmap, &tensors, &file)?;
        let get = |k: String| tensor(&tensors, &k, &file).cloned();
        for (name, e) in self.target.iter_mut() {
            *e = get(format!("train.target.{name}"))?;
        }
        for (name, e) in self.ema.iter_mut() {
            *e = get(format!("net.{name}"))?;
        }
        self.step = step;
        Ok(())
    }
}

/// Draw teacher samples and distil: `opts.steps` optimiser steps, `progress(step, loss)`
/// after each. Returns the EMA model.
pub fn distill(
    teacher: &DiffusionModel,
    opts: &TrainOptions,
    rng: &mut dyn RandomSource,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<ConsistencyModel> {
    let mut trainer = Trainer::new(teacher, opts.clone(), rng)?;
    for s in 0..opts.steps {
        let loss = trainer.step(rng)?;
        progress(s + 1, loss);
    }
    trainer.model()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spans_the_interval() {
        let sde = SdeConfig::vp_default();
        let t = karras_schedule(&sde, 18, 7.0);
        assert_eq!(t.len(), 18);
        assert_eq!(t[0], sde.epsilon());
        assert_eq!(t[17], sde.t_max());
        assert!(t.windows(2).all(|w| w[1] > w[0]), "{t:?}");
    }
}
