//! # popcosmos-samplers — batched MCMC kernels, a run driver and convergence diagnostics
//!
//! This crate's one job: draw posterior samples for many independent galaxies at once from a
//! [`LogDensity`] over `[walkers, galaxies, dim]` f32 tensors, and say how well the
//! chains converged. Every galaxy is its own target; all galaxies move together in one
//! batched tensor step, so the kernels never loop over galaxies on the host.
//!
//! Kernels follow blackjax (`init(position) -> State`, `step(rng, state) -> (State, Info)`,
//! the state caches the log-density) and implement [`popcosmos_api::Sampler`]:
//!
//! * [`EnsembleSampler`]: the affine-invariant ensemble sampler (Goodman & Weare 2010, parallel
//!   red/blue halves of Foreman-Mackey+13) with pluggable, weighted moves in the emcee style:
//!   - `pub trait Move: Send + Sync { fn name(&self) -> &str; fn propose(&self, rng: &mut dyn RandomSource, active: &Tensor, complement: &Tensor) -> Result<Proposal>; }`
//!   - `pub struct Proposal { pub position: Tensor, pub log_factor: Tensor }`
//!   - `pub struct StretchMove { pub a: f64 }` (default a = 2)
//!   - `pub struct DifferentialEvolutionMove { pub gamma: Option<f64>, pub sigma: f64 }`
//!     (default γ = 2.38/√(2d), σ = 1e-5)
//!   - `pub struct GlobalMove { pub nu: u32, pub scale: f64 }` ([`GlobalMove`]; default ν = 5,
//!     s = 1): independence proposals from a multivariate t fitted to the complementary
//!     half, for jumps across broad or elongated posteriors
//!   - `pub struct EnsembleSampler { pub moves: Vec<(Box<dyn Move>, f64)> }` with
//!     `EnsembleSampler::new(moves) -> Result<Self>`, `EnsembleSampler::stretch()`,
//!     `Default` (= stretch, a = 2)
//!   - `pub struct EnsembleState { pub position: Tensor, pub log_prob: Tensor }`
//!   - `pub struct EnsembleInfo { pub accepted: Tensor, pub move_names: [String; 2] }`
//! * [`ClusteredGlobalMove`] `{ components, nu, scale }`: independence proposals from
//!   a mixture of t components fitted by k-means to the complementary half (one per mode of a
//!   multimodal posterior).
//! * [`LocalMove`] `{ neighbours, scale, shrinkage }`: a Gaussian random walk with the
//!   covariance of the nearest complement particles, for posteriors whose scale changes
//!   along them (a funnel's neck, a thin curved ridge).
//! * [`RidgeMove`] `{ axis, degree, de }`: differential evolution in coordinates where every
//!   other coordinate has a polynomial in the `axis` coordinate, fitted to the complementary
//!   half, subtracted (unit Jacobian), so jumps follow a curved ridge.
//! * [`Hmc`]: Hamiltonian Monte Carlo with candle-autograd gradients
//!   ([`LogDensity::grad_log_density`]), per-galaxy (or per-chain) step sizes, unit or
//!   diagonal mass matrix, fixed leapfrog count and per-galaxy dual-averaging step-size
//!   adaptation (Hoffman & Gelman 2014) during warm-up:
//!   - `pub struct Hmc { pub step_size: f64, pub n_leapfrog: usize, pub inverse_mass: Option<Tensor>, pub adapt_steps: usize, pub target_accept: f64, pub step_size_per_chain: bool, pub step_size_jitter: f64 }`
//!     (`Hmc::new(step_size, n_leapfrog)`, builder methods `with_adaptation`,
//!     `with_inverse_mass`, `with_jitter`, `per_chain`)
//!   - `Hmc::init_with_step_size(&self, position: Tensor, step_size: Tensor, target: &dyn LogDensity) -> Result<HmcState>`
//!   - `pub struct HmcState { pub position, pub log_prob, pub grad, pub step_size, pub adaptation: DualAveraging, pub iteration: usize }`
//!   - `pub struct HmcInfo { pub accepted: Tensor, pub accept_prob: Tensor, pub divergent: Tensor, pub step_size: Tensor }`
//! * [`sample`]: the driver,
//!   `sample<K>(kernel: &K, init_position: Tensor, target: &dyn LogDensity, rng: &mut dyn RandomSource, config: &RunConfig, on_step: Option<OnStep<'_, K>>) -> Result<Chain>`
//!   where `OnStep<'a, K> = &'a mut dyn FnMut(usize, &K::State, &K::Info)`
//!   (and `run_from_state(kernel, state, target, rng, config, on_step) -> Result<(Chain, K::State)>`,
//!   which continues from a state and returns the final one), with
//!   `RunConfig { n_steps, burn_in, thin }` and a host [`Chain`] (`samples` f32
//!   `[kept, walkers, galaxies, dim]`, `log_prob` `[kept, walkers, galaxies]`, `acceptance`
//!   per galaxy).
//! * [`prune_stuck_walkers`]: burn-in repair,
//!   `prune_stuck_walkers(position, log_prob, max_deficit, jitter, rng) -> Result<(Tensor, Vec<u32>)>`
//!   re-seeds walkers stuck more than `max_deficit` nats below the ensemble median from the
//!   best half (per galaxy, batched).
//! * [`Smc`]: adaptive likelihood-tempered sequential Monte Carlo over `[particles, galaxies,
//!   dim]` (per-galaxy temperature schedules, systematic resampling, ensemble-move
//!   rejuvenation with an adaptive sweep count, log-evidence with its error; optionally
//!   islands, rounds of more islands where the median is uncertain, strata along one
//!   coordinate pooled by their evidences, a final importance stage):
//!   `Smc::new(SmcConfig, EnsembleSampler, dim)?.run(&Reference, &dyn TemperedTarget, rng)
//!   -> (Chain, Vec<SmcDiagnostics>)`.
//! * [`TemperedEnsemble`]: parallel tempering of the ensemble,
//!   `TemperedEnsemble::geometric(inner, temperatures, max_temperature) -> Result<Self>`
//!   (positions `[walkers, K·galaxies, dim]`, temperature k of galaxy g in column k·G + g;
//!   `replicate(start)`, `cold_chain(&Chain)`), with adjacent-temperature walker swaps after
//!   every step; K = 1 is exactly the inner ensemble.
//! * [`WarmupConfig`]: the burn-in schedule, apart from the kernels (blackjax's window
//!   adaptation): `WarmupConfig { moves: Vec<(MoveKind, f64)>, temperatures, prune_deficit,
//!   prune_jitter, de_sigma, hmc_initial_step, … }` (documented defaults) with `ensemble(fit)`,
//!   `run_ensemble(init, target, rng, &RunConfig)` (two burn-in halves: prune stuck walkers,
//!   freeze the global move's proposal) and `run_hmc(…)` (dual-averaging step sizes).
//! * [`MarginalWhitening`]: marginal Gaussianisation of the sampling space,
//!   `MarginalWhitening::fit(draws [n, dim]) -> Result<Self>` (monotone piecewise-linear
//!   ψ → x per dimension, fitted to reference draws such as the prior), `forward(ψ) -> (x,
//!   log|J|)`, `inverse(x) -> ψ`.
//! * [`diagnose_chain`]: host f64 diagnostics per galaxy and parameter — rank-normalised
//!   split-R̂ (max of bulk and folded/tail, Vehtari+21), bulk and tail ESS (Geyer initial monotone
//!   sequence), emcee-style integrated autocorrelation time (window c = 5), acceptance —
//!   with [`Thresholds`] that *flag* (never drop) galaxies:
//!   - `diagnose_galaxy(samples: &[f64], draws: usize, chains: usize, dim: usize, acceptance: Option<f64>) -> Diagnostics`
//!     (`samples` laid out `[draws][chains][dim]`)
//!   - `diagnose_chain(chain: &Chain) -> Vec<Diagnostics>` (rayon over galaxies)
//!   - `Thresholds::flags(&self, d: &Diagnostics) -> Vec<String>`,
//!     `Diagnostics::flags(&self, t: &Thresholds) -> Vec<String>`
//!   - single-series building blocks: `rhat`, `ess_bulk`, `ess_tail`, `autocorr_time`
//!     (each on a `[chains][draws]` slice).
//!
//! All randomness comes from a [`popcosmos_api::RandomSource`], so a run with
//! [`popcosmos_api::HostRng`] and a fixed seed is bitwise reproducible on the CPU.
//!
//! Log-probabilities that are NaN are treated as −∞: such proposals are never accepted, and a
//! walker sitting at −∞ accepts any finite proposal.

