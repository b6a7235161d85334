//! The population fit: Adam on the flow's weights, the zero points and the error floors,
//! minimising the distance between simulated and observed minibatches.
//!
//! * The flow starts from a given prior (the bundled Prospector-α-like flow by default), so
//!   the fit moves a sensible population rather than learning one from noise.
//! * Zero points: ln Z_b with a weak Gaussian prior around the starting values (a penalty
//!   `zero_point_prior_weight` × mean_b((ln Z_b − ln Z_b⁰)/`zero_point_prior_sigma`)²). Their
//!   common scale is degenerate with the galaxies' N (mass), so after each step the geometric
//!   mean is reset to its starting value, as `calibrate` does.
//! * Error floors: ln ε_b, kept in [`FLOOR_RANGE`].
//! * Emission-line groups (optional, [`FitOptions::line_groups`]): one flux scale ln s_g per
//!   group of lines that broad bands cannot separate, with a weak Gaussian prior around 0
//!   and kept in [`LINE_SCALE_RANGE`]. The population's gas parameters can trade against
//!   them, as in `calibrate` on a spec-z sample.
//! * Every step draws its randomness from a generator seeded by (seed, step), so a run is
//!   deterministic for a seed and a resumed run draws the same minibatches; the Adam moments
//!   restart on resume (a short transient), as in the flow trainer.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW, VarBuilder, VarMap};
use popcosmos_api::{Calibration, Error, HostRng, N_PARAMS, RandomSource, Result, Shape};
use popcosmos_priors::flow::{FlowModel, write_model};
use serde::{Deserialize, Serialize};

use crate::data::ObservedSet;
use crate::distance::Distance;
use crate::forward::{DataModelParams, ForwardModel};

/// Fractional error floors are kept in this range.
pub const FLOOR_RANGE: (f64, f64) = (0.005, 0.3);

/// Flux scales of emission-line groups are kept in this range.
pub const LINE_SCALE_RANGE: (f64, f64) = (0.1, 10.0);

/// Settings of a population fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FitOptions {
    /// Optimiser steps.
    pub steps: usize,
    /// Simulated (and observed) galaxies per step.
    pub batch_size: usize,
    /// Adam learning rate of the flow's weights (cosine decay to 10 %).
    pub flow_learning_rate: f64,
    /// Adam learning rate of ln Z and ln ε (cosine decay to 10 %).
    pub calibration_learning_rate: f64,
    /// The distance between simulated and observed minibatches.
    pub distance: Distance,
    /// Fit the per-band zero points ln Z_b (else they stay at their starting values).
    pub fit_zero_points: bool,
    /// Width of the weak prior on ln Z around the start.
    pub zero_point_prior_sigma: f64,
    /// Weight of that prior's penalty, added to the distance (0 = none).
    pub zero_point_prior_weight: f64,
    /// Fit the per-band fractional error floors ln ε_b (else they stay at their starting values).
    pub fit_error_floors: bool,
    /// Catalogue galaxies among which a simulated galaxy's flux error is drawn.
    pub error_neighbours: usize,
    /// Fewest usable catalogue rows a fit runs on.
    pub min_galaxies: usize,
    /// Weight λ of KL(q ‖ q₀), the divergence of the fitted population from the starting
    /// one (a reparameterised Monte Carlo estimate on each step's draws), added to the
    /// distance. Photometry alone leaves directions of the population unconstrained (e.g.
    /// faint low-z dwarfs vs distant massive galaxies of the same colours); the penalty keeps
    /// those where the starting population puts them. 0 = none.
    pub prior_weight: f64,
    /// Weight λ_H of an entropy bonus, −λ_H H(q) with H = −E_q ln q, added to the distance
    /// (0 = none). The joint support penalty can be met by narrowing the parameters the
    /// photometry ignores (it raises ln q₀), and the distance has no pressure to keep them
    /// broad. KL(q ‖ q₀) keeps them, but also pulls z and mass back to the start; the
    /// entropy term keeps the spread without preferring any place inside the support (the
    /// maximum-entropy population that reproduces the photometry).
    #[serde(default)]
    pub entropy_weight: f64,
    /// Support constraint: the quantile α of the starting population's own ln q₀ below which
    /// a fitted draw is penalised (0 = off). The emulators were trained on draws of the
    /// starting (Prospector-α-like) population; far outside it (SFH ratios of 3–5 dex, the
    /// edge of the gas ionisation range) their fluxes are extrapolations, and a free fit uses
    /// them to make low-z dwarfs that mimic distant massive galaxies. Unlike the KL penalty,
    /// this leaves the population free wherever q₀ itself puts galaxies.
    pub support_quantile: f64,
    /// Weight of the support penalty: weight × mean(max(0, τ_α − ln q₀(φ))), nats.
    pub support_weight: f64,
    /// Hold each coordinate of φ inside the central 1 − α of the start's marginal instead
    /// of the joint density above τ_α. The joint hinge can be met by narrowing coordinates
    /// the photometry ignores (which raises ln q₀) while another leaves the support; a box
    /// per coordinate cannot.
    #[serde(default)]
    pub support_box: bool,
    /// Under an explicit selection, draws simulated per batch row (without gradients) to
    /// find the rows that pass; 1 = simulate the batch and keep what passes.
    #[serde(default = "default_selection_oversample")]
    pub selection_oversample: usize,
    /// Names of the emission-line groups whose flux scales are fitted (the forward model
    /// supplies their fluxes, [`ForwardModel::with_line_groups`]; empty = none).
    pub line_groups: Vec<String>,
    /// Width of the weak prior on each group's ln s around 0 (its penalty has the weight
    /// `zero_point_prior_weight`).
    pub line_scale_prior_sigma: f64,
    /// Gradient-norm clip of the flow's weights (0 = none).
    pub max_grad_norm: f64,
    /// Seed of the run; step `k` draws from a generator seeded by (seed, k).
    pub seed: u64,
}

