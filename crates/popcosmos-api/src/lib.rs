//! # popcosmos-api — the spine every other popcosmos crate plugs into
//!
//! * [`params`]: the 16 stellar-population parameters (names, units, bounds) and the probit
//!   map between the sampler's latent φ and physical θ, with its log-Jacobian.
//! * The five core traits: [`SpsModel`] (θ → model photometry), [`Prior`] (log p(φ),
//!   sampling), [`Likelihood`] (model photometry vs observations), [`Sampler`] (blackjax-style
//!   `init` / `step` over a [`LogDensity`]) and [`Survey`] (bands and calibration).
//! * [`RandomSource`]: where random numbers come from (a seeded host generator for
//!   reproducible CPU runs; device generators can implement it too).
//!
//! ## Tensor conventions
//! * Latent positions are `[walkers, galaxies, 16]` f32 tensors on a candle [`Device`];
//!   log-densities are `[walkers, galaxies]`.
//! * Physical parameters θ have the same layout; anything that only needs a flat batch
//!   accepts `[n, 16]` and callers flatten `[walkers, galaxies]` into `n`.
//! * Fluxes are **nanomaggies** (`flux_nmgy`; AB mag = 22.5 − 2.5 log10 f).
//! * Observations are `[galaxies, bands]` and broadcast against `[walkers, galaxies, bands]`.
//! * f32 on the device; reductions and diagnostics in f64 on the host.

#![warn(missing_docs)]

// Namespace: `Planck18` and the Padé approximations `cosmology::pade` share names (`distmod`, …).
pub mod cosmology;
mod filters;
// Namespace: parameter indices, bounds and the probit map (`params::LOWER`, `params::IDX_Z`).
pub mod params;
mod random;
// Namespace: a family of free functions (`stats::median`, `stats::quantiles`, …).
pub mod stats;
// Namespace: test helpers (`testing::max_abs_diff`), kept apart from the library surface.
pub mod testing;

pub use candle_core::{DType, Device, Shape, Tensor};
pub use filters::FilterCurve;
pub use params::{N_PARAMS, PARAM_NAMES};
pub use random::{HostRng, RandomSource};

/// Errors crossing popcosmos library boundaries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (shape mismatch, device error, …).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A weights file lacks a tensor the model needs.
    #[error("{file}: missing tensor '{tensor}'")]
    MissingTensor {
        /// The weights file.
        file: String,
        /// The tensor's name.
        tensor: String,
    },
    /// A weights file has a tensor of the wrong shape (e.g. the wrong band count).
    #[error("{file}: tensor '{tensor}' has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// The weights file.
        file: String,
        /// The tensor's name.
        tensor: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A model card / JSON sidecar is malformed.
    #[error("{file}: {message}")]
    Format {
        /// The file.
        file: String,
        /// What is wrong, where.
        message: String,
    },
    /// A manifest or settings key has a bad value (`sampler.particles: must be …`).
    #[error("{key}: {message}")]
    Config {
        /// The dotted key, e.g. `sampler.particles`.
        key: String,
        /// Why its value is refused.
        message: String,
    },
    /// A tensor or array argument has the wrong shape.
    #[error("{what} must be {expected}, got {found}")]
    Shape {
        /// The argument.
        what: String,
        /// The shape it must have.
        expected: String,
        /// The shape it has.
        found: String,
    },
    /// Other invalid input (names the offending column, row or value).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// A bad value of the manifest or settings key `key` (a dotted path, `sampler.walkers`).
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// `what` must have the shape `expected` but has `found` (its dims, shown with `{:?}`).
    pub fn shape(
        what: impl Into<String>,
        expected: impl Into<String>,
        found: impl std::fmt::Debug,
    ) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.into(),
            found: format!("{found:?}"),
        }
    }
}

/// Results of this workspace's library calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Model photometry for a batch of parameter vectors.
#[derive(Debug, Clone)]
pub struct ModelPhotometry {
    /// Model flux *before* zero points, continuum plus emission-line offsets,
    /// `[..., bands]` nanomaggies.
    pub flux_nmgy: Tensor,
    /// Emission-line strength uncertainty per band σ^em, same shape, if
    /// the model has an emission-line component.
    pub line_sigma_nmgy: Option<Tensor>,
}

/// A stellar-population-synthesis model: physical θ → photometry in the survey's bands.
pub trait SpsModel: Send + Sync {
    /// Band names, in the order of the last axis of the output.
    fn band_names(&self) -> &[String];
    /// Device the model's weights live on.
    fn device(&self) -> &Device;
    /// θ `[..., 16]` (physical, dust2 linear) → photometry `[..., bands]`.
    fn photometry(&self, theta: &Tensor) -> Result<ModelPhotometry>;
}

