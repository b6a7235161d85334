//! Consistency models (Song et al. 2023) distilled from a diffusion model: 1-, 2- and
//! 4-step samplers of the teacher's probability-flow ODE distribution.
//!
//! * [`ConsistencyModel`]: f_θ(x_t, t) = c_skip(t) x̃_t + c_out(t) F_θ(x_t, t) in the
//!   teacher's standardised space (its x_shift/x_scale), with c_skip(ε) = 1, c_out(ε) = 0 so
//!   that f_θ(x, ε) = x exactly; one-step ([`ConsistencyModel::sample`] with `steps = 1`:
//!   f_θ(σ_T z, T)) and multistep sampling (re-noise / denoise); safetensors with metadata
//!   `format` = `popcosmos/consistency/v1` and `config` = JSON of [`ConsistencyConfig`].
//! * [`Trainer`] / [`distill()`]: consistency distillation with a Heun (or Euler) teacher
//!   PF-ODE step between adjacent times of an N-point Karras schedule, an EMA target network,
//!   data points from teacher ODE samples; checkpoint/resume.
//! * [`compare_to_teacher`]: per-parameter two-sample KS statistics and a classifier
//!   two-sample test (ROC AUC of a 1-hidden-layer MLP trained on half of the pooled samples,
//!   0.5 = indistinguishable) for 1, 2 and 4 steps vs teacher ODE samples, with the wall time
//!   per sample of each sampler and of the teacher's ODE sampler.

mod model;
mod train;

pub use model::{
    Coefficients, ConsistencyConfig, ConsistencyModel, FORMAT, coefficients, noise_level,
    time_of_noise_level, write_model,
};
pub use train::{
    CdLoss, TeacherStep, TrainOptions, Trainer, distill, karras_schedule, karras_time,
    teacher_samples,
};

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};
use popcosmos_api::{Error, RandomSource, Result, Shape, stats::ks_two_sample};
use serde::{Deserialize, Serialize};

use crate::diffusion::{DiffusionModel, OdeSolver};

/// Settings of the classifier two-sample test ([`classifier_auc`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierOptions {
    /// Width of the single hidden layer (SiLU); 0 gives logistic regression.
    pub hidden: usize,
    /// Full-batch AdamW steps.
    pub steps: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        Self {
            hidden: 64,
            steps: 200,
            learning_rate: 2e-2,
            weight_decay: 1e-4,
        }
    }
}

/// ROC AUC of `scores` for the positive class (`labels[i] = true`): the Mann–Whitney
/// probability P(score₊ > score₋) + ½ P(tie), with average ranks for ties. NaN if a class
/// is empty.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    assert_eq!(scores.len(), labels.len());
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // ranks i+1 ..= j+1 share their average
        let avg = 0.5 * ((i + 1) + (j + 1)) as f64;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum_pos += avg;
            }
        }
        i = j + 1;
    }
    let n_pos = labels.iter().filter(|&&l| l).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// Classifier two-sample test: pool `a` `[n_a, D]` (label 0) and `b` `[n_b, D]` (label 1),
