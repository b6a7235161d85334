//! Adaptive likelihood-tempered sequential Monte Carlo, batched over galaxies: see [`Smc`].

use popcosmos_api::{DType, Error, RandomSource, Result, Tensor};
use rayon::prelude::*;

use crate::ensemble::{EnsembleSampler, metropolis_accept};
use crate::grid_gibbs::{GridChart, GridState, grid_gibbs_update, ridge_slopes};
use crate::run::{Chain, RunConfig};
use crate::sanitize_log_prob;

/// A posterior split for likelihood tempering, batched over galaxies.
pub trait TemperedTarget {
    /// (ln p, ln L) of positions `[n, galaxies.len(), dim]`, each `[n, galaxies.len()]`, where
    /// column j belongs to the batch's galaxy `galaxies[j]` (`u32` indices on the device).
    /// NaN is read as −∞.
    fn log_prior_and_like(&self, position: &Tensor, galaxies: &Tensor) -> Result<(Tensor, Tensor)>;

    /// A chart with one coordinate to update by griddy Gibbs ([`crate::grid_gibbs_update`]), used
    /// when [`SmcConfig::grid_gibbs`] > 0.
    fn grid_chart(&self) -> Option<&dyn GridChart> {
        None
    }

    /// The quantity whose pooled median [`SmcConfig::rounds`] makes reproducible, for
    /// positions `[.., dim]` → `[..]` (f32), on the scale of [`SmcConfig::round_tolerance`]:
    /// for galaxies ln(1 + z), so that the tolerance reads as Δz/(1 + z). `None`: the target
    /// has none, and more rounds are refused.
    fn monitor(&self, _position: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// Settings of the tempered SMC.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmcConfig {
    /// Particles per galaxy (at least 2 × dim).
    pub particles: usize,
    /// Target ESS of each stage's incremental weights, as a fraction of `particles`, in (0, 1).
    pub ess_target: f64,
    /// Fewest move sweeps per stage.
    pub min_sweeps: usize,
    /// Most move sweeps per stage.
    pub max_sweeps: usize,
    /// Sweep until the particles' correlation with their positions at the start of the stage
    /// (largest over coordinates) falls below this, in (0, 1).
    pub max_correlation: f64,
    /// Stages after which a galaxy that has not reached β = 1 stops (and is flagged).
    pub max_stages: usize,
    /// Sweeps at β = 1 whose states are all kept (≥ 1).
    pub final_sweeps: usize,
    /// Griddy-Gibbs updates of the target's chart axis ([`TemperedTarget::grid_chart`]) at
    /// the start of each stage's rejuvenation, and one before each final sweep when > 0.
    pub grid_gibbs: usize,
    /// Independent particle populations per galaxy (`particles` split evenly between them),
    /// each with its own schedule and resampling; their draws are pooled. Two or more give
    /// [`SmcDiagnostics::island_rhat`], the SMC analogue of R̂ across independent runs.
    pub islands: usize,
    /// Independent draws of the final importance stage ([`crate::importance`]): a mixture of
    /// t fitted to the final particles proposes them, the posterior weighs them, and they
    /// replace the particles (0 = off).
    pub importance_draws: usize,
    /// Most components of that mixture (k-means clusters of the final particles).
    pub importance_components: usize,
    /// Scale of each component's covariance relative to its cluster's (> 0; above 1 widens
    /// the proposal past the particles, which sit tighter than the posterior).
    pub importance_scale: f64,
    /// Least importance ESS for the draws to be used; below it a galaxy keeps its particles.
    pub importance_min_ess: f64,
    /// Strata along coordinate `strata_axis` (1 = off): each galaxy's particles are split
    /// into this many independent populations, each tempered on the posterior restricted to
    /// one interval of that coordinate, and pooled by their evidences ([`Smc::run`]).
    pub strata: usize,
    /// The stratified coordinate (z for galaxies).
    pub strata_axis: usize,
    /// Most rounds of islands per galaxy (1 = off; a power of two dividing `final_sweeps`,
    /// with `islands` ≥ 2). After each round the islands' draws of the target's
    /// [`TemperedTarget::monitor`] give the standard error of the pooled median; a galaxy
    /// above `round_tolerance` gets as many rounds again, independent of the earlier ones.
    /// The reference rows are cut into `islands × rounds` blocks, one per island and round.
    pub rounds: usize,
    /// Standard error of the pooled median, on the monitor's scale, above which a galaxy
    /// gets more rounds (> 0).
    pub round_tolerance: f64,
}

impl Default for SmcConfig {
    fn default() -> Self {
        Self {
            particles: 512,
            ess_target: 0.5,
            min_sweeps: 2,
            max_sweeps: 20,
            max_correlation: 0.2,
            max_stages: 200,
            final_sweeps: 4,
            grid_gibbs: 0,
            islands: 1,
            importance_draws: 0,
            importance_components: 8,
            importance_scale: 1.5,
            importance_min_ess: 100.0,
            strata: 1,
            strata_axis: 0,
            rounds: 1,
            round_tolerance: 0.003,
        }
    }
}

impl SmcConfig {
    /// Check every setting for a target of dimension `dim`.
    pub fn validate(&self, dim: usize) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::config(format!("sampler.{key}"), why));
        if self.islands == 0 || self.particles % self.islands != 0 {
            return bad(
                "islands",
                format!(
                    "must be ≥ 1 and divide sampler.particles ({}), got {}",
                    self.particles, self.islands
                ),
            );
        }
        // Each independent population (island or stratum) needs 2 × dim particles.
        let too_few = |parts: usize, what: &str| {
            let per = self.particles / parts;
            let need = (2 * dim).max(4);
            if per >= need {
                return Ok(());
            }
            let split = if parts > 1 {
                format!(" in {parts} {what}s leave {per} per {what}")
            } else {
                String::new()
            };
            bad(
                "particles",
                format!(
                    "{} particles{split} for a {dim}-dimensional posterior; each population \
                     needs at least {need}",
                    self.particles
                ),
            )
        };
        too_few(self.islands, "island")?;
        if self.strata == 0 {
            return bad("strata", "must be ≥ 1 (1 = no strata)".into());
        }
        if self.strata > 1 {
            if self.islands > 1 {
                return bad(
                    "strata",
                    format!(
                        "strata and islands cannot be combined yet; set sampler.islands: 1 \
                         (got {})",
                        self.islands
                    ),
                );
            }
            if self.grid_gibbs > 0 {
                return bad(
                    "strata",
                    "the z Gibbs updates (sampler.z_gibbs) would leave a stratum; use one or \
                     the other"
                        .into(),
                );
            }
            if self.strata_axis >= dim {
                return bad(
                    "strata_axis",
                    format!(
                        "must be below the dimension {dim}, got {}",
                        self.strata_axis
                    ),
                );
            }
            too_few(self.strata, "stratum")?;
        }
        if self.rounds == 0 {
            return bad("rounds", "must be ≥ 1 (1 = one round of islands)".into());
        }
        if self.rounds > 1 {
            if self.islands < 2 {
                return bad(
                    "rounds",
                    format!(
                        "more rounds measure the median's error from the islands; set \
                         sampler.islands ≥ 2 (got {})",
                        self.islands
                    ),
                );
            }
            if self.strata > 1 {
                return bad(
                    "rounds",
                    "rounds and strata cannot be combined; set sampler.strata: 1".into(),
                );
            }
            if !self.rounds.is_power_of_two() || !self.final_sweeps.is_multiple_of(self.rounds) {
                return bad(
                    "rounds",
                    format!(
                        "must be a power of two dividing sampler.final_sweeps ({}), so that \
                         every round weighs the same; got {}",
                        self.final_sweeps, self.rounds
                    ),
                );
            }
        }
        if !(self.round_tolerance > 0.0 && self.round_tolerance.is_finite()) {
            return bad(
                "round_tolerance",
                format!("must be finite and > 0, got {}", self.round_tolerance),
            );
        }
        if !(self.ess_target > 0.0 && self.ess_target < 1.0) {
            return bad(
                "ess_target",
                format!("must lie in (0, 1), got {}", self.ess_target),
            );
        }
        if !(self.max_correlation > 0.0 && self.max_correlation < 1.0) {
            return bad(
                "max_correlation",
                format!("must lie in (0, 1), got {}", self.max_correlation),
            );
        }
        if self.min_sweeps == 0 || self.max_sweeps < self.min_sweeps {
            return bad(
                "min_sweeps",
                format!(
                    "need 1 ≤ min_sweeps ≤ max_sweeps, got {} and {}",
                    self.min_sweeps, self.max_sweeps
                ),
            );
        }
        if self.max_stages == 0 {
            return bad("max_stages", "must be ≥ 1".into());
        }
        if self.final_sweeps == 0 {
            return bad("final_sweeps", "must be ≥ 1".into());
        }
        // Checked whether or not the stage is on, so turning it on never meets a bad value.
        if self.importance_components == 0 {
            return bad("importance_components", "must be ≥ 1".into());
        }
        if !(self.importance_scale > 0.0 && self.importance_scale <= 100.0) {
            return bad(
                "importance_scale",
                format!("must lie in (0, 100], got {}", self.importance_scale),
            );
        }
        if !(self.importance_min_ess >= 0.0 && self.importance_min_ess.is_finite()) {
            return bad(
                "importance_min_ess",
                format!("must be finite and ≥ 0, got {}", self.importance_min_ess),
            );
        }
        Ok(())
    }
}

/// Stage-0 draws from the prior, shared by every galaxy.
pub struct Reference<'a> {
    /// Positions `[m, dim]`.
    pub position: &'a Tensor,
    /// ln p of each draw `[m]`.
    pub log_prior: &'a Tensor,
    /// ln L of each draw for each galaxy `[m, galaxies]` (NaN read as −∞).
    pub log_like: &'a Tensor,
    /// ln of each draw's importance weight against the prior, `[m]`, when the draws come from
    /// another density q (ln p − ln q up to a constant; −∞ for a draw outside the prior).
    /// `None`: the draws are the prior's own.
    pub log_weight: Option<&'a Tensor>,
}

impl Reference<'_> {
    /// The draws' importance log-weights on the host (f64), if any.
    fn host_log_weight(&self) -> Result<Option<Vec<f64>>> {
        self.log_weight
            .map(|w| -> Result<Vec<f64>> {
                Ok(sanitize_log_prob(w)?
                    .to_dtype(DType::F64)?
                    .to_device(&popcosmos_api::Device::Cpu)?
                    .to_vec1::<f64>()?)
            })
            .transpose()
    }
}

/// How a galaxy's SMC run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmcStatus {
    /// Reached β = 1.
    Converged,
    /// Stopped at `max_stages` below β = 1.
    MaxStages,
    /// No reference draw had a finite likelihood: nothing to temper.
    NoFiniteLikelihood,
}