/// Rows of the oversampled pool simulated at once under a selection.
const POOL_CHUNK: usize = 16_384;

fn default_selection_oversample() -> usize {
    32
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            steps: 1500,
            batch_size: 1024,
            flow_learning_rate: 2e-4,
            calibration_learning_rate: 2e-3,
            distance: Distance::default(),
            fit_zero_points: true,
            zero_point_prior_sigma: 0.05,
            zero_point_prior_weight: 1e-3,
            fit_error_floors: true,
            error_neighbours: 50,
            min_galaxies: 500,
            // Chosen on the KiDS mock: without it the fit narrows the parameters the
            // photometry ignores and the posteriors under-cover (docs/population.md).
            prior_weight: 1e-3,
            entropy_weight: 0.0,
            support_quantile: 0.01,
            support_weight: 1.0,
            support_box: false,
            selection_oversample: default_selection_oversample(),
            line_groups: Vec::new(),
            // Chosen on a KiDS mock with Hα + [N II] doubled and the population held at the
            // truth: σ = 1 recovers × 1.59, σ = 3 × 1.89, σ = 10 × 1.93, the unscaled groups
            // within 1–5 % of 1 (docs/population.md).
            line_scale_prior_sigma: 3.0,
            max_grad_norm: 1.0,
            seed: 1,
        }
    }
}

impl FitOptions {
    /// Check the settings (names the option).
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, v: String| Err(Error::config(k, v));
        if self.steps == 0 {
            return bad("steps", "must be >= 1".into());
        }
        if !(16..=1 << 20).contains(&self.batch_size) {
            return bad(
                "batch_size",
                format!("must be in [16, 1048576], got {}", self.batch_size),
            );
        }
        for (k, v) in [
            ("flow_learning_rate", self.flow_learning_rate),
            ("calibration_learning_rate", self.calibration_learning_rate),
            ("zero_point_prior_sigma", self.zero_point_prior_sigma),
            ("line_scale_prior_sigma", self.line_scale_prior_sigma),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(k, format!("must be finite and > 0, got {v}"));
            }
        }
        if !(self.zero_point_prior_weight.is_finite() && self.zero_point_prior_weight >= 0.0) {
            return bad("zero_point_prior_weight", "must be finite and >= 0".into());
        }
        if !(1..=1024).contains(&self.selection_oversample) {
            return bad(
                "selection_oversample",
                format!("must be in [1, 1024], got {}", self.selection_oversample),
            );
        }
        if !(self.entropy_weight.is_finite() && self.entropy_weight >= 0.0) {
            return bad(
                "entropy_weight",
                format!("must be finite and >= 0, got {}", self.entropy_weight),
            );
        }
        if !(self.prior_weight.is_finite() && self.prior_weight >= 0.0) {
            return bad(
                "prior_weight",
                format!("must be finite and >= 0, got {}", self.prior_weight),
            );
        }
        if !(0.0..0.5).contains(&self.support_quantile) {
            return bad(
                "support_quantile",
                format!("must be in [0, 0.5), got {}", self.support_quantile),
            );
        }
        if !(self.support_weight.is_finite() && self.support_weight >= 0.0) {
            return bad(
                "support_weight",
                format!("must be finite and >= 0, got {}", self.support_weight),
            );
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return bad("max_grad_norm", "must be finite and >= 0".into());
        }
        if self.error_neighbours == 0 {
            return bad("error_neighbours", "must be >= 1".into());
        }
        self.distance.validate()
    }
}

/// One step's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step index (0-based).
    pub step: usize,
    /// The distance (without the zero-point penalty).
    pub distance: f64,
    /// Simulated galaxies that passed the selection (and were finite).
    pub kept: usize,
    /// Simulated galaxies dropped as non-finite.
    #[serde(default)]
    pub non_finite: usize,
    /// Gradient entries that were not finite (set to 0 for the step).
    #[serde(default)]
    pub non_finite_gradients: usize,
    /// Monte Carlo estimate of KL(q ‖ q₀) on the step's draws (nats; NaN when not computed).
    #[serde(default)]
    pub kl_to_start: f64,
    /// Share of the step's draws outside the support (ln q₀ below τ_α, or with the box a
    /// coordinate outside it; 0 when off).
    #[serde(default)]
    pub outside_support: f64,
}

