//! Score-based diffusion models: the flowfusion score network, VP / sub-VP /
//! VE SDEs, probability-flow log-densities with the exact divergence, ODE and SDE sampling,
//! denoising score-matching training, and the [`DiffusionPrior`] wrapper used in manifests.

pub mod config;
pub mod model;
pub mod ode;
pub mod prior;
pub mod score_net;
pub mod train;

pub use config::{Activation, DiffusionConfig, SdeConfig};
pub use model::{DiffusionModel, Divergence, LogProbOptions, LogProbOutput};
pub use ode::{OdeSolver, OdeStats};
pub use prior::DiffusionPrior;
pub use score_net::ScoreNet;
pub use train::{FitOptions, Fitted, TrainOptions, Trainer};