#![warn(missing_docs)]

mod diagnostics;
mod ensemble;
mod global;
mod grid_gibbs;
mod hmc;
mod importance;
mod local;
mod mixture;
mod prune;
mod ridge;
mod run;
mod smc;
mod tempering;
mod warmup;
mod whiten;

pub use diagnostics::{
    Diagnostics, Thresholds, autocorr_time, diagnose_chain, diagnose_galaxy, ess_bulk, ess_tail,
    rhat,
};
pub use ensemble::{
    DifferentialEvolutionMove, EnsembleInfo, EnsembleSampler, EnsembleState, Move, Proposal,
    StretchMove,
};
pub use global::{FittedProposal, GlobalMove};
pub use grid_gibbs::{GridChart, GridState, PiecewiseExponential, grid_gibbs_update, ridge_slopes};
pub use hmc::{DualAveraging, Hmc, HmcInfo, HmcState};
pub use local::LocalMove;
pub use mixture::ClusteredGlobalMove;
pub use prune::prune_stuck_walkers;
pub use ridge::RidgeMove;
pub use run::{Chain, OnStep, RunConfig, run_from_state, sample};
pub use smc::{
    Reference, Reweighting, Smc, SmcConfig, SmcDiagnostics, SmcStatus, TemperedTarget,
    next_temperature, next_temperature_weighted, systematic_resample,
};
pub use tempering::{TemperedEnsemble, TemperedInfo};
pub use warmup::{MoveKind, WarmupConfig};
pub use whiten::MarginalWhitening;

