//! Hamiltonian Monte Carlo over `[walkers, galaxies, dim]` positions, every (walker, galaxy)
//! an independent chain.
//!
//! Gradients come from [`LogDensity::grad_log_density`] (candle autograd by default). The
//! kernel runs a fixed number of leapfrog steps with a step size per galaxy (`[galaxies]`,
//! adapted on the walker-mean acceptance) or per chain (`[walkers, galaxies]`), a unit or
//! diagonal mass matrix, and a Metropolis test per chain. During the first `adapt_steps`
//! steps the step size is tuned by dual averaging (Hoffman & Gelman 2014, §3.2.1) towards
//! `target_accept`; at the end of warm-up it is frozen at the averaged value ε̄.
//!
//! The kernel is pure: the adaptation state travels in [`HmcState`].

use popcosmos_api::{DType, Error, LogDensity, RandomSource, Result, Sampler, Tensor};

use crate::{ChainState, StepInfo, sanitize_log_prob};

/// Energy error above which a trajectory counts as divergent (as in Stan).
const DIVERGENCE_THRESHOLD: f64 = 1000.0;

/// The HMC kernel's settings.
#[derive(Debug, Clone)]
pub struct Hmc {
    /// Initial step size (used by [`Sampler::init`]).
    pub step_size: f64,
    /// Leapfrog steps per iteration.
    pub n_leapfrog: usize,
    /// Diagonal inverse mass matrix M⁻¹ broadcastable to `[walkers, galaxies, dim]` (e.g.
    /// `[dim]` or `[galaxies, dim]`); `None` is the unit matrix. Setting it to the posterior
    /// variances is the usual choice.
    pub inverse_mass: Option<Tensor>,
    /// Number of warm-up steps with dual-averaging adaptation (0 = no adaptation).
    pub adapt_steps: usize,
    /// Target mean acceptance probability of the adaptation.
    pub target_accept: f64,
    /// Adapt one step size per chain `[walkers, galaxies]` instead of per galaxy.
    pub step_size_per_chain: bool,
    /// Relative jitter of the step size per chain and step, ε (1 + j (2u − 1)); breaks the
    /// periodicity of fixed-length trajectories. 0 disables it.
    pub step_size_jitter: f64,
}

impl Hmc {
    /// A non-adapting kernel with unit mass matrix.
    pub fn new(step_size: f64, n_leapfrog: usize) -> Self {
        Self {
            step_size,
            n_leapfrog,
            inverse_mass: None,
            adapt_steps: 0,
            target_accept: 0.8,
            step_size_per_chain: false,
            step_size_jitter: 0.0,
        }
    }

    /// Adapt the step size for `adapt_steps` warm-up steps towards `target_accept`.
    pub fn with_adaptation(mut self, adapt_steps: usize, target_accept: f64) -> Self {
        self.adapt_steps = adapt_steps;
        self.target_accept = target_accept;
        self
    }

    /// Use a diagonal inverse mass matrix (broadcastable to `[walkers, galaxies, dim]`).
    pub fn with_inverse_mass(mut self, inverse_mass: Tensor) -> Self {
        self.inverse_mass = Some(inverse_mass);
        self
    }

    /// Jitter the step size by a relative amount `jitter` per chain and step.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.step_size_jitter = jitter;
        self
    }

    /// Keep one step size per chain `[walkers, galaxies]` instead of one per galaxy.
    pub fn per_chain(mut self) -> Self {
        self.step_size_per_chain = true;
        self
    }

    /// Start from `position` with an explicit step-size tensor (`[galaxies]` or
    /// `[walkers, galaxies]`).
    pub fn init_with_step_size(
        &self,
        position: Tensor,
        step_size: Tensor,
        target: &dyn LogDensity,
    ) -> Result<HmcState> {
        let (walkers, galaxies, _) = position.dims3()?;
        let ok = match step_size.dims() {
            [g] => *g == galaxies,
            [w, g] => *w == walkers && *g == galaxies,
            _ => false,
        };
        if !ok {
            return Err(Error::shape(
                "HMC step size",
                format!("[galaxies] or [walkers, galaxies] = [{walkers}, {galaxies}]"),
                step_size.dims(),
            ));
        }
        let step_size = step_size.to_dtype(position.dtype())?;
        let (log_prob, grad) = target.grad_log_density(&position)?;
        let grad = grad.detach();
        let log_prob = sanitize_log_prob(&log_prob)?;
        let adaptation = DualAveraging::new(&step_size)?;
        Ok(HmcState {
            position,
            log_prob,
            grad,
            step_size,
            adaptation,
            iteration: 0,
        })
    }

    fn inverse_mass(&self, like: &Tensor) -> Result<Option<Tensor>> {
        match &self.inverse_mass {
            None => Ok(None),
            Some(m) => Ok(Some(m.to_dtype(like.dtype())?.broadcast_as(like.shape())?)),
        }
    }
}