/// Per-galaxy SMC diagnostics.
#[derive(Debug, Clone, Copy)]
pub struct SmcDiagnostics {
    /// ln Z = ln ∫ p L.
    pub log_evidence: f64,
    /// Standard error of ln Z: first order (Σ 1/ESS − 1/n over stages) for one population;
    /// with islands, the larger of that and the islands' scatter sd(ln Ẑ_i)/√k.
    pub log_evidence_err: f64,
    /// Tempering stages (the reference stage included).
    pub stages: usize,
    /// Final inverse temperature (1 unless stopped).
    pub beta: f64,
    /// ESS of the last stage's incremental weights (particles, or library draws if the
    /// reference stage reached β = 1). With strata: their last-stage ESS fractions weighted
    /// by their evidences, times all the particles.
    pub final_ess: f64,
    /// Share of distinct particles after the final sweeps.
    pub unique_fraction: f64,
    /// Mean acceptance over all sweeps.
    pub acceptance: f64,
    /// Move sweeps run (all stages and the final sweeps); with islands, summed over them, each
    /// island's sweep moving its own share of the particles.
    pub sweeps: usize,
    /// Mean acceptance of the griddy-Gibbs updates (NaN when none ran).
    pub grid_acceptance: f64,
    /// Griddy-Gibbs updates run.
    pub grid_updates: usize,
    /// Gelman–Rubin R̂ across the islands' final draws, largest over coordinates: near 1
    /// when the independent populations agree, above ~1.1 when the answer depends on the
    /// random seed (a mode's weight, most often). NaN with one island.
    pub island_rhat: f64,
    /// ESS of the final importance stage's (truncated) weights over all its draws; NaN when
    /// the stage is off. Where it reaches `importance_min_ess` the draws replace the
    /// particles and ln Z is the importance estimate.
    pub importance_ess: f64,
    /// Rounds of islands run ([`SmcConfig::rounds`]; 1 without).
    pub rounds: usize,
    /// Standard error of the pooled median of the target's monitor (ln(1 + z) for
    /// galaxies) from the islands' medians, sd/√islands, with [`SmcConfig::rounds`] > 1;
    /// NaN otherwise.
    pub median_se: f64,
    /// How the run ended.
    pub status: SmcStatus,
}

impl SmcDiagnostics {
    fn new() -> Self {
        Self {
            log_evidence: 0.0,
            log_evidence_err: 0.0,
            stages: 0,
            beta: 0.0,
            final_ess: f64::NAN,
            unique_fraction: f64::NAN,
            acceptance: f64::NAN,
            sweeps: 0,
            grid_acceptance: f64::NAN,
            grid_updates: 0,
            island_rhat: f64::NAN,
            importance_ess: f64::NAN,
            rounds: 1,
            median_se: f64::NAN,
            status: SmcStatus::Converged,
        }
    }
}

/// What a stage's reweighting did for one galaxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Reweighting {
    /// Chosen Δβ.
    pub delta_beta: f64,
    /// ln mean of the incremental weights (the stage's evidence factor).
    pub log_mean_weight: f64,
    /// ESS of the incremental weights.
    pub ess: f64,
    /// Normalised weights (0 for non-finite log-likelihoods).
    pub weights: Vec<f64>,
}

/// Normalised weights ∝ exp(δ·ℓ), their ln-mean over all n entries and their ESS; non-finite
/// ℓ get weight 0. `None` when no ℓ is finite.
#[cfg(test)]
fn incremental_weights(log_like: &[f64], delta: f64) -> Option<(Vec<f64>, f64, f64)> {
    weights_of(log_like, None, delta)
}

/// ln b of row j (0 without importance weights).
fn base_of(log_weight: Option<&[f64]>, j: usize) -> f64 {
    log_weight.map_or(0.0, |b| b[j])
}

/// [`incremental_weights`] of draws that may carry importance weights e^b against the prior:
/// weights ∝ e^{b + δ·ℓ}, and the ln of their e^b-weighted mean of L^δ (self-normalised, so b
/// may be off by a constant; without weights, the plain mean over all n rows). A row with a
/// non-finite ℓ or b gets weight 0. Without weights every operation is the unweighted one
/// (b − b_max = 0 exactly), so the results are bit-identical to it.
fn weights_of(
    log_like: &[f64],
    log_weight: Option<&[f64]>,
    delta: f64,
) -> Option<(Vec<f64>, f64, f64)> {
    let ok = |j: usize| log_like[j].is_finite() && base_of(log_weight, j).is_finite();
    let rows = (0..log_like.len()).filter(|&j| ok(j));
    let max = rows.clone().map(|j| log_like[j]).reduce(f64::max)?;
    let b_max = rows.map(|j| base_of(log_weight, j)).reduce(f64::max)?;
    let mut w: Vec<f64> = (0..log_like.len())
        .map(|j| {
            if ok(j) {
                (base_of(log_weight, j) - b_max + delta * (log_like[j] - max)).exp()
            } else {
                0.0
            }
        })
        .collect();
    let base = match log_weight {
        None => log_like.len() as f64,
        Some(b) => b
            .iter()
            .filter(|b| b.is_finite())
            .map(|b| (b - b_max).exp())
            .sum(),
    };
    let sum: f64 = w.iter().sum();
    let sum_sq: f64 = w.iter().map(|v| v * v).sum();
    let log_mean = delta * max + (sum / base).ln();
    w.iter_mut().for_each(|v| *v /= sum);
    Some((w, log_mean, sum * sum / sum_sq))
}

/// The largest Δβ ≤ `max_delta` whose incremental weights keep ESS ≥ `target_ess` (bisection
/// on the ESS, which falls as Δβ grows), with its weights. `None` when no ℓ is finite.
pub fn next_temperature(log_like: &[f64], max_delta: f64, target_ess: f64) -> Option<Reweighting> {
    temperature_step(log_like, None, max_delta, target_ess)
}

/// [`next_temperature`] for draws with importance weights e^b against the prior (a start
/// library drawn from another density): the ESS is that of e^{b + Δβ·ℓ}, and the evidence
/// factor the e^b-weighted mean of L^{Δβ}.
pub fn next_temperature_weighted(
    log_like: &[f64],
    log_weight: &[f64],
    max_delta: f64,
    target_ess: f64,
) -> Option<Reweighting> {
    temperature_step(log_like, Some(log_weight), max_delta, target_ess)
}

fn temperature_step(
    log_like: &[f64],
    log_weight: Option<&[f64]>,
    max_delta: f64,
    target_ess: f64,
) -> Option<Reweighting> {
    let full = weights_of(log_like, log_weight, max_delta)?;
    let (weights, log_mean_weight, ess, delta_beta) = if full.2 >= target_ess {
        (full.0, full.1, full.2, max_delta)
    } else {
        // The bisection needs only the ESS, over the rows that can carry weight: the pairs
        // (ℓ − max, b − b_max) of the finite ones, less those whose weight is exactly 0.0 in
        // f64 for every step ≥ lo (δ·(ℓ − max) < −750, as b − b_max ≤ 0). Zeros add nothing
        // to either sum, so the ESS, and the step chosen, are bit-identical to summing every
        // row; a stage-1 library of 10⁶ draws (a quarter of them per island) costs a few
        // passes instead of 60.
        let ok = |j: &usize| log_like[*j].is_finite() && base_of(log_weight, *j).is_finite();
        let rows: Vec<usize> = (0..log_like.len()).filter(ok).collect();
        let max = rows.iter().map(|&j| log_like[j]).reduce(f64::max)?;
        let b_max = rows
            .iter()
            .map(|&j| base_of(log_weight, j))
            .reduce(f64::max)?;
        let mut shifted: Vec<(f64, f64)> = rows
            .iter()
            .map(|&j| (log_like[j] - max, base_of(log_weight, j) - b_max))
            .collect();
        let (mut lo, mut hi) = (0.0, max_delta);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if ess_of_shifted(&shifted, mid) >= target_ess {
                lo = mid;
                shifted.retain(|&(d, _)| lo * d >= -750.0);
            } else {
                hi = mid;
            }
        }
        // Always advance: a stage that cannot keep the target ESS even for a tiny step
        // (a few particles dominate) takes the smallest bracketing step.
        let delta = if lo > 0.0 { lo } else { hi };
        let (w, m, e) = weights_of(log_like, log_weight, delta)?;
        (w, m, e, delta)
    };
    Some(Reweighting {
        delta_beta,
        log_mean_weight,
        ess,
        weights,
    })
}

/// ESS of the weights e^{b + δ·d} of the rows' offsets (d, b) = (ℓ − max, b − b_max), summed
/// in order as [`weights_of`] sums them.
fn ess_of_shifted(shifted: &[(f64, f64)], delta: f64) -> f64 {
    let (sum, sum_sq) = shifted.iter().fold((0.0, 0.0), |(s, s2), &(d, b)| {
        let w = (b + delta * d).exp();
        (s + w, s2 + w * w)
    });
    sum * sum / sum_sq
}

/// Systematic resampling: `n` indices into `weights` (normalised) from one uniform `u` ∈ [0, 1).
pub fn systematic_resample(weights: &[f64], n: usize, u: f64) -> Vec<u32> {
    let mut out = Vec::with_capacity(n);
    let mut cumulative = 0.0;
    let mut j = 0usize;
    let last = weights.len() - 1;
    for i in 0..n {
        let point = (i as f64 + u) / n as f64;
        while j < last && cumulative + weights[j] <= point {
            cumulative += weights[j];
            j += 1;
        }
        out.push(j as u32);
    }
    out
}

/// The tempered SMC sampler: its settings and the MCMC moves used to rejuvenate.
///
/// Adaptive likelihood-tempered sequential Monte Carlo, batched over galaxies.
///
/// Why: an MCMC ensemble started near the best library draw reports whichever mode of a
/// multimodal p(z) its walkers found, and its answer moves with the seed and the start
/// library. SMC moves a particle population from the prior (β = 0) to the posterior (β = 1)
/// through π_β ∝ p(x) L(x)^β (Del Moral, Doucet & Jasra 2006; Neal 2001): importance
/// reweighting between temperatures gives each mode the mass it deserves, resampling
/// concentrates particles there, and MCMC moves at each temperature diversify them. The
/// product of the stages' mean incremental weights estimates the evidence Z = ∫ p L.
///
/// One stage, per galaxy (each galaxy has its own schedule):
/// 1. **Next β** by bisection, so that the effective sample size of the incremental weights
///    L^{Δβ} is `ess_target` × particles (Jasra+11; after resampling the weights are equal,
///    so this is the conditional ESS of Zhou, Johansen & Aston 2016).
/// 2. **Evidence**: ln Z += ln mean L^{Δβ}.
/// 3. **Resample**: systematic.
/// 4. **Rejuvenate**: sweeps of the ensemble moves ([`crate::ensemble::Move`]: stretch,
///    differential evolution, the global t fitted to the complementary half) on π_β, with the
///    red/blue split of Foreman-Mackey+13 so every sweep leaves π_β invariant. The number of
///    sweeps adapts per galaxy from the decorrelation it measures: sweeps go on until the
///    correlation across particles between each coordinate now and at the start of the stage
///    (largest over coordinates) is below `max_correlation`, within [`min_sweeps`,
///    `max_sweeps`]. Resampled duplicates start perfectly correlated, so this also bounds how
///    many remain identical.
///
/// Stage 1 starts from a *reference sample* shared by every galaxy, M prior draws whose
/// log-likelihoods the caller already has (the run's start library): its β is chosen so that
/// the ESS over all M draws is `ess_target` × particles, then `particles` draws are
/// resampled from it. A large library therefore jumps most of the way at the price of one
/// likelihood pass. A galaxy that reaches β = 1 leaves the active set and costs nothing more
/// until `final_sweeps` sweeps at β = 1, whose states are all kept as posterior draws.
///
/// **Islands** (`islands` = k ≥ 2): each galaxy runs as k independent populations, each
/// with its own schedule, resampling and disjoint share of the reference rows, and their
/// draws are pooled. Gelman–Rubin R̂ across the islands then measures the whole Monte Carlo
/// error of the run, mode weights included, the way R̂ across independent MCMC runs does.
/// Its price is fewer particles per population.
///
/// **Rounds** (`rounds` > 1, off by default): after the first round of islands, a galaxy
/// whose pooled median of the target's monitor (ln(1 + z) for galaxies) has a standard
/// error above `round_tolerance` runs as many independent islands again, doubling up to
/// `rounds`. The particles go to the broad and multi-peaked posteriors whose medians move
/// with the mode weights; a single peak stops after one round.
///
/// **Importance stage** (`importance_draws` > 0, off by default): after β = 1, independent
/// draws from a mixture of t fitted to the final particles, weighed by the posterior,
/// replace the particles where their ESS is high enough (see the `importance` module). It
/// corrects mode weights on targets a few t components describe; real galaxies' thin curved
/// ridges give it too low an ESS.
///
/// The evidence error is the usual first-order estimate Σ_t (1/ESS_t − 1/n_t) for the
/// variance of ln Ẑ, which assumes the moves decorrelate the particles between stages.
///
/// Host f64 work (bisection, evidence sums, resampling indices) is O(particles) per galaxy
/// and stage; every target evaluation is one batched `[particles, galaxies, dim]` call.
pub struct Smc {
    /// Its settings.
    pub config: SmcConfig,
    /// Weighted ensemble moves (their red/blue sweeps leave each π_β invariant).
    pub moves: EnsembleSampler,
}