/// A prior over the latent φ.
pub trait Prior: Send + Sync {
    /// Short name for run records.
    fn name(&self) -> &str;
    /// ln p(φ) for φ `[..., 16]` → `[...]` (−∞ outside the support).
    fn log_prob(&self, phi: &Tensor) -> Result<Tensor>;
    /// Draw `n` latent vectors `[n, 16]`.
    fn sample(&self, n: usize, rng: &mut dyn RandomSource, device: &Device) -> Result<Tensor>;
    /// Walls of the support the sampler can map away (none by default).
    fn support_constraints(&self) -> SupportConstraints {
        SupportConstraints::default()
    }
}

/// Walls of a prior's support, for the reparameterisation of the sampling space
/// (`popcosmos_inference::SamplingSpace`); the default has none.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SupportConstraints {
    /// The support requires log10 Z_gas > log10 Z* (the Prospector-α prior does). Samplers
    /// then move in Z_gas − Z* instead of Z_gas, so that wall is not in their way.
    pub gas_metallicity_above_stellar: bool,
    /// The (lower, upper) bounds on log10(M_formed/M☉) of the support, if it has them (the
    /// Prospector-α prior: 7 and 13). Samplers then move in log M given z instead of N, so
    /// the diagonal wall N = μ(z) − 2.5·bound is not in their way.
    pub log10_mass_formed_range: Option<(f64, f64)>,
}

/// Observed photometry of a batch of galaxies.
#[derive(Debug, Clone)]
pub struct Observations {
    /// Observed fluxes `[galaxies, bands]` nmgy (0 where masked).
    pub flux_nmgy: Tensor,
    /// 1σ uncertainties `[galaxies, bands]` nmgy (1 where masked).
    pub flux_err_nmgy: Tensor,
    /// 1 where the band enters the likelihood, 0 where it is missing or a non-detection
    /// (`[galaxies, bands]`, f32).
    pub mask: Tensor,
}

/// A per-galaxy likelihood ln L(θ) from model photometry and observations.
pub trait Likelihood: Send + Sync {
    /// `model` has shape `[walkers, galaxies, bands]`, `obs` `[galaxies, bands]`;
    /// returns `[walkers, galaxies]`.
    fn log_like(&self, model: &ModelPhotometry, obs: &Observations) -> Result<Tensor>;
}

/// A log-density over `[walkers, galaxies, dim]` positions → `[walkers, galaxies]`.
pub trait LogDensity {
    /// ln π of each position (NaN or −∞ outside the support).
    fn log_density(&self, position: &Tensor) -> Result<Tensor>;
    /// Gradient of the log-density with respect to the position (same shape), for
    /// gradient-based kernels. The default uses candle autograd through `log_density`; a
    /// log-density that does not depend on the position through candle ops (computed on the
    /// host, or detached) is an error rather than a silent zero gradient.
    fn grad_log_density(&self, position: &Tensor) -> Result<(Tensor, Tensor)> {
        let var = candle_core::Var::from_tensor(position)?;
        let lp = self.log_density(var.as_tensor())?;
        let grads = lp.sum_all()?.backward()?;
        let g = grads.get(var.as_tensor()).cloned().ok_or_else(|| {
            Error::Invalid(
                "the log-density has no gradient with respect to the position (it is not \
                 differentiable through candle autograd); use a gradient-free sampler"
                    .into(),
            )
        })?;
        Ok((lp.detach(), g))
    }
}

impl<F> LogDensity for F
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    fn log_density(&self, position: &Tensor) -> Result<Tensor> {
        self(position)
    }
}

/// An MCMC kernel in the blackjax style: `init` caches the log-density of the starting
/// positions, `step` advances the whole `[walkers, galaxies, dim]` batch once.
pub trait Sampler {
    /// Positions with their cached log-densities.
    type State;
    /// What one step did (acceptance and the like).
    type Info;
    /// The state at `position`, with `target` evaluated there once.
    fn init(&self, position: Tensor, target: &dyn LogDensity) -> Result<Self::State>;
    /// One step of every walker of every galaxy.
    fn step(
        &self,
        rng: &mut dyn RandomSource,
        state: Self::State,
        target: &dyn LogDensity,
    ) -> Result<(Self::State, Self::Info)>;
}

/// One photometric band of a survey.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Band {
    /// Filter name (as in the emulator files, e.g. `hsc_g`).
    pub name: String,
    /// Short label for tables and plots (e.g. `g`).
    pub label: String,
    /// Asinh-magnitude softening b in nanomaggies.
    pub flux_softening_nmgy: f64,
}

/// A survey's photometric calibration, applied by the likelihood (the emission-line terms of
/// the data model belong to the SPS model).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Calibration {
    /// Multiplicative zero points Z_b (observed ≈ Z × model).
    pub zero_points: Vec<f64>,
    /// Fractional error floors ε_b (σ_floor = ε f).
    pub error_floors: Vec<f64>,
}

