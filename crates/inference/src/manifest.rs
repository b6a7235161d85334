//! The YAML run manifest (`popcosmos-cli run manifest.yaml`).
//!
//! Every section rejects unknown keys; parse errors carry the line and column
//! (serde-saphyr). Relative paths are resolved against the manifest's folder.

use std::path::{Path, PathBuf};

use popcosmos_api::{Device, Error, Result, Survey};
use popcosmos_catalog::CatalogueSpec;
use popcosmos_models::{HubConfig, LoadedModel, WeightRef};
use popcosmos_priors::PriorSpec;
use popcosmos_sps::photulator::PhotulatorConfig;
use popcosmos_sps::{LineCalibration, PhotulatorSps, WeightFile};
use popcosmos_surveys::{DefinedSurvey, SurveySpec};
use serde::{Deserialize, Serialize};

use crate::likelihood::LikelihoodSpec;

/// A complete run description.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The survey: bands, filter curves and calibration (zero points, error floors).
    pub survey: SurveySpec,
    /// The input catalogue: file, flux units and band columns.
    pub catalogue: CatalogueSpec,
    /// The SPS emulator that turns θ into model fluxes (default: the COSMOS photulator).
    #[serde(default, deserialize_with = "sps_with_default_kind")]
    pub sps: SpsSpec,
    /// The population prior over the 16 latent parameters φ.
    pub prior: PriorSpec,
    /// The per-band noise model (default: Student-t, ν = 2).
    #[serde(default)]
    pub likelihood: LikelihoodSpec,
    /// Sampler kind and its settings.
    #[serde(default)]
    pub sampler: SamplerSpec,
    /// Walker starts from the library of prior draws.
    #[serde(default)]
    pub init: InitSpec,
    /// Convergence thresholds behind the output flags.
    #[serde(default)]
    pub diagnostics: DiagnosticsSpec,
    /// Where and how results are written.
    pub output: OutputSpec,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Master seed; every batch derives its own stream from it and its index.
    #[serde(default)]
    pub seed: u64,
    /// Galaxies sampled together in one tensor batch.
    #[serde(default = "default_batch")]
    pub galaxies_per_batch: usize,
}

fn default_device() -> String {
    "cpu".into()
}
fn default_batch() -> usize {
    100
}

/// SPS model section, e.g. `sps: {kind: photulator, weights: builtin:photulator_kids9}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SpsSpec {
    /// A photulator emulator set restricted to the survey's bands, plus the emission-line
    /// emulator ([`PhotulatorSps::for_survey`]); `cosmos-photulator` is its former name.
    #[serde(alias = "cosmos-photulator")]
    Photulator {
        /// Photulator weights: `builtin:NAME`, `hf://ORG/REPO[@REVISION]/FILE` or a path to a
        /// safetensors file with a model card next to it (docs/models.md), each checked
        /// against its card's sha256. Default: the 26-band COSMOS set.
        #[serde(default = "default_photulator_weights")]
        weights: String,
        /// Include the emission-line emulator terms.
        #[serde(default = "yes")]
        emission_lines: bool,
        /// Largest number of parameter rows per emulator call; default
        /// [`SpsSpec::rows_per_call`] (16 384 on a CPU, 262 144 on CUDA, where the
        /// `[26, rows, 128]` activations are 3.5 GB).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_rows: Option<usize>,
        /// Model-side scatter of the flux blueward of rest-frame Lyα, as a share of the far-UV
        /// continuum (the IGM's sightline-to-sightline variation; [`popcosmos_sps::IgmScatter`]);
        /// 0 = none (default), up to 10.
        #[serde(default, skip_serializing_if = "is_zero")]
        igm_scatter: f64,
    },
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// `sps:` without `kind` is the photulator, the only SPS kind today, so manifests written
/// before the section was tagged keep working.
fn sps_with_default_kind<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<SpsSpec, D::Error> {
    use serde::de::Error as _;
    let mut value = serde_json::Value::deserialize(d)?;
    if let serde_json::Value::Object(map) = &mut value {
        map.entry("kind").or_insert_with(|| "photulator".into());
    }
    SpsSpec::deserialize(value).map_err(D::Error::custom)
}

/// The bundled 26-band COSMOS photulator set.
pub const DEFAULT_PHOTULATOR_WEIGHTS: &str = "builtin:photulator_cosmos26";

fn default_photulator_weights() -> String {
    DEFAULT_PHOTULATOR_WEIGHTS.into()
}
fn yes() -> bool {
    true
}

impl SpsSpec {
    /// Rows per emulator call on `device`: `max_rows` if set, else 16 384 on a CPU (cache-sized
    /// passes) and 262 144 on CUDA (fewer, fuller kernels).
    pub fn rows_per_call(&self, device: &Device) -> usize {
        let Self::Photulator { max_rows, .. } = self;
        max_rows.unwrap_or(if device.is_cpu() { 16_384 } else { 262_144 })
    }

    /// The parsed `weights` reference.
    pub fn weight_ref(&self) -> Result<WeightRef> {
        let Self::Photulator { weights, .. } = self;
        if weights == "builtin" {
            return Err(Error::Invalid(format!(
                "sps.weights: 'builtin' is no longer accepted; write \
                 {DEFAULT_PHOTULATOR_WEIGHTS} (the bundled COSMOS set, checked against its \
                 model card like every reference)"
            )));
        }
        weights
            .parse()
            .map_err(|e: popcosmos_models::ModelError| Error::config("sps.weights", e.to_string()))
    }

    /// The SPS model of `survey`: the `weights` set (resolved through `hub`, verified against
    /// its model card, whose kind must be `photulator`) restricted to the survey's bands, with
    /// the survey's filter curves for the emission-line responses of non-COSMOS sets and a
    /// survey plugin's emission-line terms in place of the Leistedt+23 ones.
    pub fn build(
        &self,
        survey: &DefinedSurvey,
        hub: &HubConfig,
        device: &Device,
    ) -> Result<PhotulatorSps> {
        let Self::Photulator {
            emission_lines,
            igm_scatter,
            ..
        } = self;
        let r = self.weight_ref()?;
        let model = load_model("sps.weights", &r, "photulator", "photulator", hub)?;
        let config = PhotulatorConfig {
            bands: model.card.bands.clone(),
            architecture: model.card.architecture.layers.clone(),
        };
        let set = WeightFile::from_bytes(&model.bytes, model.source.clone(), device)?;
        let lines = emission_lines.then(|| match survey.emission_lines.as_slice() {
            [] => LineCalibration::leistedt23(),
            given => LineCalibration {
                offsets: given.iter().map(|l| l.offset).collect(),
                ln_scatters: given.iter().map(|l| l.ln_scatter).collect(),
            },
        });
        let sps = PhotulatorSps::for_survey(
            &set,
            config,
            &survey.band_names(),
            &survey.filters,
            lines.as_ref(),
            device,
        )
        .map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("sps.weights: {m}")),
            other => other,
        })?;
        let sps = if survey.line_offsets.is_empty() {
            sps
        } else if !emission_lines {
            return Err(Error::config(
                "survey.calibration_file",
                "its emission_lines offsets need the line model, but sps.emission_lines is false",
            ));
        } else {
            sps.with_line_offsets(&survey.line_offsets)
                .map_err(|e| Error::config("survey.calibration_file", e.to_string()))?
        };
        if *igm_scatter == 0.0 {
            return Ok(sps);
        }
        if survey.filters.len() != survey.band_names().len() {
            return Err(Error::config(
                "sps.igm_scatter",
                format!(
                    "needs a filter curve per band; the survey has {} curves for {} bands",
                    survey.filters.len(),
                    survey.band_names().len()
                ),
            ));
        }
        let igm = popcosmos_sps::IgmScatter::new(
            &survey.filters,
            *igm_scatter,
            popcosmos_api::params::UPPER[popcosmos_api::params::IDX_Z],
            device,
        )?;
        sps.with_igm_scatter(igm)
    }
}

