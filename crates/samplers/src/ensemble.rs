//! Affine-invariant ensemble sampler (Goodman & Weare 2010), parallel red/blue version of
//! Foreman-Mackey+13, with emcee-style pluggable moves.
//!
//! The walkers `[walkers, galaxies, dim]` are split into two halves along the walker axis.
//! One [`EnsembleSampler`] step updates the first half against the second, then the second
//! against the *updated* first. Each half-step draws one [`Move`] by weight, so
//! `EnsembleSampler::new(vec![(Box::new(DifferentialEvolutionMove::default()), 0.8),
//! (Box::new(StretchMove::default()), 0.2)])` mixes moves like emcee's
//! `[(DEMove(), 0.8), (StretchMove(), 0.2)]`.
//!
//! Every galaxy is an independent target: partner indices are shared across the galaxy
//! axis (one draw per walker, as in emcee), everything else — stretch factors,
//! acceptance — is drawn per (walker, galaxy).

use popcosmos_api::{Error, LogDensity, RandomSource, Result, Sampler, Tensor};

use crate::{ChainState, StepInfo, eval_log_prob, sanitize_log_prob};

/// A proposal for the moving half of the ensemble.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// Proposed positions `[n, galaxies, dim]`.
    pub position: Tensor,
    /// log of the proposal-density ratio q(x|y)/q(y|x) (including any Jacobian), added to
    /// ln P(y) − ln P(x) in the Metropolis test; `[n, galaxies]`.
    pub log_factor: Tensor,
}

/// An ensemble move: proposes new positions for the active half from the complementary one.
pub trait Move: Send + Sync {
    /// Short name reported in [`EnsembleInfo`].
    fn name(&self) -> &str;
    /// `active` is `[n, galaxies, dim]`, `complement` `[m, galaxies, dim]`.
    fn propose(
        &self,
        rng: &mut dyn RandomSource,
        active: &Tensor,
        complement: &Tensor,
    ) -> Result<Proposal>;
}

/// Goodman & Weare stretch move: y = x_j + z (x − x_j), g(z) ∝ 1/√z on [1/a, a].
#[derive(Debug, Clone, Copy)]
pub struct StretchMove {
    /// Scale parameter a > 1 (Foreman-Mackey+13 use 2).
    pub a: f64,
}

impl Default for StretchMove {
    fn default() -> Self {
        Self { a: 2.0 }
    }
}

impl Move for StretchMove {
    fn name(&self) -> &str {
        "stretch"
    }

    fn propose(
        &self,
        rng: &mut dyn RandomSource,
        active: &Tensor,
        complement: &Tensor,
    ) -> Result<Proposal> {
        let (n, g, d) = active.dims3()?;
        let m = complement.dim(0)?;
        let device = active.device();
        // One partner per walker, shared across galaxies.
        let idx = Tensor::from_vec(rng.indices(n, m), n, device)?;
        let partner = complement.index_select(&idx, 0)?;
        // z = ((a − 1) u + 1)² / a has density ∝ 1/√z on [1/a, a].
        let u = rng.uniform(&(n, g).into(), device)?;
        let z = u
            .affine(self.a - 1.0, 1.0)?
            .sqr()?
            .affine(1.0 / self.a, 0.0)?;
        let diff = (active - &partner)?;
        let position = partner.add(&diff.broadcast_mul(&z.unsqueeze(2)?)?)?;
        // Accept with z^(d−1) P(y)/P(x); kept in logs (no f32 overflow of z^(d−1)).
        let log_factor = z.log()?.affine((d as f64) - 1.0, 0.0)?;
        Ok(Proposal {
            position,
            log_factor,
        })
    }
}

/// Differential-evolution move (ter Braak 2006; emcee's `DEMove`):
/// y = x + γ (1 + σ ε) (x_j − x_k) with j ≠ k from the complementary half, ε ~ 𝒩(0, 1).
#[derive(Debug, Clone, Copy)]
pub struct DifferentialEvolutionMove {
    /// Scale γ; `None` uses the optimal 2.38/√(2d).
    pub gamma: Option<f64>,
    /// Relative jitter of γ.
    pub sigma: f64,
}

