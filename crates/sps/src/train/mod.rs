//! Training per-band photulators from a teacher.
//!
//! Same architecture and activation as the COSMOS photulators: one network per
//! band, 15 → 128 → 128 → 128 → 128 → 1, the speculator activation
//! a(y) = [β + (1 − β) σ(α y)] y with per-unit trainable α, β after **every** layer, the
//! output de-standardised as M = out · output_scale + output_shift. The loss is each band's
//! mean-squared error in standardised units; bands are independent networks.
//!
//! The result ([`TrainedPhotulators::save`]) has the tensor layout of
//! `photulator_cosmos26.safetensors` plus the JSON sidecar, so it loads
//! with [`crate::Photulator::load`] unchanged.
//!
//! **Why hand-written backpropagation.** candle's CPU autograd on these small `[256, 128]`
//! matmuls is dominated by per-op allocation and dispatch (measured ≈ 3.4k samples/s for 9
//! bands on 2 cores, and slower per sample at batch 1024). Here each band's forward and
//! backward pass is a handful of `gemm` calls on preallocated buffers plus one fused loop per
//! layer for the activation and its derivatives, with rayon over bands. The analytic
//! gradient is checked against finite differences in the tests.
//!
//! **Warm start** ([`WarmStart`]): the networks can start from another photulator set (e.g.
//! the COSMOS band closest to each target band), keeping that set's input/output
//! standardisation. Otherwise standardisations are the training-set mean and standard
//! deviation and the weights are drawn N(0, 1/fan-in).
//!
//! Optimiser: Adam with a learning rate decaying geometrically from `lr_start` to `lr_end`;
//! mini-batches drawn with a seeded host RNG, so a run is reproducible for a given seed.

use std::ops::Range;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

mod teacher;

pub use teacher::{
    HeldoutBand, OBSERVABLE_MAG, Observability, Spread, checkpoint_path, closest_band,
    heldout_accuracy, observable_delta, rms, soft_capped, teacher_magnitudes, theta_tensor,
};

use crate::fastmath::fast_exp;
use crate::photulator::N_INPUTS;
use crate::weights::WeightFile;
use popcosmos_api::{Error, HostRng, Result};

/// Training hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Hidden widths (COSMOS: 4 × 128).
    pub hidden: Vec<usize>,
    /// Optimiser steps.
    pub steps: usize,
    /// Rows per mini-batch (at most the training-set size).
    pub batch_size: usize,
    /// Adam learning rate at the first step.
    pub lr_start: f64,
    /// Adam learning rate after the last step (geometric decay from `lr_start`).
    pub lr_end: f64,
    /// Seed of the initial weights and the mini-batch draws.
    pub seed: u64,
    /// Evaluate the held-out RMS every this many steps (0 = only at the end).
    pub eval_every: usize,
    /// Start from these networks instead of random weights.
    pub init: Option<WarmStart>,
    /// Indices of the bands to train; the others keep their `init` networks unchanged
    /// (e.g. retraining only the blue bands of a set). `None`: every band.
    pub train_bands: Option<Vec<usize>>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            hidden: vec![128; 4],
            steps: 20_000,
            batch_size: 512,
            lr_start: 2e-3,
            lr_end: 2e-5,
            seed: 1,
            eval_every: 1000,
            init: None,
            train_bands: None,
        }
    }
}

/// One progress report.
#[derive(Debug, Clone)]
pub struct TrainProgress {
    /// Steps done (1-based).
    pub step: usize,
    /// Learning rate for the next step.
    pub learning_rate: f64,
    /// Mean-squared error of the last mini-batch, standardised units, averaged over bands.
    pub batch_loss: f64,
    /// Held-out RMS in magnitudes per band (at evaluation steps).
    pub heldout_rms_mag: Option<Vec<f64>>,
    /// The networks' held-out magnitudes `[rows][bands]` behind that RMS, for callers that
    /// report other statistics of the same evaluation.
    pub heldout_magnitudes: Option<Vec<Vec<f32>>>,
}

/// Where each layer's parameters sit in a band's flat parameter vector: per layer the weight
/// `[in, out]` (row-major, so `z = h · W`), then bias, α and β (`out` each).
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    sizes: Vec<usize>,
    starts: Vec<usize>,
    total: usize,
}