/// What a finished (or interrupted) fit reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// The settings of the fit.
    pub options: FitOptions,
    /// Optimiser steps taken (over all resumes).
    pub steps_done: usize,
    /// Usable catalogue rows the fit was matched to.
    pub rows_used: usize,
    /// Catalogue rows dropped because no band was measured.
    pub rows_without_data: usize,
    /// Catalogue rows dropped by the selection.
    pub rows_cut: usize,
    /// Band labels, in catalogue order.
    pub band_labels: Vec<String>,
    /// Rows with a measurement, per band.
    pub band_counts: Vec<usize>,
    /// Fitted multiplicative zero points Z_b, per band.
    pub zero_points: Vec<f64>,
    /// Fitted fractional error floors ε_b, per band.
    pub error_floors: Vec<f64>,
    /// Fitted flux scales s_g of [`FitOptions::line_groups`], in that order.
    #[serde(default)]
    pub line_scales: Vec<f64>,
    /// Distance averaged over blocks of steps: (last step of the block, mean).
    pub loss_curve: Vec<(usize, f64)>,
    /// Where the simulated flux errors came from ([`crate::ErrorModel::describe`]).
    #[serde(default)]
    pub error_model: String,
    /// Per-band KS statistic of drawn vs catalogue flux errors, on a fresh simulation.
    pub error_model_ks: Vec<f64>,
    /// Share of draws outside the support (as in [`StepRecord`]), averaged over the last 50 steps
    /// (0 when the support penalty is off).
    #[serde(default)]
    pub outside_support: f64,
    /// Wall-clock seconds, as measured by the caller of [`PopulationFit::report`].
    pub seconds: f64,
}

/// A population fit in progress.
pub struct PopulationFit<'a> {
    options: FitOptions,
    forward: ForwardModel<'a>,
    set: &'a ObservedSet,
    flow_vars: VarMap,
    flow: FlowModel,
    /// The starting population q₀ (fixed), for the KL and support penalties.
    start: FlowModel,
    /// Where the starting population has galaxies (None = no support penalty).
    support: Option<Support>,
    ln_zero_points: Var,
    ln_error_floors: Var,
    /// ln s_g of the fitted line groups (None without any).
    ln_line_scales: Option<Var>,
    start_ln_zero_points: Vec<f64>,
    flow_optimizer: candle_nn::AdamW,
    calibration_optimizer: Option<candle_nn::AdamW>,
    step: usize,
    history: Vec<StepRecord>,
    device: Device,
}

fn sorted_vars(varmap: &VarMap) -> Vec<Var> {
    let vars = varmap.data().lock().expect("varmap lock");
    let mut named: Vec<(&String, &Var)> = vars.iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    named.into_iter().map(|(_, v)| v.clone()).collect()
}

/// Mean over the finite entries of a per-draw vector `[n]` (None if none is finite), and
/// its host values. Non-finite entries (draws far in a tail) carry no usable gradient.
fn finite_mean(values: &Tensor) -> Result<(Option<Tensor>, Vec<f32>)> {
    let host: Vec<f32> = values.detach().to_dtype(DType::F32)?.to_vec1()?;
    let finite: Vec<u32> = (0..host.len() as u32)
        .filter(|&i| host[i as usize].is_finite())
        .collect();
    if finite.is_empty() {
        return Ok((None, host));
    }
    let idx = Tensor::from_vec(finite.clone(), finite.len(), values.device())?;
    Ok((Some(values.index_select(&idx, 0)?.mean_all()?), host))
}

/// The region the starting population, and the emulators trained on it, cover.
struct Support {
    /// τ_α: the α quantile of ln q₀ under q₀'s own draws.
    threshold: f64,
    /// Per-coordinate α/2 and 1 − α/2 quantiles of φ under q₀, `[N_PARAMS]` each.
    low: Tensor,
    high: Tensor,
}

impl Support {
    /// mean(max(0, τ − ln q₀)) over the finite draws, and the share outside (non-finite
    /// ln q₀, far in a tail, counts as outside but carries no gradient).
    fn density_hinge(&self, ln_start: &Tensor) -> Result<(Option<Tensor>, f64)> {
        let hinge = ln_start
            .to_dtype(DType::F32)?
            .affine(-1.0, self.threshold)?
            .relu()?;
        let (mean, _) = finite_mean(&hinge)?;
        let lq: Vec<f32> = ln_start.detach().to_dtype(DType::F32)?.to_vec1()?;
        let outside = lq
            .iter()
            .filter(|v| !v.is_finite() || (**v as f64) < self.threshold)
            .count() as f64
            / lq.len().max(1) as f64;
        Ok((mean, outside))
    }

