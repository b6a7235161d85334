//! Warm-up: the burn-in schedule that adapts the ensemble and HMC kernels before the kept
//! steps, kept apart from the kernels themselves (as blackjax keeps its window adaptation
//! apart from its kernels).
//!
//! * Ensemble ([`WarmupConfig::run_ensemble`]): burn-in is split in two halves. After the
//!   first, walkers stuck far below their galaxy's median are re-seeded
//!   ([`prune_stuck_walkers`], [`WarmupConfig::prune_deficit`]) and, if the moves include a
//!   [`MoveKind::Global`], its proposal is frozen on the last draws of that half; after the
//!   second half it is refitted on that half's draws and kept fixed for the kept steps, so the
//!   kept chain is a plain Metropolis–Hastings chain with a fixed proposal mixture. With
//!   [`WarmupConfig::temperatures`] > 1 all of this runs on the tempered ensembles (each
//!   temperature its own fits), with walker swaps after every step.
//! * HMC ([`WarmupConfig::run_hmc`]): per-galaxy dual-averaging step sizes during burn-in,
//!   starting from [`WarmupConfig::hmc_initial_step`].

use popcosmos_api::{LogDensity, RandomSource, Result, Sampler, Tensor};

use crate::ensemble::{DifferentialEvolutionMove, EnsembleSampler, Move, StretchMove};
use crate::global::{FittedProposal, GlobalMove};
use crate::hmc::Hmc;
use crate::local::LocalMove;
use crate::mixture::ClusteredGlobalMove;
use crate::prune::prune_stuck_walkers;
use crate::ridge::RidgeMove;
use crate::run::{Chain, RunConfig, run_from_state, sample};
use crate::tempering::TemperedEnsemble;

/// One ensemble move by its settings. [`WarmupConfig::ensemble`] builds the kernel's moves
/// from these; a `Global` move's proposal is fitted at every step or frozen by the warm-up.
#[derive(Debug, Clone, Copy)]
pub enum MoveKind {
    /// [`StretchMove`] with scale `a`.
    Stretch {
        /// Scale a > 1.
        a: f64,
    },
    /// [`DifferentialEvolutionMove`] (`gamma` `None`: 2.38/√(2d)); its σ is
    /// [`WarmupConfig::de_sigma`].
    DifferentialEvolution {
        /// Step scale γ.
        gamma: Option<f64>,
    },
    /// [`GlobalMove`]: a multivariate t (ν, scale) fitted to the complementary half, frozen
    /// on burn-in draws by [`WarmupConfig::run_ensemble`].
    Global {
        /// Degrees of freedom of the t.
        nu: u32,
        /// Scale of its covariance.
        scale: f64,
    },
    /// [`ClusteredGlobalMove`]: a mixture of t components fitted to the complementary half.
    Clustered(ClusteredGlobalMove),
    /// [`LocalMove`]: a Gaussian step with the covariance of the nearest complement particles.
    Local(LocalMove),
    /// [`RidgeMove`]: DE in coordinates straightened along `axis` by a polynomial of
    /// `degree` fitted to the complementary half; its σ is [`WarmupConfig::de_sigma`].
    Ridge {
        /// Coordinate the ridge is parametrised by.
        axis: usize,
        /// Degree of the fitted curve (2 to [`RidgeMove::MAX_DEGREE`]).
        degree: usize,
    },
}

/// Warm-up settings. The defaults are those of a manifest's `sampler:` section, except
/// `moves` (stretch alone, as [`EnsembleSampler::default`]).
#[derive(Debug, Clone)]
pub struct WarmupConfig {
    /// Weighted ensemble moves. Default: stretch (a = 2) alone.
    pub moves: Vec<(MoveKind, f64)>,
    /// Parallel-tempering temperatures of the ensemble (1 = none). Default 1.
    pub temperatures: usize,
    /// Hottest temperature of the geometric ladder (used when `temperatures` > 1). Default 20.
    pub max_temperature: f64,
    /// Half-way through burn-in, walkers more than this many nats below their galaxy's median
    /// log-density are re-seeded from the best half (`None` disables). Default 20.
    pub prune_deficit: Option<f64>,
    /// Gaussian jitter (in sampling coordinates) added to re-seeded walkers. Default 1e-3.
    pub prune_jitter: f64,
    /// Relative jitter σ of the differential-evolution scale γ. Default 1e-5.
    pub de_sigma: f64,
    /// HMC: leapfrog step size before dual averaging adapts it per galaxy. Default 0.05.
    pub hmc_initial_step: f64,
    /// HMC: leapfrog steps per iteration. Default 10.
    pub hmc_leapfrog_steps: usize,
    /// HMC: target acceptance of the step-size adaptation. Default 0.8.
    pub hmc_target_accept: f64,
    /// HMC: iterations of step-size adaptation (`None`: the run's burn-in). Default `None`.
    pub hmc_adapt_steps: Option<usize>,
}