/// Particles of the active galaxies `[n, a, d]` with their cached log-prior and
/// log-likelihood.
type Particles = GridState;

/// Where tempering left every column: its particles, β, diagnostics and summed acceptance.
struct Tempered {
    particles: Particles,
    beta: Vec<f64>,
    diag: Vec<SmcDiagnostics>,
    accepted_sum: Vec<f64>,
}

impl Particles {
    fn columns(&self, cols: &Tensor) -> Result<Self> {
        Ok(Self {
            position: self.position.contiguous()?.index_select(cols, 1)?,
            log_prior: self.log_prior.contiguous()?.index_select(cols, 1)?,
            log_like: self.log_like.contiguous()?.index_select(cols, 1)?,
        })
    }

    /// Replace columns `cols` by `sub`'s.
    fn put_columns(&self, cols: &Tensor, sub: &Self) -> Result<Self> {
        Ok(Self {
            position: put_columns(&self.position, cols, &sub.position)?,
            log_prior: put_columns(&self.log_prior, cols, &sub.log_prior)?,
            log_like: put_columns(&self.log_like, cols, &sub.log_like)?,
        })
    }

    /// Particle i of column a becomes particle `index[i][a]` of the same column.
    fn resample(&self, index: &[Vec<u32>]) -> Result<Self> {
        let (n, a, d) = self.position.dims3()?;
        let flat: Vec<u32> = (0..n)
            .flat_map(|i| (0..a).map(move |c| (i, c)))
            .map(|(i, c)| index[c][i] * a as u32 + c as u32)
            .collect();
        let flat = Tensor::from_vec(flat, n * a, self.position.device())?;
        let pick = |t: &Tensor| -> Result<Tensor> {
            Ok(t.contiguous()?
                .flatten_all()?
                .index_select(&flat, 0)?
                .reshape((n, a))?)
        };
        Ok(Self {
            position: self
                .position
                .contiguous()?
                .reshape((n * a, d))?
                .index_select(&flat, 0)?
                .reshape((n, a, d))?,
            log_prior: pick(&self.log_prior)?,
            log_like: pick(&self.log_like)?,
        })
    }
}

/// `full` `[n, g, …]` with columns `cols` (u32 `[a]`) replaced by `sub` `[n, a, …]`, exactly.
fn put_columns(full: &Tensor, cols: &Tensor, sub: &Tensor) -> Result<Tensor> {
    let g = full.dim(1)?;
    let placed = full.zeros_like()?.index_add(cols, &sub.contiguous()?, 1)?;
    let a = cols.dim(0)?;
    let hit = Tensor::zeros(g, DType::F32, full.device())?
        .index_add(cols, &Tensor::ones(a, DType::F32, full.device())?, 0)?
        .gt(0.5)?;
    let mut shape = vec![1, g];
    shape.extend(std::iter::repeat_n(1, full.rank() - 2));
    let hit = hit.reshape(shape)?.broadcast_as(full.shape())?;
    Ok(hit.where_cond(&placed, full)?)
}

fn host_rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    // [n, a] → per column a vector over n, in f64.
    Ok(t.t()?
        .contiguous()?
        .to_dtype(DType::F64)?
        .to_device(&popcosmos_api::Device::Cpu)?
        .to_vec2::<f64>()?)
}

fn index_tensor(cols: &[u32], device: &popcosmos_api::Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(cols.to_vec(), cols.len(), device)?)
}

impl Smc {
    /// A sampler with `config` and `moves`; checks the settings for dimension `dim`.
    pub fn new(config: SmcConfig, moves: EnsembleSampler, dim: usize) -> Result<Self> {
        config.validate(dim)?;
        Ok(Self { config, moves })
    }

    /// Run every galaxy of `reference.log_like` from the reference sample to β = 1. Returns
    /// the final draws as a [`Chain`] (`final_sweeps` kept states × particles, log-probs
    /// ln p + ln L) and per-galaxy diagnostics. A galaxy without a finite likelihood keeps
    /// reference draws and the status [`SmcStatus::NoFiniteLikelihood`]; the others are
    /// unaffected.
    ///
    /// With `islands` = k > 1 each galaxy runs as k independent populations of
    /// `particles / k` (k × galaxies columns of one batch); the chain pools their draws
    /// (island i holds walkers i·n/k … (i+1)·n/k − 1) and the diagnostics combine them:
    /// ln Z is the log-mean of the islands' estimates and [`SmcDiagnostics::island_rhat`]
    /// measures their agreement.
    pub fn run(
        &self,
        reference: &Reference<'_>,
        target: &dyn TemperedTarget,
        rng: &mut dyn RandomSource,
    ) -> Result<(Chain, Vec<SmcDiagnostics>)> {
        let k = self.config.islands.max(1);
        let (chain, mut diag) = if self.config.strata > 1 {
            self.run_strata(reference, target, rng)?
        } else {
            self.run_islands(k, reference, target, rng)?
        };
        if self.config.importance_draws == 0 {
            return Ok((chain, diag));
        }
        let device = reference.position.device();
        let chain =
            crate::importance::refine(chain, &mut diag, k, target, &self.config, device, rng)?;
        Ok((chain, diag))
    }

    /// [`Smc::run`] with strata along one coordinate.
    ///
    /// Why: on the tempered path a mode's share of π_β at small β scales with its volume
    /// (h_k^β σ_k^d for a Gaussian mode of peak h_k and width σ_k), so a narrow mode that
    /// holds 20 % of the posterior holds (σ_narrow/σ_wide)^16 as much of π_β in 16-D, a
    /// handful of particles, and resampling loses it before β = 1 gives its weight back
    /// (docs/validation.md). Strata cannot lose each other's mass: each is its own SMC run,
    /// on π restricted to its interval S_s, with its own particles, and its evidence
    /// Z_s = ∫_{S_s} p L is estimated without bias. The posterior is the mixture of the strata
    /// with weights Z_s / Σ Z, exactly, whatever the intervals; only modes that share a stratum
    /// still compete on the tempered path. For photo-z the axis is z, as EAZY's grid
    /// marginalises over z by brute force (Brammer+08).
    ///
    /// The intervals are each galaxy's weighted quantiles of the axis under the first
    /// stage's weights on the whole reference sample (equal mass of π_{β₁}), and each stratum
    /// starts from the reference draws inside its interval, which carry the interval's prior
    /// mass into Z_s. After β = 1 the strata are pooled by systematic resampling with weights
    /// Z_s and the final sweeps run on the unrestricted posterior.
    fn run_strata(
        &self,
        reference: &Reference<'_>,
        target: &dyn TemperedTarget,
        rng: &mut dyn RandomSource,
    ) -> Result<(Chain, Vec<SmcDiagnostics>)> {
        let c = &self.config;
        let k = c.strata;
        let (m, g) = reference.log_like.dims2()?;
        let device = reference.position.device().clone();
        let axis: Vec<f32> = reference
            .position
            .narrow(1, c.strata_axis, 1)?
            .squeeze(1)?
            .to_dtype(DType::F32)?
            .to_device(&popcosmos_api::Device::Cpu)?
            .to_vec1::<f32>()?;
        let ref_ll = host_rows(&sanitize_log_prob(reference.log_like)?)?; // [g][m]
        let ref_weight = reference.host_log_weight()?;
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by(|&i, &j| axis[i].total_cmp(&axis[j]));
        let target_ess = c.ess_target * c.particles as f64;
        // Per galaxy: the k − 1 interior edges, then each stratum's rows and ln prior mass.
        let layout: Vec<(Vec<f32>, Vec<Vec<u32>>, Vec<f64>)> = (0..g)
            .into_par_iter()
            .map(|a| {
                let r = match &ref_weight {
                    Some(b) => next_temperature_weighted(&ref_ll[a], b, 1.0, target_ess),
                    None => next_temperature(&ref_ll[a], 1.0, target_ess),
                };
                let weights = match r {
                    Some(r) => r.weights,
                    None => vec![1.0 / m as f64; m],
                };
                let edges = weighted_edges(&order, &axis, &weights, k);
                let mut rows = vec![Vec::new(); k];
                let mut mass = vec![0.0f64; k];
                let b_max = ref_weight
                    .as_ref()
                    .and_then(|b| crate::finite_max(b))
                    .unwrap_or(0.0);
                for j in 0..m {
                    let s = stratum_of(&edges, axis[j]);
                    rows[s].push(j as u32);
                    mass[s] += ref_weight.as_ref().map_or(1.0, |b| (b[j] - b_max).exp());
                }
                let total: f64 = mass.iter().sum();
                let log_mass = mass.iter().map(|x| (x / total).ln()).collect();
                (edges, rows, log_mass)
            })
            .collect();
        let rows_of = |col: usize| layout[col % g].1[col / g].clone();
        let mut lo = vec![f32::NEG_INFINITY; k * g];
        let mut hi = vec![f32::INFINITY; k * g];
        for (a, (edges, _, _)) in layout.iter().enumerate() {
            for s in 0..k {
                if s > 0 {
                    lo[s * g + a] = edges[s - 1];
                }
                if s + 1 < k {
                    hi[s * g + a] = edges[s];
                }
            }
        }
        let strata = Strata {
            inner: target,
            galaxies: g as u32,
            axis: c.strata_axis,
            lo: Tensor::from_vec(lo, k * g, &device)?,
            hi: Tensor::from_vec(hi, k * g, &device)?,
        };
        let n = c.particles / k;
        let t = self.temper(n, k, &rows_of, reference, &strata, rng)?;

        // Pool: galaxy a's particles are resampled from its strata with weights Z_s.
        let (_, _, d) = t.particles.position.dims3()?;
        let mut diag = vec![SmcDiagnostics::new(); g];
        let mut pick = Vec::with_capacity(c.particles * g);
        let mut picks = Vec::with_capacity(g);
        for (a, dg) in diag.iter_mut().enumerate() {
            let parts: Vec<&SmcDiagnostics> = (0..k).map(|s| &t.diag[s * g + a]).collect();
            let log_z: Vec<f64> = (0..k)
                .map(|s| parts[s].log_evidence + layout[a].2[s])
                .map(|z| if z.is_nan() { f64::NEG_INFINITY } else { z })
                .collect();
            let Some(top) = crate::finite_max(&log_z) else {
                dg.status = SmcStatus::NoFiniteLikelihood;
                dg.log_evidence = f64::NEG_INFINITY;
                picks.push((0..c.particles).map(|i| (i % k, i / k)).collect::<Vec<_>>());
                continue;
            };
            let z: Vec<f64> = log_z.iter().map(|l| (l - top).exp()).collect();
            let total: f64 = z.iter().sum();
            let w: Vec<f64> = z.iter().map(|x| x / total).collect();
            dg.log_evidence = top + total.ln();
            dg.log_evidence_err = w
                .iter()
                .zip(&parts)
                .filter(|(w, _)| **w > 0.0)
                .map(|(w, p)| (w * p.log_evidence_err).powi(2))
                .sum::<f64>()
                .sqrt();
            let live: Vec<&&SmcDiagnostics> = parts
                .iter()
                .zip(&w)
                .filter(|(_, w)| **w > 0.0)
                .map(|(p, _)| p)
                .collect();
            dg.stages = live.iter().map(|p| p.stages).max().unwrap_or(0);
            dg.beta = live.iter().map(|p| p.beta).fold(f64::INFINITY, f64::min);
            // The strata's last-stage ESS fractions, weighted by W_s, in units of the whole
            // population: comparable with one population's ESS at the same particle count.
            dg.final_ess = c.particles as f64
                * w.iter()
                    .zip(&parts)
                    .filter(|(w, _)| **w > 0.0)
                    .map(|(w, p)| w * p.final_ess / n as f64)
                    .sum::<f64>();
            dg.sweeps = live.iter().map(|p| p.sweeps).sum();
            // A stratum that stopped early biases the mixture only as far as it weighs.
            dg.status = parts
                .iter()
                .zip(&w)
                .filter(|(p, w)| **w > 1e-3 && p.status == SmcStatus::MaxStages)
                .map(|_| SmcStatus::MaxStages)
                .next()
                .unwrap_or(SmcStatus::Converged);
            let per: Vec<f64> = w
                .iter()
                .flat_map(|x| std::iter::repeat_n(x / n as f64, n))
                .collect();
            let idx = systematic_resample(&per, c.particles, rng.next_f64());
            picks.push(
                idx.into_iter()
                    .map(|i| (i as usize / n, i as usize % n))
                    .collect(),
            );
        }
        // Gather rows of the [n, k·g, d] particles into [particles, g, d].
        for i in 0..c.particles {
            for (a, p) in picks.iter().enumerate() {
                let (s, j) = p[i];
                pick.push((j * k * g + s * g + a) as u32);
            }
        }
        let pick = Tensor::from_vec(pick, c.particles * g, &device)?;
        let position = t
            .particles
            .position
            .reshape((n * k * g, d))?
            .index_select(&pick, 0)?
            .reshape((c.particles, g, d))?;
        let all_cols = Tensor::arange(0u32, g as u32, &device)?;
        // The strata's cached log-prior is the restricted one; pooled draws need π's own.
        let (log_prior, log_like) = target.log_prior_and_like(&position, &all_cols)?;
        let mut pooled = Tempered {
            particles: Particles {
                position,
                log_prior: sanitize_log_prob(&log_prior)?,
                log_like: sanitize_log_prob(&log_like)?,
            },
            beta: diag
                .iter()
                .map(|x| if x.beta.is_finite() { x.beta } else { 1.0 })
                .collect(),
            accepted_sum: (0..g)
                .map(|a| (0..k).map(|s| t.accepted_sum[s * g + a]).sum())
                .collect(),
            diag,
        };
        let chain = self.finish(&mut pooled, target, rng)?;
        Ok((chain, pooled.diag))
    }