/// shuffle, train a 1-hidden-layer MLP (or logistic regression) by full-batch AdamW on the
/// binary cross-entropy of one half (features robustly standardised by that half's median
/// and IQR and clamped to ±10),
/// and return the ROC AUC of its logits on the other half: ≈ 0.5 when the samples come
/// from the same distribution, → 1 as they separate. Weights and split come from `rng`.
pub fn classifier_auc(
    a: &Tensor,
    b: &Tensor,
    opts: &ClassifierOptions,
    rng: &mut dyn RandomSource,
) -> Result<f64> {
    let dev = Device::Cpu;
    // detach: inputs computed from trainable weights must not drag their graph along.
    let a = a.detach().to_dtype(DType::F32)?.to_device(&dev)?;
    let b = b.detach().to_dtype(DType::F32)?.to_device(&dev)?;
    let (na, d) = a.dims2()?;
    let (nb, db) = b.dims2()?;
    if d != db || na < 2 || nb < 2 {
        return Err(Error::Invalid(format!(
            "classifier_auc: need two [n >= 2, D] samples, got [{na}, {d}] and [{nb}, {db}]"
        )));
    }
    let x = Tensor::cat(&[&a, &b], 0)?;
    let n = na + nb;
    // Fisher–Yates permutation from the caller's stream.
    let mut perm: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = ((rng.next_f64() * (i + 1) as f64) as usize).min(i);
        perm.swap(i, j);
    }
    let half = n / 2;
    let labels: Vec<bool> = perm.iter().map(|&p| p as usize >= na).collect();
    let select = |rows: &[u32]| -> Result<Tensor> {
        Ok(x.index_select(&Tensor::from_vec(rows.to_vec(), rows.len(), &dev)?, 0)?)
    };
    let (x_train, x_test) = (select(&perm[..half])?, select(&perm[half..])?);
    // Robust standardisation (median, IQR/1.349 of the training half) clamped to ±10: far
    // outliers (heavy-tailed teacher draws) neither set the scale nor saturate the network.
    let (center, scale) = robust_center_scale(&x_train)?;
    let norm = |x: &Tensor| -> Result<Tensor> {
        Ok(x.broadcast_sub(&center)?
            .broadcast_div(&scale)?
            .clamp(-10f32, 10f32)?)
    };
    let (x_train, x_test) = (norm(&x_train)?, norm(&x_test)?);
    let y_train: Vec<f32> = labels[..half].iter().map(|&l| l as u8 as f32).collect();
    let y_train = Tensor::from_vec(y_train, (half, 1), &dev)?;

    let h = opts.hidden;
    let kaiming = |rng: &mut dyn RandomSource, out: usize, inp: usize| -> Result<Var> {
        let w = (rng.normal(&Shape::from((out, inp)), &dev)? * (2.0 / inp as f64).sqrt())?;
        Ok(Var::from_tensor(&w)?)
    };
    let (w1, b1, w2) = if h > 0 {
        (
            Some(kaiming(rng, h, d)?),
            Some(Var::zeros(h, DType::F32, &dev)?),
            kaiming(rng, 1, h)?,
        )
    } else {
        (None, None, Var::zeros((1, d), DType::F32, &dev)?)
    };
    let b2 = Var::zeros(1, DType::F32, &dev)?;
    let logits = |x: &Tensor| -> Result<Tensor> {
        let hidden = match (&w1, &b1) {
            (Some(w1), Some(b1)) => x
                .matmul(&w1.as_tensor().t()?)?
                .broadcast_add(b1.as_tensor())?
                .silu()?,
            _ => x.clone(),
        };
        Ok(hidden
            .matmul(&w2.as_tensor().t()?)?
            .broadcast_add(b2.as_tensor())?)
    };
    let mut vars = vec![w2.clone(), b2.clone()];
    if let (Some(w1), Some(b1)) = (&w1, &b1) {
        vars.push(w1.clone());
        vars.push(b1.clone());
    }
    let mut opt = candle_nn::AdamW::new(
        vars,
        ParamsAdamW {
            lr: opts.learning_rate,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    for _ in 0..opts.steps {
        let z = logits(&x_train)?;
        // BCE with logits: softplus(z) − y z = max(z, 0) + ln(1 + e^{−|z|}) − y z.
        let loss = ((z.relu()? + z.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?
            - (&z * &y_train)?)?
            .mean_all()?;
        opt.backward_step(&loss)?;
    }
    let scores: Vec<f64> = logits(&x_test)?
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1()?;
    Ok(roc_auc(&scores, &labels[half..]))
}

/// Per-column median and IQR/1.349 (a robust σ) `[D]` of `x` `[n, D]` (f32, host); columns
/// with zero IQR fall back to their standard deviation, then to 1.
fn robust_center_scale(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, d) = x.dims2()?;
    let flat: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let mut center = Vec::with_capacity(d);
    let mut scale = Vec::with_capacity(d);
    for j in 0..d {
        let mut c: Vec<f32> = flat.iter().skip(j).step_by(d).copied().collect();
        c.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| c[((p * (n - 1) as f64).round() as usize).min(n - 1)];
        let med = q(0.5);
        let mut s = (q(0.75) - q(0.25)) / 1.349;
        if !(s > 0.0 && s.is_finite()) {
            let m = c.iter().sum::<f32>() / n as f32;
            s = (c.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / n as f32).sqrt();
        }
        center.push(med);
        scale.push(if s > 0.0 && s.is_finite() { s } else { 1.0 });
    }
    Ok((
        Tensor::from_vec(center, d, x.device())?,
        Tensor::from_vec(scale, d, x.device())?,
    ))
}

/// Settings of [`compare_to_teacher_with`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareOptions {
    /// Consistency-sampler step counts to evaluate.
    pub steps: Vec<usize>,
    /// The teacher's ODE sampler (reference samples, baseline and timing).
    pub teacher_solver: OdeSolver,
    /// Rows per sampler call (teacher and consistency model alike).
    pub chunk_size: usize,
    /// The classifier two-sample test.
    pub classifier: ClassifierOptions,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            steps: vec![1, 2, 4],
            teacher_solver: OdeSolver::Rk4 { steps: 40 },
            chunk_size: 4096,
            classifier: ClassifierOptions::default(),
        }
    }
}