impl Default for WarmupConfig {
    fn default() -> Self {
        Self {
            moves: vec![(MoveKind::Stretch { a: 2.0 }, 1.0)],
            temperatures: 1,
            max_temperature: 20.0,
            prune_deficit: Some(20.0),
            prune_jitter: 1e-3,
            de_sigma: 1e-5,
            hmc_initial_step: 0.05,
            hmc_leapfrog_steps: 10,
            hmc_target_accept: 0.8,
            hmc_adapt_steps: None,
        }
    }
}

impl WarmupConfig {
    /// The ensemble kernel of [`Self::moves`]; `fit` freezes the proposals of `Global` moves
    /// (without it they fit the complementary half at every step).
    pub fn ensemble(&self, fit: Option<&FittedProposal>) -> Result<EnsembleSampler> {
        let moves = self
            .moves
            .iter()
            .map(|(mv, weight)| -> Result<(Box<dyn Move>, f64)> {
                let mv: Box<dyn Move> = match *mv {
                    MoveKind::Stretch { a } => Box::new(StretchMove { a }),
                    MoveKind::DifferentialEvolution { gamma } => {
                        Box::new(DifferentialEvolutionMove {
                            gamma,
                            sigma: self.de_sigma,
                        })
                    }
                    MoveKind::Global { nu, scale } => Box::new(GlobalMove {
                        nu,
                        scale,
                        fit: fit.cloned(),
                    }),
                    MoveKind::Clustered(clustered) => Box::new(clustered),
                    MoveKind::Local(local) => {
                        local.check()?;
                        Box::new(local)
                    }
                    MoveKind::Ridge { axis, degree } => {
                        let mut ridge = RidgeMove::new(axis, degree)?;
                        ridge.de.sigma = self.de_sigma;
                        Box::new(ridge)
                    }
                };
                Ok((mv, *weight))
            })
            .collect::<Result<_>>()?;
        EnsembleSampler::new(moves)
    }

    /// [`Self::ensemble`] at [`Self::temperatures`] geometric temperatures.
    fn tempered(&self, fit: Option<&FittedProposal>) -> Result<TemperedEnsemble> {
        TemperedEnsemble::geometric(self.ensemble(fit)?, self.temperatures, self.max_temperature)
    }