    /// [`Smc::run`] before the importance stage.
    fn run_islands(
        &self,
        k: usize,
        reference: &Reference<'_>,
        target: &dyn TemperedTarget,
        rng: &mut dyn RandomSource,
    ) -> Result<(Chain, Vec<SmcDiagnostics>)> {
        if k == 1 {
            let m = reference.log_like.dim(0)? as u32;
            return self.run_population_in_blocks(
                self.config.particles,
                1,
                &|_| (0..m).collect(),
                reference,
                target,
                rng,
            );
        }
        let (m, g) = reference.log_like.dims2()?;
        let all: Vec<u32> = (0..g as u32).collect();
        let blocks = k * self.config.rounds;
        if m < blocks {
            return Err(Error::Invalid(format!(
                "SMC: {m} reference draws cannot give each of {k} islands × {} rounds a \
                 block of its own",
                self.config.rounds
            )));
        }
        let (chain, diag) = self.island_set(&all, 0, k, blocks, reference, target, rng)?;
        if self.config.rounds > 1 {
            return self.run_rounds(chain, diag, reference, target, rng);
        }
        Ok(pool_islands(chain, &diag, k, g))
    }

    /// `islands` independent populations of `particles / self.islands` for each of the
    /// galaxies `gals`: column i·|gals| + j is island i of galaxy `gals[j]`, started from
    /// block `first_block + i` of the reference rows cut into `blocks` equal blocks. Disjoint
    /// blocks share no draw, so the islands' disagreement measures the whole Monte Carlo
    /// error.
    #[allow(clippy::too_many_arguments)]
    fn island_set(
        &self,
        gals: &[u32],
        first_block: usize,
        islands: usize,
        blocks: usize,
        reference: &Reference<'_>,
        target: &dyn TemperedTarget,
        rng: &mut dyn RandomSource,
    ) -> Result<(Chain, Vec<SmcDiagnostics>)> {
        let (m, g) = reference.log_like.dims2()?;
        let gs = gals.len();
        let device = reference.position.device();
        let sub_ll;
        let reference = if gs == g && gals.iter().enumerate().all(|(j, &a)| a as usize == j) {
            Reference { ..*reference }
        } else {
            sub_ll = reference
                .log_like
                .contiguous()?
                .index_select(&index_tensor(gals, device)?, 1)?;
            Reference {
                log_like: &sub_ll,
                ..*reference
            }
        };
        let view = Islands::new(target, gals.to_vec());
        let block = |col: usize| -> Vec<u32> {
            let b = first_block + col / gs;
            ((b * m).div_ceil(blocks) as u32..((b + 1) * m).div_ceil(blocks) as u32).collect()
        };
        self.run_population_in_blocks(
            self.config.particles / self.config.islands,
            islands,
            &block,
            &reference,
            &view,
            rng,
        )
    }

    /// More rounds of islands for the galaxies whose pooled median is still uncertain
    /// ([`SmcConfig::rounds`]), after the first round's `chain` and `diag` (columns
    /// i·g + a). Why: the median of a broad or multi-peaked p(z) moves with the weights of
    /// its modes, which carry the Monte Carlo error of a few hundred particles, while a
    /// single peak is reproducible at once (docs/validation.md). The islands' spread tells
    /// the two apart without the truth, so the extra particles go where the error is.
    ///
    /// Round r of a galaxy uses the islands' reference blocks r·k … (r+1)·k − 1 of
    /// k·rounds, so no two rounds share a draw; rounds double (1, 2, 4, …) while the
    /// standard error of the pooled median ([`median_se`] over all its islands so far)
    /// exceeds `round_tolerance`. Every round weighs the same in the pooled chain: kept
    /// state t comes from round t mod R.
    fn run_rounds(
        &self,
        chain: Chain,
        diag: Vec<SmcDiagnostics>,
        reference: &Reference<'_>,
        target: &dyn TemperedTarget,
        rng: &mut dyn RandomSource,
    ) -> Result<(Chain, Vec<SmcDiagnostics>)> {
        let c = &self.config;
        let k = c.islands;
        let g = reference.log_like.dim(1)?;
        let device = reference.position.device().clone();
        let Some(first) = island_monitors(&chain, target, &device)? else {
            return Err(Error::config(
                "sampler.rounds",
                "this target has no monitored quantity (TemperedTarget::monitor)".to_string(),
            ));
        };
        // Galaxy a's islands as (run, column), in round order.
        let mut members: Vec<Vec<(usize, usize)>> = (0..g)
            .map(|a| (0..k).map(|i| (0, i * g + a)).collect())
            .collect();
        let mut draws: Vec<Vec<Vec<f64>>> = (0..g)
            .map(|a| (0..k).map(|i| first[i * g + a].clone()).collect())
            .collect();
        let se = |d: &[Vec<f64>]| median_se(&d.iter().map(|x| x.as_slice()).collect::<Vec<_>>());
        let mut runs = vec![(chain, diag)];
        let mut have = vec![1usize; g];
        let mut r = 1;
        while r < c.rounds {
            let need: Vec<u32> = (0..g)
                .filter(|&a| {
                    have[a] == r
                        && runs[0].1[a].status != SmcStatus::NoFiniteLikelihood
                        && !(se(&draws[a]) <= c.round_tolerance)
                })
                .map(|a| a as u32)
                .collect();
            if need.is_empty() {
                break;
            }
            let (more, more_diag) =
                self.island_set(&need, r * k, r * k, c.rounds * k, reference, target, rng)?;
            let more_draws = island_monitors(&more, target, &device)?
                .expect("the monitor answered for the first round");
            let gs = need.len();
            for (j, &a) in need.iter().enumerate() {
                let a = a as usize;
                for i in 0..r * k {
                    members[a].push((runs.len(), i * gs + j));
                    draws[a].push(more_draws[i * gs + j].clone());
                }
                have[a] = 2 * r;
            }
            runs.push((more, more_diag));
            r *= 2;
        }
        let mut pooled = pool_rounds(&runs, &members, &have, k, g);
        for (a, dg) in pooled.1.iter_mut().enumerate() {
            dg.rounds = have[a];
            dg.median_se = se(&draws[a]);
        }
        Ok(pooled)
    }

    /// [`Smc::run`] with `n` particles per column. The columns are `blocks` × the
    /// reference's g galaxies: column i·g + a is galaxy a (of the target's columns), started
    /// from the reference rows `rows_of(column)` alone (an island, or a stratum).
    fn run_population_in_blocks(
        &self,
        n: usize,
        blocks: usize,
        rows_of: &(dyn Fn(usize) -> Vec<u32> + Sync),
        reference: &Reference<'_>,
        target: &dyn TemperedTarget,
        rng: &mut dyn RandomSource,
    ) -> Result<(Chain, Vec<SmcDiagnostics>)> {
        let mut t = self.temper(n, blocks, rows_of, reference, target, rng)?;
        let chain = self.finish(&mut t, target, rng)?;
        Ok((chain, t.diag))
    }