/// One sampler vs the teacher's reference samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    /// e.g. `consistency 1-step` or `teacher RK4 40 (fresh draws)`.
    pub method: String,
    /// Network evaluations per sample.
    pub nfe: usize,
    /// Wall time per sample (seconds), on the models' device.
    pub seconds_per_sample: f64,
    /// Two-sample KS statistic per parameter.
    pub ks: Vec<f64>,
    /// Largest of `ks`.
    pub ks_max: f64,
    /// Mean of `ks`.
    pub ks_mean: f64,
    /// Classifier two-sample test ROC AUC (0.5 = indistinguishable).
    pub auc: f64,
}

/// Result of [`compare_to_teacher`]: the first row is fresh teacher draws (the noise floor of
/// KS and AUC at this n, and the teacher's time per sample), then one row per step count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Samples per method (and reference teacher samples).
    pub n: usize,
    /// Parameter names, the teacher's (`x0`, `x1`, … if it has none).
    pub names: Vec<String>,
    /// Fresh teacher draws first, then one row per consistency step count.
    pub rows: Vec<ReportRow>,
}

impl Report {
    /// The summary table and the per-parameter KS table, as printed by the example.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let teacher_time = self.rows.first().map_or(f64::NAN, |r| r.seconds_per_sample);
        let _ = writeln!(
            s,
            "{:<30} {:>5} {:>11} {:>9} {:>8} {:>8} {:>7}",
            "method", "NFE", "µs/sample", "speed-up", "KS max", "KS mean", "AUC"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<30} {:>5} {:>11.2} {:>8.1}x {:>8.4} {:>8.4} {:>7.4}",
                r.method,
                r.nfe,
                1e6 * r.seconds_per_sample,
                teacher_time / r.seconds_per_sample,
                r.ks_max,
                r.ks_mean,
                r.auc
            );
        }
        let _ = writeln!(s, "\nper-parameter KS (n = {} per sample):", self.n);
        let _ = write!(s, "{:<20}", "parameter");
        for r in &self.rows {
            let short: String = r
                .method
                .split(" (")
                .next()
                .unwrap_or("")
                .chars()
                .take(14)
                .collect();
            let _ = write!(s, " {short:>14}");
        }
        let _ = writeln!(s);
        for (j, name) in self.names.iter().enumerate() {
            let _ = write!(s, "{name:<20}");
            for r in &self.rows {
                let _ = write!(s, " {:>14.4}", r.ks.get(j).copied().unwrap_or(f64::NAN));
            }
            let _ = writeln!(s);
        }
        s
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.table())
    }
}

/// [`compare_to_teacher_with`] with the default options: 1, 2 and 4 steps vs `n` teacher
/// samples (RK4, 40 steps).
pub fn compare_to_teacher(
    cm: &ConsistencyModel,
    teacher: &DiffusionModel,
    n: usize,
    rng: &mut dyn RandomSource,
) -> Result<Report> {
    compare_to_teacher_with(cm, teacher, n, &CompareOptions::default(), rng)
}

fn timed_chunks(
    n: usize,
    chunk: usize,
    mut f: impl FnMut(usize) -> Result<Tensor>,
) -> Result<(Tensor, f64)> {
    let start = Instant::now();
    let mut parts = Vec::new();
    let mut done = 0;
    while done < n {
        let len = chunk.max(1).min(n - done);
        parts.push(
            f(len)?
                .detach()
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?,
        );
        done += len;
    }
    let x = Tensor::cat(&parts, 0)?;
    Ok((x, start.elapsed().as_secs_f64() / n as f64))
}

