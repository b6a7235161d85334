//! Distillation of a diffusion model into a normalizing flow: draw samples from the teacher
//! by its probability-flow ODE, fit the flow to them by maximum likelihood, and measure how
//! close the student is on fresh teacher samples (held-out NLL, forward KL with its standard
//! error, per-parameter two-sample Kolmogorov–Smirnov statistics).

use candle_core::{DType, Device, Tensor};
use popcosmos_api::{Error, RandomSource, Result, stats::ks_two_sample};
use serde::{Deserialize, Serialize};

use super::model::FlowModel;
use super::train::{TrainOptions, Trainer, mean_nll};
use crate::diffusion::{DiffusionModel, LogProbOptions, OdeSolver};

/// Settings of [`distill`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillOptions {
    /// Flow architecture and optimiser (`flow.steps` optimiser steps).
    pub flow: TrainOptions,
    /// Teacher samples to train on.
    pub n_samples: usize,
    /// Fresh teacher samples for the held-out NLL, the KL estimate and the KS tests.
    pub n_kl: usize,
    /// Flow samples for the KS tests.
    pub n_ks: usize,
    /// Teacher rows per ODE solve.
    pub chunk_size: usize,
    /// ODE solver for drawing teacher samples (cheap fixed-step by default).
    pub sample_solver: OdeSolver,
    /// Solver and divergence of the teacher's log-density in the KL estimate.
    pub teacher_log_prob: LogProbOptions,
}

impl Default for DistillOptions {
    fn default() -> Self {
        Self {
            flow: TrainOptions::default(),
            n_samples: 200_000,
            n_kl: 4096,
            n_ks: 20_000,
            chunk_size: 8192,
            sample_solver: OdeSolver::Rk4 { steps: 50 },
            teacher_log_prob: LogProbOptions::default(),
        }
    }
}

/// How close the distilled flow q is to the teacher p (all densities over the physical
/// variable, nats).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistillReport {
    /// Teacher samples trained on (non-finite draws dropped).
    pub n_train: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Mean batch NLL over the last min(100, steps) steps.
    pub final_train_nll: f64,
    /// −mean ln q on the `n_kl` held-out teacher samples.
    pub heldout_nll: f64,
    /// −mean ln p_teacher on the same samples (the teacher's entropy estimate).
    pub teacher_nll: f64,
    /// Forward KL estimate E_p[ln p − ln q] on the held-out samples.
    pub kl: f64,
    /// Its standard error (sample standard deviation / √rows).
    pub kl_stderr: f64,
    /// Held-out rows in the KL estimate (those with finite ln p and ln q).
    pub kl_rows: usize,
    /// Two-sample KS statistic per parameter, flow samples vs held-out teacher samples.
    pub ks: Vec<f64>,
    /// Asymptotic KS p-values.
    pub ks_p: Vec<f64>,
    /// Parameter names (the teacher's, if it has them).
    pub names: Vec<String>,
}

