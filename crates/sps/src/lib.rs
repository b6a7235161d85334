//! # popcosmos-sps — neural SPS emulators of the pop-cosmos model
//!
//! Turns physical stellar-population parameters θ into model photometry and derived
//! quantities, reproducing the PyTorch reference (`pop_cosmos`, `speculator`) numerically.
//!
//! * [`Photulator`]: 26 per-band networks, evaluated as batched
//!   matmuls over stacked `[bands, in, out]` weights; θ₁₅ `[n, 15]` → absolute magnitudes
//!   `[n, bands]` (AB, per M☉ formed, at 10 pc). Helpers in [`photulator`] give apparent
//!   magnitudes, fluxes and asinh magnitudes.
//! * [`EmLineEmulator`]: emission-line emulator and bandpass models:
//!   θ^power → line band contributions `F[n, bands, 44]` nmgy, or contracted sums
//!   `Σ_l F_bl w_lk` via [`EmLineEmulator::contract`].
//! * [`StellarMassEmulator`]: surviving mass fraction.
//! * [`DerivedQuantities`] ([`derived_quantities_batch`], [`derived_from_tensor`],
//!   [`log10_mass_formed`], [`n_from_log10_mass`]): log10 M_formed, mass-weighted age, SFR,
//!   sSFR, remaining mass (host f64, astropy-Planck18 cosmology).
//! * [`PhotulatorSps`]: the [`popcosmos_api::SpsModel`] of every survey, combining them
//!   with the emission-line terms [`LineCalibration`] (no zero points: the likelihood
//!   applies those); [`PhotulatorSps::for_survey`] builds it for a survey's bands from
//!   any emulator set (a subset of the set's networks re-packed as one smaller stack).
//! * [`SpectrumEmulator`]: the Speculator Prospector-α **spectrum** emulator, and
//!   [`SpectrumPhotometry`] — observed-frame AB photometry through any filter
//!   curves (redshifting, Madau IGM, 1 + z bandwidth factor), in the photulator convention.
//! * [`train`]: training per-band photulators from a teacher (`popcosmos-cli train-emulator`).
//! * [`activation`]: the fused speculator activation (candle `CustomOp3`, fast CPU path).
//! * A whole-network CPU kernel for the photulator (AVX2/FMA micro-kernel;
//!   [`Photulator::has_fused_kernel`]).
//! * [`bench_emulator`]: CPU throughput benchmark of the photulator stack.
//!
//! ## Other surveys
//! [`PhotulatorSps`] works for any band set: build it with
//! [`PhotulatorSps::for_filter_set`]`(photulator, &filters, &lines)` — a photulator set for
//! the survey (bundled `builtin:photulator_kids9` / `builtin:photulator_lsst6`, or one from
//! `train-emulator`), the survey's filter curves in the same band order (emission-line band
//! responses F_bl are then computed from the curves themselves instead of the COSMOS
//! bandpass fits) and the 44 line offsets / scatters. Filter curves:
//! [`popcosmos_api::FilterCurve`]; bundled under `assets/filters/{cosmos,kids,lsst}/`.
//!
//! ## Input conventions
//! * θ `[..., 16]`, physical, in the order of [`popcosmos_api::PARAM_NAMES`]: N first
//!   (N = μ(z) − 2.5 log10 M_formed), dust2 **linear**, z last. This is what
//!   [`PhotulatorSps`] and the stellar-mass emulator take.
//! * The photulator takes θ₁₅ = θ\[1:\] with dust2 → √dust2
//!   ([`photulator::theta_to_photulator_input`]); N only adds to the magnitudes.
//! * The emission-line emulator takes θ^power = θ with dust2 → √dust2, **N kept first**
//!   ([`photulator::theta_to_power`]).
//!
//! ## The line-emulator input quirk
//! The line network's stored input standardisation matches a training set in *linear*
//! τ₂ / f_AGN / τ_AGN with z ≤ 4.5, but the reference pipeline feeds it √τ₂ and ln f_AGN /
//! ln τ_AGN. The published calibration (line offsets, scatters, zero points) was fitted through
//! that code path, so this crate reproduces the reference input exactly rather than "fixing" it.
//!
//! On CUDA (cargo feature `cuda`) the activation and the emission-line bandpass contraction
//! are custom kernels compiled with NVRTC on first use (module `cuda`); without the feature,
//! or with [`activation::set_device_kernel`]`(false)`, CUDA runs composed candle ops.
//!
//! All weights are bundled (`include_bytes!` of `assets/models/`), and can also be loaded from
//! paths; every tensor's presence and shape is checked at load time
//! ([`popcosmos_api::Error::MissingTensor`] / [`popcosmos_api::Error::TensorShape`]).

#![warn(missing_docs)]

// Namespace: fused op, composed reference and kernel switch (`activation::composed`, …).
pub mod activation;
mod bench;
#[cfg(feature = "cuda")]
mod cuda;
mod derived;
// Namespace: every emulator module has its own `BUILTIN_WEIGHTS` (`emlines::BUILTIN_WEIGHTS`).
pub mod emlines;
mod fastmath;
mod fused_cpu;
mod igm_scatter;
mod model;
// Namespace: `BUILTIN_WEIGHTS`, `N_INPUTS`, θ/flux conversions (`photulator::theta_to_power`).
pub mod photulator;
mod spectrum;
// Namespace: `stellar_mass::BUILTIN_WEIGHTS` (one per emulator module, see `emlines`).
pub mod stellar_mass;
// Namespace: photulator training and teacher helpers (`train::TrainOptions`, `train::rms`, …).
pub mod train;
mod weights;

pub use bench::{BenchRow, BenchTable, bench_emulator, uniform_inputs};
pub use derived::{
    DerivedQuantities, derived_from_tensor, derived_quantities_batch, log10_mass_formed,
    n_from_log10_mass,
};
pub use emlines::EmLineEmulator;
pub use igm_scatter::{IgmScatter, forest_share};
pub use model::{LineCalibration, PhotulatorSps};
pub use photulator::Photulator;
pub use spectrum::{
    PhotometryOptions, SpectrumEmulator, SpectrumPhotometry, SpeculatorConfig, SpeculatorSegment,
    madau95_tau, theta_to_speculator_input,
};
pub use stellar_mass::StellarMassEmulator;
pub use weights::WeightFile;
