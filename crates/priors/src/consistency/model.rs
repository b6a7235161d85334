//! The consistency function f_θ(x_t, t) of a consistency model (Song et al. 2023) over the
//! standardised variable of a diffusion teacher, its boundary parametrisation, the one- and
//! multistep samplers, and the `popcosmos/consistency/v1` safetensors format.
//!
//! **Parametrisation.** With μ(t), σ(t) the teacher SDE's marginal (x_t = μ(t) x₀ + σ(t) z),
//! the EDM-equivalent noise level is s(t) = σ(t)/μ(t) (x_t/μ(t) = x₀ + s(t) z). With
//! s_ε = s(ε) and the data scale σ_d (1: the teacher standardises its variable),
//!
//! ```text
//! f_θ(x_t, t) = c_skip(t) · (μ(ε)/μ(t)) · x_t + c_out(t) · F_θ(c_in(t) x_t, t)
//! c_skip = σ_d² / ((s − s_ε)² + σ_d²),   c_out = σ_d (s − s_ε) / √(σ_d² + s²),
//! c_in   = 1 / (μ(t) √(s² + σ_d²))       (= 1 for VP with σ_d = 1)
//! ```
//!
//! so c_skip(ε) = 1 and c_out(ε) = 0 *exactly* (the same f64 expressions are evaluated at the
//! same t), and f_θ(x, ε) = x bit for bit. F_θ is the flowfusion MLP ([`ScoreNet`]: fixed
//! Fourier time embedding of the raw t, activation after every layer but the last).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use popcosmos_api::{Error, RandomSource, Result, Shape};
use serde::{Deserialize, Serialize};

use crate::diffusion::{Activation, DiffusionConfig, ScoreNet, SdeConfig};

/// safetensors `format` metadata of consistency-model files.
pub const FORMAT: &str = "popcosmos/consistency/v1";

/// Architecture, SDE and sampler defaults of a consistency model (stored as JSON in the
/// `config` metadata entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyConfig {
    /// Dimension D of the modelled variable.
    pub dim: usize,
    /// Length E of the Fourier time embedding (E/2 frequencies, sines first).
    pub embedding_dim: usize,
    /// Hidden widths of F_θ; the network is `[E + D] + hidden + [D]`.
    pub hidden: Vec<usize>,
    /// Activation after every layer of F_θ except the last.
    pub activation: Activation,
    /// The teacher's SDE: time range [ε, T], marginals μ(t), σ(t) and the base 𝒩(0, σ_T² I).
    pub sde: SdeConfig,
    /// Data scale σ_d in standardised units (1).
    pub sigma_data: f64,
    /// Re-noising levels of the default multistep sampler, `[s_hi, s_lo]` in units of σ_d:
    /// k steps use k − 1 noise levels geometrically spaced from s_hi down to s_lo (2 steps:
    /// s_hi alone). See [`ConsistencyModel::multistep_times`].
    #[serde(default = "default_multistep_noise")]
    pub multistep_noise: [f64; 2],
    /// The times f_θ was trained at, for discrete-time distillation (ascending, ε … T); the
    /// default multistep sampler snaps its re-noising times to them. Empty for
    /// continuous-time training (f_θ is trained at every t ∈ [ε, T]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trained_times: Vec<f64>,
    /// Names of the D columns (optional, copied from the teacher).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// Default `[s_hi, s_lo]` of the multistep sampler (see `docs` of the field).
pub fn default_multistep_noise() -> [f64; 2] {
    [1.0, 0.25]
}

impl ConsistencyConfig {
    /// Check the fields make sense (names the offending key).
    #[allow(clippy::nonminimal_bool, clippy::neg_cmp_op_on_partial_ord)] // negations also reject NaN
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.sde.validate()?;
        if self.dim == 0 {
            return Err("dim must be >= 1".into());
        }
        if self.embedding_dim == 0 || !self.embedding_dim.is_multiple_of(2) {
            return Err("embedding_dim must be even and > 0".into());
        }
        if !(self.sigma_data > 0.0 && self.sigma_data.is_finite()) {
            return Err(format!("sigma_data must be > 0 (got {})", self.sigma_data));
        }
        let [hi, lo] = self.multistep_noise;
        if !(hi > 0.0 && lo > 0.0 && lo <= hi && hi.is_finite()) {
            return Err(format!(
                "multistep_noise needs 0 < s_lo <= s_hi (got [{hi}, {lo}])"
            ));
        }
        let (eps, t_max) = (self.sde.epsilon(), self.sde.t_max());
        let g = &self.trained_times;
        if !g.is_empty()
            && !(g.windows(2).all(|w| w[1] > w[0]) && g[0] >= eps && g[g.len() - 1] <= t_max)
        {
            return Err("trained_times must increase strictly within [epsilon, T]".into());
        }
        Ok(())
    }

    /// The [`DiffusionConfig`] that [`ScoreNet`] is built from (unconditional, no conditions).
    pub fn net_config(&self) -> DiffusionConfig {
        DiffusionConfig {
            dim: self.dim,
            conditional_dim: 0,
            embedding_dim: self.embedding_dim,
            hidden: self.hidden.clone(),
            activation: self.activation,
            no_sigma: true,
            sde: self.sde,
            names: Vec::new(),
            conditional_names: Vec::new(),
        }
    }
}

