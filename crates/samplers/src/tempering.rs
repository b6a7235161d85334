//! Parallel tempering of the ensemble sampler (emcee's `PTSampler` idea, batched).
//!
//! Why: the posteriors of bright real galaxies have several local modes a few nats apart
//! (Student-t per-band outlier choices, photo-z aliases); walkers sitting in different modes
//! stay there under stretch/DE/global moves, so their ensemble never mixes. An ensemble at
//! inverse temperature β < 1 sees those barriers shrunk by β and crosses them; adjacent
//! temperatures exchange walkers with the Metropolis swap probability
//! min(1, exp((β_k − β_{k+1})(L_{k+1} − L_k))), which keeps every tempered target — and so
//! the β = 1 one, the only one reported — invariant.
//!
//! Layout: the K temperatures are extra independent "galaxies" of the inner ensemble, i.e.
//! positions are `[walkers, K·galaxies, dim]` with column k·G + g holding temperature k of
//! galaxy g. The inner kernel therefore needs no change, every move (including the global
//! move's per-galaxy fits) works per temperature, and one target evaluation covers all
//! temperatures. With K = 1 the kernel is exactly the inner ensemble (same random stream).

use popcosmos_api::{DType, Error, LogDensity, RandomSource, Result, Sampler, Tensor};

use crate::ensemble::{EnsembleInfo, EnsembleSampler, EnsembleState};
use crate::run::Chain;
use crate::{StepInfo, sanitize_log_prob};

/// An ensemble kernel run at several inverse temperatures with walker swaps.
pub struct TemperedEnsemble {
    /// The ensemble kernel run at every temperature.
    pub inner: EnsembleSampler,
    /// Inverse temperatures, β₀ = 1 first, decreasing, all > 0.
    pub betas: Vec<f64>,
}

/// What one tempered step did.
#[derive(Debug, Clone)]
pub struct TemperedInfo {
    /// The inner ensemble's step over all temperatures (each a block of galaxies).
    pub inner: EnsembleInfo,
    /// Fraction of walkers swapped between temperatures k and k + 1 in this step.
    pub swap_fraction: Vec<f64>,
}

impl StepInfo for TemperedInfo {
    fn accepted(&self) -> &Tensor {
        &self.inner.accepted
    }
}

impl TemperedEnsemble {
    /// `temperatures` ensembles with a geometric ladder from T = 1 to `max_temperature`.
    pub fn geometric(
        inner: EnsembleSampler,
        temperatures: usize,
        max_temperature: f64,
    ) -> Result<Self> {
        if temperatures == 0 {
            return Err(Error::Invalid(
                "tempering needs at least 1 temperature".into(),
            ));
        }
        if temperatures > 1 && !(max_temperature.is_finite() && max_temperature > 1.0) {
            return Err(Error::Invalid(format!(
                "the hottest temperature must be finite and > 1, got {max_temperature}"
            )));
        }
        let betas = (0..temperatures)
            .map(|k| {
                if temperatures == 1 {
                    1.0
                } else {
                    max_temperature.powf(-(k as f64) / (temperatures - 1) as f64)
                }
            })
            .collect();
        Ok(Self { inner, betas })
    }

    /// Number of temperatures K.
    pub fn temperatures(&self) -> usize {
        self.betas.len()
    }

    /// Copy `[walkers, galaxies, dim]` starting positions to every temperature.
    pub fn replicate(&self, position: &Tensor) -> Result<Tensor> {
        let k = self.temperatures();
        Ok(Tensor::cat(&vec![position; k], 1)?)
    }

    /// The β = 1 part of a chain run by this kernel (galaxies `0..G` of `K·G`).
    pub fn cold_chain(&self, chain: &Chain) -> Result<Chain> {
        let k = self.temperatures();
        if !chain.galaxies.is_multiple_of(k) {
            return Err(Error::Invalid(format!(
                "chain has {} columns, not a multiple of {k} temperatures",
                chain.galaxies
            )));
        }
        let g = chain.galaxies / k;
        let rows = chain.kept * chain.walkers;
        let d = chain.dim;
        let mut samples = Vec::with_capacity(rows * g * d);
        let mut log_prob = Vec::with_capacity(rows * g);
        for r in 0..rows {
            let base = r * chain.galaxies;
            samples.extend_from_slice(&chain.samples[base * d..(base + g) * d]);
            log_prob.extend_from_slice(&chain.log_prob[base..base + g]);
        }
        Ok(Chain {
            samples,
            log_prob,
            kept: chain.kept,
            walkers: chain.walkers,
            galaxies: g,
            dim: d,
            acceptance: chain.acceptance[..g].to_vec(),
            config: chain.config,
        })
    }

    fn tempered<'a>(&'a self, target: &'a dyn LogDensity) -> TemperedTarget<'a> {
        TemperedTarget {
            target,
            betas: &self.betas,
        }
    }