/// Dual-averaging state (Hoffman & Gelman 2014, Algorithm 5), one entry per step size.
#[derive(Debug, Clone)]
pub struct DualAveraging {
    /// μ = ln(10 ε₀).
    pub mu: Tensor,
    /// Running average H̄ of (δ − α).
    pub h_bar: Tensor,
    /// ln ε̄, the iterate average used after warm-up.
    pub log_step_avg: Tensor,
}

impl DualAveraging {
    const GAMMA: f64 = 0.05;
    const T0: f64 = 10.0;
    const KAPPA: f64 = 0.75;

    fn new(step_size: &Tensor) -> Result<Self> {
        Ok(Self {
            mu: step_size.affine(10.0, 0.0)?.log()?,
            h_bar: step_size.zeros_like()?,
            log_step_avg: step_size.zeros_like()?,
        })
    }

    /// One update at iteration `t` (1-based) with acceptance statistic `accept_stat`;
    /// returns the next step size.
    fn update(&mut self, t: usize, accept_stat: &Tensor, target: f64) -> Result<Tensor> {
        let t = t as f64;
        let w = 1.0 / (t + Self::T0);
        // H̄ ← (1 − w) H̄ + w (δ − α)
        self.h_bar = (self.h_bar.affine(1.0 - w, w * target)? - accept_stat.affine(w, 0.0)?)?;
        // ln ε = μ − √t/γ H̄
        let log_step = (&self.mu - self.h_bar.affine(t.sqrt() / Self::GAMMA, 0.0)?)?;
        // ln ε̄ ← η ln ε + (1 − η) ln ε̄, η = t^(−κ)
        let eta = t.powf(-Self::KAPPA);
        self.log_step_avg =
            (log_step.affine(eta, 0.0)? + self.log_step_avg.affine(1.0 - eta, 0.0)?)?;
        Ok(log_step.exp()?)
    }
}

/// HMC state: positions with cached log-density and gradient, and the step-size state.
#[derive(Debug, Clone)]
pub struct HmcState {
    /// `[walkers, galaxies, dim]`.
    pub position: Tensor,
    /// `[walkers, galaxies]`, NaN mapped to −∞.
    pub log_prob: Tensor,
    /// ∇ ln P at `position`, `[walkers, galaxies, dim]`.
    pub grad: Tensor,
    /// Current step size `[galaxies]` or `[walkers, galaxies]`.
    pub step_size: Tensor,
    /// Dual-averaging state (only advanced during warm-up).
    pub adaptation: DualAveraging,
    /// Number of steps taken so far.
    pub iteration: usize,
}

/// What one HMC step did.
#[derive(Debug, Clone)]
pub struct HmcInfo {
    /// `[walkers, galaxies]` f32, 1 where the trajectory end point was accepted.
    pub accepted: Tensor,
    /// Metropolis acceptance probability min(1, e^(−ΔH)) `[walkers, galaxies]` (0 for NaN).
    pub accept_prob: Tensor,
    /// `[walkers, galaxies]` f32, 1 where the energy error exceeded 1000 (or was NaN).
    pub divergent: Tensor,
    /// Step size used in this step (before adaptation).
    pub step_size: Tensor,
}

impl ChainState for HmcState {
    fn position(&self) -> &Tensor {
        &self.position
    }
    fn log_prob(&self) -> &Tensor {
        &self.log_prob
    }
}

impl StepInfo for HmcInfo {
    fn accepted(&self) -> &Tensor {
        &self.accepted
    }
}

/// ½ Σ M⁻¹ p² over the last axis → `[walkers, galaxies]`.
fn kinetic(momentum: &Tensor, inverse_mass: Option<&Tensor>) -> Result<Tensor> {
    let p2 = momentum.sqr()?;
    let p2 = match inverse_mass {
        Some(m) => (p2 * m)?,
        None => p2,
    };
    Ok(p2.sum(2)?.affine(0.5, 0.0)?)
}

impl Sampler for Hmc {
    type State = HmcState;
    type Info = HmcInfo;