/// A photometric survey: its bands and their photometric calibration.
pub trait Survey: Send + Sync {
    /// The survey's name in manifests (`cosmos`, `kids`, …).
    fn name(&self) -> &str;
    /// Its bands, in catalogue order.
    fn bands(&self) -> &[Band];
    /// Its photometric calibration (zero points and error floors).
    fn calibration(&self) -> &Calibration;
    /// The bands' filter names.
    fn band_names(&self) -> Vec<String> {
        self.bands().iter().map(|b| b.name.clone()).collect()
    }
}

/// Set `RAYON_NUM_THREADS` to the number of available cores if the user did not set it.
///
/// candle's CPU matmul otherwise re-reads `/proc/cpuinfo` on every call (~28 µs per
/// matmul, so set it before the first matmul). Call first thing in `main`, before any thread exists.
pub fn configure_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        // SAFETY: called at program start before other threads are spawned.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}

/// Keep freed device memory in CUDA's stream-ordered pool rather than handing it back to the
/// driver at every synchronisation (the pool's default release threshold is 0): the sampler
/// allocates the same multi-GB emulator activations every step, and re-mapping them each
/// time is slow. `POPCOSMOS_CUDA_POOL_RELEASE=1` keeps the driver default (for A/B runs).
#[cfg(feature = "cuda")]
fn keep_pool_memory(device: &Device) -> std::result::Result<(), String> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    let Device::Cuda(dev) = device else {
        return Ok(());
    };
    let ctx = dev.cuda_stream().context().clone();
    if std::env::var("POPCOSMOS_CUDA_POOL_RELEASE").is_ok_and(|v| v == "1")
        || !ctx.has_async_alloc()
    {
        return Ok(());
    }
    let mut threshold = u64::MAX;
    // SAFETY: the device comes from a live context; the attribute takes a u64.
    unsafe {
        let pool =
            result::device::get_default_mem_pool(ctx.cu_device()).map_err(|e| e.to_string())?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .map_err(|e| e.to_string())
    }
}

/// Parse a device string from a manifest or the command line: `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let s = spec.trim();
    if s.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    let ordinal = if s.eq_ignore_ascii_case("cuda") {
        Some(0)
    } else {
        s.strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
    };
    match ordinal {
        Some(i) => {
            if !candle_core::utils::cuda_is_available() {
                return Err(Error::Invalid(format!(
                    "device '{s}': this binary was built without CUDA support; rebuild with \
                     `scripts/build-cuda.sh` (cargo feature `cuda`) or use `device: cpu`"
                )));
            }
            let device = Device::new_cuda(i).map_err(|e| {
                Error::Invalid(format!(
                    "device '{s}': CUDA device could not be opened ({e}); check that the NVIDIA \
                     driver (libcuda.so.1) and the CUDA 13 libraries (libcublas.so.13, \
                     libnvrtc.so.13, libcurand.so.10) are on LD_LIBRARY_PATH"
                ))
            })?;
            #[cfg(feature = "cuda")]
            keep_pool_memory(&device)
                .map_err(|e| Error::Invalid(format!("device '{s}': memory pool: {e}")))?;
            Ok(device)
        }
        None => Err(Error::Invalid(format!(
            "device '{s}': expected 'cpu', 'cuda' or 'cuda:N'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_of_a_differentiable_log_density() {
        let target = |x: &Tensor| -> Result<Tensor> { Ok((x.sqr()? * -0.5)?.sum(2)?) };
        let x = Tensor::new(&[[[1f32, -2.0]]], &Device::Cpu).unwrap();
        let (lp, g) = target.grad_log_density(&x).unwrap();
        assert_eq!(lp.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [-2.5]);
        assert_eq!(
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [-1.0, 2.0]
        );
    }

    #[test]
    fn a_log_density_without_gradient_is_an_error_not_a_zero_gradient() {
        let detached = |x: &Tensor| -> Result<Tensor> { Ok(x.detach().sqr()?.sum(2)?) };
        let x = Tensor::new(&[[[1f32, -2.0]]], &Device::Cpu).unwrap();
        let e = detached.grad_log_density(&x).unwrap_err().to_string();
        assert!(
            e.contains("no gradient") && e.contains("not differentiable"),
            "{e}"
        );
    }

    #[test]
    fn config_and_shape_errors_name_their_key_and_shapes() {
        let e = Error::config("sampler.particles", "must be ≥ 32, got 4");
        assert_eq!(e.to_string(), "sampler.particles: must be ≥ 32, got 4");
        let e = Error::shape("theta", "[n, 16]", [3usize, 15]);
        assert_eq!(e.to_string(), "theta must be [n, 16], got [3, 15]");
    }
}
