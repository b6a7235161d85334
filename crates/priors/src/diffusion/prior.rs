//! [`DiffusionPrior`]: a 16-D diffusion model over the latent φ used as a [`Prior`]
//! (`prior: {kind: diffusion, weights: ...}`).

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use popcosmos_api::{Error, HostRng, N_PARAMS, Prior, RandomSource, Result, Shape};

use super::model::{DiffusionModel, Divergence, LogProbOptions};
use super::ode::OdeSolver;
use crate::consistency::ConsistencyModel;

/// ln p(φ) by the probability-flow ODE of a diffusion model trained on φ.
///
/// Differences from the reference, on purpose: the density is that of φ (the −Σ ln scale
/// of the standardisation is included, so it is a proper normalised density), and each
/// walker's ODE has its own step size (no dependence on batch mates). Like the reference,
/// no gradient flows through the ODE (the input is detached): HMC sees the likelihood's
/// gradient plus nothing from this prior.
pub struct DiffusionPrior {
    model: DiffusionModel,
    options: LogProbOptions,
    sample_solver: OdeSolver,
    /// When set, [`Prior::sample`] uses this consistency model with this many steps
    /// instead of the ODE (≈ 10⁻³ of the cost; for initialisation libraries and mocks).
    fast_sampler: Option<(ConsistencyModel, usize)>,
    log_scale_sum: f64,
    /// Probes for the Hutchinson estimator (reproducible sequence).
    probe_rng: Mutex<HostRng>,
    name: String,
}

impl DiffusionPrior {
    /// Wrap `model`, which must model D = 16 columns (the latent φ).
    pub fn new(model: DiffusionModel, options: LogProbOptions, source: &str) -> Result<Self> {
        let cfg = model.config();
        if cfg.dim != N_PARAMS || cfg.conditional_dim != 0 {
            return Err(Error::Invalid(format!(
                "{source}: a population prior must be an unconditional model of the {N_PARAMS} \
                 latent parameters (this one has dim {} and {} conditional inputs)",
                cfg.dim, cfg.conditional_dim
            )));
        }
        options.solver.validate().map_err(Error::Invalid)?;
        let log_scale_sum = model
            .x_scale()
            .to_dtype(DType::F64)?
            .log()?
            .sum_all()?
            .to_scalar::<f64>()?;
        Ok(Self {
            model,
            options,
            sample_solver: OdeSolver::default(),
            fast_sampler: None,
            log_scale_sum,
            probe_rng: Mutex::new(HostRng::seed_from_u64(0x5eed)),
            name: format!("diffusion ({source})"),
        })
    }

    /// The diffusion model behind the prior.
    pub fn model(&self) -> &DiffusionModel {
        &self.model
    }

    /// Solver used by [`Prior::sample`] (default dopri5 1e−5).
    pub fn with_sample_solver(mut self, solver: OdeSolver) -> Self {
        self.sample_solver = solver;
        self
    }

    /// Draw with a consistency model distilled from this prior's model (`steps` ≥ 1
    /// evaluations) instead of the ODE. The model must be over the same 16 columns.
    pub fn with_consistency_sampler(
        mut self,
        model: ConsistencyModel,
        steps: usize,
        source: &str,
    ) -> Result<Self> {
        if model.dim() != N_PARAMS {
            return Err(Error::Invalid(format!(
                "{source}: a consistency sampler for the population prior must model the \
                 {N_PARAMS} latent parameters (this one has dim {})",
                model.dim()
            )));
        }
        if steps == 0 {
            return Err(Error::Invalid(format!(
                "{source}: consistency sampler steps must be >= 1"
            )));
        }
        self.fast_sampler = Some((model, steps));
        Ok(self)
    }
}

impl Prior for DiffusionPrior {
    fn name(&self) -> &str {
        &self.name
    }

    fn log_prob(&self, phi: &Tensor) -> Result<Tensor> {
        // Rows with a non-finite coordinate get −∞ without entering the ODE.
        let (device, dtype) = (self.model.device(), self.model.dtype());
        crate::common::log_prob_by_rows(&phi.detach(), device, dtype, |safe| {
            let mut probe_rng;
            let rng: Option<&mut dyn RandomSource> = match self.options.divergence {
                Divergence::Exact => None,
                Divergence::Hutchinson => {
                    probe_rng = self.probe_rng.lock().expect("probe rng");
                    Some(&mut *probe_rng)
                }
            };
            let out = self.model.log_prob(safe, None, &self.options, rng)?;
            Ok((out.log_prob - self.log_scale_sum)?)
        })
    }

    fn sample(&self, n: usize, rng: &mut dyn RandomSource, device: &Device) -> Result<Tensor> {
        let mut rows: Vec<Vec<f32>> = Vec::with_capacity(n);
        // Guard non-finite draws by redrawing them.
        for _round in 0..16 {
            let need = n - rows.len();
            if need == 0 {
                break;
            }
            let x = match &self.fast_sampler {
                Some((cm, steps)) => cm.sample(need, *steps, rng)?,
                None => {
                    let base = rng.normal(&Shape::from((need, N_PARAMS)), self.model.device())?;
                    self.model.sample_ode(&base, None, &self.sample_solver)?.0
                }
            };
            for r in x.to_dtype(DType::F32)?.to_vec2::<f32>()? {
                if r.iter().all(|v| v.is_finite()) {
                    rows.push(r);
                }
            }
        }
        if rows.len() < n {
            return Err(Error::Invalid(format!(
                "{}: sampling kept producing non-finite draws",
                self.name
            )));
        }
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        Ok(Tensor::from_vec(flat, (n, N_PARAMS), device)?)
    }
}