    /// The tempering of [`Smc::run_population_in_blocks`], up to β = 1 (or a galaxy's stop).
    fn temper(
        &self,
        n: usize,
        blocks: usize,
        rows_of: &(dyn Fn(usize) -> Vec<u32> + Sync),
        reference: &Reference<'_>,
        target: &dyn TemperedTarget,
        rng: &mut dyn RandomSource,
    ) -> Result<Tempered> {
        let c = &self.config;
        let (m, g_ref) = reference.log_like.dims2()?;
        let g = g_ref * blocks;
        let (_, d) = reference.position.dims2()?;
        let device = reference.position.device().clone();
        if m == 0 {
            return Err(Error::Invalid(
                "SMC needs a non-empty reference sample".into(),
            ));
        }
        let mut diag = vec![SmcDiagnostics::new(); g];
        let mut accepted_sum = vec![0.0f64; g];

        // Stage 1: from the shared reference sample, each column from its own rows.
        let ref_ll = host_rows(&sanitize_log_prob(reference.log_like)?)?; // [g_ref][m]
        let ref_weight = reference.host_log_weight()?;
        let uniforms: Vec<f64> = (0..g).map(|_| rng.next_f64()).collect();
        let target_ess = c.ess_target * n as f64;
        let stage1: Vec<Option<(Reweighting, Vec<u32>)>> = (0..g)
            .into_par_iter()
            .map(|col| {
                let rows = rows_of(col);
                let all_ll = &ref_ll[col % g_ref];
                let ll: Vec<f64> = rows.iter().map(|&j| all_ll[j as usize]).collect();
                match &ref_weight {
                    Some(b) => {
                        let b: Vec<f64> = rows.iter().map(|&j| b[j as usize]).collect();
                        next_temperature_weighted(&ll, &b, 1.0, target_ess)
                    }
                    None => next_temperature(&ll, 1.0, target_ess),
                }
                .map(|r| {
                    let idx = systematic_resample(&r.weights, n, uniforms[col]);
                    (r, idx.into_iter().map(|i| rows[i as usize]).collect())
                })
            })
            .collect();
        let mut index = Vec::with_capacity(g);
        for (gal, s) in stage1.iter().enumerate() {
            let rows = rows_of(gal);
            match s {
                Some((r, idx)) => {
                    record_stage(&mut diag[gal], r, rows.len());
                    index.push(idx.clone());
                }
                None => {
                    diag[gal].status = SmcStatus::NoFiniteLikelihood;
                    diag[gal].log_evidence = f64::NEG_INFINITY;
                    index.push(
                        (0..n)
                            .map(|i| rows.get(i % rows.len().max(1)).copied().unwrap_or(0))
                            .collect(),
                    );
                }
            }
        }
        let flat: Vec<u32> = (0..n)
            .flat_map(|i| index.iter().map(move |col| col[i]))
            .collect();
        let flat_t = Tensor::from_vec(flat.clone(), n * g, &device)?;
        let ll_flat: Vec<u32> = flat
            .iter()
            .enumerate()
            .map(|(k, &j)| j * g_ref as u32 + (k % g_ref) as u32)
            .collect();
        let mut all = Particles {
            position: reference
                .position
                .contiguous()?
                .index_select(&flat_t, 0)?
                .reshape((n, g, d))?,
            log_prior: reference
                .log_prior
                .contiguous()?
                .index_select(&flat_t, 0)?
                .reshape((n, g))?,
            log_like: sanitize_log_prob(reference.log_like)?
                .flatten_all()?
                .index_select(&Tensor::from_vec(ll_flat, n * g, &device)?, 0)?
                .reshape((n, g))?,
        };
        let mut beta: Vec<f64> = diag.iter().map(|x| x.beta).collect();
        let mut active: Vec<u32> = (0..g as u32)
            .filter(|&i| diag[i as usize].status != SmcStatus::NoFiniteLikelihood)
            .collect();

        loop {
            if active.is_empty() {
                break;
            }
            // Rejuvenate the active galaxies at their current β.
            let cols = index_tensor(&active, &device)?;
            let sub = all.columns(&cols)?;
            let sub = self.rejuvenate(
                sub,
                &active,
                &beta,
                target,
                rng,
                &mut diag,
                &mut accepted_sum,
            )?;
            all = all.put_columns(&cols, &sub)?;
            // Finished galaxies leave; the rest take their next step.
            let still: Vec<usize> = (0..active.len())
                .filter(|&k| {
                    let gal = active[k] as usize;
                    if beta[gal] >= 1.0 {
                        return false;
                    }
                    if diag[gal].stages >= c.max_stages {
                        diag[gal].status = SmcStatus::MaxStages;
                        return false;
                    }
                    true
                })
                .collect();
            if still.is_empty() {
                break;
            }
            let keep = index_tensor(
                &still.iter().map(|&k| k as u32).collect::<Vec<_>>(),
                &device,
            )?;
            let sub = sub.columns(&keep)?;
            active = still.iter().map(|&k| active[k]).collect();
            let ll = host_rows(&sub.log_like)?;
            let uniforms: Vec<f64> = (0..active.len()).map(|_| rng.next_f64()).collect();
            let steps: Vec<(Reweighting, Vec<u32>)> =
                ll.par_iter()
                    .zip(&uniforms)
                    .zip(&active)
                    .map(|((ll, &u), &gal)| {
                        // Moves never accept a non-finite likelihood, so resampled particles keep
                        // finite ones; a target that breaks this is an error, not a panic.
                        let r = next_temperature(ll, 1.0 - beta[gal as usize], target_ess)
                            .ok_or_else(|| {
                                Error::Invalid(format!(
                                    "SMC: every particle of galaxy {gal} lost its finite likelihood"
                                ))
                            })?;
                        let idx = systematic_resample(&r.weights, n, u);
                        Ok((r, idx))
                    })
                    .collect::<Result<_>>()?;
            let mut index = Vec::with_capacity(active.len());
            for (&gal, (r, idx)) in active.iter().zip(steps) {
                let gal = gal as usize;
                record_stage(&mut diag[gal], &r, n);
                beta[gal] = diag[gal].beta;
                index.push(idx);
            }
            let sub = sub.resample(&index)?;
            all = all.put_columns(&index_tensor(&active, &device)?, &sub)?;
        }
        Ok(Tempered {
            particles: all,
            beta,
            diag,
            accepted_sum,
        })
    }

    /// Final sweeps at β = 1 (or the last β of a stopped galaxy), all states kept, as the
    /// [`Chain`]; books acceptance and the unique fraction into `t.diag`.
    fn finish(
        &self,
        t: &mut Tempered,
        target: &dyn TemperedTarget,
        rng: &mut dyn RandomSource,
    ) -> Result<Chain> {
        let c = &self.config;
        let (n, g, d) = t.particles.position.dims3()?;
        let device = t.particles.position.device().clone();
        let diag = &mut t.diag;
        let beta = &t.beta;
        let accepted_sum = &mut t.accepted_sum;
        let mut all = Particles {
            position: t.particles.position.clone(),
            log_prior: t.particles.log_prior.clone(),
            log_like: t.particles.log_like.clone(),
        };
        let movable: Vec<u32> = (0..g as u32)
            .filter(|&i| diag[i as usize].status != SmcStatus::NoFiniteLikelihood)
            .collect();
        let mut samples = Vec::with_capacity(c.final_sweeps);
        if movable.is_empty() {
            for _ in 0..c.final_sweeps {
                samples.push((all.position.clone(), (&all.log_prior + &all.log_like)?));
            }
        } else {
            let cols = index_tensor(&movable, &device)?;
            let mut sub = all.columns(&cols)?;
            let betas = Tensor::from_vec(
                movable
                    .iter()
                    .map(|&i| beta[i as usize] as f32)
                    .collect::<Vec<_>>(),
                movable.len(),
                &device,
            )?;
            let host_betas: Vec<f64> = movable.iter().map(|&i| beta[i as usize]).collect();
            for _ in 0..c.final_sweeps {
                if c.grid_gibbs > 0 {
                    sub = self.grid_update(sub, &movable, &host_betas, target, rng, diag)?;
                }
                let (next, acc) = self.sweep(sub, &cols, &betas, target, rng)?;
                sub = next;
                let acc = acc.to_dtype(DType::F64)?.mean(0)?.to_vec1::<f64>()?;
                for (k, &gal) in movable.iter().enumerate() {
                    accepted_sum[gal as usize] += acc[k];
                    diag[gal as usize].sweeps += 1;
                }
                all = all.put_columns(&cols, &sub)?;
                samples.push((all.position.clone(), (&all.log_prior + &all.log_like)?));
            }
        }
        // Distinct particles in the last state (equal log-densities ⇔ equal positions here).
        let last = host_rows(&samples[samples.len() - 1].1)?;
        for (gal, lp) in last.iter().enumerate() {
            let mut bits: Vec<u64> = lp.iter().map(|v| v.to_bits()).collect();
            bits.sort_unstable();
            bits.dedup();
            diag[gal].unique_fraction = bits.len() as f64 / n as f64;
            if diag[gal].sweeps > 0 {
                diag[gal].acceptance = accepted_sum[gal] / diag[gal].sweeps as f64;
            }
        }
        let kept = samples.len();
        let mut flat_samples = Vec::with_capacity(kept * n * g * d);
        let mut flat_lp = Vec::with_capacity(kept * n * g);
        for (pos, lp) in &samples {
            flat_samples.extend(pos.flatten_all()?.to_vec1::<f32>()?);
            flat_lp.extend(lp.flatten_all()?.to_vec1::<f32>()?);
        }
        let chain = Chain {
            samples: flat_samples,
            log_prob: flat_lp,
            kept,
            walkers: n,
            galaxies: g,
            dim: d,
            acceptance: diag.iter().map(|x| x.acceptance).collect(),
            config: RunConfig {
                n_steps: kept,
                burn_in: 0,
                thin: 1,
            },
        };
        Ok(chain)
    }

    /// Sweeps at each active galaxy's β until its particles have decorrelated (see the
    /// module docs); galaxies leave the sweep set as they finish.
    #[allow(clippy::too_many_arguments)]
    fn rejuvenate(
        &self,
        mut sub: Particles,
        active: &[u32],
        beta: &[f64],
        target: &dyn TemperedTarget,
        rng: &mut dyn RandomSource,
        diag: &mut [SmcDiagnostics],
        accepted_sum: &mut [f64],
    ) -> Result<Particles> {
        let c = &self.config;
        let device = sub.position.device().clone();
        let start = sub.position.to_dtype(DType::F64)?;
        let betas: Vec<f64> = active.iter().map(|&g| beta[g as usize]).collect();
        for _ in 0..c.grid_gibbs {
            sub = self.grid_update(sub, active, &betas, target, rng, diag)?;
        }
        let mut sweeping: Vec<usize> = (0..active.len()).collect();
        let mut done = vec![0usize; active.len()];
        while !sweeping.is_empty() {
            let local = index_tensor(
                &sweeping.iter().map(|&k| k as u32).collect::<Vec<_>>(),
                &device,
            )?;
            let galaxies = index_tensor(
                &sweeping.iter().map(|&k| active[k]).collect::<Vec<_>>(),
                &device,
            )?;
            let betas = Tensor::from_vec(
                sweeping
                    .iter()
                    .map(|&k| beta[active[k] as usize] as f32)
                    .collect::<Vec<_>>(),
                sweeping.len(),
                &device,
            )?;
            let part = sub.columns(&local)?;
            let (part, acc) = self.sweep(part, &galaxies, &betas, target, rng)?;
            let corr = correlation(&start.index_select(&local, 1)?, &part.position)?;
            sub = sub.put_columns(&local, &part)?;
            let acc = acc.to_dtype(DType::F64)?.mean(0)?.to_vec1::<f64>()?;
            sweeping = sweeping
                .iter()
                .zip(acc.iter().zip(corr))
                .filter_map(|(&k, (a, r))| {
                    let gal = active[k] as usize;
                    accepted_sum[gal] += a;
                    done[k] += 1;
                    diag[gal].sweeps += 1;
                    let more =
                        done[k] < c.min_sweeps || (r > c.max_correlation && done[k] < c.max_sweeps);
                    more.then_some(k)
                })
                .collect();
        }
        Ok(sub)
    }

    /// One griddy-Gibbs update of columns `cols` (galaxy indices) at inverse temperatures
    /// `betas`, when the target has a chart; books its acceptance.
    fn grid_update(
        &self,
        p: Particles,
        cols: &[u32],
        betas: &[f64],
        target: &dyn TemperedTarget,
        rng: &mut dyn RandomSource,
        diag: &mut [SmcDiagnostics],
    ) -> Result<Particles> {
        let Some(chart) = target.grid_chart() else {
            return Ok(p);
        };
        let galaxies = index_tensor(cols, p.position.device())?;
        let eval = |x: &Tensor| target.log_prior_and_like(x, &galaxies);
        let mut uniforms = |k: usize| (0..k).map(|_| rng.next_f64()).collect::<Vec<f64>>();
        // Red/blue halves: each half moves along the ridge fitted to the other.
        let n = p.position.dim(0)?;
        let halves = [(0, n / 2), (n / 2, n - n / 2)];
        let mut parts: Vec<Particles> = Vec::with_capacity(2);
        let mut accepted = Vec::with_capacity(2);
        for (h, &(start, len)) in halves.iter().enumerate() {
            let (o_start, o_len) = halves[1 - h];
            let other = match parts.first() {
                Some(updated) => updated.position.clone(),
                None => p.position.narrow(0, o_start, o_len)?,
            };
            let slopes = ridge_slopes(&chart.to_chart(&other)?.0, chart.axis())?;
            let half = Particles {
                position: p.position.narrow(0, start, len)?,
                log_prior: p.log_prior.narrow(0, start, len)?,
                log_like: p.log_like.narrow(0, start, len)?,
            };
            let (next, acc) = grid_gibbs_update(
                chart,
                &eval,
                &half,
                &galaxies,
                betas,
                &slopes,
                &mut uniforms,
            )?;
            parts.push(next);
            accepted.push(acc);
        }
        let cat = |f: fn(&Particles) -> &Tensor| Tensor::cat(&[f(&parts[0]), f(&parts[1])], 0);
        let next = Particles {
            position: cat(|q| &q.position)?,
            log_prior: cat(|q| &q.log_prior)?,
            log_like: cat(|q| &q.log_like)?,
        };
        let acc = Tensor::cat(&accepted, 0)?;
        let acc = acc.to_dtype(DType::F64)?.mean(0)?.to_vec1::<f64>()?;
        for (&gal, a) in cols.iter().zip(acc) {
            let d = &mut diag[gal as usize];
            let total = if d.grid_updates == 0 {
                0.0
            } else {
                d.grid_acceptance * d.grid_updates as f64
            };
            d.grid_updates += 1;
            d.grid_acceptance = (total + a) / d.grid_updates as f64;
        }
        Ok(next)
    }