    /// Run the ensemble on `target` from `init` `[walkers, galaxies, dim]` with the two-half
    /// burn-in schedule of the module docs; returns the β = 1 chain.
    pub fn run_ensemble(
        &self,
        init: Tensor,
        target: &dyn LogDensity,
        rng: &mut dyn RandomSource,
        config: &RunConfig,
    ) -> Result<Chain> {
        let has_global = self
            .moves
            .iter()
            .any(|(m, _)| matches!(m, MoveKind::Global { .. }));
        let first = config.burn_in / 2;
        let second = config.burn_in - first;
        let kernel = self.tempered(None)?;
        // Every temperature starts from the same walkers; only β = 1 is returned.
        let init = kernel.replicate(&init)?;
        if first == 0 || (self.prune_deficit.is_none() && !has_global) {
            return kernel.cold_chain(&sample(&kernel, init, target, rng, config, None)?);
        }
        let walkers = init.dim(0)?;
        let device = init.device().clone();
        // Draws kept for a fit: enough for a well-conditioned 16×16 covariance, bounded so
        // large ensembles do not hold long histories.
        let fit_steps = |steps: usize| steps.min((4096 / walkers).max(2)).max(1);
        let segment = |steps: usize, keep: usize| RunConfig {
            n_steps: steps,
            burn_in: steps - keep,
            thin: 1,
        };
        let fit_on = |chain: &Chain| -> Result<Option<FittedProposal>> {
            if !has_global || chain.kept == 0 {
                return Ok(None);
            }
            let draws = chain.samples_tensor(&device)?.reshape((
                chain.kept * chain.walkers,
                chain.galaxies,
                chain.dim,
            ))?;
            Ok(Some(FittedProposal::from_draws(&draws)?))
        };

        let state = kernel.init(init, target)?;
        let keep = if has_global { fit_steps(first / 2) } else { 0 };
        let (head, state) =
            run_from_state(&kernel, state, target, rng, &segment(first, keep), None)?;
        let position = match self.prune_deficit {
            Some(deficit) => {
                prune_stuck_walkers(
                    &state.position,
                    &state.log_prob,
                    deficit,
                    self.prune_jitter,
                    rng,
                )?
                .0
            }
            None => state.position,
        };
        let mut kernel = self.tempered(fit_on(&head)?.as_ref())?;
        let mut state = kernel.init(position, target)?;
        if has_global && second > 0 {
            let (middle, next) = run_from_state(
                &kernel,
                state,
                target,
                rng,
                &segment(second, fit_steps(second)),
                None,
            )?;
            state = next;
            kernel = self.tempered(fit_on(&middle)?.as_ref())?;
        }
        let tail = RunConfig {
            n_steps: config.n_steps - first - if has_global { second } else { 0 },
            burn_in: if has_global { 0 } else { second },
            thin: config.thin,
        };
        kernel.cold_chain(&run_from_state(&kernel, state, target, rng, &tail, None)?.0)
    }

    /// Run HMC on `target` from `init`, adapting per-galaxy step sizes (from
    /// [`Self::hmc_initial_step`]) by dual averaging during burn-in.
    pub fn run_hmc(
        &self,
        init: Tensor,
        target: &dyn LogDensity,
        rng: &mut dyn RandomSource,
        config: &RunConfig,
    ) -> Result<Chain> {
        let kernel = Hmc::new(self.hmc_initial_step, self.hmc_leapfrog_steps).with_adaptation(
            self.hmc_adapt_steps.unwrap_or(config.burn_in),
            self.hmc_target_accept,
        );
        sample(&kernel, init, target, rng, config, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use popcosmos_api::{Device, HostRng};

    fn normal(x: &Tensor) -> Result<Tensor> {
        Ok((x.sqr()?.sum(2)? * -0.5)?)
    }

    const RUN: RunConfig = RunConfig {
        n_steps: 40,
        burn_in: 20,
        thin: 1,
    };

    fn run(warmup: &WarmupConfig, init: &Tensor) -> Chain {
        let mut rng = HostRng::seed_from_u64(1);
        (warmup.run_ensemble(init.clone(), &normal, &mut rng, &RUN)).unwrap()
    }

    /// Without pruning or a global move the warm-up is the plain driver; the two-half
    /// schedule keeps the post-burn-in steps, with or without a global move.
    #[test]
    fn warm_up_schedules() {
        let init = Tensor::randn(0f32, 1.0, (32, 3, 4), &Device::Cpu).unwrap();
        let mut warmup = WarmupConfig {
            prune_deficit: None,
            ..WarmupConfig::default()
        };
        let plain = sample(
            &warmup.ensemble(None).unwrap(),
            init.clone(),
            &normal,
            &mut HostRng::seed_from_u64(1),
            &RUN,
            None,
        );
        assert_eq!(run(&warmup, &init).samples, plain.unwrap().samples);
        warmup.prune_deficit = Some(20.0);
        assert_eq!(run(&warmup, &init).kept, 20);
        warmup
            .moves
            .push((MoveKind::Global { nu: 5, scale: 1.0 }, 0.5));
        let chain = run(&warmup, &init);
        assert_eq!(chain.kept, 20);
        assert!(chain.log_prob.iter().all(|v| v.is_finite()));
    }
}