/// EDM noise level s(t) = σ(t)/μ(t) of the SDE at time t.
pub fn noise_level(sde: &SdeConfig, t: f64) -> f64 {
    let (m, s) = sde.marginal(t);
    s / m
}

/// The time t ∈ [ε, T] with noise level s(t) = `s` (bisection; s is increasing in t),
/// clamped to the interval ends.
pub fn time_of_noise_level(sde: &SdeConfig, s: f64) -> f64 {
    let (mut lo, mut hi) = (sde.epsilon(), sde.t_max());
    if s <= noise_level(sde, lo) {
        return lo;
    }
    if s >= noise_level(sde, hi) {
        return hi;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if noise_level(sde, mid) < s {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The coefficients of f_θ at one time (module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficients {
    /// Multiplies x_t: c_skip(t) μ(ε)/μ(t).
    pub skip: f64,
    /// Multiplies F_θ: c_out(t).
    pub out: f64,
    /// Multiplies the network input x_t: c_in(t).
    pub input: f64,
}

/// c_skip, c_out, c_in at time `t` (module docs); exactly (1, 0, ·) at t = ε.
pub fn coefficients(sde: &SdeConfig, sigma_data: f64, t: f64) -> Coefficients {
    let (m_eps, sd_eps) = sde.marginal(sde.epsilon());
    let s_eps = sd_eps / m_eps;
    let (m, sd) = sde.marginal(t);
    let s = sd / m;
    let v = sigma_data * sigma_data;
    let ds = s - s_eps;
    Coefficients {
        skip: (m_eps / m) * (v / (ds * ds + v)),
        out: sigma_data * ds / (v + s * s).sqrt(),
        input: 1.0 / (m * (s * s + v).sqrt()),
    }
}

/// f(x_t, t) `[n, D]` for a network `net` (standardised space), per-row times `t`.
pub(crate) fn consistency_fn(
    net: &ScoreNet,
    cfg: &ConsistencyConfig,
    x_t: &Tensor,
    t: &[f64],
) -> Result<Tensor> {
    let n = x_t.dim(0)?;
    if t.len() != n {
        return Err(Error::Invalid(format!(
            "consistency model: {} times for {n} rows",
            t.len()
        )));
    }
    let (dev, dtype) = (x_t.device(), x_t.dtype());
    let mut skip = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    let mut input = Vec::with_capacity(n);
    for &ti in t {
        let c = coefficients(&cfg.sde, cfg.sigma_data, ti);
        skip.push(c.skip);
        out.push(c.out);
        input.push(c.input);
    }
    let col =
        |v: Vec<f64>| -> Result<Tensor> { Ok(Tensor::from_vec(v, (n, 1), dev)?.to_dtype(dtype)?) };
    let (skip, out, input) = (col(skip)?, col(out)?, col(input)?);
    let tt = Tensor::from_vec(t.to_vec(), n, dev)?.to_dtype(dtype)?;
    let f = net.forward(&tt, &x_t.broadcast_mul(&input)?, None)?;
    Ok((x_t.broadcast_mul(&skip)? + f.broadcast_mul(&out)?)?)
}

/// A consistency model with its teacher's input standardisation.
#[derive(Debug, Clone)]
pub struct ConsistencyModel {
    config: ConsistencyConfig,
    net: ScoreNet,
    x_shift: Tensor,
    x_scale: Tensor,
}

impl ConsistencyModel {
    crate::weights_io::standardised_model_methods! {
        /// Read a `popcosmos/consistency/v1` safetensors file.
        typed_by: net
    }

    /// Parse safetensors bytes; `name` is used in error messages.
    pub fn from_bytes(bytes: &[u8], name: &str, device: &Device) -> Result<Self> {
        let (config, tensors) = crate::weights_io::read_model(
            bytes,
            name,
            FORMAT,
            device,
            ConsistencyConfig::validate,
        )?;
        Self::from_tensors(config, tensors, name, device)
    }

    /// The model of `config` with the weights `tensors` (`net.time_embedding.W`,
    /// `net.layer.{i}.{weight,bias}`, `x_shift`, `x_scale`: the layout of [`Self::tensors`]);
    /// `name` labels errors.
    pub fn from_tensors(
        config: ConsistencyConfig,
        tensors: HashMap<String, Tensor>,
        name: &str,
        device: &Device,
    ) -> Result<Self> {
        config.validate().map_err(|message| Error::Format {
            file: name.to_string(),
            message,
        })?;
        let (x_shift, x_scale) =
            crate::weights_io::standardisation(&tensors, config.dim, name, device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let net = ScoreNet::new(&config.net_config(), vb.pp("net")).map_err(|e| Error::Format {
            file: name.to_string(),
            message: format!("network does not match its config: {e}"),
        })?;
        Ok(Self::from_parts(config, net, x_shift, x_scale))
    }

    /// Assemble from parts (used by training).
    pub(crate) fn from_parts(
        config: ConsistencyConfig,
        net: ScoreNet,
        x_shift: Tensor,
        x_scale: Tensor,
    ) -> Self {
        Self {
            config,
            net,
            x_shift,
            x_scale,
        }
    }

    /// The tensors of the file layout (f32, unsorted).
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        let f32 = |x: &Tensor| x.to_dtype(DType::F32);
        let mut t = HashMap::new();
        t.insert(
            "net.time_embedding.W".to_string(),
            f32(self.net.frequencies())?,
        );
        for (i, (w, b)) in self.net.layers().enumerate() {
            t.insert(format!("net.layer.{i}.weight"), f32(w)?);
            if let Some(b) = b {
                t.insert(format!("net.layer.{i}.bias"), f32(b)?);
            }
        }
        t.insert("x_shift".into(), f32(&self.x_shift)?);
        t.insert("x_scale".into(), f32(&self.x_scale)?);
        Ok(t)
    }

    /// Write the model (format `popcosmos/consistency/v1`, `config` JSON, plus
    /// `extra_metadata`) atomically (temporary file, then rename).
    pub fn save(
        &self,
        path: impl AsRef<Path>,
        extra_metadata: &HashMap<String, String>,
    ) -> Result<()> {
        write_model(self, self.tensors()?, extra_metadata.clone(), path.as_ref())
    }

    /// Architecture, SDE and sampler defaults.
    pub fn config(&self) -> &ConsistencyConfig {
        &self.config
    }
    /// The teacher's SDE.
    pub fn sde(&self) -> &SdeConfig {
        &self.config.sde
    }
    /// Dimension D of the modelled variable.
    pub fn dim(&self) -> usize {
        self.config.dim
    }
    /// The network F_θ.
    pub fn net(&self) -> &ScoreNet {
        &self.net
    }

    /// The coefficients of f_θ at time `t`.
    pub fn coefficients(&self, t: f64) -> Coefficients {
        coefficients(&self.config.sde, self.config.sigma_data, t)
    }

    /// The consistency function f_θ(x_t, t) `[n, D]` in standardised space, per-row times
    /// `t` in [ε, T]: an estimate of the PF-ODE trajectory's end point x_ε. f_θ(x, ε) = x exactly.
    pub fn denoise(&self, x_t: &Tensor, t: &[f64]) -> Result<Tensor> {
        consistency_fn(&self.net, &self.config, &x_t.to_dtype(self.dtype())?, t)
    }

    /// The k − 1 re-noising times of the default k-step sampler (decreasing, in (ε, T)):
    /// noise levels s geometrically spaced from `multistep_noise[0]` to `[1]` (× σ_d); for a
    /// discrete-time model each is snapped to the nearest interior trained time (in ln s),
    /// duplicates dropped.
    pub fn multistep_times(&self, steps: usize) -> Vec<f64> {
        if steps <= 1 {
            return Vec::new();
        }
        let [hi, lo] = self.config.multistep_noise;
        let sde = &self.config.sde;
        let k = steps - 1;
        let grid: Vec<f64> = match self.config.trained_times.as_slice() {
            [] | [_] | [_, _] => Vec::new(),
            g => g[1..g.len() - 1].to_vec(),
        };
        let mut out: Vec<f64> = Vec::with_capacity(k);
        for j in 0..k {
            let frac = if k == 1 {
                0.0
            } else {
                j as f64 / (k - 1) as f64
            };
            let s = self.config.sigma_data * hi * (lo / hi).powf(frac);
            let t = if grid.is_empty() {
                time_of_noise_level(sde, s)
            } else {
                let dist = |t: f64| (noise_level(sde, t).ln() - s.ln()).abs();
                grid.iter()
                    .copied()
                    .fold(grid[0], |b, t| if dist(t) < dist(b) { t } else { b })
            };
            if out.last().is_none_or(|&p| t < p) {
                out.push(t);
            }
        }
        out
    }

    /// `n` draws `[n, D]` (physical) with `steps` ≥ 1 evaluations of f_θ: one step is
    /// f_θ(σ_T z, T); more steps alternate re-noising to [`Self::multistep_times`] and
    /// denoising (Song et al. 2023, Algorithm 1).
    pub fn sample(&self, n: usize, steps: usize, rng: &mut dyn RandomSource) -> Result<Tensor> {
        if steps == 0 {
            return Err(Error::Invalid(
                "consistency sample: steps must be >= 1".into(),
            ));
        }
        self.sample_at(n, &self.multistep_times(steps), rng)
    }

    /// Multistep sampling with explicit re-noising times (strictly decreasing, in (ε, T));
    /// `&[]` is one-step sampling. Returns physical draws `[n, D]`.
    pub fn sample_at(&self, n: usize, times: &[f64], rng: &mut dyn RandomSource) -> Result<Tensor> {
        let x = self.sample_standardised_at(n, times, rng)?;
        self.unstandardise(&x)
    }

    /// [`Self::sample_at`] in standardised space.
    pub fn sample_standardised_at(
        &self,
        n: usize,
        times: &[f64],
        rng: &mut dyn RandomSource,
    ) -> Result<Tensor> {
        let sde = self.config.sde;
        let (eps, t_max) = (sde.epsilon(), sde.t_max());
        for (i, &t) in times.iter().enumerate() {
            let prev = if i == 0 { t_max } else { times[i - 1] };
            if !(t > eps && t < prev) {
                return Err(Error::Invalid(format!(
                    "consistency sample: re-noising times must decrease strictly within \
                     (epsilon, T) = ({eps}, {t_max}); got {times:?}"
                )));
            }
        }
        let d = self.config.dim;
        let (dev, dtype) = (self.device().clone(), self.dtype());
        let normal = |rng: &mut dyn RandomSource| -> Result<Tensor> {
            Ok(rng.normal(&Shape::from((n, d)), &dev)?.to_dtype(dtype)?)
        };
        let x_t = (normal(rng)? * sde.prior_std())?;
        let mut x = self.denoise(&x_t, &vec![t_max; n])?;
        let (m_eps, s_eps) = sde.marginal(eps);
        for &t in times {
            // x approximates x_ε; x_t | x_ε ~ 𝒩(μ(t)/μ(ε) x_ε, σ(t)² − (μ(t)/μ(ε))² σ(ε)²).
            let (m, s) = sde.marginal(t);
            let a = m / m_eps;
            let std = (s * s - a * a * s_eps * s_eps).max(0.0).sqrt();
            let x_t = ((&x * a)? + (normal(rng)? * std)?)?;
            x = self.denoise(&x_t, &vec![t; n])?;
        }
        Ok(x)
    }
}

/// Write `tensors` with the model's config as `popcosmos/consistency/v1`, atomically.
pub fn write_model(
    model: &ConsistencyModel,
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    crate::weights_io::write_model_file(tensors, meta, FORMAT, model.config(), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdes() -> [SdeConfig; 3] {
        crate::diffusion::one_sde_of_each_kind(50.0)
    }

    #[test]
    fn boundary_coefficients_are_exact() {
        for sde in sdes() {
            for sd in [0.5, 1.0, 2.0] {
                let c = coefficients(&sde, sd, sde.epsilon());
                assert_eq!((c.skip, c.out), (1.0, 0.0), "{sde:?}");
                let c = coefficients(&sde, sd, sde.t_max());
                assert!(c.skip < 0.1 && c.out > 0.9 * sd, "{sde:?} {c:?}");
            }
        }
        // VP with σ_d = 1: the network input is x_t itself (μ² + σ² = 1).
        let sde = SdeConfig::vp_default();
        for t in [1e-3, 0.1, 0.5, 1.0] {
            assert!((coefficients(&sde, 1.0, t).input - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn noise_level_inversion() {
        for sde in sdes() {
            for &t in &[sde.epsilon(), 0.01, 0.2, 0.5, 0.9, sde.t_max()] {
                let back = time_of_noise_level(&sde, noise_level(&sde, t));
                assert!((back - t).abs() < 1e-9, "{sde:?}: {t} → {back}");
            }
        }
    }
}
