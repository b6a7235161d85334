//! # popcosmos-priors — priors over the latent φ (spec §5)
//!
//! All priors implement [`popcosmos_api::Prior`] over φ `[..., 16]` (spec §1.2: index 0 is
//! N = μ(z) − 2.5 log10 M_formed, indices 1..15 are probit-mapped θ). `log_prob` is a chain
//! of batched candle ops (f32, any leading shape, any device) returning `[...]` with −∞
//! outside the support; `sample(n, rng, device)` returns `[n, 16]` f32.
//!
//! * [`UniformPrior`] (`kind: uniform`): uniform in θ within the §1.1 bounds for indices
//!   1..15 (Σ ln 𝒩(φ_i; 0, 1)), flat in log10 M_formed on (7, 13) given z (normalised:
//!   −ln 15 for N). μ(z) is the Padé distance modulus (§5.6).
//! * [`ProspectorAlphaPrior`] (`kind: prospector-alpha`): the Prospector-α-like baseline of
//!   `pop_cosmos.catalogue.ProspectorModel`, spec §5.4, term by term (Leja+20 mass
//!   function with exact quadratic anchors, Gallazzi+05 mass–metallicity including the
//!   reference's erf-normalisation quirk, ln dV_c/dz with the Padé cosmology Ω_m = 0.30966,
//!   H₀ = 67.66 of §5.6). Host f64 twins of every term are public
//!   ([`prospector::log_prob_row`], [`prospector::log_density_theta`],
//!   [`prospector::ln_mass_function`], [`prospector::ln_mass_metallicity`], …).
//!   Sampling is exact (ancestral + rejection; see
//!   [`ProspectorAlphaPrior::sample_theta_row`]).
//! * [`PriorSpec`]: the manifest enum (`#[serde(tag = "kind")]`, kebab-case) with
//!   [`PriorSpec::build`].
//!
//! Sampling runs on the host (rayon over 4096-row chunks, each with its own ChaCha8 stream
//! seeded from two draws of the caller's [`popcosmos_api::RandomSource`], so the result is
//! reproducible and independent of the thread count). The rows are then checked with the
//! prior's own f32 `log_prob` on the target device and the rare row that rounds onto a
//! hard boundary (log10 M = 7 or 13, Z_gas = Z*) is redrawn, so every returned draw has a
//! finite log-density.

pub mod prospector;
pub mod uniform;

mod common;

pub use prospector::ProspectorAlphaPrior;
pub use uniform::UniformPrior;

use popcosmos_api::Prior;

/// Prior selection in run manifests, e.g. `prior: { kind: prospector-alpha }`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PriorSpec {
    /// [`UniformPrior`].
    Uniform {},
    /// [`ProspectorAlphaPrior`].
    ProspectorAlpha {},
}

impl PriorSpec {
    /// Construct the prior.
    pub fn build(&self) -> Box<dyn Prior> {
        match self {
            PriorSpec::Uniform {} => Box::new(UniformPrior::new()),
            PriorSpec::ProspectorAlpha {} => Box::new(ProspectorAlphaPrior::new()),
        }
    }
}