impl Default for DifferentialEvolutionMove {
    fn default() -> Self {
        Self {
            gamma: None,
            sigma: 1e-5,
        }
    }
}

impl Move for DifferentialEvolutionMove {
    fn name(&self) -> &str {
        "differential_evolution"
    }

    fn propose(
        &self,
        rng: &mut dyn RandomSource,
        active: &Tensor,
        complement: &Tensor,
    ) -> Result<Proposal> {
        let (n, g, d) = active.dims3()?;
        let m = complement.dim(0)?;
        if m < 2 {
            return Err(Error::Invalid(
                "differential-evolution move needs at least 2 walkers in each half".into(),
            ));
        }
        let device = active.device();
        // Two distinct partners per walker: k is drawn from the m − 1 indices other than j.
        let first = rng.indices(n, m);
        let second: Vec<u32> = rng
            .indices(n, m - 1)
            .into_iter()
            .zip(&first)
            .map(|(k, &j)| if k >= j { k + 1 } else { k })
            .collect();
        let first = Tensor::from_vec(first, n, device)?;
        let second = Tensor::from_vec(second, n, device)?;
        let diff = (complement.index_select(&first, 0)? - complement.index_select(&second, 0)?)?;
        let gamma0 = self.gamma.unwrap_or(2.38 / (2.0 * d as f64).sqrt());
        let eps = rng.normal(&(n, g).into(), device)?;
        let gamma = eps.affine(gamma0 * self.sigma, gamma0)?;
        let position = active.add(&diff.broadcast_mul(&gamma.unsqueeze(2)?)?)?;
        let log_factor = Tensor::zeros((n, g), active.dtype(), device)?;
        Ok(Proposal {
            position,
            log_factor,
        })
    }
}

/// The Metropolis–Hastings test for `[n, galaxies]` proposals: accept (u8 mask) where
/// ln u < log_factor + ln P(y) − ln P(x). A −∞ proposal is never accepted, even from a −∞
/// position (−∞ − −∞ is NaN, mapped to −∞); a −∞ position accepts any finite proposal.
pub(crate) fn metropolis_accept(
    rng: &mut dyn RandomSource,
    log_factor: &Tensor,
    proposed_lp: &Tensor,
    current_lp: &Tensor,
) -> Result<Tensor> {
    let ln_u = rng
        .uniform(proposed_lp.shape(), proposed_lp.device())?
        .log()?;
    let log_ratio = sanitize_log_prob(&((log_factor + proposed_lp)? - current_lp)?)?;
    let finite = proposed_lp.gt(f64::NEG_INFINITY)?;
    Ok(ln_u.lt(&log_ratio)?.mul(&finite)?)
}

/// State of the ensemble: positions and their cached log-densities.
#[derive(Debug, Clone)]
pub struct EnsembleState {
    /// `[walkers, galaxies, dim]`.
    pub position: Tensor,
    /// `[walkers, galaxies]`, NaN mapped to −∞.
    pub log_prob: Tensor,
}

/// What one ensemble step did.
#[derive(Debug, Clone)]
pub struct EnsembleInfo {
    /// `[walkers, galaxies]` f32, 1 where the walker moved.
    pub accepted: Tensor,
    /// Name of the move used for the first and for the second half.
    pub move_names: [String; 2],
}

impl ChainState for EnsembleState {
    fn position(&self) -> &Tensor {
        &self.position
    }
    fn log_prob(&self) -> &Tensor {
        &self.log_prob
    }
}

impl StepInfo for EnsembleInfo {
    fn accepted(&self) -> &Tensor {
        &self.accepted
    }
}

/// The ensemble kernel: a weighted list of moves.
pub struct EnsembleSampler {
    /// Moves and their (positive, not necessarily normalised) weights.
    pub moves: Vec<(Box<dyn Move>, f64)>,
}

impl Default for EnsembleSampler {
    fn default() -> Self {
        Self::stretch()
    }
}