    /// mean over draws of Σ_k distance of φ_k outside [low_k, high_k], and the share of
    /// draws with any coordinate outside.
    fn box_hinge(&self, phi: &Tensor) -> Result<(Option<Tensor>, f64)> {
        let phi = phi.to_dtype(DType::F32)?;
        let below = self.low.unsqueeze(0)?.broadcast_sub(&phi)?.relu()?;
        let above = phi.broadcast_sub(&self.high.unsqueeze(0)?)?.relu()?;
        let excess = (below + above)?.sum(1)?;
        let (mean, e) = finite_mean(&excess)?;
        let outside = e.iter().filter(|v| !(**v <= 0.0)).count() as f64 / e.len().max(1) as f64;
        Ok((mean, outside))
    }
}

/// From 20 000 of q₀'s own draws (seeded; non-finite values left out).
fn support_of(start: &FlowModel, alpha: f64, seed: u64, device: &Device) -> Result<Support> {
    let mut rng = HostRng::seed_from_u64(seed ^ 0x5u64.rotate_left(40));
    let mut ln_q = Vec::new();
    let mut coords: Vec<Vec<f64>> = vec![Vec::new(); N_PARAMS];
    for _ in 0..5 {
        let z = rng.normal(&Shape::from((4000, N_PARAMS)), device)?;
        let (phi, lq) = start.sample_with_log_prob(&z)?;
        ln_q.extend(host_vec(&lq)?.into_iter().filter(|v| v.is_finite()));
        for (k, v) in host_vec(&phi)?.into_iter().enumerate() {
            if v.is_finite() {
                coords[k % N_PARAMS].push(v);
            }
        }
    }
    if ln_q.is_empty() || coords.iter().any(|c| c.is_empty()) {
        return Err(Error::Invalid(
            "support: the starting population's draws are not finite".into(),
        ));
    }
    let quantile = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    let threshold = quantile(&mut ln_q, alpha);
    let low: Vec<f64> = coords
        .iter_mut()
        .map(|c| quantile(c, alpha / 2.0))
        .collect();
    let high: Vec<f64> = coords
        .iter_mut()
        .map(|c| quantile(c, 1.0 - alpha / 2.0))
        .collect();
    Ok(Support {
        threshold,
        low: f32_tensor(&low, device)?,
        high: f32_tensor(&high, device)?,
    })
}

fn host_vec(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
}

fn f32_tensor(v: &[f64], device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        v.iter().map(|x| *x as f32).collect::<Vec<_>>(),
        v.len(),
        device,
    )?)
}