impl Default for SpsSpec {
    fn default() -> Self {
        Self::Photulator {
            weights: default_photulator_weights(),
            emission_lines: true,
            max_rows: None,
            igm_scatter: 0.0,
        }
    }
}

/// Sampler kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    /// The affine-invariant ensemble sampler with the weighted `moves` (the default).
    #[default]
    Ensemble,
    /// Hamiltonian Monte Carlo with step sizes adapted during burn-in.
    Hmc,
    /// Adaptive likelihood-tempered sequential Monte Carlo from prior draws
    /// ([`popcosmos_samplers::Smc`]): weights the modes of a multimodal posterior correctly.
    Smc,
    /// The start library importance-weighted by the likelihood (SMC's stage 0 taken straight
    /// to β = 1): a fast estimate whose quality its ESS column reports.
    Library,
}

impl SamplerKind {
    /// Kinds that start from prior draws and report evidence and SMC diagnostics.
    pub fn is_smc(self) -> bool {
        matches!(self, Self::Smc | Self::Library)
    }
}

/// One weighted ensemble move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum MoveSpec {
    /// Goodman & Weare stretch move.
    Stretch {
        /// Scale parameter a > 1 (default 2).
        #[serde(default = "default_a")]
        a: f64,
        /// Relative probability of choosing this move (default 1).
        #[serde(default = "one")]
        weight: f64,
    },
    /// Differential-evolution move (ter Braak 2006).
    DifferentialEvolution {
        /// Scale γ; absent uses the optimal 2.38/√(2d).
        #[serde(default)]
        gamma: Option<f64>,
        /// Relative probability of choosing this move (default 1).
        #[serde(default = "one")]
        weight: f64,
    },
    /// Independence proposals from a multivariate Student-t (ν degrees of freedom, 0 =
    /// Gaussian) fitted per galaxy: to the complementary half during the first half of
    /// burn-in, then frozen on the ensemble's draws from the second quarter of burn-in and
    /// refitted on those of the second half for the kept steps.
    Global {
        /// Degrees of freedom of the proposal; 0 means Gaussian (default 5).
        #[serde(default = "default_global_nu")]
        nu: u32,
        /// Scale of the proposal's covariance relative to the fitted one (default 1).
        #[serde(default = "one")]
        scale: f64,
        /// Relative probability of choosing this move (default 1).
        #[serde(default = "one")]
        weight: f64,
    },
    /// Independence proposals from a mixture of t components, one per k-means cluster of the
    /// complementary half (one per mode of a multimodal posterior).
    Clustered {
        /// Most mixture components (default 4).
        #[serde(default = "default_components")]
        components: usize,
        /// Degrees of freedom of each component; 0 means Gaussian (default 5).
        #[serde(default = "default_global_nu")]
        nu: u32,
        /// Scale of each component's covariance relative to its cluster's (default 1).
        #[serde(default = "one")]
        scale: f64,
        /// Relative probability of choosing this move (default 1).
        #[serde(default = "one")]
        weight: f64,
    },
    /// Differential evolution along the redshift ridge: the DE step is taken in coordinates
    /// where every other parameter has had a polynomial in z, fitted to the complementary
    /// half, subtracted, so a jump in z carries the SED parameters along the curved
    /// degeneracy (docs/validation.md, "Ridge move").
    Ridge {
        /// Degree of the fitted curve, 2 to 5 (default 3).
        #[serde(default = "default_ridge_degree")]
        degree: usize,
        /// Relative probability of choosing this move (default 1).
        #[serde(default = "one")]
        weight: f64,
    },
    /// Gaussian random walk with the covariance of the nearest particles of the
    /// complementary half, for posteriors whose scale changes along them (a funnel's neck,
    /// a thin curved ridge; docs/validation.md, "Local move").
    Local {
        /// Nearest neighbours whose covariance shapes the step (default 0: 2 × dim + 1).
        #[serde(default)]
        neighbours: usize,
        /// Step length in units of 2.38/√dim (default 1).
        #[serde(default = "one")]
        scale: f64,
        /// Weight of the whole half's covariance mixed into the neighbours' (default 0.05).
        #[serde(default = "default_local_shrinkage")]
        shrinkage: f64,
        /// Relative probability of choosing this move (default 1).
        #[serde(default = "one")]
        weight: f64,
    },
}

fn default_local_shrinkage() -> f64 {
    popcosmos_samplers::LocalMove::default().shrinkage
}

fn default_ridge_degree() -> usize {
    3
}

fn default_components() -> usize {
    4
}

fn default_max_temperature() -> f64 {
    20.0
}

fn default_global_nu() -> u32 {
    5
}

fn default_a() -> f64 {
    2.0
}
fn one() -> f64 {
    1.0
}

