//! Training per-band photulators from a teacher (issue #6 item 2).
//!
//! Same architecture and activation as the COSMOS photulators (spec §2.1): one network per
//! band, 15 → 128 → 128 → 128 → 128 → 1, the speculator activation
//! a(y) = [β + (1 − β) σ(α y)] y with per-unit trainable α, β after **every** layer, the
//! output de-standardised as M = out · output_scale + output_shift. All bands train at once
//! as batched matmuls over `[bands, in, out]` weights (bands are independent: the loss is a
//! sum of per-band mean-squared errors in standardised units).
//!
//! The result ([`TrainedPhotulators::save`]) has the tensor layout of
//! `photulator_cosmos26.safetensors` (models/README §1) plus the JSON sidecar, so it loads
//! with [`crate::Photulator::load`] unchanged. Input/output standardisations are the
//! training-set mean and standard deviation, stored in the file.
//!
//! Optimiser: Adam with a learning rate decaying geometrically from `lr_start` to `lr_end`;
//! mini-batches drawn with a seeded host RNG, so a run is reproducible for a given seed and
//! thread count.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, StandardNormal};

use crate::activation::composed;
use crate::photulator::N_INPUTS;
use popcosmos_api::{Error, HostRng, Result};

/// Training hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Hidden widths (COSMOS: 4 × 128).
    pub hidden: Vec<usize>,
    pub steps: usize,
    pub batch_size: usize,
    pub lr_start: f64,
    pub lr_end: f64,
    pub seed: u64,
    /// Evaluate the held-out RMS every this many steps (0 = only at the end).
    pub eval_every: usize,
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
        }
    }
}

/// One progress report.
#[derive(Debug, Clone)]
pub struct TrainProgress {
    pub step: usize,
    pub learning_rate: f64,
    /// Mean-squared error of the last mini-batch, standardised units, averaged over bands.
    pub batch_loss: f64,
    /// Held-out RMS in magnitudes per band (at evaluation steps).
    pub heldout_rms_mag: Option<Vec<f64>>,
}

struct Layer {
    weight: Var, // [bands, in, out]
    bias: Var,   // [bands, out]
    alpha: Var,
    beta: Var,
}

/// Trained networks plus their standardisation, ready to save.
pub struct TrainedPhotulators {
    bands: Vec<String>,
    architecture: Vec<usize>,
    input_shift: Vec<f32>,
    input_scale: Vec<f32>,
    output_shift: Vec<f32>,
    output_scale: Vec<f32>,
    layers: Vec<Layer>,
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

impl TrainedPhotulators {
    /// Standardised inputs `[n, 15]` → standardised outputs `[n, bands]`.
    fn forward_std(&self, h: &Tensor) -> Result<Tensor> {
        let nb = self.bands.len();
        let (n, d) = h.dims2()?;
        let mut h = h.unsqueeze(0)?.broadcast_as((nb, n, d))?.contiguous()?;
        for l in &self.layers {
            let pre = h.matmul(l.weight.as_tensor())?;
            h = composed(
                &pre,
                l.alpha.as_tensor(),
                l.beta.as_tensor(),
                Some(l.bias.as_tensor()),
            )?;
        }
        Ok(h.squeeze(2)?.t()?)
    }

    /// Absolute magnitudes for θ₁₅ `[n, 15]` → `[n, bands]` (training-time path).
    pub fn absolute_magnitudes(&self, theta15: &Tensor) -> Result<Tensor> {
        let d = &self.device;
        let sh = Tensor::from_slice(&self.input_shift, N_INPUTS, d)?;
        let sc = Tensor::from_slice(&self.input_scale, N_INPUTS, d)?;
        let h = theta15
            .to_dtype(DType::F32)?
            .broadcast_sub(&sh)?
            .broadcast_div(&sc)?;
        let nb = self.bands.len();
        let osh = Tensor::from_slice(&self.output_shift, nb, d)?;
        let osc = Tensor::from_slice(&self.output_scale, nb, d)?;
        Ok(self
            .forward_std(&h)?
            .broadcast_mul(&osc)?
            .broadcast_add(&osh)?)
    }