impl Layout {
    fn new(sizes: &[usize]) -> Self {
        let mut starts = Vec::new();
        let mut total = 0;
        for w in sizes.windows(2) {
            starts.push(total);
            total += w[0] * w[1] + 3 * w[1];
        }
        Self {
            sizes: sizes.to_vec(),
            starts,
            total,
        }
    }
    fn layers(&self) -> usize {
        self.starts.len()
    }
    fn dims(&self, l: usize) -> (usize, usize) {
        (self.sizes[l], self.sizes[l + 1])
    }
    fn weight(&self, l: usize) -> Range<usize> {
        let (i, o) = self.dims(l);
        self.starts[l]..self.starts[l] + i * o
    }
    /// `k` = 0 bias, 1 α, 2 β.
    fn unit_param(&self, l: usize, k: usize) -> Range<usize> {
        let (i, o) = self.dims(l);
        let s = self.starts[l] + i * o + k * o;
        s..s + o
    }
}

/// Initial networks and standardisations taken from an existing photulator set.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmStart {
    /// Input standardisation: x_std = (θ₁₅ − shift) / scale, per input.
    pub input_shift: Vec<f32>,
    /// Input standardisation scale, per input.
    pub input_scale: Vec<f32>,
    /// Per target band.
    pub output_shift: Vec<f32>,
    /// Per target band: M = out · output_scale + output_shift.
    pub output_scale: Vec<f32>,
    /// Layer widths including input and output.
    pub architecture: Vec<usize>,
    /// Per target band, the flat parameter vector (see `Layout`).
    params: Vec<Vec<f32>>,
}

impl WarmStart {
    /// Take band `source_bands[b]` of a photulator file (COSMOS tensor layout) as the start
    /// of target band `b`. Missing or mis-shaped tensors are errors naming file and tensor.
    pub fn from_photulator(
        file: &WeightFile,
        architecture: &[usize],
        source_bands: &[usize],
    ) -> Result<Self> {
        let layout = Layout::new(architecture);
        let vec1 = |name: &str, n: usize| -> Result<Vec<f32>> {
            Ok(file.get(name, &[n])?.to_vec1::<f32>()?)
        };
        let mut params = Vec::new();
        let (mut output_shift, mut output_scale) = (Vec::new(), Vec::new());
        for &k in source_bands {
            let p = format!("band.{k}");
            output_shift.push(vec1(&format!("{p}.output_shift"), 1)?[0]);
            output_scale.push(vec1(&format!("{p}.output_scale"), 1)?[0]);
            let mut flat = vec![0.0f32; layout.total];
            for l in 0..layout.layers() {
                let (ni, no) = layout.dims(l);
                let q = format!("{p}.layer.{l}");
                // File layout [out, in] (torch Linear) → ours [in, out].
                let w = file
                    .get(&format!("{q}.weight"), &[no, ni])?
                    .to_vec2::<f32>()?;
                let dst = &mut flat[layout.weight(l)];
                for (o, row) in w.iter().enumerate() {
                    for (i, v) in row.iter().enumerate() {
                        dst[i * no + o] = *v;
                    }
                }
                for (k, name) in ["bias", "alpha", "beta"].iter().enumerate() {
                    flat[layout.unit_param(l, k)]
                        .copy_from_slice(&vec1(&format!("{q}.{name}"), no)?);
                }
            }
            params.push(flat);
        }
        Ok(Self {
            input_shift: vec1("input_shift", architecture[0])?,
            input_scale: vec1("input_scale", architecture[0])?,
            output_shift,
            output_scale,
            architecture: architecture.to_vec(),
            params,
        })
    }
}

/// Trained networks plus their standardisation, ready to save.
pub struct TrainedPhotulators {
    bands: Vec<String>,
    architecture: Vec<usize>,
    input_shift: Vec<f32>,
    input_scale: Vec<f32>,
    output_shift: Vec<f32>,
    output_scale: Vec<f32>,
    /// Per band, flat parameters (see `Layout`).
    params: Vec<Vec<f32>>,
    device: Device,
}

fn mean_std(x: &[Vec<f32>], col: usize) -> (f32, f32) {
    let n = x.len() as f64;
    let m = x.iter().map(|r| r[col] as f64).sum::<f64>() / n;
    let v = x.iter().map(|r| (r[col] as f64 - m).powi(2)).sum::<f64>() / n;
    (m as f32, (v.sqrt().max(1e-6)) as f32)
}

fn to_tensor(rows: &[Vec<f32>], device: &Device) -> Result<Tensor> {
    let n = rows.len();
    let d = rows.first().map(|r| r.len()).unwrap_or(0);
    Ok(Tensor::from_vec(
        rows.iter().flatten().copied().collect::<Vec<_>>(),
        (n, d),
        device,
    )?)
}