/// Sampler section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerSpec {
    /// Which sampler runs (default: the ensemble sampler).
    #[serde(default)]
    pub kind: SamplerKind,
    /// Total walkers per galaxy (ensemble: split into two halves) or chains (HMC).
    #[serde(default = "default_walkers")]
    pub walkers: usize,
    /// Ensemble / HMC: total steps, burn-in included (default 400).
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Ensemble / HMC: steps discarded at the start, also HMC's adaptation window
    /// (default 200; smaller than `steps`).
    #[serde(default = "default_burn")]
    pub burn_in: usize,
    /// Ensemble / HMC: keep every `thin`-th step after burn-in (default 1).
    #[serde(default = "one_usize")]
    pub thin: usize,
    /// Ensemble moves (also SMC's rejuvenation moves). Default: stretch 0.3, differential
    /// evolution 0.2, global 0.5 for the ensemble; stretch 0.2, differential evolution 0.2,
    /// global 0.1, clustered 0.5 for SMC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moves: Option<Vec<MoveSpec>>,
    /// Sample in prior-adapted coordinates (an exact change of variables, `reparam`):
    /// Z_gas − Z* instead of Z_gas where the prior needs Z_gas > Z*, then each parameter
    /// mapped so that the prior's marginal is a standard normal (fitted to the start
    /// library's prior draws; needs `init.library_size` ≥ 2000). It removes the constraint
    /// wall and the heavy Student-t tails of the SFR-ratio priors that slow the moves down.
    #[serde(default = "yes")]
    pub whiten: bool,
    /// Ensemble: number of parallel-tempering temperatures (1 = no tempering). Each costs one
    /// more target evaluation per walker and step; only T = 1 is reported.
    #[serde(default = "one_usize")]
    pub temperatures: usize,
    /// Ensemble: hottest temperature of the geometric ladder (used when `temperatures` > 1).
    #[serde(default = "default_max_temperature")]
    pub max_temperature: f64,
    /// HMC: leapfrog steps per iteration.
    #[serde(default = "default_leapfrog")]
    pub leapfrog_steps: usize,
    /// HMC: target acceptance for step-size adaptation.
    #[serde(default = "default_target_accept")]
    pub target_accept: f64,
    /// Ensemble: half-way through burn-in, walkers more than this many nats below their
    /// galaxy's median log-posterior are re-seeded from the best half (`null` disables).
    #[serde(default = "default_prune_deficit")]
    pub prune_deficit: Option<f64>,
    /// SMC: particles per galaxy (≥ 32, twice the dimension).
    #[serde(default = "default_particles")]
    pub particles: usize,
    /// SMC: each stage's β step keeps the ESS of the incremental weights at this fraction of
    /// the particles, in (0, 1).
    #[serde(default = "default_ess_target")]
    pub ess_target: f64,
    /// SMC: fewest / most move sweeps per stage.
    #[serde(default = "default_min_sweeps")]
    pub min_sweeps: usize,
    /// SMC: most move sweeps per stage (see `min_sweeps`).
    #[serde(default = "default_max_sweeps")]
    pub max_sweeps: usize,
    /// SMC: sweep until every coordinate's correlation across particles with its value at the
    /// start of the stage is below this, in (0, 1).
    #[serde(default = "default_max_correlation")]
    pub max_correlation: f64,
    /// SMC: stages after which a galaxy below β = 1 stops and is flagged.
    #[serde(default = "default_max_stages")]
    pub max_stages: usize,
    /// SMC: sweeps at β = 1 whose states are all kept as posterior draws.
    #[serde(default = "default_final_sweeps")]
    pub final_sweeps: usize,
    /// SMC: griddy-Gibbs updates of z per stage (and one before each final sweep): every
    /// particle's z is redrawn from its conditional p(z | the rest, N held) tabulated on
    /// `z_grid` points (0 = off).
    #[serde(default = "default_z_gibbs")]
    pub z_gibbs: usize,
    /// SMC: points of that z grid (uniform in ln(1 + z) over the prior's z range).
    #[serde(default = "default_z_grid")]
    pub z_grid: usize,
    /// SMC: independent particle populations per galaxy (`particles` split between them),
    /// pooled. With 2 or more, R̂ across them is written as `smc_island_rhat` and the spread
    /// of their median redshifts as `smc_z_spread`; a galaxy whose spread exceeds
    /// `diagnostics.max_z_spread` is flagged (its photo-z depends on the seed).
    #[serde(default = "default_islands")]
    pub islands: usize,
    /// SMC: strata in redshift (1 = off). Each galaxy's particles are split into this many
    /// independent populations, each on the posterior restricted to one z interval (equal
    /// shares of the first stage's mass), and pooled by their evidences, so a narrow z mode
    /// cannot be emptied by a broader one on the tempered path. Needs `islands: 1`.
    #[serde(default = "default_strata")]
    pub strata: usize,
    /// SMC: most rounds of islands per galaxy (1 = off; 2, 4, 8 … dividing
    /// `final_sweeps`). After the first round, a galaxy whose pooled median redshift has a
    /// standard error above `round_tolerance` (from its islands' medians, in Δz/(1 + z);
    /// column `smc_z_se`) runs as many independent islands again, doubling until it is below
    /// or `rounds` is reached (column `smc_rounds`). Broad and multi-peaked p(z), whose
    /// medians move with the mode weights, get the particles; single peaks do not.
    #[serde(default = "default_rounds")]
    pub rounds: usize,
    /// SMC: standard error of the pooled median z, in Δz/(1 + z), above which a galaxy gets
    /// more rounds (> 0).
    #[serde(default = "default_round_tolerance")]
    pub round_tolerance: f64,
    /// SMC: independent draws per galaxy of the final importance stage (0 = off): a mixture
    /// of t fitted to the final particles (`importance_components` k-means clusters, each
    /// widened by `importance_scale`) proposes them and the posterior weighs them. They
    /// replace the particles where their ESS (`smc_importance_ess`) reaches
    /// `importance_min_ess`; the evidence is then the importance estimate.
    #[serde(default = "default_importance_draws")]
    pub importance_draws: usize,
    /// SMC: most components of the importance proposal.
    #[serde(default = "default_importance_components")]
    pub importance_components: usize,
    /// SMC: widening of each importance component's covariance (scale on its standard
    /// deviations, > 0).
    #[serde(default = "default_importance_scale")]
    pub importance_scale: f64,
    /// SMC: least importance ESS for the importance draws to replace the particles.
    #[serde(default = "default_importance_min_ess")]
    pub importance_min_ess: f64,
}

fn default_importance_draws() -> usize {
    0
}
fn default_importance_components() -> usize {
    popcosmos_samplers::SmcConfig::default().importance_components
}
fn default_importance_scale() -> f64 {
    popcosmos_samplers::SmcConfig::default().importance_scale
}
fn default_importance_min_ess() -> f64 {
    popcosmos_samplers::SmcConfig::default().importance_min_ess
}

/// Four islands of 128 at the default 512 particles: on the KiDS calibration rows and the
/// high-S/N tuning mocks this covers better than one population of 512 at the same cost
/// (docs/validation.md, "Islands"), and it gives the `smc_z_spread` check.
fn default_islands() -> usize {
    4
}

fn default_strata() -> usize {
    1
}

fn default_rounds() -> usize {
    popcosmos_samplers::SmcConfig::default().rounds
}

fn default_round_tolerance() -> f64 {
    popcosmos_samplers::SmcConfig::default().round_tolerance
}

fn default_z_gibbs() -> usize {
    popcosmos_samplers::SmcConfig::default().grid_gibbs
}
fn default_z_grid() -> usize {
    64
}

fn default_particles() -> usize {
    popcosmos_samplers::SmcConfig::default().particles
}
fn default_ess_target() -> f64 {
    popcosmos_samplers::SmcConfig::default().ess_target
}
fn default_min_sweeps() -> usize {
    popcosmos_samplers::SmcConfig::default().min_sweeps
}
/// 40 sweeps per stage, twice the samplers crate's default: on the KiDS calibration rows
/// the Monte Carlo spread of the islands' median z falls from 0.08 to 0.03 (1+z) for 1.7× the
/// time (docs/validation.md, "Sweeps per stage").
fn default_max_sweeps() -> usize {
    40
}
fn default_max_correlation() -> f64 {
    popcosmos_samplers::SmcConfig::default().max_correlation
}
fn default_max_stages() -> usize {
    popcosmos_samplers::SmcConfig::default().max_stages
}
fn default_final_sweeps() -> usize {
    popcosmos_samplers::SmcConfig::default().final_sweeps
}

impl SamplerSpec {
    /// The moves in use: the manifest's, or the default for the sampler kind.
    pub fn moves(&self) -> Vec<MoveSpec> {
        match (&self.moves, self.kind.is_smc()) {
            (Some(m), _) => m.clone(),
            (None, false) => default_moves(),
            (None, true) => default_smc_moves(),
        }
    }

    /// The SMC settings of this section.
    pub fn smc_config(&self) -> popcosmos_samplers::SmcConfig {
        popcosmos_samplers::SmcConfig {
            particles: self.particles,
            ess_target: self.ess_target,
            min_sweeps: self.min_sweeps,
            max_sweeps: self.max_sweeps,
            max_correlation: self.max_correlation,
            max_stages: self.max_stages,
            final_sweeps: self.final_sweeps,
            grid_gibbs: self.z_gibbs,
            islands: self.islands,
            strata: self.strata,
            strata_axis: popcosmos_api::params::IDX_Z,
            rounds: self.rounds,
            round_tolerance: self.round_tolerance,
            importance_draws: self.importance_draws,
            importance_components: self.importance_components,
            importance_scale: self.importance_scale,
            importance_min_ess: self.importance_min_ess,
        }
    }
}

