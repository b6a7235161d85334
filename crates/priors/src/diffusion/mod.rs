//! Score-based diffusion models: the flowfusion score network, VP / sub-VP /
//! VE SDEs, probability-flow log-densities with the exact divergence, ODE and SDE sampling,
//! denoising score-matching training, and the [`DiffusionPrior`] wrapper used in manifests.

mod config;
mod model;
mod ode;
mod prior;
mod score_net;
mod train;

#[cfg(test)]
pub(crate) use config::one_sde_of_each_kind;
pub use config::{Activation, DiffusionConfig, SdeConfig};
pub use model::{DiffusionModel, Divergence, LogProbOptions, LogProbOutput};
pub use ode::{OdeSolver, OdeStats};
pub use prior::DiffusionPrior;
pub use score_net::ScoreNet;
pub use train::{FitOptions, Fitted, TrainOptions, Trainer, fit, model_tensors, write_model};