    /// Swap walkers between adjacent temperatures, hottest pair first.
    fn swap(
        &self,
        rng: &mut dyn RandomSource,
        state: EnsembleState,
    ) -> Result<(EnsembleState, Vec<f64>)> {
        let k = self.temperatures();
        if k == 1 {
            return Ok((state, Vec::new()));
        }
        let (w, kg, d) = state.position.dims3()?;
        let g = kg / k;
        let device = state.position.device().clone();
        let mut pos: Vec<Tensor> = (0..k)
            .map(|t| state.position.narrow(1, t * g, g)?.contiguous())
            .collect::<candle_core::Result<_>>()?;
        // Untempered log-densities L = (β L) / β.
        let mut ll: Vec<Tensor> = (0..k)
            .map(|t| state.log_prob.narrow(1, t * g, g)?.contiguous()? / self.betas[t])
            .collect::<candle_core::Result<_>>()?;
        let mut fractions = vec![0.0; k - 1];
        for t in (0..k - 1).rev() {
            let (bc, bh) = (self.betas[t], self.betas[t + 1]);
            // Pair each colder walker with a randomly relabelled hotter one.
            let perm = Tensor::from_vec(permutation(rng, w), w, &device)?;
            let hot = pos[t + 1].index_select(&perm, 0)?;
            let hot_ll = ll[t + 1].index_select(&perm, 0)?;
            let log_acc = sanitize_log_prob(&((&hot_ll - &ll[t])? * (bc - bh))?)?;
            let ln_u = rng.uniform(&(w, g).into(), &device)?.log()?;
            let swap = ln_u.lt(&log_acc)?;
            let swap3 = swap.unsqueeze(2)?.broadcast_as((w, g, d))?;
            let new_cold = swap3.where_cond(&hot, &pos[t])?;
            let new_hot = swap3.where_cond(&pos[t], &hot)?;
            let new_cold_ll = swap.where_cond(&hot_ll, &ll[t])?;
            let new_hot_ll = swap.where_cond(&ll[t], &hot_ll)?;
            fractions[t] = swap.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()?;
            pos[t] = new_cold;
            pos[t + 1] = new_hot;
            ll[t] = new_cold_ll;
            ll[t + 1] = new_hot_ll;
        }
        let log_prob: Vec<Tensor> = ll
            .iter()
            .zip(&self.betas)
            .map(|(l, b)| l * *b)
            .collect::<candle_core::Result<_>>()?;
        Ok((
            EnsembleState {
                position: Tensor::cat(&pos, 1)?,
                log_prob: Tensor::cat(&log_prob, 1)?,
            },
            fractions,
        ))
    }
}

/// A uniformly random permutation of `0..n` (Fisher–Yates on the host).
fn permutation(rng: &mut dyn RandomSource, n: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = (rng.next_f64() * (i + 1) as f64) as usize;
        p.swap(i, j.min(i));
    }
    p
}

/// β_k · ln p over `[walkers, K·galaxies, dim]`.
struct TemperedTarget<'a> {
    target: &'a dyn LogDensity,
    betas: &'a [f64],
}

impl LogDensity for TemperedTarget<'_> {
    fn log_density(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.betas.len();
        if k == 1 {
            return self.target.log_density(x);
        }
        let (w, kg, d) = x.dims3()?;
        let g = kg / k;
        let lp = self
            .target
            .log_density(&x.contiguous()?.reshape((w * k, g, d))?)?
            .reshape((w, k, g))?;
        // β_k per temperature slice (scalar ops: nothing is copied to the device per step).
        let tempered: Vec<Tensor> = self
            .betas
            .iter()
            .enumerate()
            .map(|(t, &b)| lp.narrow(1, t, 1)? * b)
            .collect::<candle_core::Result<_>>()?;
        Ok(Tensor::cat(&tempered, 1)?.reshape((w, kg))?)
    }
}

impl Sampler for TemperedEnsemble {
    type State = EnsembleState;
    type Info = TemperedInfo;

    fn init(&self, position: Tensor, target: &dyn LogDensity) -> Result<EnsembleState> {
        let cols = position.dim(1)?;
        if cols % self.temperatures() != 0 {
            return Err(Error::Invalid(format!(
                "tempered positions need K·galaxies columns (K = {}), got {cols}",
                self.temperatures()
            )));
        }
        self.inner.init(position, &self.tempered(target))
    }

    fn step(
        &self,
        rng: &mut dyn RandomSource,
        state: EnsembleState,
        target: &dyn LogDensity,
    ) -> Result<(EnsembleState, TemperedInfo)> {
        let (state, inner) = self.inner.step(rng, state, &self.tempered(target))?;
        let (state, swap_fraction) = self.swap(rng, state)?;
        Ok((
            state,
            TemperedInfo {
                inner,
                swap_fraction,
            },
        ))
    }
}