/// SMC rejuvenation: local moves, the single global t, and the clustered mixture that moves
/// particles inside every mode of a multimodal posterior (docs/validation.md, "SMC").
fn default_smc_moves() -> Vec<MoveSpec> {
    vec![
        MoveSpec::Stretch {
            a: 2.0,
            weight: 0.2,
        },
        MoveSpec::DifferentialEvolution {
            gamma: None,
            weight: 0.2,
        },
        MoveSpec::Global {
            nu: default_global_nu(),
            scale: 1.0,
            weight: 0.1,
        },
        MoveSpec::Clustered {
            components: default_components(),
            nu: default_global_nu(),
            scale: 1.0,
            weight: 0.5,
        },
    ]
}

fn default_prune_deficit() -> Option<f64> {
    Some(20.0)
}

fn default_walkers() -> usize {
    64
}
fn default_steps() -> usize {
    400
}
fn default_burn() -> usize {
    200
}
fn one_usize() -> usize {
    1
}
/// Local moves for narrow posteriors plus the global move, which decorrelates broad ones
/// (docs/validation.md, "Sampler mixing").
fn default_moves() -> Vec<MoveSpec> {
    vec![
        MoveSpec::Stretch {
            a: 2.0,
            weight: 0.3,
        },
        MoveSpec::DifferentialEvolution {
            gamma: None,
            weight: 0.2,
        },
        MoveSpec::Global {
            nu: default_global_nu(),
            scale: 1.0,
            weight: 0.5,
        },
    ]
}
fn default_leapfrog() -> usize {
    10
}
fn default_target_accept() -> f64 {
    0.8
}

impl Default for SamplerSpec {
    fn default() -> Self {
        Self {
            kind: SamplerKind::Ensemble,
            walkers: default_walkers(),
            steps: default_steps(),
            burn_in: default_burn(),
            thin: 1,
            moves: None,
            whiten: true,
            temperatures: 1,
            max_temperature: default_max_temperature(),
            leapfrog_steps: default_leapfrog(),
            target_accept: default_target_accept(),
            prune_deficit: default_prune_deficit(),
            particles: default_particles(),
            ess_target: default_ess_target(),
            min_sweeps: default_min_sweeps(),
            max_sweeps: default_max_sweeps(),
            max_correlation: default_max_correlation(),
            max_stages: default_max_stages(),
            final_sweeps: default_final_sweeps(),
            z_gibbs: default_z_gibbs(),
            z_grid: default_z_grid(),
            islands: default_islands(),
            strata: default_strata(),
            rounds: default_rounds(),
            round_tolerance: default_round_tolerance(),
            importance_draws: default_importance_draws(),
            importance_components: default_importance_components(),
            importance_scale: default_importance_scale(),
            importance_min_ess: default_importance_min_ess(),
        }
    }
}

/// Initialisation section: a library of prior draws with precomputed model fluxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    /// Prior draws in the library (model fluxes computed once per run).
    #[serde(default = "default_library")]
    pub library_size: usize,
    /// Walkers start around this many best-likelihood library draws per galaxy.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Gaussian jitter (latent units) around each start point.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Adam steps refining the best start point of each galaxy on −ln P (0 = off).
    #[serde(default)]
    pub adam_steps: usize,
    /// Adam learning rate, a step size in latent φ (default 0.01).
    #[serde(default = "default_lr")]
    pub adam_learning_rate: f64,
    /// SMC and library samplers: draw a share `proposal_fraction` of the start library from
    /// this density instead of the prior (any `prior:` spec, e.g. a population fitted to the
    /// survey's photometry), weighted back to the run's prior, so the posterior is unchanged
    /// but the library is denser where galaxies are ([`crate::InitLibrary::build_with_proposal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<PriorSpec>,
    /// Share of the start library drawn from `proposal`, in (0, 1) (default 0.5; the importance
    /// weights are at most 1/(1 − share)).
    #[serde(default = "default_proposal_fraction")]
    pub proposal_fraction: f64,
}

fn default_proposal_fraction() -> f64 {
    0.5
}

fn default_library() -> usize {
    20000
}
fn default_top_k() -> usize {
    1
}
fn default_jitter() -> f64 {
    0.1
}
fn default_lr() -> f64 {
    0.01
}

impl Default for InitSpec {
    fn default() -> Self {
        Self {
            library_size: default_library(),
            top_k: default_top_k(),
            jitter: default_jitter(),
            adam_steps: 0,
            adam_learning_rate: default_lr(),
            proposal: None,
            proposal_fraction: default_proposal_fraction(),
        }
    }
}

/// Convergence thresholds; failing galaxies are flagged in the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticsSpec {
    /// Largest acceptable rank-normalised split-R̂ (default 1.1).
    #[serde(default = "default_rhat")]
    pub max_rhat: f64,
    /// Smallest acceptable bulk ESS (default 100); the tail-ESS threshold is half of it.
    #[serde(default = "default_ess")]
    pub min_ess_bulk: f64,
    /// Smallest acceptable acceptance fraction (default 0.05).
    #[serde(default = "default_min_acc")]
    pub min_acceptance: f64,
    /// SMC with islands: largest acceptable spread of the islands' median redshifts,
    /// (max − min)/(1 + z) (default 0.15, a catastrophic outlier's width: above it one island
    /// would call another's photo-z an outlier). With 4 islands of 128 particles the range of
    /// four medians is ≈ 0.07 for a typical KiDS galaxy from Monte Carlo noise alone, so a
    /// smaller threshold flags most galaxies (docs/validation.md, "Islands").
    #[serde(default = "default_max_z_spread")]
    pub max_z_spread: f64,
}

fn default_rhat() -> f64 {
    1.1
}
fn default_ess() -> f64 {
    100.0
}
fn default_min_acc() -> f64 {
    0.05
}
fn default_max_z_spread() -> f64 {
    0.15
}

impl Default for DiagnosticsSpec {
    fn default() -> Self {
        Self {
            max_rhat: default_rhat(),
            min_ess_bulk: default_ess(),
            min_acceptance: default_min_acc(),
            max_z_spread: default_max_z_spread(),
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// Apache Parquet parts (the default).
    #[default]
    Parquet,
    /// CSV parts.
    Csv,
}

/// Output section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Output folder (parts, run record, chains).
    pub dir: PathBuf,
    /// File format of the result and chain parts (default Parquet).
    #[serde(default)]
    pub format: OutputFormat,
    /// Also write thinned chains.
    #[serde(default)]
    pub chains: bool,
    /// Keep every n-th stored draw in the chain files.
    #[serde(default = "default_chain_thin")]
    pub chain_thin: usize,
    /// SMC and library samplers: bin width of the p(z) written as columns `pz_<z>` of the
    /// results (density per unit z at the bin centre z, from 0 to the prior's upper z);
    /// 0 writes none.
    #[serde(default = "default_pz_step")]
    pub pz_step: f64,
}

fn default_pz_step() -> f64 {
    0.02
}

fn default_chain_thin() -> usize {
    10
}

impl Manifest {
    /// Parse YAML text; `source` names the file in errors.
    pub fn from_yaml(text: &str, source: &str) -> Result<Self> {
        let m: Manifest = serde_saphyr::from_str(text).map_err(|e| Error::Format {
            file: source.to_string(),
            message: e.to_string(),
        })?;
        m.validate()?;
        Ok(m)
    }

    /// Read a manifest file and resolve relative paths against its folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut m = Self::from_yaml(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        m.resolve_paths(base);
        m.apply_survey_columns()?;
        Ok(m)
    }