/// Distil `teacher` (an unconditional diffusion model of any dimension D ≥ 2) into a flow.
/// `progress(step, batch NLL)` is called after every optimiser step. The flow is trained on
/// `device`; the teacher runs on its own device.
pub fn distill(
    teacher: &DiffusionModel,
    opts: &DistillOptions,
    rng: &mut dyn RandomSource,
    device: &Device,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<(FlowModel, DistillReport)> {
    let cfg = teacher.config();
    if cfg.conditional_dim != 0 {
        return Err(Error::Invalid(
            "distill: the teacher must be an unconditional diffusion model".into(),
        ));
    }
    if opts.n_samples < 2 || opts.n_kl < 2 || opts.n_ks < 2 || opts.chunk_size == 0 {
        return Err(Error::Invalid(
            "distill: need n_samples, n_kl, n_ks >= 2 and chunk_size >= 1".into(),
        ));
    }
    opts.sample_solver
        .validate()
        .map_err(|e| Error::config("distill.sample_solver", e))?;
    opts.teacher_log_prob
        .solver
        .validate()
        .map_err(|e| Error::config("distill.teacher_log_prob.solver", e))?;
    let d = cfg.dim;

    let train = teacher_samples(teacher, opts.n_samples, opts, rng)?.to_device(device)?;
    let n_train = train.dim(0)?;
    let mut trainer = Trainer::new(&train, cfg.names.clone(), opts.flow.clone(), device)?;
    drop(train);
    let steps = opts.flow.steps;
    let tail = steps.clamp(1, 100);
    let mut tail_sum = 0.0;
    for s in 0..steps {
        let loss = trainer.step(rng)?;
        if s + tail >= steps {
            tail_sum += loss;
        }
        progress(s + 1, loss);
    }
    let flow = trainer.model()?;

    // Fresh teacher samples: NLL, KL, KS.
    let held = teacher_samples(teacher, opts.n_kl, opts, rng)?;
    let heldout_nll = mean_nll(&flow, &held.to_device(device)?)?;
    let ln_scale: f64 = teacher
        .x_scale()
        .to_dtype(DType::F64)?
        .log()?
        .sum_all()?
        .to_scalar()?;
    let n_held = held.dim(0)?;
    let mut ln_p = Vec::with_capacity(n_held);
    let mut ln_q = Vec::with_capacity(n_held);
    let mut start = 0;
    while start < n_held {
        let len = opts.chunk_size.min(n_held - start);
        let x = held.narrow(0, start, len)?;
        let out = teacher.log_prob(&x, None, &opts.teacher_log_prob, Some(&mut *rng))?;
        let p: Vec<f64> = (out.log_prob - ln_scale)?.to_dtype(DType::F64)?.to_vec1()?;
        let q: Vec<f64> = flow
            .log_prob(&x.to_device(device)?)?
            .to_dtype(DType::F64)?
            .to_vec1()?;
        ln_p.extend(p);
        ln_q.extend(q);
        start += len;
    }
    let terms: Vec<(f64, f64)> = ln_p
        .iter()
        .zip(&ln_q)
        .filter(|(p, q)| p.is_finite() && q.is_finite())
        .map(|(&p, &q)| (p, p - q))
        .collect();
    let kl_rows = terms.len();
    let (kl, kl_stderr, teacher_nll) = if kl_rows >= 2 {
        let m = kl_rows as f64;
        let kl = terms.iter().map(|t| t.1).sum::<f64>() / m;
        let var = terms.iter().map(|t| (t.1 - kl).powi(2)).sum::<f64>() / (m - 1.0);
        let h = -terms.iter().map(|t| t.0).sum::<f64>() / m;
        (kl, (var / m).sqrt(), h)
    } else {
        (f64::NAN, f64::NAN, f64::NAN)
    };

    let flow_draws: Vec<Vec<f64>> = columns(&flow.sample(opts.n_ks, rng)?, d)?;
    let teacher_draws: Vec<Vec<f64>> = columns(&held, d)?;
    let (ks, ks_p): (Vec<f64>, Vec<f64>) = flow_draws
        .into_iter()
        .zip(teacher_draws)
        .map(|(a, b)| ks_two_sample(&a, &b))
        .unzip();

    let report = DistillReport {
        n_train,
        steps,
        final_train_nll: if steps == 0 {
            f64::NAN
        } else {
            tail_sum / tail as f64
        },
        heldout_nll,
        teacher_nll,
        kl,
        kl_stderr,
        kl_rows,
        ks,
        ks_p,
        names: cfg.names.clone(),
    };
    Ok((flow, report))
}

/// `n` finite teacher samples `[n', D]` (n' ≤ n after dropping non-finite rows) on the
/// teacher's device, drawn in chunks by the PF-ODE
/// ([`crate::consistency::teacher_samples`]); at least 2 of them.
fn teacher_samples(
    teacher: &DiffusionModel,
    n: usize,
    opts: &DistillOptions,
    rng: &mut dyn RandomSource,
) -> Result<Tensor> {
    let x =
        crate::consistency::teacher_samples(teacher, n, opts.chunk_size, &opts.sample_solver, rng)?;
    if x.dim(0)? < 2 {
        return Err(Error::Invalid(
            "distill: the teacher produced fewer than 2 finite samples".into(),
        ));
    }
    Ok(x)
}

fn columns(x: &Tensor, d: usize) -> Result<Vec<Vec<f64>>> {
    let flat: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    Ok((0..d)
        .map(|j| flat.iter().skip(j).step_by(d).copied().collect())
        .collect())
}