    /// Train on (θ₁₅, M) rows; `heldout` is evaluated every `eval_every` steps. `progress` is
    /// called after every evaluation (and at the end).
    pub fn train(
        bands: Vec<String>,
        train_x: &[Vec<f32>],
        train_y: &[Vec<f32>],
        heldout: (&[Vec<f32>], &[Vec<f32>]),
        opts: &TrainOptions,
        device: &Device,
        progress: &mut dyn FnMut(&TrainProgress),
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
        let (input_shift, input_scale): (Vec<f32>, Vec<f32>) =
            (0..N_INPUTS).map(|c| mean_std(train_x, c)).unzip();
        let (output_shift, output_scale): (Vec<f32>, Vec<f32>) =
            (0..nb).map(|c| mean_std(train_y, c)).unzip();

        let mut rng = HostRng::seed_from_u64(opts.seed);
        let mut architecture = vec![N_INPUTS];
        architecture.extend(&opts.hidden);
        architecture.push(1);
        let mut layers = Vec::new();
        for k in 0..architecture.len() - 1 {
            let (ni, no) = (architecture[k], architecture[k + 1]);
            let std = (1.0 / ni as f64).sqrt();
            let r = rng.inner();
            let w: Vec<f32> = (0..nb * ni * no)
                .map(|_| {
                    (std * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, r)) as f32
                })
                .collect();
            let alpha: Vec<f32> = (0..nb * no)
                .map(|_| {
                    1.0 + 0.1 * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, r)
                })
                .collect();
            let beta: Vec<f32> = (0..nb * no)
                .map(|_| 0.1 * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, r))
                .collect();
            layers.push(Layer {
                weight: Var::from_tensor(&Tensor::from_vec(w, (nb, ni, no), device)?)?,
                bias: Var::from_tensor(&Tensor::zeros((nb, no), DType::F32, device)?)?,
                alpha: Var::from_tensor(&Tensor::from_vec(alpha, (nb, no), device)?)?,
                beta: Var::from_tensor(&Tensor::from_vec(beta, (nb, no), device)?)?,
            });
        }
        let model = Self {
            bands,
            architecture,
            input_shift,
            input_scale,
            output_shift,
            output_scale,
            layers,
            device: device.clone(),
        };
        // Standardised training data on the device.
        let standardise = |rows: &[Vec<f32>], sh: &[f32], sc: &[f32]| -> Vec<Vec<f32>> {
            rows.iter()
                .map(|r| {
                    r.iter()
                        .zip(sh)
                        .zip(sc)
                        .map(|((v, m), s)| (v - m) / s)
                        .collect()
                })
                .collect()
        };
        let xs = to_tensor(
            &standardise(train_x, &model.input_shift, &model.input_scale),
            device,
        )?;
        let ys = to_tensor(
            &standardise(train_y, &model.output_shift, &model.output_scale),
            device,
        )?;
        let vars: Vec<Var> = model
            .layers
            .iter()
            .flat_map(|l| {
                [
                    l.weight.clone(),
                    l.bias.clone(),
                    l.alpha.clone(),
                    l.beta.clone(),
                ]
            })
            .collect();
        let mut opt = candle_nn::AdamW::new(
            vars,
            ParamsAdamW {
                lr: opts.lr_start,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let decay = (opts.lr_end / opts.lr_start).powf(1.0 / opts.steps.max(1) as f64);
        let bs = opts.batch_size.min(n);
        let mut order: Vec<u32> = (0..n as u32).collect();
        let mut cursor = n;
        let mut lr = opts.lr_start;
        for step in 1..=opts.steps {
            if cursor + bs > n {
                order.shuffle(rng.inner());
                cursor = 0;
            }
            let idx = Tensor::from_slice(&order[cursor..cursor + bs], bs, device)?;
            cursor += bs;
            let x = xs.index_select(&idx, 0)?;
            let y = ys.index_select(&idx, 0)?;
            let out = model.forward_std(&x)?;
            let loss = (out - y)?.sqr()?.mean_all()?;
            opt.backward_step(&loss)?;
            lr *= decay;
            opt.set_learning_rate(lr);
            let eval = step == opts.steps || (opts.eval_every > 0 && step % opts.eval_every == 0);
            if eval {
                let rms = if heldout.0.is_empty() {
                    None
                } else {
                    Some(
                        model
                            .heldout_stats(heldout.0, heldout.1)?
                            .iter()
                            .map(|s| s.rms)
                            .collect(),
                    )
                };
                progress(&TrainProgress {
                    step,
                    learning_rate: lr,
                    batch_loss: loss.to_dtype(DType::F64)?.to_scalar::<f64>()?,
                    heldout_rms_mag: rms,
                });
            }
            // Keep the rng stream independent of evaluation frequency.
            let _: u32 = rng.inner().random();
        }
        Ok(model)
    }

    /// Per-band held-out statistics of (network − teacher) in magnitudes.
    pub fn heldout_stats(&self, x: &[Vec<f32>], y: &[Vec<f32>]) -> Result<Vec<BandStats>> {
        let pred = self
            .absolute_magnitudes(&to_tensor(x, &self.device)?)?
            .to_vec2::<f32>()?;
        Ok(band_stats(&pred, y))
    }

    pub fn bands(&self) -> &[String] {
        &self.bands
    }

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
        let cpu = Device::Cpu;
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        let v1 = |v: &[f32]| Tensor::from_slice(v, v.len(), &cpu);
        tensors.push(("input_shift".into(), v1(&self.input_shift)?));
        tensors.push(("input_scale".into(), v1(&self.input_scale)?));
        tensors.push(("output_shift".into(), v1(&self.output_shift)?));
        tensors.push(("output_scale".into(), v1(&self.output_scale)?));
        tensors.push(("f_b".into(), v1(flux_softening_nmgy)?));
        for b in 0..nb {
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
            for (k, l) in self.layers.iter().enumerate() {
                let q = format!("{p}.layer.{k}");
                // File layout [out, in] (torch Linear), as the COSMOS file.
                let w = l
                    .weight
                    .as_tensor()
                    .get(b)?
                    .t()?
                    .contiguous()?
                    .to_device(&cpu)?;
                tensors.push((format!("{q}.weight"), w));
                tensors.push((
                    format!("{q}.bias"),
                    l.bias.as_tensor().get(b)?.to_device(&cpu)?,
                ));
                tensors.push((
                    format!("{q}.alpha"),
                    l.alpha.as_tensor().get(b)?.to_device(&cpu)?,
                ));
                tensors.push((
                    format!("{q}.beta"),
                    l.beta.as_tensor().get(b)?.to_device(&cpu)?,
                ));
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

/// Held-out statistics of one band, magnitudes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandStats {
    pub mean: f64,
    pub rms: f64,
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