    /// Fill `catalogue.bands` from the survey's column map (KiDS / LSST / YAML surveys) when
    /// the catalogue section names no columns, and expand `{label}` in `flux_pattern` /
    /// `error_pattern` with the survey's band labels.
    pub fn apply_survey_columns(&mut self) -> Result<()> {
        let c = &self.catalogue;
        let uses_label = [&c.flux_pattern, &c.error_pattern]
            .iter()
            .any(|p| p.as_deref().is_some_and(|p| p.contains("{label}")));
        let names_columns =
            c.bands.is_some() || c.flux_pattern.is_some() || c.error_pattern.is_some();
        if c.bands.is_some() || (names_columns && !uses_label) {
            return Ok(());
        }
        let survey = self.survey.build_defined()?;
        let columns: Vec<popcosmos_catalog::BandColumns> = if uses_label {
            let (Some(fp), Some(ep)) = (&c.flux_pattern, &c.error_pattern) else {
                return Err(Error::config(
                    "catalogue.flux_pattern",
                    "flux_pattern and error_pattern must be given together",
                ));
            };
            let expand = |p: &str, b: &popcosmos_api::Band| {
                p.replace("{label}", &b.label).replace("{band}", &b.name)
            };
            survey
                .bands
                .iter()
                .map(|b| popcosmos_catalog::BandColumns {
                    band: b.name.clone(),
                    flux: expand(fp, b),
                    error: expand(ep, b),
                })
                .collect()
        } else if let Some(cols) = survey.columns {
            cols.into_iter()
                .map(|b| popcosmos_catalog::BandColumns {
                    band: b.band,
                    flux: b.flux,
                    error: b.error,
                })
                .collect()
        } else {
            return Ok(());
        };
        self.catalogue.bands = Some(columns);
        self.catalogue.flux_pattern = None;
        self.catalogue.error_pattern = None;
        Ok(())
    }

