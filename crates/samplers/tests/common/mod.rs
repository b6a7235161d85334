//! Shared test targets: batched correlated Gaussians.
#![allow(dead_code)]

use popcosmos_api::{Device, HostRng, Result, Tensor};
use rand_distr::{Distribution, StandardNormal};

/// Independent Gaussian targets, one per galaxy, each with its own mean and a random
/// covariance of condition number 100.
pub struct GaussianBatch {
    pub dim: usize,
    pub galaxies: usize,
    /// Means `[galaxies][dim]`.
    pub mean: Vec<Vec<f64>>,
    /// Covariances `[galaxies][dim][dim]`.
    pub cov: Vec<Vec<Vec<f64>>>,
    mean_t: Tensor,
    precision_t: Tensor,
}

fn normals(rng: &mut HostRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng.inner())).collect()
}

/// Random orthogonal matrix by Gram–Schmidt on a Gaussian matrix (rows are the basis).
fn orthogonal(rng: &mut HostRng, d: usize) -> Vec<Vec<f64>> {
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(d);
    while q.len() < d {
        let mut v = normals(rng, d);
        for u in &q {
            let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-6 {
            q.push(v.into_iter().map(|a| a / norm).collect());
        }
    }
    q
}

impl GaussianBatch {
    pub fn new(seed: u64, galaxies: usize, dim: usize) -> Self {
        let mut rng = HostRng::seed_from_u64(seed);
        let mut mean = Vec::new();
        let mut cov = Vec::new();
        let mut means_flat = Vec::new();
        let mut prec_flat = Vec::new();
        for _ in 0..galaxies {
            let mu: Vec<f64> = normals(&mut rng, dim)
                .into_iter()
                .map(|v| 3.0 * v)
                .collect();
            let q = orthogonal(&mut rng, dim);
            // Eigenvalues log-spaced from 0.1 to 10: condition number 100.
            let lambda: Vec<f64> = (0..dim)
                .map(|i| 0.1 * 100f64.powf(i as f64 / (dim - 1) as f64))
                .collect();
            let mut c = vec![vec![0.0; dim]; dim];
            let mut p = vec![vec![0.0; dim]; dim];
            for i in 0..dim {
                for j in 0..dim {
                    for k in 0..dim {
                        c[i][j] += q[k][i] * lambda[k] * q[k][j];
                        p[i][j] += q[k][i] / lambda[k] * q[k][j];
                    }
                }
            }
            means_flat.extend(mu.iter().map(|&v| v as f32));
            prec_flat.extend(p.iter().flatten().map(|&v| v as f32));
            mean.push(mu);
            cov.push(c);
        }
        let mean_t = Tensor::from_vec(means_flat, (galaxies, dim), &Device::Cpu).unwrap();
        let precision_t = Tensor::from_vec(prec_flat, (galaxies, dim, dim), &Device::Cpu).unwrap();
        Self {
            dim,
            galaxies,
            mean,
            cov,
            mean_t,
            precision_t,
        }
    }

    /// ln p for positions `[walkers, galaxies, dim]` → `[walkers, galaxies]`; each galaxy
    /// sees its own mean and precision (batched matmul over the galaxy axis).
    pub fn log_density(&self, x: &Tensor) -> Result<Tensor> {
        let diff = x.broadcast_sub(&self.mean_t)?; // [w, g, d]
        let diff_g = diff.transpose(0, 1)?.contiguous()?; // [g, w, d]
        let pd = diff_g.matmul(&self.precision_t)?; // [g, w, d]
        let quad = (pd * &diff_g)?.sum(2)?; // [g, w]
        Ok(quad.transpose(0, 1)?.affine(-0.5, 0.0)?)
    }

    /// Starting positions: mean + N(0, 1) per walker.
    pub fn init(&self, seed: u64, walkers: usize) -> Tensor {
        let mut rng = HostRng::seed_from_u64(seed);
        let n = normals(&mut rng, walkers * self.galaxies * self.dim);
        let mut v = Vec::with_capacity(n.len());
        for w in 0..walkers {
            for g in 0..self.galaxies {
                for k in 0..self.dim {
                    v.push((self.mean[g][k] + n[(w * self.galaxies + g) * self.dim + k]) as f32);
                }
            }
        }
        Tensor::from_vec(v, (walkers, self.galaxies, self.dim), &Device::Cpu).unwrap()
    }
}