/// `dst[m, n]` (row-major) `= (dst if accumulate) + a · b`, with `a` `[m, k]` and `b` `[k, n]`
/// addressed through row/column strides (so transposes are free).
#[allow(clippy::too_many_arguments)]
fn matmul(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    accumulate: bool,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // The strided reads stay inside the slices (gemm does no bounds checks).
    assert!(dst.len() >= m * n);
    assert!((m - 1) * a_rs + (k - 1) * a_cs < a.len());
    assert!((k - 1) * b_rs + (n - 1) * b_cs < b.len());
    // SAFETY: bounds asserted above; dst does not alias a or b (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Per-band buffers of one forward/backward pass (sized for `rows`).
struct Workspace {
    rows: usize,
    /// Layer inputs: `h[0]` the standardised θ, `h[l + 1]` the activation of layer `l`.
    h: Vec<Vec<f32>>,
    /// Pre-activations and σ(α z) of each layer.
    z: Vec<Vec<f32>>,
    s: Vec<Vec<f32>>,
    /// Gradient w.r.t. the current layer's output / input.
    d_out: Vec<f32>,
    d_in: Vec<f32>,
    grad: Vec<f32>,
}

impl Workspace {
    fn new(layout: &Layout, rows: usize) -> Self {
        let widest = *layout.sizes.iter().max().unwrap();
        Self {
            rows,
            h: layout.sizes.iter().map(|&w| vec![0.0; rows * w]).collect(),
            z: layout.sizes[1..]
                .iter()
                .map(|&w| vec![0.0; rows * w])
                .collect(),
            s: layout.sizes[1..]
                .iter()
                .map(|&w| vec![0.0; rows * w])
                .collect(),
            d_out: vec![0.0; rows * widest],
            d_in: vec![0.0; rows * widest],
            grad: vec![0.0; layout.total],
        }
    }
}

/// Forward pass of one band over `ws.h[0]` (`rows × in`); the output is `ws.h[last]`.
fn forward(layout: &Layout, params: &[f32], ws: &mut Workspace) {
    let rows = ws.rows;
    for l in 0..layout.layers() {
        let (ni, no) = layout.dims(l);
        let (lower, upper) = ws.h.split_at_mut(l + 1);
        let z = &mut ws.z[l];
        matmul(
            z,
            (rows, no, ni),
            &lower[l],
            (ni, 1),
            &params[layout.weight(l)],
            (no, 1),
            false,
        );
        let bias = &params[layout.unit_param(l, 0)];
        let alpha = &params[layout.unit_param(l, 1)];
        let beta = &params[layout.unit_param(l, 2)];
        let (out, s) = (&mut upper[0], &mut ws.s[l]);
        for r in 0..rows {
            let zr = &mut z[r * no..(r + 1) * no];
            let sr = &mut s[r * no..(r + 1) * no];
            let hr = &mut out[r * no..(r + 1) * no];
            for j in 0..no {
                let zz = zr[j] + bias[j];
                let sig = 1.0 / (1.0 + fast_exp(-alpha[j] * zz));
                zr[j] = zz;
                sr[j] = sig;
                hr[j] = (beta[j] + (1.0 - beta[j]) * sig) * zz;
            }
        }
    }
}

/// Backward pass for the loss mean_r w_r (out_r − target_r)²; fills `ws.grad`, returns the
/// loss.
fn backward(
    layout: &Layout,
    params: &[f32],
    target: &[f32],
    weight: &[f32],
    ws: &mut Workspace,
) -> f64 {
    let rows = ws.rows;
    let last = layout.layers();
    let out = &ws.h[last];
    let mut loss = 0.0f64;
    for r in 0..rows {
        let e = out[r] - target[r];
        loss += (weight[r] * e * e) as f64;
        ws.d_out[r] = 2.0 * weight[r] * e / rows as f32;
    }
    // Every entry of ws.grad is overwritten below (unit parameters assigned, weights by a
    // non-accumulating matmul), so no zeroing.
    for l in (0..last).rev() {
        let (ni, no) = layout.dims(l);
        let alpha = &params[layout.unit_param(l, 1)];
        let beta = &params[layout.unit_param(l, 2)];
        let (z, s) = (&ws.z[l], &ws.s[l]);
        let mut g_unit = vec![[0.0f32; 3]; no];
        // d_out ← ∂L/∂z in place, accumulating ∂L/∂(bias, α, β).
        for r in 0..rows {
            for j in 0..no {
                let k = r * no + j;
                let (zz, sig, d) = (z[k], s[k], ws.d_out[k]);
                let ds = sig * (1.0 - sig);
                let dz = d * (beta[j] + (1.0 - beta[j]) * (sig + alpha[j] * zz * ds));
                g_unit[j][0] += dz;
                g_unit[j][1] += d * (1.0 - beta[j]) * zz * zz * ds;
                g_unit[j][2] += d * zz * (1.0 - sig);
                ws.d_out[k] = dz;
            }
        }
        for k in 0..3 {
            for (g, u) in ws.grad[layout.unit_param(l, k)].iter_mut().zip(&g_unit) {
                *g = u[k];
            }
        }
        // ∂L/∂W = hᵀ · dz.
        matmul(
            &mut ws.grad[layout.weight(l)],
            (ni, no, rows),
            &ws.h[l],
            (1, ni),
            &ws.d_out[..rows * no],
            (no, 1),
            false,
        );
        if l > 0 {
            // ∂L/∂h = dz · Wᵀ.
            matmul(
                &mut ws.d_in[..rows * ni],
                (rows, ni, no),
                &ws.d_out[..rows * no],
                (no, 1),
                &params[layout.weight(l)],
                (1, no),
                false,
            );
            std::mem::swap(&mut ws.d_in, &mut ws.d_out);
        }
    }
    loss / rows as f64
}

/// Adam (β₁ 0.9, β₂ 0.999, ε 1e-8, bias-corrected) on one band's parameters.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    fn new(n: usize) -> Self {
        Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }
    fn step(&mut self, params: &mut [f32], grad: &[f32], lr: f64) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        self.t += 1;
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        let step = lr as f32 / c1;
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grad)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = B1 * *m + (1.0 - B1) * g;
            *v = B2 * *v + (1.0 - B2) * g * g;
            *p -= step * *m / ((*v / c2).sqrt() + 1e-8);
        }
    }
}