    /// Make relative paths absolute against `base` (the manifest's folder): catalogue,
    /// output folder, survey file, calibration file and plugins, and weight references that
    /// are paths.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.catalogue.path);
        fix(&mut self.output.dir);
        if let Some(p) = &mut self.survey.file {
            fix(p);
        }
        if let Some(p) = &mut self.survey.calibration_file {
            fix(p);
        }
        // Weight references that are paths.
        let fix_weights = |w: &mut String| {
            if let Ok(WeightRef::Path(mut p)) = w.parse() {
                fix(&mut p);
                *w = p.display().to_string();
            }
        };
        let SpsSpec::Photulator { weights, .. } = &mut self.sps;
        fix_weights(weights);
        if let PriorSpec::Diffusion { weights, .. } | PriorSpec::Flow { weights } =
            self.prior.innermost_mut()
        {
            fix_weights(weights);
        }
        if let PriorSpec::Diffusion {
            fast_sampler: Some(fast),
            ..
        } = self.prior.innermost_mut()
        {
            fix_weights(&mut fast.weights);
        }
        // Plugin libraries (docs/plugins.md).
        if let Some(p) = &mut self.survey.plugin {
            fix(p);
        }
        if let PriorSpec::Plugin { path, .. } = self.prior.innermost_mut() {
            fix(path);
        }
        if let Some(proposal) = &mut self.init.proposal {
            match proposal.innermost_mut() {
                PriorSpec::Diffusion { weights, .. } | PriorSpec::Flow { weights } => {
                    fix_weights(weights)
                }
                PriorSpec::Plugin { path, .. } => fix(path),
                _ => {}
            }
        }
    }

    /// Semantic checks that serde cannot express; errors name the manifest key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::config(key, msg));
        self.prior.validate()?;
        if let PriorSpec::Diffusion { weights, .. } | PriorSpec::Flow { weights } =
            self.prior.innermost()
            && let Err(e) = weights.parse::<WeightRef>()
        {
            return bad("prior.weights", e.to_string());
        }
        if let PriorSpec::Diffusion {
            fast_sampler: Some(fast),
            ..
        } = self.prior.innermost()
            && let Err(e) = fast.weights.parse::<WeightRef>()
        {
            return bad("prior.fast_sampler.weights", e.to_string());
        }
        let s = &self.sampler;
        if s.walkers < 4 || !s.walkers.is_multiple_of(2) {
            return bad(
                "sampler.walkers",
                format!("must be an even number ≥ 4, got {}", s.walkers),
            );
        }
        if s.kind == SamplerKind::Ensemble && s.walkers < 2 * 16 {
            return bad(
                "sampler.walkers",
                format!(
                    "the ensemble sampler needs at least 32 walkers (2 × 16 parameters), got {}",
                    s.walkers
                ),
            );
        }
        if s.kind == SamplerKind::Hmc && matches!(self.prior.innermost(), PriorSpec::Plugin { .. })
        {
            return bad(
                "sampler.kind",
                "hmc needs the prior's gradient, and a plugin prior (prior.kind: plugin) has \
                 none; use the ensemble sampler"
                    .into(),
            );
        }
        if s.steps == 0 {
            return bad("sampler.steps", "must be positive".into());
        }
        if s.burn_in >= s.steps {
            return bad(
                "sampler.burn_in",
                format!(
                    "must be smaller than sampler.steps ({}), got {}",
                    s.steps, s.burn_in
                ),
            );
        }
        if s.thin == 0 {
            return bad("sampler.thin", "must be ≥ 1".into());
        }
        if s.thin > s.steps - s.burn_in {
            return bad(
                "sampler.thin",
                format!(
                    "must be at most sampler.steps − sampler.burn_in ({} − {} = {}) so that \
                     at least one draw is kept, got {}",
                    s.steps,
                    s.burn_in,
                    s.steps - s.burn_in,
                    s.thin
                ),
            );
        }
        let moves = s.moves();
        if (s.kind == SamplerKind::Ensemble || s.kind.is_smc()) && moves.is_empty() {
            return bad("sampler.moves", "at least one move is needed".into());
        }
        if s.kind.is_smc() {
            s.smc_config().validate(popcosmos_api::N_PARAMS)?;
            // Each island of each round starts from its own block of the library, which
            // must hold at least the island's particles.
            let need = s.particles * s.rounds;
            if self.init.library_size < need {
                return bad(
                    "init.library_size",
                    format!(
                        "SMC starts from the library's prior draws: needs at least \
                         sampler.particles × sampler.rounds ({need}) draws, got {}",
                        self.init.library_size
                    ),
                );
            }
        }
        if !(self.output.pz_step.is_finite() && self.output.pz_step >= 0.0) {
            return bad(
                "output.pz_step",
                format!("must be ≥ 0 (0 = no p(z)), got {}", self.output.pz_step),
            );
        }
        for (i, m) in moves.iter().enumerate() {
            let (w, extra) = match m {
                MoveSpec::Stretch { a, weight } => (
                    *weight,
                    if *a <= 1.0 {
                        Some(format!("a must be > 1, got {a}"))
                    } else {
                        None
                    },
                ),
                MoveSpec::DifferentialEvolution { weight, .. } | MoveSpec::Ridge { weight, .. } => {
                    (*weight, None)
                }
                MoveSpec::Global { scale, weight, .. }
                | MoveSpec::Clustered { scale, weight, .. }
                | MoveSpec::Local { scale, weight, .. } => (
                    *weight,
                    if !(scale.is_finite() && *scale > 0.0) {
                        Some(format!("scale must be finite and > 0, got {scale}"))
                    } else {
                        None
                    },
                ),
            };
            if let MoveSpec::Clustered { components: 0, .. } = m {
                return bad(
                    &format!("sampler.moves[{i}].components"),
                    "must be ≥ 1".into(),
                );
            }
            if !(w.is_finite() && w > 0.0) {
                return bad(
                    &format!("sampler.moves[{i}].weight"),
                    format!("must be positive, got {w}"),
                );
            }
            if let Some(msg) = extra {
                let key = match m {
                    MoveSpec::Global { .. }
                    | MoveSpec::Clustered { .. }
                    | MoveSpec::Local { .. } => "scale",
                    _ => "a",
                };
                return bad(&format!("sampler.moves[{i}].{key}"), msg);
            }
        }
        if s.temperatures == 0 {
            return bad("sampler.temperatures", "must be ≥ 1".into());
        }
        if s.temperatures > 1 && !(s.max_temperature.is_finite() && s.max_temperature > 1.0) {
            return bad(
                "sampler.max_temperature",
                format!("must be finite and > 1, got {}", s.max_temperature),
            );
        }
        if let Some(p) = s.prune_deficit
            && !(p.is_finite() && p > 0.0)
        {
            return bad(
                "sampler.prune_deficit",
                format!("must be a positive number of nats (or null), got {p}"),
            );
        }
        if !(s.target_accept > 0.0 && s.target_accept < 1.0) {
            return bad(
                "sampler.target_accept",
                format!("must be in (0, 1), got {}", s.target_accept),
            );
        }
        int_range(
            "init.library_size",
            self.init.library_size,
            MIN_LIBRARY,
            MAX_LIBRARY,
        )?;
        if self.init.library_size < self.init.top_k.max(1) {
            return bad(
                "init.top_k",
                format!(
                    "must be at most init.library_size ({}), got {}",
                    self.init.library_size, self.init.top_k
                ),
            );
        }
        if self.init.top_k == 0 {
            return bad("init.top_k", "must be ≥ 1".into());
        }
        if self.galaxies_per_batch == 0 {
            return bad("galaxies_per_batch", "must be ≥ 1".into());
        }
        self.sps.weight_ref()?;
        if self.output.chain_thin == 0 {
            return bad("output.chain_thin", "must be ≥ 1".into());
        }
        self.likelihood.validate()?;
        popcosmos_api::parse_device(&self.device)
            .map_err(|e| Error::config("device", e.to_string()))?;
        self.validate_ranges()
    }

    /// The documented range of every numeric manifest value (docs/reliability.md, "Manifest
    /// value ranges"); the first value outside its range is an error naming its key.
    fn validate_ranges(&self) -> Result<()> {
        let s = &self.sampler;
        int_range(
            "galaxies_per_batch",
            self.galaxies_per_batch,
            1,
            MAX_GALAXIES_PER_BATCH,
        )?;
        if let SpsSpec::Photulator {
            max_rows: Some(rows),
            ..
        } = self.sps
        {
            int_range("sps.max_rows", rows, 1, MAX_SPS_ROWS)?;
        }
        let SpsSpec::Photulator { igm_scatter, .. } = self.sps;
        real_range("sps.igm_scatter", igm_scatter, Closed(0.0), Closed(10.0))?;
        int_range("sampler.walkers", s.walkers, 4, MAX_WALKERS)?;
        int_range("sampler.steps", s.steps, 1, MAX_STEPS)?;
        int_range("sampler.temperatures", s.temperatures, 1, MAX_TEMPERATURES)?;
        real_range(
            "sampler.max_temperature",
            s.max_temperature,
            Open(1.0),
            Closed(1e6),
        )?;
        int_range("sampler.leapfrog_steps", s.leapfrog_steps, 1, MAX_LEAPFROG)?;
        // SMC settings are checked whatever the kind, so a manifest never carries a value that
        // would fail once the kind is switched.
        int_range("sampler.particles", s.particles, 32, MAX_PARTICLES)?;
        int_range("sampler.min_sweeps", s.min_sweeps, 1, MAX_SWEEPS)?;
        int_range("sampler.max_sweeps", s.max_sweeps, s.min_sweeps, MAX_SWEEPS)?;
        int_range("sampler.max_stages", s.max_stages, 1, MAX_STAGES)?;
        int_range("sampler.final_sweeps", s.final_sweeps, 1, MAX_SWEEPS)?;
        int_range("sampler.z_gibbs", s.z_gibbs, 0, MAX_SWEEPS)?;
        int_range("sampler.z_grid", s.z_grid, 2, MAX_Z_GRID)?;
        int_range("sampler.islands", s.islands, 1, 16)?;
        int_range("sampler.strata", s.strata, 1, 64)?;
        int_range("sampler.rounds", s.rounds, 1, 64)?;
        int_range(
            "sampler.importance_draws",
            s.importance_draws,
            0,
            MAX_PARTICLES,
        )?;
        int_range(
            "sampler.importance_components",
            s.importance_components,
            1,
            64,
        )?;
        s.smc_config().validate(popcosmos_api::N_PARAMS)?;
        for (i, m) in s.moves().iter().enumerate() {
            let key = |k: &str| format!("sampler.moves[{i}].{k}");
            match m {
                MoveSpec::Stretch { a, .. } => {
                    real_range(&key("a"), *a, Open(1.0), Closed(100.0))?;
                }
                MoveSpec::DifferentialEvolution { gamma, .. } => {
                    if let Some(g) = gamma {
                        real_range(&key("gamma"), *g, Open(0.0), Closed(10.0))?;
                    }
                }
                MoveSpec::Global { scale, .. } => {
                    real_range(&key("scale"), *scale, Open(0.0), Closed(100.0))?;
                }
                MoveSpec::Clustered {
                    components, scale, ..
                } => {
                    real_range(&key("scale"), *scale, Open(0.0), Closed(100.0))?;
                    int_range(&key("components"), *components, 1, MAX_COMPONENTS)?;
                }
                MoveSpec::Local {
                    neighbours,
                    scale,
                    shrinkage,
                    ..
                } => {
                    real_range(&key("scale"), *scale, Open(0.0), Closed(100.0))?;
                    real_range(&key("shrinkage"), *shrinkage, Closed(0.0), Open(1.0))?;
                    if *neighbours != 0 {
                        int_range(&key("neighbours"), *neighbours, 2, MAX_LOCAL_NEIGHBOURS)?;
                    }
                }
                MoveSpec::Ridge { degree, .. } => {
                    int_range(
                        &key("degree"),
                        *degree,
                        2,
                        popcosmos_samplers::RidgeMove::MAX_DEGREE,
                    )?;
                }
            }
        }
        let init = &self.init;
        int_range(
            "init.library_size",
            init.library_size,
            MIN_LIBRARY,
            MAX_LIBRARY,
        )?;
        int_range("init.top_k", init.top_k, 1, init.library_size)?;
        real_range("init.jitter", init.jitter, Open(0.0), Closed(10.0))?;
        int_range("init.adam_steps", init.adam_steps, 0, MAX_ADAM_STEPS)?;
        real_range(
            "init.adam_learning_rate",
            init.adam_learning_rate,
            Open(0.0),
            Closed(1.0),
        )?;
        if let Some(proposal) = &init.proposal {
            if !self.sampler.kind.is_smc() {
                return Err(Error::config(
                    "init.proposal",
                    format!(
                        "applies to sampler kinds smc and library (their start library is \
                         weighted back to the prior), not {:?}",
                        self.sampler.kind
                    ),
                ));
            }
            proposal
                .validate()
                .map_err(|e| Error::config("init.proposal", e.to_string()))?;
            if let PriorSpec::Diffusion { weights, .. } | PriorSpec::Flow { weights } =
                proposal.innermost()
                && let Err(e) = weights.parse::<WeightRef>()
            {
                return Err(Error::config("init.proposal.weights", e.to_string()));
            }
        }
        real_range(
            "init.proposal_fraction",
            init.proposal_fraction,
            Open(0.0),
            Open(1.0),
        )?;
        let d = &self.diagnostics;
        real_range("diagnostics.max_rhat", d.max_rhat, Closed(1.0), Closed(1e6))?;
        real_range(
            "diagnostics.min_ess_bulk",
            d.min_ess_bulk,
            Closed(0.0),
            Closed(1e9),
        )?;
        real_range(
            "diagnostics.min_acceptance",
            d.min_acceptance,
            Closed(0.0),
            Closed(1.0),
        )?;
        real_range(
            "diagnostics.max_z_spread",
            d.max_z_spread,
            Open(0.0),
            Closed(1e6),
        )?;
        if let LikelihoodSpec::StudentT { nu } = self.likelihood {
            real_range("likelihood.nu", nu, Open(0.0), Closed(1e6))?;
        }
        let pz = self.output.pz_step;
        if pz != 0.0 {
            real_range("output.pz_step", pz, Closed(MIN_PZ_STEP), Closed(1.0)).map_err(
                |e| match e {
                    Error::Config { key, message } => {
                        Error::config(key, format!("{message} (or 0 for no p(z) columns)"))
                    }
                    e => e,
                },
            )?;
        }
        if let PriorSpec::Diffusion {
            fast_sampler: Some(fast),
            ..
        } = &self.prior
        {
            int_range("prior.fast_sampler.steps", fast.steps, 1, 1000)?;
        }
        for (i, &zp) in self.survey.zero_points.iter().flatten().enumerate() {
            real_range(
                &format!("survey.zero_points[{i}]"),
                zp,
                Closed(0.01),
                Closed(100.0),
            )?;
        }
        for (i, &ef) in self.survey.error_floors.iter().flatten().enumerate() {
            real_range(
                &format!("survey.error_floors[{i}]"),
                ef,
                Closed(0.0),
                Closed(10.0),
            )?;
        }
        match self.catalogue.upper_limits {
            popcosmos_catalog::UpperLimitConvention::FlagValue(v) if !v.is_finite() => {
                return Err(Error::config(
                    "catalogue.upper_limits.flag_value",
                    format!("must be a finite number, got {v}"),
                ));
            }
            popcosmos_catalog::UpperLimitConvention::SnrBelow(v) => {
                real_range(
                    "catalogue.upper_limits.snr_below",
                    v,
                    Closed(-1e6),
                    Closed(1e6),
                )?;
            }
            _ => {}
        }
        Ok(())
    }

    /// `output.dir` can be written: it is a folder we can create a file in, or does not exist
    /// yet and its nearest existing ancestor is such a folder. Probes with a temporary file
    /// (permission bits alone do not tell, e.g. for root or a read-only mount); creates
    /// nothing that stays. Errors name `output.dir`.
    pub fn check_output_dir(&self) -> Result<()> {
        let dir = &self.output.dir;
        let bad = |why: String| {
            Err(Error::config(
                "output.dir",
                format!("{}: {why}", dir.display()),
            ))
        };
        let mut existing = dir.as_path();
        while !existing.exists() {
            match existing.parent() {
                Some(p) if !p.as_os_str().is_empty() => existing = p,
                _ => {
                    existing = Path::new(".");
                    break;
                }
            }
        }
        if !existing.is_dir() {
            return if existing == dir.as_path() {
                bad("exists and is not a folder".into())
            } else {
                bad(format!(
                    "cannot be created: {} is not a folder",
                    existing.display()
                ))
            };
        }
        let probe = existing.join(format!(".popcosmos-write-probe-{}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                Ok(())
            }
            Err(e) if existing == dir.as_path() => bad(format!("not writable ({e})")),
            Err(e) => bad(format!(
                "cannot be created: {} is not writable ({e})",
                existing.display()
            )),
        }
    }

    /// Whether `sampler.whiten` will fit its marginal whitening: it needs
    /// [`crate::MIN_WHITENING_DRAWS`] prior draws, i.e. `init.library_size` ≥ 2000 for
    /// the ensemble and HMC (half the library is drawn from the prior) and ≥ 1000 for SMC.
    /// With fewer draws the sampler runs in the constraint-mapped coordinates only.
    pub fn whitening_fitted(&self) -> bool {
        let prior_draws = if self.sampler.kind.is_smc() {
            self.init.library_size
        } else {
            self.init.library_size.div_ceil(2)
        };
        self.sampler.whiten && prior_draws >= crate::init::MIN_WHITENING_DRAWS
    }
}