use popcosmos_api::{LogDensity, Result, Tensor};

/// A kernel state that exposes the current positions and their cached log-densities.
pub trait ChainState {
    /// Positions `[walkers, galaxies, dim]`.
    fn position(&self) -> &Tensor;
    /// Log-densities `[walkers, galaxies]` (NaN already mapped to −∞).
    fn log_prob(&self) -> &Tensor;
}

/// Per-step information that says which chains moved.
pub trait StepInfo {
    /// `[walkers, galaxies]` f32, 1 where the proposal was accepted.
    fn accepted(&self) -> &Tensor;
}

/// The largest finite value, `None` when there is none (log-weights with −∞ / NaN entries).
pub fn finite_max(values: &[f64]) -> Option<f64> {
    let max = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    max.is_finite().then_some(max)
}

/// Map NaN log-densities to −∞ (so they are never accepted).
pub(crate) fn sanitize_log_prob(lp: &Tensor) -> Result<Tensor> {
    let is_nan = lp.ne(lp)?;
    let neg_inf = lp.ones_like()?.affine(0.0, f64::NEG_INFINITY)?;
    Ok(is_nan.where_cond(&neg_inf, lp)?)
}

/// Evaluate a target and sanitize its output.
pub(crate) fn eval_log_prob(target: &dyn LogDensity, position: &Tensor) -> Result<Tensor> {
    sanitize_log_prob(&target.log_density(position)?)
}