/// One band's training state.
struct BandTrainer {
    params: Vec<f32>,
    adam: Adam,
    ws: Workspace,
    target: Vec<f32>,
    /// Loss weight of each mini-batch row.
    weight: Vec<f32>,
    /// False for a band kept at its `init` network.
    trains: bool,
}

/// Rows per forward pass when predicting (bounds the workspace).
const PREDICT_ROWS: usize = 1024;

impl TrainedPhotulators {
    fn layout(&self) -> Layout {
        Layout::new(&self.architecture)
    }

    /// Absolute magnitudes `[n][bands]` for photulator inputs θ₁₅ rows (host).
    pub fn predict(&self, theta15: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let layout = self.layout();
        let per_band: Vec<Vec<f32>> = (0..self.bands.len())
            .into_par_iter()
            .map(|b| {
                let (sh, sc) = (self.output_shift[b], self.output_scale[b]);
                let mut out = Vec::with_capacity(theta15.len());
                for chunk in theta15.chunks(PREDICT_ROWS) {
                    let mut ws = Workspace::new(&layout, chunk.len());
                    standardise_into(&mut ws.h[0], chunk, &self.input_shift, &self.input_scale);
                    forward(&layout, &self.params[b], &mut ws);
                    out.extend(ws.h[layout.layers()].iter().map(|v| v * sc + sh));
                }
                out
            })
            .collect();
        (0..theta15.len())
            .map(|r| per_band.iter().map(|v| v[r]).collect())
            .collect()
    }