/// Upper bound of `galaxies_per_batch` (a batch's tensors are `[walkers, galaxies, 16]`).
pub const MAX_GALAXIES_PER_BATCH: usize = 1_000_000;
/// Upper bound of `sps.max_rows` (2^24 rows of `[bands, rows, 128]` activations).
pub const MAX_SPS_ROWS: usize = 1 << 24;
/// Upper bound of `sampler.walkers`.
pub const MAX_WALKERS: usize = 65_536;
/// Upper bound of `sampler.steps`.
pub const MAX_STEPS: usize = 10_000_000;
/// Upper bound of `sampler.temperatures`.
pub const MAX_TEMPERATURES: usize = 64;
/// Upper bound of `sampler.leapfrog_steps`.
pub const MAX_LEAPFROG: usize = 10_000;
/// Upper bound of `sampler.particles`.
pub const MAX_PARTICLES: usize = 1 << 20;
/// Upper bound of `sampler.max_sweeps` and `sampler.final_sweeps`.
pub const MAX_SWEEPS: usize = 10_000;
/// Upper bound of `sampler.z_grid`.
pub const MAX_Z_GRID: usize = 4096;
/// Upper bound of `sampler.max_stages`.
pub const MAX_STAGES: usize = 100_000;
/// Upper bound of a clustered move's `components`.
pub const MAX_COMPONENTS: usize = 64;
/// Most neighbours of a `local` move.
pub const MAX_LOCAL_NEIGHBOURS: usize = 4096;
/// Lower bound of `init.library_size`.
pub const MIN_LIBRARY: usize = 100;
/// Upper bound of `init.library_size`.
pub const MAX_LIBRARY: usize = 10_000_000;
/// Upper bound of `init.adam_steps`.
pub const MAX_ADAM_STEPS: usize = 100_000;
/// Smallest non-zero `output.pz_step` (6000 p(z) columns over 0 < z < 6).
pub const MIN_PZ_STEP: f64 = 0.001;

/// One end of a real interval.
#[derive(Clone, Copy)]
enum Bound {
    Open(f64),
    Closed(f64),
}
use Bound::{Closed, Open};

/// `value` must be finite and inside (or on the closed ends of) `lo … hi`.
fn real_range(key: &str, value: f64, lo: Bound, hi: Bound) -> Result<()> {
    let (lo_ok, lo_s) = match lo {
        Open(l) => (value > l, format!("({l}")),
        Closed(l) => (value >= l, format!("[{l}")),
    };
    let (hi_ok, hi_s) = match hi {
        Open(h) => (value < h, format!("{h})")),
        Closed(h) => (value <= h, format!("{h}]")),
    };
    if value.is_finite() && lo_ok && hi_ok {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("must be a finite number in {lo_s}, {hi_s}, got {value}"),
        ))
    }
}

/// `value` must lie in `lo ..= hi`.
fn int_range(key: &str, value: usize, lo: usize, hi: usize) -> Result<()> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("must be an integer in [{lo}, {hi}], got {value}"),
        ))
    }
}

