//! Example popcosmos prior plugin: a Gaussian in N and uniform within the parameter bounds.
//!
//! Over the 16 latent parameters φ (popcosmos spec §1.2):
//! * φ₀ = N = μ(z) − 2.5 log10 M_formed ~ 𝒩(n_mean, n_sigma²);
//! * φ₁ … φ₁₅ ~ 𝒩(0, 1) independently — through the probit map this is the uniform
//!   distribution of θ₁ … θ₁₅ inside their bounds.
//!
//! ln p(φ) = −½((φ₀ − n_mean)/n_sigma)² − ln n_sigma − ½ Σᵢ₌₁¹⁵ φᵢ² − 8 ln 2π, exactly.
//!
//! Configuration (`prior: {kind: plugin, path: …, config: "n_mean=19; n_sigma=3"}`):
//! `n_mean` (default 19 mag: a 10¹⁰ M☉ galaxy at z ≈ 1) and `n_sigma` (default 3 mag, > 0).
//!
//! Sampling is a deterministic function of the host's seed (xoshiro256** seeded by
//! SplitMix64, Box–Muller normals), so runs are reproducible.
//!
//! Build: `cargo build --release --manifest-path plugins/example-prior/Cargo.toml`
//! → `plugins/example-prior/target/release/libexample_prior.so`.

use popcosmos_plugin_abi::{PriorPlugin, declare_prior_plugin};

const DIM: usize = 16;
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

pub struct GaussianN {
    n_mean: f64,
    n_sigma: f64,
}

impl PriorPlugin for GaussianN {
    fn create(config: &str) -> Result<Self, String> {
        let mut p = Self {
            n_mean: 19.0,
            n_sigma: 3.0,
        };
        for item in config
            .split([';', ',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (key, value) = item
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("configuration item '{item}': expected key=value"))?;
            let v: f64 = value
                .parse()
                .map_err(|_| format!("{key}: expected a number, got '{value}'"))?;
            match key {
                "n_mean" if v.is_finite() => p.n_mean = v,
                "n_sigma" if v.is_finite() && v > 0.0 => p.n_sigma = v,
                "n_mean" | "n_sigma" => return Err(format!("{key}: invalid value {v}")),
                _ => {
                    return Err(format!(
                        "unknown configuration key '{key}' (known: n_mean, n_sigma)"
                    ));
                }
            }
        }
        Ok(p)
    }

    fn name(&self) -> String {
        format!(
            "gaussian-n(n_mean={}, n_sigma={})",
            self.n_mean, self.n_sigma
        )
    }

    fn log_prob(&self, phi: &[f32], n: usize) -> Result<Vec<f32>, String> {
        let norm = -(self.n_sigma.ln()) - DIM as f64 * LN_SQRT_2PI;
        Ok(phi
            .chunks_exact(DIM)
            .take(n)
            .map(|row| {
                let u = (row[0] as f64 - self.n_mean) / self.n_sigma;
                let ss: f64 = row[1..].iter().map(|&x| (x as f64) * (x as f64)).sum();
                (norm - 0.5 * (u * u + ss)) as f32
            })
            .collect())
    }

    fn sample(&self, n: usize, seed: u64) -> Result<Vec<f32>, String> {
        let mut rng = Xoshiro256::new(seed);
        let mut out = Vec::with_capacity(n * DIM);
        for _ in 0..n {
            out.push((self.n_mean + self.n_sigma * rng.normal()) as f32);
            for _ in 1..DIM {
                out.push(rng.normal() as f32);
            }
        }
        Ok(out)
    }
}

/// xoshiro256** (Blackman & Vigna 2018), seeded through SplitMix64.
struct Xoshiro256 {
    s: [u64; 4],
    spare: Option<f64>,
}

impl Xoshiro256 {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut split = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self {
            s: [split(), split(), split(), split()],
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller, both values used).
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let a = std::f64::consts::TAU * self.uniform();
        self.spare = Some(r * a.sin());
        r * a.cos()
    }
}

declare_prior_plugin!(GaussianN);