    /// Absolute magnitudes for θ₁₅ `[n, 15]` → `[n, bands]`.
    pub fn absolute_magnitudes(&self, theta15: &Tensor) -> Result<Tensor> {
        let rows = theta15
            .to_dtype(candle_core::DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f32>()?;
        to_tensor(&self.predict(&rows), &self.device)
    }

    /// Train on (θ₁₅, M) rows; `heldout` is evaluated every `eval_every` steps. `progress` is
    /// called after every evaluation (and at the end) with the networks as they are at that
    /// step, so a caller can checkpoint them; an error from it stops training. Bands train in
    /// parallel on the current rayon pool.
    ///
    /// `train_weight` (`[rows][bands]`, ≥ 0, optional) weights each row's squared error in
    /// each band's loss; each band's weights are rescaled to mean 1 over the training rows, so
    /// the learning rate means the same with and without them.
    #[allow(clippy::too_many_arguments)]
    pub fn train(
        bands: Vec<String>,
        train_x: &[Vec<f32>],
        train_y: &[Vec<f32>],
        train_weight: Option<&[Vec<f32>]>,
        heldout: (&[Vec<f32>], &[Vec<f32>]),
        opts: &TrainOptions,
        device: &Device,
        progress: &mut dyn FnMut(&TrainProgress, &TrainedPhotulators) -> Result<()>,
    ) -> Result<Self> {
        let nb = bands.len();
        let n = train_x.len();
        if n == 0 || train_y.len() != n || opts.batch_size == 0 || opts.hidden.is_empty() {
            return Err(Error::Invalid(format!(
                "training needs rows (got {n} inputs, {} targets), batch size > 0 and hidden layers",
                train_y.len()
            )));
        }
        if let Some(r) = train_x.iter().position(|r| r.len() != N_INPUTS) {
            return Err(Error::Invalid(format!(
                "training input row {r}: expected {N_INPUTS} values"
            )));
        }
        if let Some(r) = train_y.iter().position(|r| r.len() != nb) {
            return Err(Error::Invalid(format!(
                "training target row {r}: expected {nb} bands"
            )));
        }
        if let Some(w) = train_weight {
            if w.len() != n {
                return Err(Error::Invalid(format!(
                    "training weights: {} rows for {n} training rows",
                    w.len()
                )));
            }
            if let Some(r) = w
                .iter()
                .position(|r| r.len() != nb || r.iter().any(|v| !(v.is_finite() && *v >= 0.0)))
            {
                return Err(Error::Invalid(format!(
                    "training weight row {r}: expected {nb} finite non-negative values"
                )));
            }
        }
        let trains: Vec<bool> = match &opts.train_bands {
            None => vec![true; nb],
            Some(_) if opts.init.is_none() => {
                return Err(Error::Invalid(
                    "training a subset of the bands needs initial networks for the others".into(),
                ));
            }
            Some(list) => {
                if let Some(b) = list.iter().find(|&&b| b >= nb) {
                    return Err(Error::Invalid(format!(
                        "band index {b} to train is out of range ({nb} bands)"
                    )));
                }
                (0..nb).map(|b| list.contains(&b)).collect()
            }
        };
        let mut architecture = vec![N_INPUTS];
        architecture.extend(&opts.hidden);
        architecture.push(1);
        let layout = Layout::new(&architecture);
        let mut rng = HostRng::seed_from_u64(opts.seed);
        let mut model = match &opts.init {
            Some(init) => {
                if init.architecture != architecture || init.params.len() != nb {
                    return Err(Error::Invalid(format!(
                        "warm start has architecture {:?} for {} bands; training {:?} for {nb} bands",
                        init.architecture,
                        init.params.len(),
                        architecture
                    )));
                }
                Self {
                    bands,
                    architecture,
                    input_shift: init.input_shift.clone(),
                    input_scale: init.input_scale.clone(),
                    output_shift: init.output_shift.clone(),
                    output_scale: init.output_scale.clone(),
                    params: init.params.clone(),
                    device: device.clone(),
                }
            }
            None => {
                let (input_shift, input_scale) =
                    (0..N_INPUTS).map(|c| mean_std(train_x, c)).unzip();
                let (output_shift, output_scale) = (0..nb).map(|c| mean_std(train_y, c)).unzip();
                Self {
                    params: random_params(&layout, nb, &mut rng),
                    bands,
                    architecture,
                    input_shift,
                    input_scale,
                    output_shift,
                    output_scale,
                    device: device.clone(),
                }
            }
        };
        let bs = opts.batch_size.min(n);
        let mut trainers: Vec<BandTrainer> = model
            .params
            .iter()
            .enumerate()
            .map(|(b, p)| BandTrainer {
                params: p.clone(),
                adam: Adam::new(layout.total),
                ws: Workspace::new(&layout, bs),
                target: vec![0.0; bs],
                weight: vec![1.0; bs],
                trains: trains[b],
            })
            .collect();
        let decay = (opts.lr_end / opts.lr_start).powf(1.0 / opts.steps.max(1) as f64);
        let mut order: Vec<u32> = (0..n as u32).collect();
        let mut cursor = n;
        let mut lr = opts.lr_start;
        // Standardised once: inputs row-major `[n, 15]`, targets one column per band.
        let mut xs = vec![0.0f32; n * N_INPUTS];
        standardise_into(&mut xs, train_x, &model.input_shift, &model.input_scale);
        let ys: Vec<Vec<f32>> = (0..nb)
            .map(|b| {
                let (sh, sc) = (model.output_shift[b], model.output_scale[b]);
                train_y.iter().map(|r| (r[b] - sh) / sc).collect()
            })
            .collect();
        // Per band, the row weights rescaled to mean 1 (None: unweighted).
        let band_weight: Option<Vec<Vec<f32>>> = train_weight.map(|w| {
            (0..nb)
                .map(|b| {
                    let mean = w.iter().map(|r| r[b] as f64).sum::<f64>() / n as f64;
                    let inv = if mean > 0.0 { 1.0 / mean } else { 0.0 };
                    w.iter().map(|r| (r[b] as f64 * inv) as f32).collect()
                })
                .collect()
        });
        let n_trained = trains.iter().filter(|&&t| t).count().max(1);
        let mut batch_x = vec![0.0f32; bs * N_INPUTS];
        for step in 1..=opts.steps {
            if cursor + bs > n {
                order.shuffle(rng.inner());
                cursor = 0;
            }
            let idx = &order[cursor..cursor + bs];
            cursor += bs;
            for (dst, &i) in batch_x.chunks_exact_mut(N_INPUTS).zip(idx) {
                let i = i as usize;
                dst.copy_from_slice(&xs[i * N_INPUTS..(i + 1) * N_INPUTS]);
            }
            let loss: f64 = trainers
                .par_iter_mut()
                .enumerate()
                .filter(|(_, t)| t.trains)
                .map(|(b, t)| {
                    for (v, &i) in t.target.iter_mut().zip(idx) {
                        *v = ys[b][i as usize];
                    }
                    if let Some(w) = &band_weight {
                        for (v, &i) in t.weight.iter_mut().zip(idx) {
                            *v = w[b][i as usize];
                        }
                    }
                    t.ws.h[0].copy_from_slice(&batch_x);
                    forward(&layout, &t.params, &mut t.ws);
                    let loss = backward(&layout, &t.params, &t.target, &t.weight, &mut t.ws);
                    t.adam.step(&mut t.params, &t.ws.grad, lr);
                    loss
                })
                .sum::<f64>()
                / n_trained as f64;
            lr *= decay;
            let eval = step == opts.steps || (opts.eval_every > 0 && step % opts.eval_every == 0);
            if eval {
                for (p, t) in model.params.iter_mut().zip(&trainers) {
                    p.copy_from_slice(&t.params);
                }
                let pred = (!heldout.0.is_empty()).then(|| model.predict(heldout.0));
                let rms = pred
                    .as_ref()
                    .map(|p| band_stats(p, heldout.1).iter().map(|s| s.rms).collect());
                progress(
                    &TrainProgress {
                        step,
                        learning_rate: lr,
                        batch_loss: loss,
                        heldout_rms_mag: rms,
                        heldout_magnitudes: pred,
                    },
                    &model,
                )?;
            }
            // Keep the rng stream independent of evaluation frequency.
            let _: u32 = rng.inner().random();
        }
        for (p, t) in model.params.iter_mut().zip(trainers) {
            *p = t.params;
        }
        Ok(model)
    }

    /// Per-band held-out statistics of (network − teacher) in magnitudes.
    pub fn heldout_stats(&self, x: &[Vec<f32>], y: &[Vec<f32>]) -> Result<Vec<BandStats>> {
        Ok(band_stats(&self.predict(x), y))
    }

    /// Band (filter) names, one network each.
    pub fn bands(&self) -> &[String] {
        &self.bands
    }

    /// Layer widths including input and output.
    pub fn architecture(&self) -> &[usize] {
        &self.architecture
    }

    /// Write `path` (safetensors, photulator layout) and its JSON sidecar (`.json`).
    /// `flux_softening_nmgy` is the per-band asinh softening f_b stored with the networks.
    pub fn save(
        &self,
        path: &Path,
        flux_softening_nmgy: &[f32],
        sidecar: serde_json::Value,
    ) -> Result<()> {
        let nb = self.bands.len();
        if flux_softening_nmgy.len() != nb {
            return Err(Error::Invalid(format!(
                "{} softening values for {nb} bands",
                flux_softening_nmgy.len()
            )));
        }
        let layout = self.layout();
        let cpu = Device::Cpu;
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        let v1 = |v: &[f32]| Tensor::from_slice(v, v.len(), &cpu);
        tensors.push(("input_shift".into(), v1(&self.input_shift)?));
        tensors.push(("input_scale".into(), v1(&self.input_scale)?));
        tensors.push(("output_shift".into(), v1(&self.output_shift)?));
        tensors.push(("output_scale".into(), v1(&self.output_scale)?));
        tensors.push(("f_b".into(), v1(flux_softening_nmgy)?));
        for (b, params) in self.params.iter().enumerate() {
            let p = format!("band.{b}");
            tensors.push((format!("{p}.input_shift"), v1(&self.input_shift)?));
            tensors.push((format!("{p}.input_scale"), v1(&self.input_scale)?));
            tensors.push((
                format!("{p}.output_shift"),
                v1(&self.output_shift[b..b + 1])?,
            ));
            tensors.push((
                format!("{p}.output_scale"),
                v1(&self.output_scale[b..b + 1])?,
            ));
            tensors.push((format!("{p}.f_b"), v1(&flux_softening_nmgy[b..b + 1])?));
            for l in 0..layout.layers() {
                let (ni, no) = layout.dims(l);
                let q = format!("{p}.layer.{l}");
                // File layout [out, in] (torch Linear), as the COSMOS file.
                let w = Tensor::from_slice(&params[layout.weight(l)], (ni, no), &cpu)?
                    .t()?
                    .contiguous()?;
                tensors.push((format!("{q}.weight"), w));
                for (k, name) in ["bias", "alpha", "beta"].iter().enumerate() {
                    tensors.push((format!("{q}.{name}"), v1(&params[layout.unit_param(l, k)])?));
                }
            }
        }
        let tmp = path.with_extension("safetensors.tmp");
        candle_core::safetensors::save(
            &tensors
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
            &tmp,
        )?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        let mut card = sidecar;
        card["bands"] = serde_json::json!(self.bands);
        card["architecture"] = serde_json::json!(self.architecture);
        let card_path = path.with_extension("json");
        std::fs::write(&card_path, serde_json::to_string_pretty(&card).unwrap())
            .map_err(|e| Error::io(&card_path, e))?;
        Ok(())
    }
}

/// `(row − shift) / scale` for each row, written row-major into `dst`.
fn standardise_into<R: AsRef<[f32]>>(dst: &mut [f32], rows: &[R], shift: &[f32], scale: &[f32]) {
    let d = shift.len();
    for (out, row) in dst.chunks_exact_mut(d).zip(rows) {
        for (((o, v), m), s) in out.iter_mut().zip(row.as_ref()).zip(shift).zip(scale) {
            *o = (v - m) / s;
        }
    }
}

/// N(0, 1/fan-in) weights, zero biases, α ~ 1 + 0.1 N(0, 1), β ~ 0.1 N(0, 1) per band.
fn random_params(layout: &Layout, bands: usize, rng: &mut HostRng) -> Vec<Vec<f32>> {
    let mut params = vec![vec![0.0f32; layout.total]; bands];
    let r = rng.inner();
    let mut normal = move || <StandardNormal as Distribution<f32>>::sample(&StandardNormal, r);
    for l in 0..layout.layers() {
        let std = (1.0 / layout.dims(l).0 as f32).sqrt();
        for p in params.iter_mut() {
            for w in &mut p[layout.weight(l)] {
                *w = std * normal();
            }
        }
        for p in params.iter_mut() {
            for a in &mut p[layout.unit_param(l, 1)] {
                *a = 1.0 + 0.1 * normal();
            }
            for b in &mut p[layout.unit_param(l, 2)] {
                *b = 0.1 * normal();
            }
        }
    }
    params
}

/// Smoothly capped magnitude: `cap − width · ln(1 + e^{(cap − m)/width})`. Equal to `m` to
/// `width · e^{−(cap − m)/width}` well below the cap (3·10⁻⁴ mag at 8 widths), → `cap` for
/// `m ≫ cap` (bands beyond the Lyman limit: the teacher returns 99). A hard `min` would put a
/// kink the networks cannot follow where a band drops out.
pub fn soft_cap_magnitude(m: f32, cap: f32, width: f32) -> f32 {
    let x = ((cap - m) / width) as f64;
    // Stable softplus.
    let softplus = x.max(0.0) + (-x.abs()).exp().ln_1p();
    (cap as f64 - width as f64 * softplus) as f32
}

/// Held-out statistics of one band, magnitudes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandStats {
    /// Mean of prediction − truth.
    pub mean: f64,
    /// RMS of prediction − truth.
    pub rms: f64,
    /// Largest |prediction − truth|.
    pub max_abs: f64,
}

