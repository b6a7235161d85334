//! Random numbers for samplers and priors.
//!
//! candle's CPU random tensors come from an unseeded thread RNG, so reproducible runs draw
//! on the host from a seeded ChaCha generator ([`HostRng`]) and upload. A device generator
//! (e.g. curand on CUDA) can implement [`RandomSource`] to avoid the upload.

use candle_core::{Device, Shape, Tensor};
use rand::{Rng, SeedableRng};

use crate::Result;

/// A source of uniform and standard-normal f32 tensors.
pub trait RandomSource {
    /// U(0, 1) draws of the given shape.
    fn uniform(&mut self, shape: &Shape, device: &Device) -> Result<Tensor>;
    /// 𝒩(0, 1) draws of the given shape.
    fn normal(&mut self, shape: &Shape, device: &Device) -> Result<Tensor>;
    /// Uniform integers in `0..n`, on the host (for partner indices and the like).
    fn indices(&mut self, count: usize, n: usize) -> Vec<u32>;
    /// One f64 in [0, 1) on the host.
    fn next_f64(&mut self) -> f64;
}

/// Seeded, reproducible host generator (ChaCha8). The same seed gives the same stream on
/// every platform.
pub struct HostRng {
    rng: rand_chacha::ChaCha8Rng,
}

impl HostRng {
    /// The generator seeded with `seed`.
    pub fn seed_from_u64(seed: u64) -> Self {
        Self {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Access the underlying generator (for `rand_distr` samplers).
    pub fn inner(&mut self) -> &mut rand_chacha::ChaCha8Rng {
        &mut self.rng
    }
}

impl RandomSource for HostRng {
    fn uniform(&mut self, shape: &Shape, device: &Device) -> Result<Tensor> {
        let v: Vec<f32> = (0..shape.elem_count())
            .map(|_| self.rng.random::<f32>())
            .collect();
        Ok(Tensor::from_vec(v, shape, device)?)
    }

    fn normal(&mut self, shape: &Shape, device: &Device) -> Result<Tensor> {
        let n = shape.elem_count();
        let mut v = Vec::with_capacity(n + 1);
        // Box–Muller in f64, two normals per pair of uniforms.
        while v.len() < n {
            let u1: f64 = 1.0 - self.rng.random::<f64>();
            let u2: f64 = self.rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            let a = std::f64::consts::TAU * u2;
            v.push((r * a.cos()) as f32);
            v.push((r * a.sin()) as f32);
        }
        v.truncate(n);
        Ok(Tensor::from_vec(v, shape, device)?)
    }

    fn indices(&mut self, count: usize, n: usize) -> Vec<u32> {
        (0..count)
            .map(|_| self.rng.random_range(0..n as u32))
            .collect()
    }

    fn next_f64(&mut self) -> f64 {
        self.rng.random::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_repeat_and_have_right_moments() {
        let mut a = HostRng::seed_from_u64(7);
        let mut b = HostRng::seed_from_u64(7);
        let s = Shape::from((20000,));
        let x = a
            .normal(&s, &Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let y = b
            .normal(&s, &Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(x, y);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        // 5σ Monte Carlo bounds: σ(mean) = 1/√n, σ(var) ≈ √(2/n).
        assert!(mean.abs() < 5.0 / n.sqrt());
        assert!((var - 1.0).abs() < 5.0 * (2.0 / n).sqrt());
        let u = a
            .uniform(&s, &Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mu = u.iter().map(|&v| v as f64).sum::<f64>() / n;
        assert!((mu - 0.5).abs() < 5.0 * (1.0 / 12.0 / n).sqrt());
    }
}