    /// One red/blue sweep on π_β = p L^β; returns the new particles and the acceptance
    /// `[n, a]` (f32 0/1).
    fn sweep(
        &self,
        p: Particles,
        galaxies: &Tensor,
        beta: &Tensor,
        target: &dyn TemperedTarget,
        rng: &mut dyn RandomSource,
    ) -> Result<(Particles, Tensor)> {
        let (n, a, d) = p.position.dims3()?;
        let beta = beta.unsqueeze(0)?;
        let tempered = |lp: &Tensor, ll: &Tensor| -> Result<Tensor> {
            sanitize_log_prob(&(lp + ll.broadcast_mul(&beta)?)?)
        };
        let half = |t: &Tensor, first: bool| -> Result<Tensor> {
            let n1 = n / 2;
            Ok(if first {
                t.narrow(0, 0, n1)?
            } else {
                t.narrow(0, n1, n - n1)?
            })
        };
        let mut parts: Vec<Particles> = Vec::with_capacity(2);
        let mut accepted = Vec::with_capacity(2);
        for first in [true, false] {
            let active = Particles {
                position: half(&p.position, first)?,
                log_prior: half(&p.log_prior, first)?,
                log_like: half(&p.log_like, first)?,
            };
            // The second half moves against the already-updated first half.
            let complement = match parts.first() {
                Some(updated) => updated.position.clone(),
                None => half(&p.position, false)?,
            };
            let mv = self.moves.pick(rng);
            let proposal = mv.propose(rng, &active.position, &complement)?;
            let (lp, ll) = target.log_prior_and_like(&proposal.position, galaxies)?;
            let (lp, ll) = (sanitize_log_prob(&lp)?, sanitize_log_prob(&ll)?);
            let accept = metropolis_accept(
                rng,
                &proposal.log_factor,
                &tempered(&lp, &ll)?,
                &tempered(&active.log_prior, &active.log_like)?,
            )?;
            let k = active.position.dim(0)?;
            let accept3 = accept.unsqueeze(2)?.broadcast_as((k, a, d))?;
            parts.push(Particles {
                position: accept3.where_cond(&proposal.position, &active.position)?,
                log_prior: accept.where_cond(&lp, &active.log_prior)?,
                log_like: accept.where_cond(&ll, &active.log_like)?,
            });
            accepted.push(accept.to_dtype(DType::F32)?);
        }
        let cat = |f: fn(&Particles) -> &Tensor| Tensor::cat(&[f(&parts[0]), f(&parts[1])], 0);
        Ok((
            Particles {
                position: cat(|q| &q.position)?,
                log_prior: cat(|q| &q.log_prior)?,
                log_like: cat(|q| &q.log_like)?,
            },
            Tensor::cat(&accepted, 0)?,
        ))
    }
}

/// The k − 1 interior edges that cut the reference rows, sorted by `axis` (`order`), into k
/// intervals of equal `weights`, each edge halfway between two neighbouring values.
fn weighted_edges(order: &[usize], axis: &[f32], weights: &[f64], k: usize) -> Vec<f32> {
    let total: f64 = weights.iter().sum();
    let mut edges = Vec::with_capacity(k - 1);
    let mut cumulative = 0.0;
    let mut next = 1;
    for (pos, &j) in order.iter().enumerate() {
        cumulative += weights[j];
        while next < k && cumulative >= total * next as f64 / k as f64 {
            let after = order.get(pos + 1).map_or(axis[j], |&i| axis[i]);
            edges.push(0.5 * (axis[j] + after));
            next += 1;
        }
    }
    while edges.len() < k - 1 {
        edges.push(f32::INFINITY);
    }
    edges
}

/// The stratum of a value: the number of edges at or below it (intervals [e_{s−1}, e_s)).
fn stratum_of(edges: &[f32], x: f32) -> usize {
    edges.iter().filter(|&&e| e <= x).count()
}

/// A target whose batch columns are strata: column s·g + a is galaxy a of `inner`,
/// restricted to lo[column] ≤ x[axis] < hi[column] (ln p = −∞ outside).
struct Strata<'a> {
    inner: &'a dyn TemperedTarget,
    galaxies: u32,
    axis: usize,
    lo: Tensor,
    hi: Tensor,
}

impl TemperedTarget for Strata<'_> {
    fn log_prior_and_like(&self, position: &Tensor, cols: &Tensor) -> Result<(Tensor, Tensor)> {
        let (lp, ll) = self
            .inner
            .log_prior_and_like(position, &island_galaxies(cols, self.galaxies)?)?;
        let x = position
            .narrow(2, self.axis, 1)?
            .squeeze(2)?
            .to_dtype(DType::F32)?;
        let lo = self.lo.index_select(cols, 0)?.unsqueeze(0)?;
        let hi = self.hi.index_select(cols, 0)?.unsqueeze(0)?;
        let inside = (x.broadcast_ge(&lo)?.to_dtype(DType::U8)?
            * x.broadcast_lt(&hi)?.to_dtype(DType::U8)?)?;
        let outside =
            Tensor::full(f64::NEG_INFINITY, lp.shape(), lp.device())?.to_dtype(lp.dtype())?;
        Ok((inside.where_cond(&lp, &outside)?, ll))
    }
}

/// A target whose batch columns are islands: column j is galaxy `galaxy_of[j mod g]` of
/// `inner`, g = `galaxy_of.len()`.
struct Islands<'a> {
    inner: &'a dyn TemperedTarget,
    chart: Option<IslandChart<'a>>,
    galaxy_of: Vec<u32>,
}

/// The inner target's chart, seen through [`Islands`]' columns.
struct IslandChart<'a> {
    inner: &'a dyn GridChart,
    galaxy_of: Vec<u32>,
}

/// Galaxy of each island column (`u32` on the device), for islands of all g galaxies.
fn island_galaxies(cols: &Tensor, g: u32) -> Result<Tensor> {
    let host: Vec<u32> = cols.to_vec1::<u32>()?.into_iter().map(|c| c % g).collect();
    index_tensor(&host, cols.device())
}

/// Galaxy of each island column (`u32` on the device) through the map `galaxy_of`.
fn mapped_galaxies(cols: &Tensor, galaxy_of: &[u32]) -> Result<Tensor> {
    let g = galaxy_of.len();
    let host: Vec<u32> = cols
        .to_vec1::<u32>()?
        .into_iter()
        .map(|c| galaxy_of[c as usize % g])
        .collect();
    index_tensor(&host, cols.device())
}

impl<'a> Islands<'a> {
    fn new(inner: &'a dyn TemperedTarget, galaxy_of: Vec<u32>) -> Self {
        Self {
            inner,
            chart: inner.grid_chart().map(|inner| IslandChart {
                inner,
                galaxy_of: galaxy_of.clone(),
            }),
            galaxy_of,
        }
    }
}

impl TemperedTarget for Islands<'_> {
    fn log_prior_and_like(&self, position: &Tensor, cols: &Tensor) -> Result<(Tensor, Tensor)> {
        self.inner
            .log_prior_and_like(position, &mapped_galaxies(cols, &self.galaxy_of)?)
    }

    fn grid_chart(&self) -> Option<&dyn GridChart> {
        self.chart.as_ref().map(|c| c as &dyn GridChart)
    }

    fn monitor(&self, position: &Tensor) -> Result<Option<Tensor>> {
        self.inner.monitor(position)
    }
}

impl GridChart for IslandChart<'_> {
    fn to_chart(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.inner.to_chart(x)
    }
    fn from_chart(&self, chi: &Tensor) -> Result<Tensor> {
        self.inner.from_chart(chi)
    }
    fn log_prior_and_like(&self, chi: &Tensor, cols: &Tensor) -> Result<(Tensor, Tensor)> {
        self.inner
            .log_prior_and_like(chi, &mapped_galaxies(cols, &self.galaxy_of)?)
    }
    fn axis(&self) -> usize {
        self.inner.axis()
    }
    fn grid(&self) -> &[f64] {
        self.inner.grid()
    }
    fn grid_chunk(&self) -> usize {
        self.inner.grid_chunk()
    }
}

/// Pool a run over `k` islands × `g` galaxies (column i·g + a is island i of galaxy a) into
/// one chain of k·n particles per galaxy, and combine the islands' diagnostics.
fn pool_islands(
    chain: Chain,
    diag: &[SmcDiagnostics],
    k: usize,
    g: usize,
) -> (Chain, Vec<SmcDiagnostics>) {
    let members: Vec<Vec<(usize, usize)>> = (0..g)
        .map(|a| (0..k).map(|i| (0, i * g + a)).collect())
        .collect();
    pool_rounds(&[(chain, diag.to_vec())], &members, &vec![1; g], k, g)
}

