//! Discrete normalizing flows over φ ("fast priors"): rational-quadratic spline couplings
//! (Durkan et al. 2019) with identity tails, optional per-dimension affine layers and a
//! standard-normal base, giving an exact log-density in one batched pass and sampling by
//! the inverse pass.
//!
//! * [`FlowModel`]: the flow with its input standardisation, stored as safetensors with
//!   metadata `format` = `popcosmos/flow/v1` and `config` = JSON of [`FlowConfig`]
//!   ([`FlowModel::from_bytes`], [`FlowModel::load`], [`FlowModel::save`], [`write_model`]).
//! * [`Trainer`]: maximum-likelihood training on samples (Adam, cosine learning rate,
//!   gradient-norm clipping, EMA, held-out NLL, checkpoint/resume).
//! * [`distill()`]: train a flow on samples of a [`crate::diffusion::DiffusionModel`] and
//!   report held-out NLL, forward KL (with standard error) and per-parameter KS statistics.
//! * [`FlowPrior`]: the 16-D flow as a [`popcosmos_api::Prior`] (physical-φ density,
//!   −∞ for non-finite rows, differentiable).

mod config;
mod distill;
mod model;
mod prior;
mod spline;
mod train;

pub use config::{FlowConfig, default_masks};
pub use distill::{DistillOptions, DistillReport, distill};
pub use model::{FORMAT, FlowModel, init_tensors, write_model};
pub use prior::FlowPrior;
pub use spline::{SplineConfig, rq_spline};
pub use train::{TrainOptions, Trainer, mean_nll};