/// Compare the consistency model's samplers with the teacher's ODE sampler on `n` samples
/// each: `n` reference teacher draws; then fresh teacher draws (baseline row) and each
/// consistency sampler, each scored by per-parameter KS vs the reference and by a classifier
/// two-sample test (half of the pooled 2n samples to train, half to score).
pub fn compare_to_teacher_with(
    cm: &ConsistencyModel,
    teacher: &DiffusionModel,
    n: usize,
    opts: &CompareOptions,
    rng: &mut dyn RandomSource,
) -> Result<Report> {
    let d = teacher.config().dim;
    if cm.dim() != d {
        return Err(Error::Invalid(format!(
            "compare_to_teacher: consistency model is {}-D, teacher {d}-D",
            cm.dim()
        )));
    }
    if n < 4 {
        return Err(Error::Invalid("compare_to_teacher: need n >= 4".into()));
    }
    let teacher_draw = |len: usize, rng: &mut dyn RandomSource| -> Result<Tensor> {
        let base = rng.normal(&Shape::from((len, d)), teacher.device())?;
        Ok(teacher.sample_ode(&base, None, &opts.teacher_solver)?.0)
    };
    let (reference, _) = timed_chunks(n, opts.chunk_size, |len| teacher_draw(len, rng))?;
    let ref_cols = columns(&reference, d)?;
    let nfe_teacher = match opts.teacher_solver {
        OdeSolver::Rk4 { steps } => 4 * steps,
        OdeSolver::Heun { steps } => 2 * steps,
        OdeSolver::Euler { steps } => steps,
        OdeSolver::Dopri5 { .. } => 0,
    };
    let teacher_label = match opts.teacher_solver {
        OdeSolver::Rk4 { steps } => format!("RK4 {steps}"),
        OdeSolver::Heun { steps } => format!("Heun {steps}"),
        OdeSolver::Euler { steps } => format!("Euler {steps}"),
        OdeSolver::Dopri5 { .. } => "dopri5".into(),
    };
    let mut rows = Vec::new();
    let mut score = |method: String,
                     nfe: usize,
                     x: Tensor,
                     secs: f64,
                     rng: &mut dyn RandomSource|
     -> Result<()> {
        let ks: Vec<f64> = columns(&x, d)?
            .into_iter()
            .zip(&ref_cols)
            .map(|(a, b)| ks_two_sample(&a, b).0)
            .collect();
        let auc = classifier_auc(&reference, &x, &opts.classifier, rng)?;
        rows.push(ReportRow {
            method,
            nfe,
            seconds_per_sample: secs,
            ks_max: ks.iter().copied().fold(0.0, f64::max),
            ks_mean: ks.iter().sum::<f64>() / d as f64,
            ks,
            auc,
        });
        Ok(())
    };
    let (fresh, secs) = timed_chunks(n, opts.chunk_size, |len| teacher_draw(len, rng))?;
    score(
        format!("teacher {teacher_label} (fresh draws)"),
        nfe_teacher,
        fresh,
        secs,
        rng,
    )?;
    for &k in &opts.steps {
        let (x, secs) = timed_chunks(n, opts.chunk_size, |len| cm.sample(len, k, rng))?;
        score(format!("consistency {k}-step"), k, x, secs, rng)?;
    }
    let names = if teacher.config().names.len() == d {
        teacher.config().names.clone()
    } else {
        (0..d).map(|j| format!("x{j}")).collect()
    };
    Ok(Report { n, names, rows })
}

fn columns(x: &Tensor, d: usize) -> Result<Vec<Vec<f64>>> {
    let flat: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    Ok((0..d)
        .map(|j| flat.iter().skip(j).step_by(d).copied().collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_auc_known_values() {
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            1.0
        );
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.8, 0.9], &[true, true, false, false]),
            0.0
        );
        // all tied → 0.5
        assert_eq!(
            roc_auc(&[1.0; 6], &[true, false, true, false, true, false]),
            0.5
        );
        // pos {0.35, 0.8}, neg {0.1, 0.4}: pairs (0.35>0.1), (0.35<0.4), (0.8>both) → 3/4.
        assert_eq!(
            roc_auc(&[0.1, 0.35, 0.4, 0.8], &[false, true, false, true]),
            0.75
        );
    }
}
