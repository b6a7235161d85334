//! Helpers shared by the learned-prior tests: the correlated 2-D Gaussian the trainers are
//! checked on, its sample moments, and the safetensors files the trainers write.
#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use popcosmos_api::{HostRng, RandomSource, Shape};
use popcosmos_priors::diffusion;

pub const MU: [f64; 2] = [1.0, -2.0];
// Σ = L Lᵀ with L = [[2, 0], [1.2, 0.5]] → σ₁ = 2, σ₂ = 1.3, ρ = 0.923.
pub const L: [[f64; 2]; 2] = [[2.0, 0.0], [1.2, 0.5]];

/// `n` seeded draws `[n, 2]` (f32) of 𝒩(MU, L Lᵀ).
pub fn gaussian_draws(n: usize, seed: u64) -> Tensor {
    let mut rng = HostRng::seed_from_u64(seed);
    let z: Vec<Vec<f32>> = rng
        .normal(&Shape::from((n, 2)), &Device::Cpu)
        .unwrap()
        .to_vec2()
        .unwrap();
    let x: Vec<f32> = z
        .iter()
        .flat_map(|r| {
            let (a, b) = (r[0] as f64, r[1] as f64);
            [
                (MU[0] + L[0][0] * a) as f32,
                (MU[1] + L[1][0] * a + L[1][1] * b) as f32,
            ]
        })
        .collect();
    Tensor::from_vec(x, (n, 2), &Device::Cpu).unwrap()
}

/// Means, standard deviations (1/n) and correlation of 2-D draws `[n, 2]`.
pub fn moments(x: &Tensor) -> ([f64; 2], [f64; 2], f64) {
    let s: Vec<Vec<f64>> = x.to_dtype(DType::F64).unwrap().to_vec2().unwrap();
    let n = s.len() as f64;
    let mut m = [0.0; 2];
    let mut v = [0.0; 2];
    for j in 0..2 {
        m[j] = s.iter().map(|r| r[j]).sum::<f64>() / n;
        v[j] = s.iter().map(|r| (r[j] - m[j]).powi(2)).sum::<f64>() / n;
    }
    let c01 = s.iter().map(|r| (r[0] - m[0]) * (r[1] - m[1])).sum::<f64>() / n;
    let rho = c01 / (v[0] * v[1]).sqrt();
    (m, [v[0].sqrt(), v[1].sqrt()], rho)
}

/// The metadata of the safetensors file at `path`.
pub fn file_metadata(path: &std::path::Path) -> HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata().clone().unwrap()
}

/// candle's CPU initialiser is not seeded: save trainer `t`'s step-0 checkpoint, let
/// `reseed` replace its tensors with seeded ones, and resume `t` from the rewritten file.
pub fn reseed_trainer(
    t: &mut diffusion::Trainer,
    reseed: impl FnOnce(&mut HashMap<String, Tensor>),
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("init.safetensors");
    t.save(&path, &HashMap::new()).unwrap();
    let meta = file_metadata(&path);
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    reseed(&mut tensors);
    let mut tensors: Vec<(String, Tensor)> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    safetensors::serialize_to_file(tensors, Some(meta), &path).unwrap();
    t.resume(&path).unwrap();
}

/// The extra metadata the round-trip tests save with a model: `note: test`.
pub fn note() -> HashMap<String, String> {
    HashMap::from([("note".to_string(), "test".to_string())])
}

/// Settings of the small 2-D diffusion models the tests train: a 64 × 64 SiLU network on the
/// default VP SDE, `steps` steps of 256 rows at learning rate 3e-3, EMA decay 0.995, seed 2.
pub fn toy_diffusion_options(steps: usize) -> diffusion::TrainOptions {
    diffusion::TrainOptions {
        hidden: vec![64, 64],
        activation: diffusion::Activation::Silu,
        embedding_dim: 16,
        fourier_scale: 4.0,
        no_sigma: false,
        sde: diffusion::SdeConfig::vp_default(),
        steps,
        batch_size: 256,
        learning_rate: 3e-3,
        final_lr_fraction: 0.05,
        ema_decay: 0.995,
        seed: 2,
    }
}
