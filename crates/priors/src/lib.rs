//! # popcosmos-priors — priors over the latent φ
//!
//! All priors implement [`popcosmos_api::Prior`] over φ `[..., 16]` (index 0 is
//! N = μ(z) − 2.5 log10 M_formed, indices 1..15 are probit-mapped θ). `log_prob` is a chain
//! of batched candle ops (f32, any leading shape, any device) returning `[...]` with −∞
//! outside the support; `sample(n, rng, device)` returns `[n, 16]` f32.
//!
//! * [`UniformPrior`] (`kind: uniform`): uniform in θ within the parameter bounds for indices
//!   1..15 (Σ ln 𝒩(φ_i; 0, 1)), flat in log10 M_formed on (7, 13) given z (normalised:
//!   −ln 15 for N). μ(z) is the Padé distance modulus (Adachi & Kasai 2012).
//! * [`ProspectorAlphaPrior`] (`kind: prospector-alpha`): the Prospector-α-like baseline of
//!   `pop_cosmos.catalogue.ProspectorModel`, term by term (Leja+20 mass
//!   function with exact quadratic anchors, Gallazzi+05 mass–metallicity including the
//!   reference's erf-normalisation quirk, ln dV_c/dz with the Padé cosmology Ω_m = 0.30966,
//!   H₀ = 67.66). Host f64 twins of every term are public
//!   ([`prospector::log_prob_row`], [`prospector::log_density_theta`],
//!   [`prospector::ln_mass_function`], [`prospector::ln_mass_metallicity`], …).
//!   Sampling is exact (ancestral + rejection; see
//!   [`ProspectorAlphaPrior::sample_theta_row`]).
//! * [`diffusion`] (`kind: diffusion`): score-based diffusion models — the
//!   flowfusion score network, VP/sub-VP/VE SDEs, probability-flow log-density with the exact
//!   divergence in one batched forward-mode sweep, per-row adaptive dopri5 / fixed-step
//!   RK4/Heun/Euler, ODE and predictor–corrector SDE sampling, denoising score-matching
//!   training ([`diffusion::Trainer`]) and the [`diffusion::DiffusionPrior`] wrapper.
//! * [`flow`]: discrete normalizing flows ("fast priors") — rational-quadratic spline
//!   couplings with an exact log-density in one batched pass, maximum-likelihood training
//!   ([`flow::Trainer`]), distillation from a diffusion model ([`flow::distill()`]) and the
//!   [`flow::FlowPrior`] wrapper.
//! * [`consistency`]: consistency models distilled from a diffusion model (Song et al.
//!   2023) — 1-, 2- and 4-step samplers of the teacher's PF-ODE distribution
//!   ([`consistency::Trainer`], [`consistency::ConsistencyModel`]) and their evaluation
//!   against the teacher ([`consistency::compare_to_teacher`]: KS, classifier AUC, time).
//! * [`tilted`] (`kind: tilted`): a base prior reweighted by exp(a z + b log10 M_formed),
//!   the known truth population of the population-fit mock tests.
//! * `kind: plugin`: a prior from a plugin shared library (C ABI, `popcosmos-plugin-host`;
//!   see docs/plugins.md).
//! * [`PriorSpec`]: the manifest enum (`#[serde(tag = "kind")]`, kebab-case) with
//!   [`PriorSpec::build`].
//!
//! Sampling runs on the host (rayon over 4096-row chunks, each with its own ChaCha8 stream
//! seeded from two draws of the caller's [`popcosmos_api::RandomSource`], so the result is
//! reproducible and independent of the thread count). The rows are then checked with the
//! prior's own f32 `log_prob` on the target device and the rare row that rounds onto a
//! hard boundary (log10 M = 7 or 13, Z_gas = Z*) is redrawn, so every returned draw has a
//! finite log-density.

#![warn(missing_docs)]

// Namespace: consistency models; `Trainer`, `TrainOptions`, `FORMAT` recur in each family.
pub mod consistency;
// Namespace: diffusion models (`diffusion::Trainer`, `diffusion::TrainOptions`, …).
pub mod diffusion;
// Namespace: normalizing flows (`flow::Trainer`, `flow::TrainOptions`, …).
pub mod flow;
// Namespace: the Prospector-α terms as host f64 functions (`prospector::log_prob_row`, …).
pub mod prospector;
pub mod tilted;
mod uniform;
mod weights_io;

