//! Fit a population prior to a survey's own photometry, without redshifts (the pop-cosmos
//! population fit: Alsing et al. 2024; Thorp et al. 2024, 2025).
//!
//! A normalizing flow q(φ) over the 16 latent parameters is pushed through the whole data
//! model — SPS emulators and emission lines, per-band zero points, flux errors from the
//! catalogue's own error model, Student-t noise, missing-band patterns drawn from the
//! catalogue's rows — to asinh magnitudes, and trained so that this simulated catalogue
//! matches the observed one in distribution. Per-band zero points and error floors are fitted
//! jointly, and optionally the flux scales of groups of emission lines that broad bands
//! cannot separate (Hα + [N II], …). No truth column is ever read: the whole fit sees
//! fluxes and their errors only.
//!
//! * [`ObservedSet`]: the catalogue as standardised asinh magnitudes, with the checks
//!   a fit needs (enough usable rows, every band measured somewhere, all-missing rows dropped).
//! * [`ErrorModel`]: where simulated flux errors come from; [`EmpiricalErrorModel`] draws
//!   σ(f) per band from the catalogue's own (flux, error) pairs nearest in flux, and
//!   [`error_ks`] compares drawn errors with the catalogue's.
//! * [`Distance`]: the sliced Wasserstein distance and the debiased Sinkhorn divergence.
//! * [`ForwardModel`]: φ → simulated observed photometry, differentiable in the
//!   flow's weights, the zero points, the floors and (optionally) the flux scales of groups
//!   of emission lines.
//! * [`PopulationFit`]: the optimiser loop with checkpoints, resume and the outputs
//!   (flow weights with a model card, a calibration file, a fit report).

#![warn(missing_docs)]

mod data;
mod distance;
mod errors;
mod fit;
mod forward;

pub use data::{ObservedSet, Selection};
pub use distance::Distance;
pub use errors::{EmpiricalErrorModel, ErrorModel, error_ks};
pub use fit::{FitOptions, FitReport, PopulationFit, StepRecord};
pub use forward::{DataModelParams, ForwardModel, LineGroupFlux, Simulated};