/// Build the manifest's prior; `weights` references of learned priors are resolved through
/// the model zoo (`builtin:`, card-checked paths, `hf://` through `hub`) and their card's kind
/// is checked.
pub fn build_prior(
    spec: &PriorSpec,
    device: &Device,
    hub: &HubConfig,
) -> Result<Box<dyn popcosmos_api::Prior>> {
    build_prior_at("prior.weights", spec, device, hub)
}

/// [`build_prior`] for the prior spec at manifest key `key` (its errors name it).
pub fn build_prior_at(
    key: &str,
    spec: &PriorSpec,
    device: &Device,
    hub: &HubConfig,
) -> Result<Box<dyn popcosmos_api::Prior>> {
    spec.build_with(device, &|w: &str, kind: &str| {
        load_weights(key, w, kind, hub)
    })
    .map_err(|e| match e {
        Error::Invalid(m) => Error::config(key, m),
        other => other,
    })
}

/// Resolve and verify a weights reference whose model card must be of `kind`; errors start
/// with `key` (the manifest key or command-line option).
pub fn load_weights(
    key: &str,
    reference: &str,
    kind: &str,
    hub: &HubConfig,
) -> Result<(Vec<u8>, String)> {
    let r = reference
        .parse()
        .map_err(|e: popcosmos_models::ModelError| Error::config(key, e.to_string()))?;
    let model = load_model(key, &r, kind, &format!("{kind} prior"), hub)?;
    Ok((model.bytes.into_owned(), model.source))
}

/// Resolve and verify `reference`, whose model card must be of `kind` (`what` it is called in
/// the error otherwise).
fn load_model(
    key: &str,
    reference: &WeightRef,
    kind: &str,
    what: &str,
    hub: &HubConfig,
) -> Result<LoadedModel> {
    let model =
        popcosmos_models::load(reference, hub).map_err(|e| Error::config(key, e.to_string()))?;
    let found = &model.card.architecture.kind;
    if found != kind {
        return Err(Error::config(
            key,
            format!("{} is a '{found}' model, not a {what}", model.source),
        ));
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Manifest::from_yaml` of a valid manifest with `extra` appended (or replacing its
    /// `output` section).
    fn parse(extra: &str) -> Result<Manifest> {
        let output = if extra.starts_with("output:") {
            ""
        } else {
            "output: {dir: out}\n"
        };
        let text = format!(
            "survey: {{name: cosmos}}\ncatalogue: {{path: x.csv, units: nanomaggies}}\nprior: {{kind: uniform}}\n\
             {output}{extra}"
        );
        Manifest::from_yaml(&text, "m.yaml")
    }

    #[test]
    fn bad_values_are_config_errors_naming_their_key() {
        parse("").unwrap();
        for (extra, key) in [
            ("sampler: {walkers: 3}\n", "sampler.walkers"),
            ("sampler: {steps: 0}\n", "sampler.steps"),
            ("sampler: {kind: smc, particles: 8}\n", "sampler.particles"),
            (
                "sampler: {kind: smc, ess_target: 1.5}\n",
                "sampler.ess_target",
            ),
            (
                "sampler: {moves: [{kind: stretch, weight: -1}]}\n",
                "sampler.moves[0].weight",
            ),
            (
                "sampler: {kind: smc, moves: [{kind: stretch}, {kind: local, shrinkage: 1}]}\n",
                "sampler.moves[1].shrinkage",
            ),
            (
                "sampler: {kind: smc, moves: [{kind: local, neighbours: 1}]}\n",
                "sampler.moves[0].neighbours",
            ),
            (
                "sampler: {kind: smc, moves: [{kind: local, scale: 0}]}\n",
                "sampler.moves[0].scale",
            ),
            ("sampler: {kind: smc, strata: 0}\n", "sampler.strata"),
            ("sampler: {kind: smc, strata: 4}\n", "sampler.strata"),
            (
                "sampler: {kind: smc, islands: 1, strata: 32}\n",
                "sampler.particles",
            ),
            ("sampler: {kind: smc, rounds: 3}\n", "sampler.rounds"),
            (
                "sampler: {kind: smc, rounds: 4}\ninit: {library_size: 2000}\n",
                "init.library_size",
            ),
            ("sampler: {kind: smc, rounds: 0}\n", "sampler.rounds"),
            (
                "sampler: {kind: smc, islands: 1, rounds: 2}\n",
                "sampler.rounds",
            ),
            (
                "sampler: {kind: smc, rounds: 8, final_sweeps: 4}\n",
                "sampler.rounds",
            ),
            (
                "sampler: {kind: smc, rounds: 2, round_tolerance: -1}\n",
                "sampler.round_tolerance",
            ),
            ("init: {library_size: 5}\n", "init.library_size"),
            ("init: {proposal: {kind: uniform}}\n", "init.proposal"),
            (
                "sampler: {kind: smc}\ninit: {proposal: {kind: uniform}, proposal_fraction: 1.0}\n",
                "init.proposal_fraction",
            ),
            (
                "sampler: {kind: smc}\ninit: {proposal: {kind: flow, weights: 'hf://org'}}\n",
                "init.proposal.weights",
            ),
            ("likelihood: {kind: student-t, nu: -1}\n", "likelihood.nu"),
            ("output: {dir: out, pz_step: 0.0001}\n", "output.pz_step"),
            ("sps: {weights: 'hf://org'}\n", "sps.weights"),
            ("device: tpu\n", "device"),
            ("galaxies_per_batch: 0\n", "galaxies_per_batch"),
        ] {
            let e = parse(extra).unwrap_err();
            let shown = e.to_string();
            match e {
                Error::Config { key: k, message } => {
                    assert_eq!(k, key, "{extra}");
                    assert_eq!(shown, format!("{k}: {message}"));
                }
                other => panic!("{extra}: expected Error::Config, got {other:?}"),
            }
        }
    }

    /// `{kind: local}` with no other key takes the move's own defaults.
    #[test]
    fn a_local_move_takes_its_defaults() {
        let m = parse("sampler: {kind: smc, moves: [{kind: local}]}\n").unwrap();
        let d = popcosmos_samplers::LocalMove::default();
        match m.sampler.moves()[0] {
            MoveSpec::Local {
                neighbours,
                scale,
                shrinkage,
                weight,
            } => {
                assert_eq!(
                    (neighbours, scale, shrinkage, weight),
                    (d.neighbours, d.scale, d.shrinkage, 1.0)
                );
            }
            ref other => panic!("{other:?}"),
        }
    }

    /// `strata` stratifies z (the sampler's coordinate of the redshift), with islands off.
    #[test]
    fn strata_stratify_the_redshift() {
        let m = parse("sampler: {kind: smc, islands: 1, strata: 4}\n").unwrap();
        let c = m.sampler.smc_config();
        assert_eq!((c.strata, c.islands), (4, 1));
        assert_eq!(c.strata_axis, popcosmos_api::params::IDX_Z);
        assert_eq!(parse("").unwrap().sampler.smc_config().strata, 1);
        let r = parse("sampler: {kind: smc, rounds: 4, round_tolerance: 0.002}\n").unwrap();
        let c = r.sampler.smc_config();
        assert_eq!((c.rounds, c.round_tolerance, c.islands), (4, 0.002, 4));
        assert_eq!(parse("").unwrap().sampler.smc_config().rounds, 1);
    }

    #[test]
    fn unknown_keys_are_format_errors_naming_the_file() {
        let e = parse("colour: blue\n").unwrap_err();
        assert!(
            matches!(&e, Error::Format { file, .. } if file == "m.yaml"),
            "{e:?}"
        );
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