mod common;

pub use prospector::ProspectorAlphaPrior;
pub use uniform::UniformPrior;
pub use weights_io::{read_metadata, read_tensors};

use popcosmos_api::{Device, Prior, Result};

/// Prior selection in run manifests, e.g. `prior: { kind: prospector-alpha }` or
/// `prior: { kind: diffusion, weights: builtin:popcosmos_prior_diffusion }`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PriorSpec {
    /// [`UniformPrior`].
    Uniform {},
    /// [`ProspectorAlphaPrior`].
    ProspectorAlpha {},
    /// [`diffusion::DiffusionPrior`]: a diffusion model over φ.
    Diffusion {
        /// Weights reference (`builtin:NAME`, a path with a model card next to it, or
        /// `hf://ORG/REPO[@REV]/FILE`); default the bundled population prior.
        #[serde(default = "default_diffusion_weights")]
        weights: String,
        /// ODE solver and divergence estimator of the log-density.
        #[serde(default)]
        log_prob: diffusion::LogProbOptions,
        /// ODE solver for draws (initialisation library, mocks); default dopri5 1e−5.
        #[serde(default)]
        sample_solver: diffusion::OdeSolver,
        /// Draw with a consistency model instead of the ODE (`fast_sampler: {steps: 1}`
        /// uses the bundled one); the log-density is unaffected.
        #[serde(default)]
        fast_sampler: Option<FastSamplerSpec>,
    },
    /// [`flow::FlowPrior`]: a normalizing flow over φ (e.g. distilled from a diffusion prior).
    Flow {
        /// Weights reference (`builtin:NAME`, a path with a model card, or `hf://…`);
        /// default the flow distilled from the bundled diffusion prior.
        #[serde(default = "default_flow_weights")]
        weights: String,
    },
    /// [`tilted::TiltedPrior`]: `base` reweighted by exp(`z` · z + `log10_mass` · log10 M_formed),
    /// e.g. `prior: {kind: tilted, base: {kind: prospector-alpha}, z: 0.4, log10_mass: 1.0}`.
    Tilted {
        /// The prior that is tilted.
        base: Box<PriorSpec>,
        /// Slope a of the tilt in z.
        #[serde(default)]
        z: f64,
        /// Slope b of the tilt in log10 M_formed.
        #[serde(default)]
        log10_mass: f64,
    },
    /// A prior from a plugin shared library (`popcosmos-plugin-host`, docs/plugins.md):
    /// `prior: {kind: plugin, path: libmy_prior.so, config: "…"}`.
    Plugin {
        /// The plugin library (relative to the manifest).
        path: std::path::PathBuf,
        /// Configuration string handed to the plugin's `create` (plugin-defined).
        #[serde(default)]
        config: String,
    },
}

/// The bundled diffusion population prior.
pub const DEFAULT_DIFFUSION_PRIOR: &str = "builtin:popcosmos_prior_diffusion";

/// The normalizing flow distilled from [`DEFAULT_DIFFUSION_PRIOR`].
pub const DEFAULT_FLOW_PRIOR: &str = "builtin:popcosmos_prior_flow";

fn default_flow_weights() -> String {
    DEFAULT_FLOW_PRIOR.into()
}

/// The consistency model distilled from [`DEFAULT_DIFFUSION_PRIOR`].
pub const DEFAULT_CONSISTENCY_SAMPLER: &str = "builtin:popcosmos_prior_consistency";

/// `prior.fast_sampler` of a diffusion prior: a consistency model for its draws.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastSamplerSpec {
    /// Consistency-model weights (`builtin:`, a path with a card, `hf://…`); default the
    /// one distilled from the bundled diffusion prior.
    #[serde(default = "default_consistency_weights")]
    pub weights: String,
    /// Network evaluations per draw (1 = one-step sampling).
    #[serde(default = "one")]
    pub steps: usize,
}

fn default_consistency_weights() -> String {
    DEFAULT_CONSISTENCY_SAMPLER.into()
}

fn one() -> usize {
    1
}