impl EnsembleSampler {
    /// A sampler mixing `moves` by weight; weights must be finite and positive.
    pub fn new(moves: Vec<(Box<dyn Move>, f64)>) -> Result<Self> {
        if moves.is_empty() {
            return Err(Error::Invalid(
                "ensemble sampler needs at least one move".into(),
            ));
        }
        if moves.iter().any(|(_, w)| !(w.is_finite() && *w > 0.0)) {
            return Err(Error::Invalid(
                "ensemble move weights must be finite and > 0".into(),
            ));
        }
        Ok(Self { moves })
    }

    /// The reference sampler: the stretch move with a = 2.
    pub fn stretch() -> Self {
        Self {
            moves: vec![(Box::new(StretchMove::default()), 1.0)],
        }
    }

    /// Draw one move by weight.
    pub(crate) fn pick(&self, rng: &mut dyn RandomSource) -> &dyn Move {
        if self.moves.len() == 1 {
            return self.moves[0].0.as_ref();
        }
        let total: f64 = self.moves.iter().map(|(_, w)| w).sum();
        let mut u = rng.next_f64() * total;
        for (mv, w) in &self.moves {
            if u < *w {
                return mv.as_ref();
            }
            u -= w;
        }
        self.moves[self.moves.len() - 1].0.as_ref()
    }

    /// Move `active` against `complement`; returns new positions, log-probs and the 0/1
    /// acceptance `[n, galaxies]`.
    fn half_step(
        &self,
        mv: &dyn Move,
        rng: &mut dyn RandomSource,
        active: &Tensor,
        active_log_prob: &Tensor,
        complement: &Tensor,
        target: &dyn LogDensity,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (n, g, d) = active.dims3()?;
        let proposal = mv.propose(rng, active, complement)?;
        let proposed_lp = eval_log_prob(target, &proposal.position)?;
        let accept = metropolis_accept(rng, &proposal.log_factor, &proposed_lp, active_log_prob)?;
        let accept3 = accept.unsqueeze(2)?.broadcast_as((n, g, d))?;
        let position = accept3.where_cond(&proposal.position, active)?;
        let log_prob = accept.where_cond(&proposed_lp, active_log_prob)?;
        Ok((position, log_prob, accept.to_dtype(active.dtype())?))
    }
}

impl Sampler for EnsembleSampler {
    type State = EnsembleState;
    type Info = EnsembleInfo;

    fn init(&self, position: Tensor, target: &dyn LogDensity) -> Result<EnsembleState> {
        let (walkers, _, _) = position.dims3()?;
        if walkers < 4 {
            return Err(Error::Invalid(format!(
                "ensemble sampler needs at least 4 walkers, got {walkers}"
            )));
        }
        let log_prob = eval_log_prob(target, &position)?;
        Ok(EnsembleState { position, log_prob })
    }

    fn step(
        &self,
        rng: &mut dyn RandomSource,
        state: EnsembleState,
        target: &dyn LogDensity,
    ) -> Result<(EnsembleState, EnsembleInfo)> {
        let walkers = state.position.dim(0)?;
        let n1 = walkers / 2;
        let n2 = walkers - n1;
        let s1 = state.position.narrow(0, 0, n1)?;
        let s2 = state.position.narrow(0, n1, n2)?;
        let lp1 = state.log_prob.narrow(0, 0, n1)?;
        let lp2 = state.log_prob.narrow(0, n1, n2)?;

        let mv1 = self.pick(rng);
        let (s1, lp1, a1) = self.half_step(mv1, rng, &s1, &lp1, &s2, target)?;
        let mv2 = self.pick(rng);
        let (s2, lp2, a2) = self.half_step(mv2, rng, &s2, &lp2, &s1, target)?;

        let state = EnsembleState {
            position: Tensor::cat(&[&s1, &s2], 0)?,
            log_prob: Tensor::cat(&[&lp1, &lp2], 0)?,
        };
        let info = EnsembleInfo {
            accepted: Tensor::cat(&[&a1, &a2], 0)?,
            move_names: [mv1.name().to_string(), mv2.name().to_string()],
        };
        Ok((state, info))
    }
}
