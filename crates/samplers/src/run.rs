//! The run driver: step a kernel, drop burn-in, thin, and collect the chain on the host.
//!
//! Kept positions are copied to the host as they are produced (one transfer per kept step);
//! acceptance is summed on the device and read once at the end.

use popcosmos_api::{DType, Device, Error, LogDensity, RandomSource, Result, Sampler, Tensor};

use crate::{ChainState, StepInfo};

/// How long to run and what to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunConfig {
    /// Total kernel steps (burn-in included).
    pub n_steps: usize,
    /// Steps discarded at the start (also the window for HMC adaptation, if any).
    pub burn_in: usize,
    /// Keep every `thin`-th step after burn-in (≥ 1).
    pub thin: usize,
}

impl RunConfig {
    /// Number of draws the run keeps: steps `burn_in + thin, burn_in + 2 thin, …, ≤ n_steps`.
    pub fn kept(&self) -> usize {
        self.n_steps.saturating_sub(self.burn_in) / self.thin.max(1)
    }
}

/// Thinned post-burn-in draws, on the host.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Positions `[kept, walkers, galaxies, dim]`, row-major.
    pub samples: Vec<f32>,
    /// Log-densities `[kept, walkers, galaxies]`.
    pub log_prob: Vec<f32>,
    /// Number of kept draws.
    pub kept: usize,
    /// Walkers (or particles) per kept draw.
    pub walkers: usize,
    /// Galaxies of the batch.
    pub galaxies: usize,
    /// Parameters per draw.
    pub dim: usize,
    /// Fraction of accepted proposals per galaxy over all post-burn-in steps and walkers.
    pub acceptance: Vec<f64>,
    /// The settings the chain was run with.
    pub config: RunConfig,
}

impl Chain {
    /// One galaxy's draws as f64 `[kept][walkers][dim]` (the layout of
    /// [`crate::diagnose_galaxy`]).
    pub fn galaxy_samples(&self, galaxy: usize) -> Vec<f64> {
        let (w, g, d) = (self.walkers, self.galaxies, self.dim);
        let mut out = Vec::with_capacity(self.kept * w * d);
        for k in 0..self.kept {
            for j in 0..w {
                let start = ((k * w + j) * g + galaxy) * d;
                out.extend(self.samples[start..start + d].iter().map(|&v| v as f64));
            }
        }
        out
    }

    /// Pooled (all draws, all walkers) mean and variance per parameter of one galaxy.
    pub fn moments(&self, galaxy: usize) -> (Vec<f64>, Vec<f64>) {
        let d = self.dim;
        let x = self.galaxy_samples(galaxy);
        let n = (x.len() / d.max(1)) as f64;
        let mut mean = vec![0.0; d];
        for row in x.chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; d];
        for row in x.chunks_exact(d) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        var.iter_mut().for_each(|s| *s /= n - 1.0);
        (mean, var)
    }

    /// The draws as a tensor `[kept, walkers, galaxies, dim]`.
    pub fn samples_tensor(&self, device: &Device) -> Result<Tensor> {
        let shape = (self.kept, self.walkers, self.galaxies, self.dim);
        Ok(Tensor::from_slice(&self.samples, shape, device)?)
    }

    /// The log-densities as a tensor `[kept, walkers, galaxies]`.
    pub fn log_prob_tensor(&self, device: &Device) -> Result<Tensor> {
        let shape = (self.kept, self.walkers, self.galaxies);
        Ok(Tensor::from_slice(&self.log_prob, shape, device)?)
    }
}

/// Per-step callback: `(step, &state, &info)`, steps counted from 1.
pub type OnStep<'a, K> = &'a mut dyn FnMut(usize, &<K as Sampler>::State, &<K as Sampler>::Info);

/// Initialise `kernel` at `init_position` and run it (see [`run_from_state`]).
pub fn sample<K>(
    kernel: &K,
    init_position: Tensor,
    target: &dyn LogDensity,
    rng: &mut dyn RandomSource,
    config: &RunConfig,
    on_step: Option<OnStep<'_, K>>,
) -> Result<Chain>
where
    K: Sampler,
    K::State: ChainState,
    K::Info: StepInfo,
{
    let state = kernel.init(init_position, target)?;
    Ok(run_from_state(kernel, state, target, rng, config, on_step)?.0)
}

/// Run `config.n_steps` steps from `state`, keeping every `thin`-th post-burn-in state;
/// `on_step(step, &state, &info)` (step counted from 1) is called after every step.
/// Returns the chain and the final state (to continue the run).
pub fn run_from_state<K>(
    kernel: &K,
    mut state: K::State,
    target: &dyn LogDensity,
    rng: &mut dyn RandomSource,
    config: &RunConfig,
    mut on_step: Option<OnStep<'_, K>>,
) -> Result<(Chain, K::State)>
where
    K: Sampler,
    K::State: ChainState,
    K::Info: StepInfo,
{
    if config.thin == 0 {
        return Err(Error::Invalid("thin must be at least 1".into()));
    }
    let (walkers, galaxies, dim) = state.position().dims3()?;
    let kept = config.kept();
    // Kept states stay on the device until the end: a copy to the host every step would
    // synchronise the device every step (no host round trip per step).
    let mut kept_states: Vec<(Tensor, Tensor)> = Vec::with_capacity(kept);
    let mut accepted_sum: Option<Tensor> = None;

    for step in 1..=config.n_steps {
        let (next, info) = kernel.step(rng, state, target)?;
        state = next;
        if step > config.burn_in {
            let a = info.accepted().to_dtype(DType::F32)?;
            accepted_sum = Some(match accepted_sum {
                Some(s) => (s + a)?,
                None => a,
            });
            if (step - config.burn_in).is_multiple_of(config.thin) {
                kept_states.push((
                    state.position().to_dtype(DType::F32)?,
                    state.log_prob().to_dtype(DType::F32)?,
                ));
            }
        }
        if let Some(cb) = on_step.as_mut() {
            cb(step, &state, &info);
        }
    }

    let mut samples = Vec::with_capacity(kept * walkers * galaxies * dim);
    let mut log_prob = Vec::with_capacity(kept * walkers * galaxies);
    for (pos, lp) in kept_states.drain(..) {
        samples.extend(pos.flatten_all()?.to_vec1::<f32>()?);
        log_prob.extend(lp.flatten_all()?.to_vec1::<f32>()?);
    }
    let n_post = config.n_steps.saturating_sub(config.burn_in);
    let acceptance = match accepted_sum {
        Some(s) => s
            .to_dtype(DType::F64)?
            .mean(0)?
            .affine(1.0 / n_post as f64, 0.0)?
            .to_vec1::<f64>()?,
        None => vec![f64::NAN; galaxies],
    };
    let chain = Chain {
        samples,
        log_prob,
        kept,
        walkers,
        galaxies,
        dim,
        acceptance,
        config: *config,
    };
    Ok((chain, state))
}