fn default_diffusion_weights() -> String {
    DEFAULT_DIFFUSION_PRIOR.into()
}

/// Resolves a weights reference to `(bytes, source name)`; supplied by the caller (the
/// inference crate resolves `builtin:`/`hf://` references and checks model cards). The second
/// argument is the model-card kind the prior needs (`diffusion`, `flow`).
pub type WeightLoader<'a> = dyn Fn(&str, &str) -> Result<(Vec<u8>, String)> + 'a;

impl PriorSpec {
    /// Construct an analytic prior (`uniform`, `prospector-alpha`); learned priors need
    /// [`PriorSpec::build_with`].
    pub fn build(&self) -> Result<Box<dyn Prior>> {
        self.build_with(&Device::Cpu, &|w: &str, _kind: &str| {
            Err(popcosmos_api::Error::config(
                "prior.weights",
                format!("no loader for '{w}' (use PriorSpec::build_with)"),
            ))
        })
    }

    /// Construct any prior; `load` resolves `weights` references, models go on `device`.
    pub fn build_with(&self, device: &Device, load: &WeightLoader) -> Result<Box<dyn Prior>> {
        Ok(match self {
            PriorSpec::Uniform {} => Box::new(UniformPrior::new()),
            PriorSpec::ProspectorAlpha {} => Box::new(ProspectorAlphaPrior::new()),
            PriorSpec::Diffusion {
                weights,
                log_prob,
                sample_solver,
                fast_sampler,
            } => {
                let (bytes, source) = load(weights, "diffusion")?;
                let model = diffusion::DiffusionModel::from_bytes(&bytes, &source, device)?;
                let mut prior = diffusion::DiffusionPrior::new(model, *log_prob, &source)?
                    .with_sample_solver(*sample_solver);
                if let Some(fast) = fast_sampler {
                    let (bytes, source) = load(&fast.weights, "consistency")?;
                    let cm = consistency::ConsistencyModel::from_bytes(&bytes, &source, device)?;
                    prior = prior.with_consistency_sampler(cm, fast.steps, &source)?;
                }
                Box::new(prior)
            }
            PriorSpec::Flow { weights } => {
                let (bytes, source) = load(weights, "flow")?;
                let model = flow::FlowModel::from_bytes(&bytes, &source, device)?;
                Box::new(flow::FlowPrior::new(model, &source)?)
            }
            PriorSpec::Tilted {
                base,
                z,
                log10_mass,
            } => Box::new(tilted::TiltedPrior::new(
                base.build_with(device, load)?,
                *z,
                *log10_mass,
            )?),
            PriorSpec::Plugin { path, config } => Box::new(
                popcosmos_plugin_host::load_prior(path, config)
                    .map_err(|e| popcosmos_api::Error::config("prior.path", e.to_string()))?,
            ),
        })
    }

    /// The prior beneath any tilts (the one whose weights and paths a manifest names).
    pub fn innermost(&self) -> &PriorSpec {
        match self {
            PriorSpec::Tilted { base, .. } => base.innermost(),
            other => other,
        }
    }

    /// Mutable [`Self::innermost`] (to resolve its paths against the manifest's folder).
    pub fn innermost_mut(&mut self) -> &mut PriorSpec {
        match self {
            PriorSpec::Tilted { base, .. } => base.innermost_mut(),
            other => other,
        }
    }

    /// Check settings that need no file access (names the manifest key).
    pub fn validate(&self) -> Result<()> {
        if let PriorSpec::Tilted {
            base,
            z,
            log10_mass,
        } = self
        {
            tilted::check_slopes(*z, *log10_mass)?;
            return base.validate();
        }
        if let PriorSpec::Diffusion {
            log_prob,
            sample_solver,
            fast_sampler,
            ..
        } = self
        {
            let bad = popcosmos_api::Error::config;
            log_prob
                .solver
                .validate()
                .map_err(|e| bad("prior.log_prob.solver", e))?;
            sample_solver
                .validate()
                .map_err(|e| bad("prior.sample_solver", e))?;
            if let Some(fast) = fast_sampler
                && fast.steps == 0
            {
                return Err(bad("prior.fast_sampler.steps", "must be >= 1".into()));
            }
        }
        Ok(())
    }
}