/// Pool rounds of islands into one chain of k·n particles per galaxy: galaxy a's islands
/// are `members[a]` = (run, column of that run's chain), k per round for `rounds[a]`
/// rounds; kept state t of walker block i is island i of round t mod `rounds[a]`, so each
/// round weighs the same. The diagnostics combine all of a galaxy's islands.
fn pool_rounds(
    runs: &[(Chain, Vec<SmcDiagnostics>)],
    members: &[Vec<(usize, usize)>],
    rounds: &[usize],
    k: usize,
    g: usize,
) -> (Chain, Vec<SmcDiagnostics>) {
    let first = &runs[0].0;
    let (kept, n, d) = (first.kept, first.walkers, first.dim);
    let mut samples = vec![0f32; kept * k * n * g * d];
    let mut log_prob = vec![0f32; kept * k * n * g];
    for t in 0..kept {
        for a in 0..g {
            let r = t % rounds[a];
            for i in 0..k {
                let (run, col) = members[a][r * k + i];
                let chain = &runs[run].0;
                let cols = chain.galaxies;
                for p in 0..n {
                    let from = (t * n + p) * cols + col;
                    let to = (t * k * n + i * n + p) * g + a;
                    log_prob[to] = chain.log_prob[from];
                    samples[to * d..(to + 1) * d]
                        .copy_from_slice(&chain.samples[from * d..(from + 1) * d]);
                }
            }
        }
    }
    let pooled = Chain {
        samples,
        log_prob,
        kept,
        walkers: k * n,
        galaxies: g,
        dim: d,
        acceptance: members
            .iter()
            .map(|m| {
                m.iter()
                    .map(|&(run, col)| runs[run].0.acceptance[col])
                    .sum::<f64>()
                    / m.len() as f64
            })
            .collect(),
        config: first.config,
    };
    let combined = (0..g)
        .map(|a| {
            let parts: Vec<&SmcDiagnostics> = members[a]
                .iter()
                .map(|&(run, col)| &runs[run].1[col])
                .collect();
            let count = parts.len() as f64;
            let mean =
                |f: fn(&SmcDiagnostics) -> f64| parts.iter().map(|x| f(x)).sum::<f64>() / count;
            let log_z: Vec<f64> = parts.iter().map(|x| x.log_evidence).collect();
            let log_evidence = match crate::finite_max(&log_z) {
                Some(top) => {
                    top + (log_z.iter().map(|z| (z - top).exp()).sum::<f64>() / count).ln()
                }
                None => f64::NEG_INFINITY,
            };
            let status = parts
                .iter()
                .map(|x| x.status)
                .find(|s| *s != SmcStatus::Converged)
                .unwrap_or(SmcStatus::Converged);
            SmcDiagnostics {
                log_evidence,
                // The mean of k independent estimates: the larger of the first-order error
                // and the islands' own scatter. The first-order error assumes the moves
                // decorrelate the particles; on real galaxies they do not, and the islands'
                // ln Ẑ scatter by nats (docs/validation.md, "How far off is ln Z").
                log_evidence_err: ((parts
                    .iter()
                    .map(|x| x.log_evidence_err.powi(2))
                    .sum::<f64>())
                .sqrt()
                    / count)
                    .max(island_log_evidence_err(&log_z)),
                stages: parts.iter().map(|x| x.stages).max().unwrap_or(0),
                beta: parts.iter().map(|x| x.beta).fold(f64::INFINITY, f64::min),
                final_ess: parts.iter().map(|x| x.final_ess).sum(),
                unique_fraction: mean(|x| x.unique_fraction),
                acceptance: mean(|x| x.acceptance),
                sweeps: parts.iter().map(|x| x.sweeps).sum(),
                grid_acceptance: mean(|x| x.grid_acceptance),
                grid_updates: parts.iter().map(|x| x.grid_updates).sum(),
                island_rhat: island_rhat(&pooled, a, k),
                importance_ess: f64::NAN,
                rounds: 1,
                median_se: f64::NAN,
                status,
            }
        })
        .collect();
    (pooled, combined)
}

/// Standard error of ln Ẑ from the scatter of k independent islands' ln Ẑ_i: sd(ln Ẑ_i)/√k
/// over the finite ones (0 with fewer than 2). On the log scale, so that an island that found
/// e⁵ more mass than the others counts for what it is (the scatter of the Ẑ_i themselves is
/// bounded by √k times their mean).
fn island_log_evidence_err(log_z: &[f64]) -> f64 {
    standard_error(log_z).unwrap_or(0.0)
}

/// sd/√k of the finite values among k (`None` below 2).
fn standard_error(values: &[f64]) -> Option<f64> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let k = finite.len();
    if k < 2 {
        return None;
    }
    let mean = finite.iter().sum::<f64>() / k as f64;
    let var = finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (k as f64 - 1.0);
    Some((var / k as f64).sqrt())
}