impl<'a> PopulationFit<'a> {
    /// Start from the flow `initial` (its weights are copied into trainable variables) and
    /// the survey's `calibration`.
    pub fn new(
        initial: &FlowModel,
        calibration: &Calibration,
        forward: ForwardModel<'a>,
        set: &'a ObservedSet,
        options: FitOptions,
    ) -> Result<Self> {
        options.validate()?;
        if initial.dim() != N_PARAMS {
            return Err(Error::Invalid(format!(
                "initial population: the flow must model the {N_PARAMS} latent parameters, \
                 it has {}",
                initial.dim()
            )));
        }
        let nb = set.n_bands;
        if calibration.zero_points.len() != nb || calibration.error_floors.len() != nb {
            return Err(Error::Invalid(format!(
                "calibration: {} zero points and {} floors for {nb} bands",
                calibration.zero_points.len(),
                calibration.error_floors.len()
            )));
        }
        let groups = options.line_groups.len();
        if forward.n_line_groups() != groups {
            return Err(Error::Invalid(format!(
                "line groups: the fit names {groups} ({}), the forward model supplies the \
                 fluxes of {}",
                options.line_groups.join(", "),
                forward.n_line_groups()
            )));
        }
        let device = forward.device().clone();
        let flow_vars = VarMap::new();
        {
            let mut vars = flow_vars.data().lock().expect("varmap lock");
            for (name, t) in initial.tensors()? {
                if name != "x_shift" && name != "x_scale" {
                    vars.insert(name, Var::from_tensor(&t.to_device(&device)?)?);
                }
            }
        }
        let flow = FlowModel::new(
            initial.config().clone(),
            VarBuilder::from_varmap(&flow_vars, DType::F32, &device),
            initial.x_shift().clone(),
            initial.x_scale().clone(),
        )?;
        let start_ln_zero_points: Vec<f64> =
            calibration.zero_points.iter().map(|z| z.ln()).collect();
        let floors: Vec<f64> = calibration
            .error_floors
            .iter()
            .map(|e| e.clamp(FLOOR_RANGE.0, FLOOR_RANGE.1).ln())
            .collect();
        let ln_zero_points = Var::from_tensor(&f32_tensor(&start_ln_zero_points, &device)?)?;
        let ln_error_floors = Var::from_tensor(&f32_tensor(&floors, &device)?)?;
        let flow_optimizer = candle_nn::AdamW::new(
            sorted_vars(&flow_vars),
            ParamsAdamW {
                lr: options.flow_learning_rate,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let mut cal_vars = Vec::new();
        if options.fit_zero_points {
            cal_vars.push(ln_zero_points.clone());
        }
        if options.fit_error_floors {
            cal_vars.push(ln_error_floors.clone());
        }
        let ln_line_scales = if groups > 0 {
            Some(Var::from_tensor(&Tensor::zeros(
                groups,
                DType::F32,
                &device,
            )?)?)
        } else {
            None
        };
        cal_vars.extend(ln_line_scales.clone());
        let calibration_optimizer = if cal_vars.is_empty() {
            None
        } else {
            Some(candle_nn::AdamW::new(
                cal_vars,
                ParamsAdamW {
                    lr: options.calibration_learning_rate,
                    weight_decay: 0.0,
                    ..Default::default()
                },
            )?)
        };
        let support = if options.support_quantile > 0.0 {
            Some(support_of(
                initial,
                options.support_quantile,
                options.seed,
                &device,
            )?)
        } else {
            None
        };
        Ok(Self {
            options,
            forward,
            set,
            flow_vars,
            flow,
            start: initial.clone(),
            support,
            ln_zero_points,
            ln_error_floors,
            ln_line_scales,
            start_ln_zero_points,
            flow_optimizer,
            calibration_optimizer,
            step: 0,
            history: Vec::new(),
            device,
        })
    }

    /// Steps taken so far (including those before a resume).
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The fit's settings.
    pub fn options(&self) -> &FitOptions {
        &self.options
    }

    /// One record per step taken so far.
    pub fn history(&self) -> &[StepRecord] {
        &self.history
    }

    /// The current population (a copy of the flow with the current weights).
    pub fn model(&self) -> Result<FlowModel> {
        FlowModel::from_tensors(
            self.flow.config().clone(),
            self.flow.tensors()?,
            "population fit",
            &self.device,
        )
    }

    /// The current multiplicative zero points Z_b, per band.
    pub fn zero_points(&self) -> Result<Vec<f64>> {
        Ok(host_vec(self.ln_zero_points.as_tensor())?
            .into_iter()
            .map(f64::exp)
            .collect())
    }

    /// The current fractional error floors ε_b, per band.
    pub fn error_floors(&self) -> Result<Vec<f64>> {
        Ok(host_vec(self.ln_error_floors.as_tensor())?
            .into_iter()
            .map(f64::exp)
            .collect())
    }

    /// The current flux scales s_g of [`FitOptions::line_groups`] (empty without any).
    pub fn line_scales(&self) -> Result<Vec<f64>> {
        match &self.ln_line_scales {
            None => Ok(Vec::new()),
            Some(v) => Ok(host_vec(v.as_tensor())?.into_iter().map(f64::exp).collect()),
        }
    }

    fn learning_rate_factor(&self) -> f64 {
        let frac = (self.step as f64 / self.options.steps.max(1) as f64).min(1.0);
        0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
    }

    /// The generator of step `step` (independent of how the run got there).
    fn step_rng(&self, step: usize) -> HostRng {
        HostRng::seed_from_u64(
            self.options
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(step as u64),
        )
    }

    /// Draw `n` galaxies from the current population and simulate their observed rows.
    pub fn simulate(
        &self,
        n: usize,
        rng: &mut dyn RandomSource,
    ) -> Result<crate::forward::Simulated> {
        Ok(self.simulate_with_kl(n, rng)?.0)
    }

    /// [`Self::simulate`] plus the per-draw ln q(φ) − ln q₀(φ) `[n]` (tracked).
    ///
    /// Under an explicit selection most draws of a population fall below the cut (3 % of
    /// the KiDS mock's truth reach r ≤ 24). So `selection_oversample` × n draws are first
    /// simulated without gradients, and only those that pass (at most n) are simulated
    /// again with gradients and the same noise. The selection's own dependence on the
    /// population (the draws crossing the cut) carries no gradient, as with any hard cut.
    fn simulate_with_kl(
        &self,
        n: usize,
        rng: &mut dyn RandomSource,
    ) -> Result<(crate::forward::Simulated, Tensor, Tensor, Tensor)> {
        let ln_zp = self.ln_zero_points.as_tensor();
        let floors = self.ln_error_floors.as_tensor().exp()?;
        let ln_s = self.ln_line_scales.as_ref().map(|v| v.as_tensor());
        let params = DataModelParams {
            ln_zero_points: ln_zp,
            error_floors: &floors,
            ln_line_scales: ln_s,
        };
        if self.forward.has_selection() && self.options.selection_oversample > 1 {
            // The pool is drawn in chunks, so that a large diagnostic simulation does not
            // hold the flow's graph over n × oversample rows at once.
            let pool = n * self.options.selection_oversample;
            let chunk = pool.min(POOL_CHUNK.max(n));
            let (ln_zp_fixed, floors_fixed) = (ln_zp.detach(), floors.detach());
            let ln_s_fixed = ln_s.map(|t| t.detach());
            let fixed = DataModelParams {
                ln_zero_points: &ln_zp_fixed,
                error_floors: &floors_fixed,
                ln_line_scales: ln_s_fixed.as_ref(),
            };
            let mut z_kept = vec![];
            let mut draws_kept = vec![];
            let mut first = None;
            let (mut drawn, mut n_kept) = (0, 0);
            while drawn < pool && n_kept < n {
                let m = chunk.min(pool - drawn);
                let z = rng.normal(&Shape::from((m, N_PARAMS)), &self.device)?;
                let phi = self.flow.sample_from_base(&z)?.detach();
                let (trial, draws) = self.forward.simulate_with_draws(&phi, fixed, rng)?;
                let take = trial.kept.len().min(n - n_kept);
                let kept = &trial.kept[..take];
                if take > 0 {
                    let idx = Tensor::from_vec(kept.to_vec(), take, &self.device)?;
                    z_kept.push(z.index_select(&idx, 0)?);
                    draws_kept.push(draws.select(kept)?);
                }
                if first.is_none() {
                    first = Some(z.narrow(0, 0, n.min(m))?);
                }
                n_kept += take;
                drawn += m;
            }
            let first = first.expect("the pool has at least one chunk");
            // The penalties are expectations over the whole population, not its bright
            // part: they use the first draws of the pool, selected or not.
            let (phi, ln_q) = self.flow.sample_with_log_prob(&first)?;
            let ln_start = self.start.log_prob(&phi)?;
            let ln_ratio = (ln_q - &ln_start)?;
            if z_kept.is_empty() {
                return Err(Error::Invalid(format!(
                    "step {}: none of {pool} simulated galaxies passes the selection; the \
                     population makes no galaxies this bright. Raise selection_oversample, \
                     loosen the selection, or fit without one (the catalogue as given)",
                    self.step
                )));
            }
            let phi_kept = self.flow.sample_from_base(&Tensor::cat(&z_kept, 0)?)?;
            let draws = crate::forward::Draws::concat(&draws_kept)?;
            let sim = self.forward.resimulate(&phi_kept, params, &draws)?;
            return Ok((sim, ln_ratio, ln_start, phi));
        }
        let z = rng.normal(&Shape::from((n, N_PARAMS)), &self.device)?;
        let (phi, ln_q) = self.flow.sample_with_log_prob(&z)?;
        let ln_start = self.start.log_prob(&phi)?;
        let ln_ratio = (ln_q - &ln_start)?;
        let sim = self.forward.simulate(&phi, params, rng)?;
        Ok((sim, ln_ratio, ln_start, phi))
    }

    /// One optimiser step; returns its record. A non-finite loss stops the fit with an error
    /// (the last checkpoint is untouched).
    pub fn step(&mut self) -> Result<StepRecord> {
        let mut rng = self.step_rng(self.step);
        let n = self.options.batch_size;
        let (mut sim, ln_ratio, ln_start, phi) = self.simulate_with_kl(n, &mut rng)?;
        // Rows whose simulation is not finite (e.g. an emulator overflow far outside its
        // training box) are dropped and counted; a sort needs a total order.
        let feats: Vec<Vec<f32>> = sim.features.detach().to_vec2()?;
        let finite: Vec<u32> = (0..feats.len() as u32)
            .filter(|&i| feats[i as usize].iter().all(|v| v.is_finite()))
            .collect();
        let non_finite = feats.len() - finite.len();
        if non_finite > 0 {
            let idx = Tensor::from_vec(finite.clone(), finite.len(), &self.device)?;
            sim.features = sim.features.index_select(&idx, 0)?;
        }
        let kept = finite.len();
        if non_finite * 2 > sim.kept.len() {
            return Err(Error::Invalid(format!(
                "step {}: the simulated photometry is not finite for {non_finite} of {} \
                 galaxies (a loss that becomes NaN); stopping. Lower the learning rates",
                self.step,
                sim.kept.len()
            )));
        }
        if kept < 16 {
            return Err(Error::Invalid(format!(
                "step {}: only {kept} of {} simulated galaxies pass the selection; the \
                 population makes too few galaxies this bright. Raise the batch size or \
                 selection_oversample, loosen the selection, or fit without one (the \
                 catalogue as given)",
                self.step,
                n * self.options.selection_oversample
            )));
        }
        let rows = rng.indices(kept, self.set.len());
        let observed = self.set.features(&rows, &self.device)?;
        let distance = self
            .options
            .distance
            .evaluate(&sim.features, &observed, &mut rng)?;
        let value = distance.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Err(Error::Invalid(format!(
                "step {}: the distance became {value}; stopping (the last checkpoint is kept). \
                 Lower the learning rates or check the catalogue for extreme fluxes",
                self.step
            )));
        }
        let mut loss = distance;
        let kl_to_start = match finite_mean(&ln_ratio)?.0 {
            None => f64::NAN,
            Some(kl) => {
                let value = kl.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if self.options.prior_weight > 0.0 {
                    loss = (loss + kl.affine(self.options.prior_weight, 0.0)?)?;
                }
                value
            }
        };
        if self.options.entropy_weight > 0.0 {
            let ln_q = (&ln_ratio + &ln_start)?;
            if let Some(neg_entropy) = finite_mean(&ln_q)?.0 {
                loss = (loss + neg_entropy.affine(self.options.entropy_weight, 0.0)?)?;
            }
        }
        let mut outside_support = 0.0;
        if let Some(support) = &self.support {
            let (hinge, outside) = if self.options.support_box {
                support.box_hinge(&phi)?
            } else {
                support.density_hinge(&ln_start)?
            };
            outside_support = outside;
            if let Some(h) = hinge
                && self.options.support_weight > 0.0
            {
                loss = (loss + h.affine(self.options.support_weight, 0.0)?)?;
            }
        }
        if self.options.fit_zero_points && self.options.zero_point_prior_weight > 0.0 {
            let start = f32_tensor(&self.start_ln_zero_points, &self.device)?;
            let penalty = (self.ln_zero_points.as_tensor() - start)?
                .affine(1.0 / self.options.zero_point_prior_sigma, 0.0)?
                .sqr()?
                .mean_all()?
                .affine(self.options.zero_point_prior_weight, 0.0)?;
            loss = (loss + penalty)?;
        }
        if let Some(ln_s) = &self.ln_line_scales
            && self.options.zero_point_prior_weight > 0.0
        {
            let penalty = ln_s
                .as_tensor()
                .affine(1.0 / self.options.line_scale_prior_sigma, 0.0)?
                .sqr()?
                .mean_all()?
                .affine(self.options.zero_point_prior_weight, 0.0)?;
            loss = (loss + penalty)?;
        }
        let mut grads = loss.backward()?;
        let non_finite_gradients = sanitise(&mut grads, &sorted_vars(&self.flow_vars))?
            + sanitise(
                &mut grads,
                &[self.ln_zero_points.clone(), self.ln_error_floors.clone()]
                    .into_iter()
                    .chain(self.ln_line_scales.clone())
                    .collect::<Vec<_>>(),
            )?;
        if self.options.max_grad_norm > 0.0 {
            clip(
                &mut grads,
                &sorted_vars(&self.flow_vars),
                self.options.max_grad_norm,
            )?;
        }
        let f = self.learning_rate_factor();
        self.flow_optimizer
            .set_learning_rate(self.options.flow_learning_rate * f);
        self.flow_optimizer.step(&grads)?;
        if let Some(opt) = &mut self.calibration_optimizer {
            opt.set_learning_rate(self.options.calibration_learning_rate * f);
            opt.step(&grads)?;
        }
        self.project_calibration()?;
        let record = StepRecord {
            step: self.step,
            distance: value,
            kept,
            non_finite,
            non_finite_gradients,
            kl_to_start,
            outside_support,
        };
        self.history.push(record);
        self.step += 1;
        Ok(record)
    }

    /// Hold the geometric mean of Z at its start, and the floors and line scales in range.
    fn project_calibration(&mut self) -> Result<()> {
        let mut z = host_vec(self.ln_zero_points.as_tensor())?;
        let shift = self.start_ln_zero_points.iter().sum::<f64>() / z.len() as f64
            - z.iter().sum::<f64>() / z.len() as f64;
        z.iter_mut().for_each(|v| *v += shift);
        self.ln_zero_points.set(&f32_tensor(&z, &self.device)?)?;
        let e: Vec<f64> = host_vec(self.ln_error_floors.as_tensor())?
            .into_iter()
            .map(|v| v.clamp(FLOOR_RANGE.0.ln(), FLOOR_RANGE.1.ln()))
            .collect();
        self.ln_error_floors.set(&f32_tensor(&e, &self.device)?)?;
        if let Some(v) = &self.ln_line_scales {
            let s: Vec<f64> = host_vec(v.as_tensor())?
                .into_iter()
                .map(|x| x.clamp(LINE_SCALE_RANGE.0.ln(), LINE_SCALE_RANGE.1.ln()))
                .collect();
            v.set(&f32_tensor(&s, &self.device)?)?;
        }
        Ok(())
    }

    /// Mean distance per block of `block` steps.
    pub fn loss_curve(&self, block: usize) -> Vec<(usize, f64)> {
        self.history
            .chunks(block.max(1))
            .map(|c| {
                (
                    c.last().expect("non-empty chunk").step,
                    c.iter().map(|r| r.distance).sum::<f64>() / c.len() as f64,
                )
            })
            .collect()
    }

    /// Per-band KS of drawn vs catalogue flux errors on `n` fresh simulated galaxies.
    pub fn error_model_ks(&self, n: usize) -> Result<Vec<f64>> {
        let mut rng = self.step_rng(usize::MAX);
        let sim = self.simulate(n, &mut rng)?;
        let mask: Vec<f32> = sim.mask.flatten_all()?.to_vec1()?;
        Ok(crate::errors::error_ks(self.set, &sim.sigma_nmgy, &mask))
    }

    /// Write a checkpoint: the flow (loadable as a prior) plus, under `fit.*`, the zero
    /// points, floors, step, options and history.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let model = self.model()?;
        let mut tensors = model.tensors()?;
        tensors.insert(
            "fit.ln_zero_points".into(),
            self.ln_zero_points.as_tensor().detach().copy()?,
        );
        tensors.insert(
            "fit.ln_error_floors".into(),
            self.ln_error_floors.as_tensor().detach().copy()?,
        );
        if let Some(v) = &self.ln_line_scales {
            tensors.insert("fit.ln_line_scales".into(), v.as_tensor().detach().copy()?);
        }
        let mut meta = HashMap::new();
        meta.insert("fit_step".into(), self.step.to_string());
        meta.insert(
            "fit_options".into(),
            serde_json::to_string(&self.options).expect("serialisable"),
        );
        meta.insert(
            "fit_history".into(),
            serde_json::to_string(&self.history).expect("serialisable"),
        );
        write_model(&model, tensors, meta, path)
    }