    fn init(&self, position: Tensor, target: &dyn LogDensity) -> Result<HmcState> {
        let (walkers, galaxies, _) = position.dims3()?;
        let shape: Vec<usize> = if self.step_size_per_chain {
            vec![walkers, galaxies]
        } else {
            vec![galaxies]
        };
        let step_size = Tensor::full(self.step_size as f32, shape, position.device())?
            .to_dtype(position.dtype())?;
        self.init_with_step_size(position, step_size, target)
    }

    fn step(
        &self,
        rng: &mut dyn RandomSource,
        state: HmcState,
        target: &dyn LogDensity,
    ) -> Result<(HmcState, HmcInfo)> {
        let HmcState {
            position,
            log_prob,
            grad,
            step_size,
            mut adaptation,
            iteration,
        } = state;
        let (walkers, galaxies, dim) = position.dims3()?;
        let device = position.device();
        let dtype = position.dtype();
        let inverse_mass = self.inverse_mass(&position)?;

        // Step size per chain [walkers, galaxies, 1].
        let mut eps = step_size.broadcast_as((walkers, galaxies))?;
        if self.step_size_jitter > 0.0 {
            let u = rng.uniform(&(walkers, galaxies).into(), device)?;
            let j = self.step_size_jitter;
            eps = eps.mul(&u.affine(2.0 * j, 1.0 - j)?)?;
        }
        let eps = eps.unsqueeze(2)?;
        let half_eps = eps.affine(0.5, 0.0)?;

        // p ~ 𝒩(0, M), M = 1 / M⁻¹.
        let xi = rng
            .normal(&(walkers, galaxies, dim).into(), device)?
            .to_dtype(dtype)?;
        let momentum0 = match &inverse_mass {
            Some(m) => (xi / m.sqrt()?)?,
            None => xi,
        };
        let h0 = (kinetic(&momentum0, inverse_mass.as_ref())? - &log_prob)?;

        // Leapfrog: half kick, (drift, kick)ⁿ with the last kick halved.
        let mut p = momentum0.add(&grad.broadcast_mul(&half_eps)?)?;
        let mut x = position.clone();
        let mut lp = log_prob.clone();
        let mut g = grad.clone();
        for i in 0..self.n_leapfrog {
            let velocity = match &inverse_mass {
                Some(m) => (&p * m)?,
                None => p.clone(),
            };
            x = x.add(&velocity.broadcast_mul(&eps)?)?;
            let (new_lp, new_g) = target.grad_log_density(&x)?;
            lp = new_lp;
            g = new_g.detach();
            let kick = if i + 1 == self.n_leapfrog {
                &half_eps
            } else {
                &eps
            };
            p = p.add(&g.broadcast_mul(kick)?)?;
        }
        let lp = sanitize_log_prob(&lp)?;
        let h1 = (kinetic(&p, inverse_mass.as_ref())? - &lp)?;
        // ln α = H₀ − H₁; NaN (e.g. ∞ − ∞ or NaN momenta) → −∞; a −∞ end point never wins.
        let log_alpha = sanitize_log_prob(&(&h0 - &h1)?)?;
        let finite = lp.gt(f64::NEG_INFINITY)?;
        let neg_inf = log_alpha.ones_like()?.affine(0.0, f64::NEG_INFINITY)?;
        let log_alpha = finite.where_cond(&log_alpha, &neg_inf)?;
        let accept_prob = log_alpha.minimum(0.0)?.exp()?;

        let ln_u = rng.uniform(&(walkers, galaxies).into(), device)?.log()?;
        let accept = ln_u.lt(&log_alpha)?;
        let accept3 = accept
            .unsqueeze(2)?
            .broadcast_as((walkers, galaxies, dim))?;
        let position = accept3.where_cond(&x, &position)?;
        let grad = accept3.where_cond(&g, &grad)?;
        let log_prob = accept.where_cond(&lp, &log_prob)?;
        let divergent = log_alpha.lt(-DIVERGENCE_THRESHOLD)?.to_dtype(DType::F32)?;

        let iteration = iteration + 1;
        let used_step = step_size.clone();
        let step_size = if iteration <= self.adapt_steps {
            let stat = if step_size.rank() == 1 {
                accept_prob.mean(0)?
            } else {
                accept_prob.clone()
            };
            let next = adaptation.update(iteration, &stat, self.target_accept)?;
            if iteration == self.adapt_steps {
                adaptation.log_step_avg.exp()?
            } else {
                next
            }
        } else {
            step_size
        };

        let info = HmcInfo {
            accepted: accept.to_dtype(DType::F32)?,
            accept_prob,
            divergent,
            step_size: used_step,
        };
        Ok((
            HmcState {
                position,
                log_prob,
                grad,
                step_size,
                adaptation,
                iteration,
            },
            info,
        ))
    }
}