/// Per-band mean, RMS and max |Δ| of `pred − truth` (rows × bands).
pub fn band_stats(pred: &[Vec<f32>], truth: &[Vec<f32>]) -> Vec<BandStats> {
    let nb = truth.first().map(|r| r.len()).unwrap_or(0);
    (0..nb)
        .map(|b| {
            let d: Vec<f64> = pred
                .iter()
                .zip(truth)
                .map(|(p, t)| (p[b] - t[b]) as f64)
                .collect();
            let n = d.len().max(1) as f64;
            BandStats {
                mean: d.iter().sum::<f64>() / n,
                rms: (d.iter().map(|v| v * v).sum::<f64>() / n).sqrt(),
                max_abs: d.iter().fold(0.0, |m, v| m.max(v.abs())),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss_at(layout: &Layout, params: &[f32], x: &[f32], y: &[f32], w: &[f32]) -> f64 {
        let mut ws = Workspace::new(layout, y.len());
        ws.h[0].copy_from_slice(x);
        forward(layout, params, &mut ws);
        ws.h[layout.layers()]
            .iter()
            .zip(y)
            .zip(w)
            .map(|((o, t), w)| *w as f64 * ((o - t) as f64).powi(2))
            .sum::<f64>()
            / y.len() as f64
    }

    #[test]
    fn backpropagation_matches_finite_differences() {
        let layout = Layout::new(&[5, 7, 6, 1]);
        let mut rng = HostRng::seed_from_u64(9);
        let mut params = random_params(&layout, 1, &mut rng).remove(0);
        // Non-zero biases and a spread of β so every term of the activation derivative counts.
        for l in 0..layout.layers() {
            for (k, v) in params[layout.unit_param(l, 0)].iter_mut().enumerate() {
                *v = 0.3 * (k as f32 - 2.0);
            }
            for (k, v) in params[layout.unit_param(l, 2)].iter_mut().enumerate() {
                *v = -0.4 + 0.15 * k as f32;
            }
        }
        let rows = 11;
        let x: Vec<f32> = (0..rows * 5)
            .map(|i| ((i * 37 % 17) as f32 / 8.0) - 1.0)
            .collect();
        let y: Vec<f32> = (0..rows).map(|i| (i as f32 / 5.0) - 1.0).collect();
        // Unequal row weights (one zero) so the weighted loss is what is differentiated.
        let w: Vec<f32> = (0..rows).map(|i| (i % 4) as f32 * 0.7).collect();
        let mut ws = Workspace::new(&layout, rows);
        ws.h[0].copy_from_slice(&x);
        forward(&layout, &params, &mut ws);
        let loss = backward(&layout, &params, &y, &w, &mut ws);
        assert!((loss - loss_at(&layout, &params, &x, &y, &w)).abs() < 1e-6);
        let eps = 1e-2f32;
        let mut worst = 0.0f64;
        for p in 0..layout.total {
            let mut hi = params.clone();
            hi[p] += eps;
            let mut lo = params.clone();
            lo[p] -= eps;
            let fd = (loss_at(&layout, &hi, &x, &y, &w) - loss_at(&layout, &lo, &x, &y, &w))
                / (2.0 * eps as f64);
            let an = ws.grad[p] as f64;
            let err = (fd - an).abs() / (1e-2 + an.abs());
            worst = worst.max(err);
            assert!(
                err < 2e-2,
                "parameter {p}: finite difference {fd}, backprop {an}"
            );
        }
        eprintln!("worst relative gradient error {worst:.2e}");
    }

    #[test]
    fn adam_minimises_a_quadratic() {
        let mut p = vec![3.0f32, -2.0];
        let mut adam = Adam::new(2);
        for _ in 0..2000 {
            let g: Vec<f32> = p.iter().map(|v| 2.0 * (v - 0.5)).collect();
            adam.step(&mut p, &g, 1e-2);
        }
        assert!(p.iter().all(|v| (v - 0.5).abs() < 1e-3), "{p:?}");
    }

    #[test]
    fn soft_cap_is_the_identity_far_below_the_cap_and_the_cap_far_above() {
        assert!((soft_cap_magnitude(20.0, 30.0, 1.0) - 20.0).abs() < 1e-4);
        assert!((soft_cap_magnitude(22.0, 30.0, 1.0) - 22.0).abs() < 4e-4);
        assert!((soft_cap_magnitude(99.0, 30.0, 1.0) - 30.0).abs() < 1e-6);
        // At the cap: cap − w ln 2.
        assert!(
            (soft_cap_magnitude(30.0, 30.0, 1.0) - (30.0 - std::f32::consts::LN_2)).abs() < 1e-6
        );
        // Monotone.
        let v: Vec<f32> = (0..200)
            .map(|k| soft_cap_magnitude(k as f32 * 0.3, 30.0, 1.0))
            .collect();
        assert!(v.windows(2).all(|w| w[1] >= w[0]));
    }
}