    /// Continue from a checkpoint written by [`PopulationFit::save_checkpoint`] with the same
    /// options (checked, except `steps`, which may be raised).
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let fmt = |m: String| Error::Format {
            file: file.clone(),
            message: m,
        };
        let meta = popcosmos_priors::read_metadata(&bytes, &file)?;
        let get = |k: &str| {
            meta.get(k)
                .ok_or_else(|| fmt(format!("not a population-fit checkpoint (no `{k}`)")))
        };
        let step: usize = get("fit_step")?
            .parse()
            .map_err(|e| fmt(format!("fit_step: {e}")))?;
        let saved: FitOptions = serde_json::from_str(get("fit_options")?)
            .map_err(|e| fmt(format!("fit_options: {e}")))?;
        let mut a = saved.clone();
        a.steps = self.options.steps;
        if a != self.options {
            return Err(fmt(format!(
                "the checkpoint was written with other options ({}); resume with the same ones",
                serde_json::to_string(&saved).expect("serialisable")
            )));
        }
        let history: Vec<StepRecord> = serde_json::from_str(get("fit_history")?)
            .map_err(|e| fmt(format!("fit_history: {e}")))?;
        let tensors = popcosmos_priors::read_tensors(&bytes, &file, &self.device)?;
        let t = |k: &str| {
            tensors
                .get(k)
                .ok_or_else(|| fmt(format!("missing tensor `{k}`")))
        };
        for (name, var) in self.flow_vars.data().lock().expect("varmap lock").iter() {
            var.set(t(name)?)?;
        }
        self.ln_zero_points.set(t("fit.ln_zero_points")?)?;
        self.ln_error_floors.set(t("fit.ln_error_floors")?)?;
        if let Some(v) = &self.ln_line_scales {
            v.set(t("fit.ln_line_scales")?)?;
        }
        self.step = step;
        self.history = history;
        Ok(())
    }

    /// The report of the fit so far.
    pub fn report(&self, error_model_ks: Vec<f64>, seconds: f64) -> Result<FitReport> {
        Ok(FitReport {
            options: self.options.clone(),
            steps_done: self.step,
            rows_used: self.set.len(),
            rows_without_data: self.set.rows_without_data,
            rows_cut: self.set.rows_cut,
            band_labels: self.set.labels.clone(),
            band_counts: (0..self.set.n_bands)
                .map(|b| {
                    self.set
                        .mask
                        .iter()
                        .skip(b)
                        .step_by(self.set.n_bands)
                        .filter(|m| **m > 0.0)
                        .count()
                })
                .collect(),
            zero_points: self.zero_points()?,
            error_floors: self.error_floors()?,
            line_scales: self.line_scales()?,
            loss_curve: self.loss_curve(50),
            error_model: self.forward.error_model().describe(),
            error_model_ks,
            outside_support: {
                let tail = &self.history[self.history.len().saturating_sub(50)..];
                tail.iter().map(|r| r.outside_support).sum::<f64>() / tail.len().max(1) as f64
            },
            seconds,
        })
    }
}

/// Zero the non-finite entries of the gradients of `vars`; returns how many there were.
fn sanitise(grads: &mut candle_core::backprop::GradStore, vars: &[Var]) -> Result<usize> {
    let mut count = 0;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            let finite = g.abs()?.lt(f64::INFINITY)?;
            let bad = g.elem_count()
                - finite.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize;
            if bad > 0 {
                let g = finite.where_cond(g, &g.zeros_like()?)?;
                grads.insert(v.as_tensor(), g);
                count += bad;
            }
        }
    }
    Ok(count)
}

/// Scale the gradients of `vars` so that their joint norm is at most `max_norm`.
fn clip(grads: &mut candle_core::backprop::GradStore, vars: &[Var], max_norm: f64) -> Result<()> {
    let mut sq = Vec::with_capacity(vars.len());
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq.push(g.sqr()?.sum_all()?);
        }
    }
    if sq.is_empty() {
        return Ok(());
    }
    let total = Tensor::stack(&sq, 0)?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?
        .sqrt();
    if total > max_norm {
        let s = max_norm / total;
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * s)?);
            }
        }
    }
    Ok(())
}