/// Each column's kept draws of the target's monitor, sorted (`None` when the target has
/// no monitor).
fn island_monitors(
    chain: &Chain,
    target: &dyn TemperedTarget,
    device: &popcosmos_api::Device,
) -> Result<Option<Vec<Vec<f64>>>> {
    let (kept, n, cols) = (chain.kept, chain.walkers, chain.galaxies);
    let Some(values) = target.monitor(&chain.samples_tensor(device)?)? else {
        return Ok(None);
    };
    let values: Vec<f64> = values
        .to_dtype(DType::F64)?
        .to_device(&popcosmos_api::Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    Ok(Some(
        (0..cols)
            .map(|col| {
                let mut draws: Vec<f64> = (0..kept * n).map(|s| values[s * cols + col]).collect();
                draws.sort_by(f64::total_cmp);
                draws
            })
            .collect(),
    ))
}

/// Standard error of the pooled median of k independent islands' draws (each sorted, equal
/// counts), the larger of two estimates:
/// - sd of the islands' medians / √k;
/// - sd of the islands' CDFs at the pooled median m / √k, over the pooled density at m, the
///   asymptotic error of a quantile (density from the spacing of the pooled 40th and 60th
///   percentiles, Siddiqui 1960). It stays large when m falls between two modes, where
///   the islands' medians can agree by chance while a small change of the mode weights
///   moves m from one mode to the other.
///
/// NaN with fewer than 2 islands.
fn median_se(islands: &[&[f64]]) -> f64 {
    let k = islands.len();
    if k < 2 {
        return f64::NAN;
    }
    let medians: Vec<f64> = islands.iter().map(|x| quantile_sorted(x, 0.5)).collect();
    let mut pooled: Vec<f64> = islands.iter().flat_map(|x| x.iter().copied()).collect();
    pooled.sort_by(f64::total_cmp);
    let m = quantile_sorted(&pooled, 0.5);
    let cdf: Vec<f64> = islands
        .iter()
        .map(|x| x.partition_point(|v| *v <= m) as f64 / x.len() as f64)
        .collect();
    let spacing = quantile_sorted(&pooled, 0.6) - quantile_sorted(&pooled, 0.4);
    let by_medians = standard_error(&medians).unwrap_or(f64::NAN);
    let by_cdf = standard_error(&cdf).unwrap_or(f64::NAN) * spacing / 0.2;
    by_medians.max(by_cdf)
}

/// Quantile q of sorted values (linear interpolation; NaN when empty).
fn quantile_sorted(x: &[f64], q: f64) -> f64 {
    match x.len() {
        0 => f64::NAN,
        1 => x[0],
        n => {
            let h = q * (n - 1) as f64;
            let (lo, frac) = (h.floor() as usize, h - h.floor());
            x[lo] + frac * (x[(lo + 1).min(n - 1)] - x[lo])
        }
    }
}

/// Gelman–Rubin R̂ (Gelman & Rubin 1992) of galaxy `a`'s pooled draws with the k islands as
/// the chains, largest over coordinates: √((N−1)/N + B/W) with B the variance of the
/// island means and W the mean within-island variance (N draws per island).
fn island_rhat(chain: &Chain, a: usize, k: usize) -> f64 {
    let (kept, w, g, d) = (chain.kept, chain.walkers, chain.galaxies, chain.dim);
    let n = w / k;
    let per = (kept * n) as f64;
    let mut worst = f64::NAN;
    for c in 0..d {
        let mut means = vec![0f64; k];
        let mut vars = vec![0f64; k];
        for i in 0..k {
            let x: Vec<f64> = (0..kept)
                .flat_map(|t| (0..n).map(move |p| (t, i * n + p)))
                .map(|(t, p)| chain.samples[((t * w + p) * g + a) * d + c] as f64)
                .collect();
            let m = x.iter().sum::<f64>() / per;
            means[i] = m;
            vars[i] = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (per - 1.0);
        }
        let grand = means.iter().sum::<f64>() / k as f64;
        let between = means.iter().map(|m| (m - grand).powi(2)).sum::<f64>() / (k as f64 - 1.0);
        let within = vars.iter().sum::<f64>() / k as f64;
        if within > 0.0 && within.is_finite() {
            let r = ((per - 1.0) / per + between / within).sqrt();
            if worst.is_nan() || r > worst {
                worst = r;
            }
        }
    }
    worst
}

/// Largest over coordinates of the |correlation| across particles between `a` (f64) and `b`,
/// `[n, g, d]` each → per column g.
fn correlation(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    let b = b.to_dtype(DType::F64)?;
    let centre = |t: &Tensor| -> Result<Tensor> { Ok(t.broadcast_sub(&t.mean_keepdim(0)?)?) };
    let (a, b) = (centre(a)?, centre(&b)?);
    let cov = (&a * &b)?.sum(0)?;
    let norm = (a.sqr()?.sum(0)? * b.sqr()?.sum(0)?)?
        .sqrt()?
        .clamp(1e-300, f64::INFINITY)?;
    Ok((cov / norm)?
        .abs()?
        .max(1)?
        .to_device(&popcosmos_api::Device::Cpu)?
        .to_vec1::<f64>()?)
}

/// Book one reweighting step of `n` draws into a galaxy's diagnostics.
fn record_stage(diag: &mut SmcDiagnostics, r: &Reweighting, n: usize) {
    diag.stages += 1;
    diag.beta = if diag.beta + r.delta_beta >= 1.0 - 1e-12 {
        1.0
    } else {
        diag.beta + r.delta_beta
    };
    diag.log_evidence += r.log_mean_weight;
    let var = diag.log_evidence_err.powi(2) + (1.0 / r.ess - 1.0 / n as f64).max(0.0);
    diag.log_evidence_err = var.sqrt();
    diag.final_ess = r.ess;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain over 2 islands × 2 galaxies (columns i·2 + a), 1 kept state, 2 particles
    /// each, d = 1, whose value encodes (island, particle, galaxy).
    fn island_chain() -> (Chain, Vec<SmcDiagnostics>) {
        let (k, n, g) = (2, 2, 2);
        let mut samples = Vec::new();
        for p in 0..n {
            for i in 0..k {
                for a in 0..g {
                    samples.push((100 * i + 10 * p + a) as f32);
                }
            }
        }
        let mut diag = vec![SmcDiagnostics::new(); k * g];
        for (j, d) in diag.iter_mut().enumerate() {
            d.log_evidence = -(j as f64);
            d.log_evidence_err = 0.3;
            d.sweeps = 10;
        }
        let chain = Chain {
            log_prob: samples.clone(),
            samples,
            kept: 1,
            walkers: n,
            galaxies: k * g,
            dim: 1,
            acceptance: vec![0.1, 0.2, 0.3, 0.4],
            config: RunConfig {
                n_steps: 1,
                burn_in: 0,
                thin: 1,
            },
        };
        (chain, diag)
    }

    #[test]
    fn islands_pool_into_one_population_per_galaxy() {
        let (chain, diag) = island_chain();
        let (pooled, combined) = pool_islands(chain, &diag, 2, 2);
        assert_eq!((pooled.walkers, pooled.galaxies), (4, 2));
        // Walker w = i·n + p of galaxy a holds 100 i + 10 p + a.
        for w in 0..4 {
            for a in 0..2 {
                let (i, p) = (w / 2, w % 2);
                assert_eq!(pooled.samples[w * 2 + a], (100 * i + 10 * p + a) as f32);
                assert_eq!(pooled.log_prob[w * 2 + a], (100 * i + 10 * p + a) as f32);
            }
        }
        // Galaxy 0 pools columns 0 and 2, galaxy 1 columns 1 and 3.
        assert!((pooled.acceptance[0] - 0.2).abs() < 1e-12);
        assert!((pooled.acceptance[1] - 0.3).abs() < 1e-12);
        let want = ((1.0 + (-2f64).exp()) / 2.0).ln();
        assert!((combined[0].log_evidence - want).abs() < 1e-12);
        // Islands' ln Z 0 and −2: sd √2, standard error √2/√2 = 1, above the first-order
        // 0.3/√2.
        assert!((combined[0].log_evidence_err - 1.0).abs() < 1e-12);
        assert_eq!(combined[0].sweeps, 20);
        // Islands that agree keep the first-order error.
        let mut close = diag.clone();
        close[2].log_evidence = -0.1;
        let (_, combined) = pool_islands(island_chain().0, &close, 2, 2);
        assert!((combined[0].log_evidence_err - 0.3 / 2f64.sqrt()).abs() < 1e-12);
    }

    /// A run of `cols` columns, 2 kept states × 1 particle, d = 1: value 1000 run + 100 t + col.
    fn run_of(run: usize, cols: usize) -> (Chain, Vec<SmcDiagnostics>) {
        let samples: Vec<f32> = (0..2)
            .flat_map(|t| (0..cols).map(move |c| (1000 * run + 100 * t + c) as f32))
            .collect();
        let mut diag = vec![SmcDiagnostics::new(); cols];
        for (c, d) in diag.iter_mut().enumerate() {
            d.log_evidence = -((run * 10 + c) as f64);
        }
        let chain = Chain {
            log_prob: samples.clone(),
            samples,
            kept: 2,
            walkers: 1,
            galaxies: cols,
            dim: 1,
            acceptance: (0..cols).map(|c| (run * 10 + c) as f64).collect(),
            config: RunConfig {
                n_steps: 2,
                burn_in: 0,
                thin: 1,
            },
        };
        (chain, diag)
    }

    /// Two galaxies, 2 islands per round: galaxy 0 stays at 1 round (run 0, columns 0 and
    /// 2), galaxy 1 gets a second round from run 1 (its only galaxy, columns 0 and 1). Kept
    /// state t of galaxy 1 comes from round t mod 2; galaxy 0's from its one round.
    #[test]
    fn rounds_pool_each_round_into_its_own_kept_states() {
        let runs = [run_of(0, 4), run_of(1, 2)];
        let members = vec![vec![(0, 0), (0, 2)], vec![(0, 1), (0, 3), (1, 0), (1, 1)]];
        let (pooled, diag) = pool_rounds(&runs, &members, &[1, 2], 2, 2);
        assert_eq!((pooled.kept, pooled.walkers, pooled.galaxies), (2, 2, 2));
        // [t][walker][galaxy]
        let at = |t: usize, w: usize, a: usize| pooled.samples[(t * 2 + w) * 2 + a];
        assert_eq!([at(0, 0, 0), at(0, 1, 0)], [0.0, 2.0]);
        assert_eq!([at(1, 0, 0), at(1, 1, 0)], [100.0, 102.0]);
        assert_eq!([at(0, 0, 1), at(0, 1, 1)], [1.0, 3.0]);
        assert_eq!([at(1, 0, 1), at(1, 1, 1)], [1100.0, 1101.0]);
        // Galaxy 1 combines all 4 islands: acceptance mean of 1, 3, 10, 11; ln Z the
        // log-mean of e^-1, e^-3, e^-10, e^-11.
        assert!((pooled.acceptance[1] - 25.0 / 4.0).abs() < 1e-12);
        let want = ([-1f64, -3.0, -10.0, -11.0]
            .iter()
            .map(|z| z.exp())
            .sum::<f64>()
            / 4.0)
            .ln();
        assert!((diag[1].log_evidence - want).abs() < 1e-12);
        assert!((pooled.acceptance[0] - 1.0).abs() < 1e-12);
    }

    /// The median's standard error by hand. Two islands {0, 1, 2, 3} and {1, 2, 3, 4}:
    /// medians 1.5 and 2.5 (sd √0.5, error 0.5); pooled median 2, CDFs there 0.75 and 0.5
    /// (error 0.125), pooled 40th / 60th percentiles 1.8 / 2.2 (density 0.2/0.4): 0.25;
    /// the larger is 0.5. Two modes: island c holds 3 of 5 draws at −1, island d 3 of 5 at
    /// +1.1; medians −1 and 1.1 (error 1.05); the pooled median 0 lies between the modes,
    /// CDFs 0.6 and 0.4 there (error 0.1), 40th / 60th percentiles −1 / 1: 0.1 × 2/0.2 = 1.
    #[test]
    fn median_error_by_hand() {
        let a = [0.0, 1.0, 2.0, 3.0];
        let b = [1.0, 2.0, 3.0, 4.0];
        assert!((median_se(&[&a, &b]) - 0.5).abs() < 1e-12);
        assert!(median_se(&[&a]).is_nan());
        let c = [-1.0, -1.0, -1.0, 1.0, 1.0];
        let d = [-1.1, -1.1, 1.1, 1.1, 1.1];
        let se = median_se(&[&c, &d]);
        assert!((se - 1.05).abs() < 1e-12, "{se}");
        assert!((quantile_sorted(&[0.0, 1.0, 2.0, 3.0], 0.4) - 1.2).abs() < 1e-12);
    }

    #[test]
    fn island_rhat_is_gelman_rubin_across_islands() {
        // Island 0 of galaxy 0 holds 0, 10 and island 1 holds 100, 110: N = 2 per island,
        // W = 50, B (variance of the means 5 and 105) = 5000: R̂ = √(1/2 + 100).
        let (chain, diag) = island_chain();
        let (pooled, combined) = pool_islands(chain, &diag, 2, 2);
        assert!((combined[0].island_rhat - (0.5f64 + 100.0).sqrt()).abs() < 1e-9);
        assert!((island_rhat(&pooled, 1, 2) - combined[1].island_rhat).abs() < 1e-12);
        // Identical islands: R̂ = √((N − 1)/N).
        let mut same = pooled.clone();
        for w in 2..4 {
            same.samples[w * 2] = same.samples[(w - 2) * 2];
        }
        assert!((island_rhat(&same, 0, 2) - 0.5f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn incremental_weights_are_exact() {
        let ll = [0.0, (2.0f64).ln(), f64::NEG_INFINITY, (3.0f64).ln()];
        let (w, log_mean, ess) = incremental_weights(&ll, 1.0).unwrap();
        // weights 1, 2, 0, 3 → sum 6, mean 6/4, ESS 36/14.
        assert!((log_mean - (1.5f64).ln()).abs() < 1e-12);
        assert!((ess - 36.0 / 14.0).abs() < 1e-12);
        assert!((w[1] - 2.0 / 6.0).abs() < 1e-12 && w[2] == 0.0);
        assert!(incremental_weights(&[f64::NAN, f64::NEG_INFINITY], 1.0).is_none());
    }

    #[test]
    fn bisection_hits_the_target_ess() {
        let ll: Vec<f64> = (0..1000)
            .map(|i| -0.5 * (i as f64 / 100.0).powi(2))
            .collect();
        let r = next_temperature(&ll, 1.0, 500.0).unwrap();
        assert!(r.delta_beta < 1.0);
        assert!((r.ess - 500.0).abs() < 1e-6, "ESS {}", r.ess);
        // Reachable target: the whole step.
        let r = next_temperature(&ll, 1e-6, 500.0).unwrap();
        assert_eq!(r.delta_beta, 1e-6);
    }

    /// The bisection that skips rows of exactly zero weight picks the same step, bit for
    /// bit, as one that sums every row (a library spread over 10⁵ nats, with −∞ rows).
    #[test]
    fn bisection_skipping_weightless_rows_is_exact() {
        let brute = |ll: &[f64], target: f64| -> f64 {
            let (mut lo, mut hi) = (0.0, 1.0);
            for _ in 0..60 {
                let mid = 0.5 * (lo + hi);
                if incremental_weights(ll, mid).unwrap().2 >= target {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            if lo > 0.0 { lo } else { hi }
        };
        let ll: Vec<f64> = (0..20_000u64)
            .map(|i| {
                if i % 7 == 3 {
                    f64::NEG_INFINITY
                } else {
                    // Deterministic spread from −1e5 to 0 with a dense top.
                    let u = ((i * 2_654_435_761) % 1_000_003) as f64 / 1_000_003.0;
                    -1e5 * u.powi(6)
                }
            })
            .collect();
        for target in [2.0, 64.0, 1000.0] {
            let r = next_temperature(&ll, 1.0, target).unwrap();
            assert_eq!(
                r.delta_beta.to_bits(),
                brute(&ll, target).to_bits(),
                "{target}"
            );
        }
    }

    /// Draws from q = 𝒩(0, 2²) with weights p/q, p = 𝒩(0, 1), L = 𝒩(1; x, 0.5²): the β = 1
    /// evidence factor is ln ∫ p L = ln 𝒩(1; 0, 1.25) and the weighted mean of x is the
    /// posterior's, 0.8. Constant weights reproduce the unweighted step.
    #[test]
    fn importance_weighted_reference_gives_the_prior_evidence() {
        use popcosmos_api::{HostRng, RandomSource};
        let mut rng = HostRng::seed_from_u64(5);
        let m = 400_000;
        let x: Vec<f64> = rng
            .normal(&popcosmos_api::Shape::from(m), &popcosmos_api::Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(|v| 2.0 * v as f64)
            .collect();
        let ln_norm =
            |x: f64, var: f64| -0.5 * ((2.0 * std::f64::consts::PI * var).ln() + x * x / var);
        let ll: Vec<f64> = x.iter().map(|&v| ln_norm(1.0 - v, 0.25)).collect();
        // Off by a constant on purpose: the factor is self-normalised.
        let b: Vec<f64> = x
            .iter()
            .map(|&v| ln_norm(v, 1.0) - ln_norm(v, 4.0) + 3.0)
            .collect();
        let r = next_temperature_weighted(&ll, &b, 1.0, 0.0).unwrap();
        assert_eq!(r.delta_beta, 1.0);
        let truth = ln_norm(1.0, 1.25);
        assert!(
            (r.log_mean_weight - truth).abs() < 0.01,
            "{} vs {truth}",
            r.log_mean_weight
        );
        let mean: f64 = r.weights.iter().zip(&x).map(|(w, v)| w * v).sum();
        assert!((mean - 0.8).abs() < 0.01, "{mean}");
        // An ESS target forces a step below 1, and the same ESS as the unweighted bisection
        // on draws whose weights are all equal.
        let flat = vec![-2.0; m];
        let a = next_temperature_weighted(&ll, &flat, 1.0, 300_000.0).unwrap();
        let u = next_temperature(&ll, 1.0, 300_000.0).unwrap();
        assert!((a.delta_beta - u.delta_beta).abs() < 1e-9 * u.delta_beta);
        assert!((a.log_mean_weight - u.log_mean_weight).abs() < 1e-9);
        assert!((a.ess - 300_000.0).abs() < 1.0, "{}", a.ess);
        let w = next_temperature_weighted(&ll, &b, 1.0, 200_000.0).unwrap();
        assert!(
            w.delta_beta < 1.0 && (w.ess - 200_000.0).abs() < 1.0,
            "{} {}",
            w.delta_beta,
            w.ess
        );
    }

    /// Edges split the sorted values into equal weight, halfway between neighbours; a value
    /// on an edge belongs to the stratum above it.
    #[test]
    fn strata_edges_hold_equal_weight() {
        let axis: Vec<f32> = vec![5.0, 1.0, 3.0, 2.0, 4.0, 6.0];
        let mut order: Vec<usize> = (0..6).collect();
        order.sort_by(|&i, &j| axis[i].total_cmp(&axis[j]));
        let even = weighted_edges(&order, &axis, &[1.0; 6], 3);
        assert_eq!(even, vec![2.5, 4.5]);
        // All the weight on 2 and 6: the first edge falls just above 2, the second on 6 (the
        // last value), so 6 opens the last stratum and the middle one holds no weight.
        let w = [0.0, 0.0, 0.0, 0.5, 0.0, 0.5];
        let skew = weighted_edges(&order, &axis, &w, 3);
        assert_eq!(skew, vec![2.5, 6.0]);
        assert_eq!(stratum_of(&skew, 6.0), 2);
        assert_eq!(stratum_of(&even, 2.5), 1);
        assert_eq!(stratum_of(&even, 2.4), 0);
        assert_eq!(stratum_of(&even, 9.0), 2);
    }

    #[test]
    fn systematic_resampling_counts_are_within_one_of_n_w() {
        let w = [0.1, 0.25, 0.05, 0.6];
        for u in [0.0, 0.3, 0.999] {
            let idx = systematic_resample(&w, 40, u);
            for (j, wj) in w.iter().enumerate() {
                let count = idx.iter().filter(|&&i| i as usize == j).count() as f64;
                assert!(
                    (count - 40.0 * wj).abs() <= 1.0,
                    "u {u}, index {j}: {count}"
                );
            }
        }
    }
}
