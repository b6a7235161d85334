//! `popcosmos-cli fit-population`: learn the population prior (and the zero points and error
//! floors) from a manifest's catalogue photometry alone; `simulate-population`: a mock
//! catalogue through the same forward model.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use popcosmos_api::{Calibration, HostRng, N_PARAMS, PARAM_NAMES, Prior, RandomSource, Survey};
use popcosmos_inference::LikelihoodSpec;
use popcosmos_inference::mock::{NOISE_MODEL_MAX_KS, NoiseModel};
use popcosmos_inference::{Manifest, Pipeline};
use popcosmos_models::HubConfig;
use popcosmos_population::{
    DataModelParams, Distance, EmpiricalErrorModel, ErrorModel, FitOptions, ForwardModel,
    ObservedSet, PopulationFit, Selection,
};
use popcosmos_priors::flow::FlowModel;
use popcosmos_surveys::{BandCalibration, CalibrationFile};

/// The flow a fit starts from: the bundled Prospector-α-like population.
pub const DEFAULT_INITIAL: &str = "builtin:popcosmos_prior_flow";

/// `--error-model`: where the simulated galaxies' flux errors come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ErrorModelKind {
    /// `noise-model` for the 26 COSMOS2020 bands where it reproduces the catalogue's errors
    /// (median per-band KS ≤ `NOISE_MODEL_MAX_KS`), `empirical` otherwise.
    Auto,
    /// Per band, σ(f) from the catalogue's own (flux, error) pairs nearest in flux.
    Empirical,
    /// The bundled COSMOS2020 uncertainty model (`builtin:noise_model`, Thorp et al. 2025),
    /// conditioned on all 26 magnitudes; COSMOS bands only.
    NoiseModel,
}

/// The error model `kind` asks for, for `set` under the manifest's survey, and a line saying
/// why `auto` chose it.
fn error_model(
    kind: ErrorModelKind,
    pipeline: &Pipeline,
    set: &ObservedSet,
) -> Result<(Box<dyn ErrorModel>, Option<String>)> {
    let bands = pipeline.survey.band_names();
    let cosmos26 = bands
        == popcosmos_surveys::Cosmos::new(popcosmos_surveys::CalibrationChoice::Nominal)
            .bands
            .iter()
            .map(|b| b.name.clone())
            .collect::<Vec<_>>();
    let empirical = || -> Box<dyn ErrorModel> {
        Box::new(EmpiricalErrorModel::new(
            set,
            FitOptions::default().error_neighbours,
        ))
    };
    match (kind, cosmos26) {
        (ErrorModelKind::Empirical, _) | (ErrorModelKind::Auto, false) => Ok((empirical(), None)),
        (ErrorModelKind::NoiseModel, false) => bail!(
            "--error-model noise-model: the bundled uncertainty model covers the 26 COSMOS2020 \
             bands in their order; survey '{}' has {} bands ({}); use --error-model empirical",
            pipeline.survey.name(),
            bands.len(),
            bands.join(",")
        ),
        (ErrorModelKind::NoiseModel, true) => Ok((
            Box::new(NoiseModel::builtin(&pipeline.device)?.for_fitting()),
            None,
        )),
        (ErrorModelKind::Auto, true) => {
            let noise = NoiseModel::builtin(&pipeline.device)?.for_fitting();
            let mut rng = HostRng::seed_from_u64(pipeline.manifest.seed ^ 0x0e55);
            let ks = popcosmos_inference::mock::noise_model_ks(&noise, set, 2000, &mut rng)?;
            let mut sorted: Vec<f64> = ks.iter().copied().filter(|k| k.is_finite()).collect();
            sorted.sort_by(f64::total_cmp);
            let median = popcosmos_api::stats::median(&sorted);
            let (worst, band) = ks
                .iter()
                .zip(&set.labels)
                .filter(|(k, _)| k.is_finite())
                .max_by(|a, b| a.0.total_cmp(b.0))
                .map(|(k, l)| (*k, l.as_str()))
                .unwrap_or((f64::NAN, "-"));
            let why = format!(
                "the bundled COSMOS2020 noise model, conditioned on this catalogue's own fluxes, \
                 gives errors whose per-band KS against the catalogue's is {median:.2} at the \
                 median and {worst:.2} at worst ({band})"
            );
            if median <= NOISE_MODEL_MAX_KS {
                Ok((
                    Box::new(noise),
                    Some(format!("--error-model auto: {why}; using it")),
                ))
            } else {
                Ok((
                    empirical(),
                    Some(format!(
                        "--error-model auto: {why} (above {NOISE_MODEL_MAX_KS}; it was trained on \
                         COSMOS2020 Farmer photometry), so the catalogue's own errors are used \
                         (--error-model noise-model forces it)"
                    )),
                ))
            }
        }
    }
}

#[derive(clap::Args)]
pub struct FitPopulationArgs {
    /// Run manifest: its survey, catalogue, SPS, likelihood and calibration are used; its
    /// truth columns are never read.
    pub manifest: PathBuf,
    /// Population weights to write (`.safetensors`); next to it go the model card, the
    /// calibration file (`.calibration.yaml`), the fit report (`.fit.json`) and the
    /// checkpoint (`.checkpoint.safetensors`).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = FitOptions::default().steps)]
    pub steps: usize,
    /// Simulated and observed galaxies per step.
    #[arg(long, default_value_t = FitOptions::default().batch_size)]
    pub batch_size: usize,
    /// Distance between catalogues: `sliced-wasserstein`, `sinkhorn` or `mmd`.
    #[arg(long, default_value = "mmd")]
    pub distance: String,
    #[arg(long, default_value_t = FitOptions::default().flow_learning_rate)]
    pub flow_lr: f64,
    #[arg(long, default_value_t = FitOptions::default().calibration_learning_rate)]
    pub calibration_lr: f64,
    /// Weight of KL(fitted ‖ starting population) added to the distance (0 = none).
    #[arg(long, default_value_t = FitOptions::default().prior_weight)]
    pub prior_weight: f64,
    /// Weight of an entropy bonus −λ H(fitted population), which keeps the parameters the
    /// photometry ignores broad without pulling the population back to the start (0 = none)
    #[arg(long, default_value_t = FitOptions::default().entropy_weight)]
    pub entropy_weight: f64,
    /// Under --select-band, draws simulated per batch row to find the ones that pass the
    /// cut (only those are simulated with gradients)
    #[arg(long, default_value_t = FitOptions::default().selection_oversample)]
    pub selection_oversample: usize,
    /// Keep the population where the emulators were trained: penalise draws whose density
    /// under the starting population falls below its own α quantile (0 = off)
    #[arg(long, default_value_t = FitOptions::default().support_quantile)]
    pub support_quantile: f64,
    /// Weight of that penalty (per nat below the threshold)
    #[arg(long, default_value_t = FitOptions::default().support_weight)]
    pub support_weight: f64,
    /// Hold each coordinate inside the central 1 − α of the start's marginal, instead of
    /// the joint density above its α quantile
    #[arg(long)]
    pub support_box: bool,
    /// Where simulated flux errors come from: `auto` (the bundled COSMOS2020 noise model for
    /// the 26 COSMOS bands if it reproduces the catalogue's errors, the catalogue's own errors
    /// otherwise), `empirical`, `noise-model`
    #[arg(long, value_enum, default_value = "auto")]
    pub error_model: ErrorModelKind,
    /// Keep the manifest's zero points fixed.
    #[arg(long)]
    pub fixed_zero_points: bool,
    /// Keep the manifest's error floors fixed.
    #[arg(long)]
    pub fixed_error_floors: bool,
    /// Also fit one flux scale per group of emission lines (`halpha`, `hbeta-oiii`, `oii`;
    /// comma-separated), from the photometry alone; the calibration file then carries the
    /// groups' offsets (`emission_lines:`)
    #[arg(long, value_delimiter = ',')]
    pub line_offsets: Vec<String>,
    /// Width of the weak Gaussian prior on each line group's ln(scale) around 0
    #[arg(long, default_value_t = FitOptions::default().line_scale_prior_sigma)]
    pub line_scale_prior_sigma: f64,
    /// Starting population (a flow over φ: `builtin:`, a path with a card, `hf://`).
    #[arg(long, default_value = DEFAULT_INITIAL)]
    pub initial: String,
    /// Explicit selection: drop rows fainter than --max-mag in this band (name or label),
    /// and cut simulated galaxies the same way.
    #[arg(long, requires = "max_mag")]
    pub select_band: Option<String>,
    #[arg(long, requires = "select_band")]
    pub max_mag: Option<f64>,
    /// Fewest usable rows to fit on.
    #[arg(long, default_value_t = FitOptions::default().min_galaxies)]
    pub min_galaxies: usize,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: usize,
    /// Seed (default: the manifest's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue from the checkpoint next to --output.
    #[arg(long)]
    pub resume: bool,
    /// Write the diagnostic plots (PNG) into this folder.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
}

fn sibling(output: &Path, suffix: &str) -> PathBuf {
    let stem = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem
        .strip_suffix(".safetensors")
        .unwrap_or(&stem)
        .to_string();
    output.with_file_name(format!("{stem}{suffix}"))
}

/// The manifest's pipeline with its truth columns dropped, the catalogue read in full.
struct Loaded {
    pipeline: Pipeline,
    chunk: popcosmos_catalog::ObservedChunk,
    catalogue: PathBuf,
    sha256: String,
}

fn load(manifest: &Path) -> Result<Loaded> {
    let mut m = Manifest::load(manifest)?;
    // A population fit must not see redshifts: no truth column is read at all.
    m.catalogue.truth_columns.clear();
    let catalogue = m.catalogue.path.clone();
    let pipeline = Pipeline::new(m, &HubConfig::from_env())?;
    let bands = pipeline.survey.band_names();
    let mut reader = popcosmos_catalog::CatalogueReader::open(&pipeline.manifest.catalogue, &bands)
        .with_context(|| format!("reading {}", catalogue.display()))?;
    let chunk = reader
        .read_all()
        .with_context(|| format!("reading {}", catalogue.display()))?;
    let bytes = std::fs::read(&catalogue).with_context(|| catalogue.display().to_string())?;
    let sha256 = popcosmos_models::sha256_hex(&bytes);
    Ok(Loaded {
        pipeline,
        chunk,
        catalogue,
        sha256,
    })
}

/// The forward model of `set` under the manifest's SPS emulator and likelihood, scaling the
/// emission-line groups `line_groups` (their SPS line indices, [`resolve_line_groups`]).
fn forward_model<'a>(
    pipeline: &'a Pipeline,
    set: &'a ObservedSet,
    errors: &'a dyn ErrorModel,
    line_groups: Vec<Vec<usize>>,
) -> Result<ForwardModel<'a>> {
    let nu = match pipeline.manifest.likelihood {
        LikelihoodSpec::StudentT { nu } => Some(nu),
        LikelihoodSpec::Gaussian {} => None,
    };
    let k = line_groups.len();
    let sps = &pipeline.sps;
    Ok(ForwardModel::new(sps, set, errors, nu)?.with_line_groups(
        k,
        Box::new(move |theta| sps.line_group_flux_nmgy(theta, &line_groups)),
    ))
}

/// The SPS model's line indices of each named group (`--line-offsets`), with the groups'
/// canonical names; an unknown group or a model without lines is refused.
fn resolve_line_groups(
    names: &[String],
    pipeline: &Pipeline,
) -> Result<(Vec<String>, Vec<Vec<usize>>)> {
    let mut keys = Vec::new();
    let mut idx = Vec::new();
    for name in names {
        let (group, lines) = popcosmos_inference::line_group_indices(name, &pipeline.sps)?;
        keys.push(group.0.to_string());
        idx.push(lines);
    }
    Ok((keys, idx))
}

/// The line offsets to write: the manifest's (the population was fitted under them), with
/// each fitted group's lines at 1 + α ← s (1 + α).
fn fitted_line_offsets(
    pipeline: &Pipeline,
    groups: &[Vec<usize>],
    scales: &[f64],
) -> Result<Vec<(f64, f64)>> {
    let lines = pipeline.manifest.survey.build_defined()?.line_offsets;
    if groups.is_empty() {
        return Ok(lines);
    }
    let cal = pipeline
        .sps
        .line_calibration()
        .context("line groups were fitted, but the model has no emission lines")?;
    let lambdas = pipeline
        .sps
        .emission_lines()
        .context("the model has no emission lines")?
        .line_wavelengths_aa()?;
    Ok(scaled_line_offsets(
        lines,
        groups,
        scales,
        &lambdas,
        &cal.offsets,
    ))
}

/// `lines` [(λ Å, α)] with each line l of group g replaced by (λ_l, s_g (1 + α_l) − 1), the
/// model's offsets α (line indices into `lambdas` and `offsets`).
fn scaled_line_offsets(
    mut lines: Vec<(f64, f64)>,
    groups: &[Vec<usize>],
    scales: &[f64],
    lambdas: &[f64],
    offsets: &[f64],
) -> Vec<(f64, f64)> {
    for (group, s) in groups.iter().zip(scales) {
        for &l in group {
            // The emulator stores λ in f32; 0.01 Å is far inside the 1.5 Å match.
            let lambda = (lambdas[l] * 100.0).round() / 100.0;
            lines.retain(|(x, _)| (x - lambda).abs() > 1.5);
            lines.push((lambda, s * (1.0 + offsets[l]) - 1.0));
        }
    }
    lines
}

fn initial_flow(reference: &str, pipeline: &Pipeline) -> Result<FlowModel> {
    let hub = HubConfig::from_env();
    let (bytes, source) = popcosmos_inference::load_weights("--initial", reference, "flow", &hub)?;
    Ok(FlowModel::from_bytes(&bytes, &source, &pipeline.device)?)
}

pub fn fit_population(args: &FitPopulationArgs) -> Result<()> {
    let checkpoint = sibling(&args.output, ".checkpoint.safetensors");
    if !args.resume {
        for p in [&args.output, &checkpoint] {
            if p.exists() {
                bail!(
                    "{} exists; use --resume to continue that fit or choose another --output \
                     (nothing is overwritten)",
                    p.display()
                );
            }
        }
    }
    let distance = match args.distance.as_str() {
        "sliced-wasserstein" => Distance::sliced_wasserstein(),
        "sinkhorn" => Distance::Sinkhorn {
            blur: 0.05,
            scaling: 0.7,
        },
        "mmd" => Distance::default(),
        other => bail!("--distance: '{other}' is not one of sliced-wasserstein, sinkhorn, mmd"),
    };
    let t0 = std::time::Instant::now();
    // An unknown group is refused before the catalogue is read.
    for g in &args.line_offsets {
        popcosmos_inference::line_group(g)?;
    }
    let loaded = load(&args.manifest)?;
    let pipeline = &loaded.pipeline;
    let (group_names, group_lines) = resolve_line_groups(&args.line_offsets, pipeline)?;
    let options = FitOptions {
        steps: args.steps,
        batch_size: args.batch_size,
        flow_learning_rate: args.flow_lr,
        calibration_learning_rate: args.calibration_lr,
        distance,
        fit_zero_points: !args.fixed_zero_points,
        fit_error_floors: !args.fixed_error_floors,
        min_galaxies: args.min_galaxies,
        prior_weight: args.prior_weight,
        entropy_weight: args.entropy_weight,
        selection_oversample: args.selection_oversample,
        support_quantile: args.support_quantile,
        support_weight: args.support_weight,
        support_box: args.support_box,
        line_groups: group_names,
        line_scale_prior_sigma: args.line_scale_prior_sigma,
        seed: args.seed.unwrap_or(pipeline.manifest.seed),
        ..Default::default()
    };
    options.validate().map_err(|e| anyhow::anyhow!("--{e}"))?;
    let selection = args.select_band.clone().map(|band| Selection {
        band,
        max_mag: args.max_mag.expect("clap requires --max-mag"),
    });
    let source = loaded.catalogue.display().to_string();
    let set = ObservedSet::new(
        &loaded.chunk,
        pipeline.survey.bands(),
        selection.as_ref(),
        options.min_galaxies,
        &source,
    )?;
    if !args.quiet {
        eprintln!(
            "{source}: {} usable rows ({} without any measured band skipped, {} cut by the \
             selection); no redshift column read",
            set.len(),
            set.rows_without_data,
            set.rows_cut
        );
    }
    let (errors, why) = error_model(args.error_model, pipeline, &set)?;
    if !args.quiet {
        if let Some(why) = why {
            eprintln!("{why}");
        }
        eprintln!("flux errors: {}", errors.describe());
    }
    let forward = forward_model(pipeline, &set, errors.as_ref(), group_lines.clone())?;
    let init = initial_flow(&args.initial, pipeline)?;
    let calibration = pipeline.survey.calibration().clone();
    let mut fit = PopulationFit::new(&init, &calibration, forward, &set, options.clone())?;
    if args.resume {
        if !checkpoint.exists() {
            bail!("--resume: no checkpoint {}", checkpoint.display());
        }
        fit.resume(&checkpoint)?;
        if !args.quiet {
            eprintln!(
                "resumed {} at step {}",
                checkpoint.display(),
                fit.step_count()
            );
        }
    }
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(options.steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps  ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_position(fit.step_count() as u64);
    let mut recent = std::collections::VecDeque::new();
    while fit.step_count() < options.steps {
        let record = match fit.step() {
            Ok(r) => r,
            Err(e) => {
                bar.abandon();
                return Err(anyhow::anyhow!(
                    "{e} (last good checkpoint: {})",
                    checkpoint.display()
                ));
            }
        };
        recent.push_back(record.distance);
        if recent.len() > 50 {
            recent.pop_front();
        }
        let scales: String = options
            .line_groups
            .iter()
            .zip(fit.line_scales()?)
            .map(|(g, s)| format!(" {g} ×{s:.2}"))
            .collect();
        bar.set_message(format!(
            "distance {:.4}{scales}{}",
            recent.iter().sum::<f64>() / recent.len() as f64,
            if record.non_finite + record.non_finite_gradients > 0 {
                format!(
                    " ({} non-finite galaxies, {} gradients)",
                    record.non_finite, record.non_finite_gradients
                )
            } else {
                String::new()
            }
        ));
        bar.inc(1);
        if fit.step_count() % args.checkpoint_every.max(1) == 0 || fit.step_count() == options.steps
        {
            fit.save_checkpoint(&checkpoint)?;
        }
    }
    bar.finish();
    let ks = fit.error_model_ks(8192)?;
    let report = fit.report(ks, t0.elapsed().as_secs_f64())?;
    let lines = fitted_line_offsets(pipeline, &group_lines, &report.line_scales)?;
    write_outputs(args, &loaded, &fit, &report, selection.as_ref(), &lines)?;
    if let Some(dir) = &args.plots {
        plot(dir, &fit, &set, &init)?;
    }
    if !args.quiet {
        print_summary(&report, pipeline.survey.as_ref());
        eprintln!(
            "wrote {} (+ card, {}, {}) in {:.0} s",
            args.output.display(),
            sibling(&args.output, ".calibration.yaml").display(),
            sibling(&args.output, ".fit.json").display(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// (z, log10 M_formed) of `n` draws from a flow.
fn z_logm(flow: &FlowModel, n: usize, seed: u64) -> Result<Vec<(f64, f64)>> {
    let mut rng = HostRng::seed_from_u64(seed);
    let theta: Vec<Vec<f64>> = popcosmos_api::params::phi_to_theta(&flow.sample(n, &mut rng)?)?
        .to_dtype(candle_core::DType::F64)?
        .to_vec2()?;
    Ok(theta
        .iter()
        .map(|t| {
            let z = t[popcosmos_api::params::IDX_Z];
            (
                z,
                popcosmos_sps::log10_mass_formed(t[popcosmos_api::params::IDX_N], z),
            )
        })
        .collect())
}

fn plot(dir: &Path, fit: &PopulationFit, set: &ObservedSet, init: &FlowModel) -> Result<()> {
    let nb = set.n_bands;
    let mags =
        |features: &candle_core::Tensor, mask: &candle_core::Tensor| -> Result<Vec<Vec<f64>>> {
            let f: Vec<Vec<f32>> = features.detach().to_vec2()?;
            let m: Vec<Vec<f32>> = mask.to_vec2()?;
            Ok(f.iter()
                .zip(&m)
                .map(|(r, mr)| {
                    (0..nb)
                        .map(|b| {
                            if mr[b] > 0.0 {
                                set.feature_shift[b] + set.feature_scale[b] * r[b] as f64
                            } else {
                                f64::NAN
                            }
                        })
                        .collect()
                })
                .collect())
        };
    let n = 8192.min(4 * set.len());
    let mut rng = HostRng::seed_from_u64(fit.options().seed ^ 0x5eed);
    let sim = fit.simulate(n, &mut rng)?;
    let simulated = mags(&sim.features, &sim.mask)?;
    let rows: Vec<u32> = (0..set.len() as u32).collect();
    let observed = mags(
        &set.features(&rows, &candle_core::Device::Cpu)?,
        &set.masks(&rows, &candle_core::Device::Cpu)?,
    )?;
    let fitted = z_logm(&fit.model()?, 20_000, 1)?;
    let initial = z_logm(init, 20_000, 1)?;
    crate::plots::population_plots(
        dir,
        &crate::plots::PopulationPlotData {
            labels: &set.labels,
            observed: &observed,
            simulated: &simulated,
            fitted: &fitted,
            initial: &initial,
        },
    )
}

fn print_summary(report: &popcosmos_population::FitReport, survey: &dyn Survey) {
    println!(
        "{:<8} {:>10} {:>10} {:>8}",
        "band", "zero_point", "floor", "KS_err"
    );
    for (b, band) in survey.bands().iter().enumerate() {
        println!(
            "{:<8} {:>10.4} {:>10.4} {:>8.3}",
            band.label, report.zero_points[b], report.error_floors[b], report.error_model_ks[b]
        );
    }
    for (g, s) in report.options.line_groups.iter().zip(&report.line_scales) {
        println!("line group {g:<11} flux × {s:.3}");
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn write_outputs(
    args: &FitPopulationArgs,
    loaded: &Loaded,
    fit: &PopulationFit,
    report: &popcosmos_population::FitReport,
    selection: Option<&Selection>,
    line_offsets: &[(f64, f64)],
) -> Result<()> {
    let pipeline = &loaded.pipeline;
    let survey = pipeline.survey.as_ref();
    let learned_on = format!(
        "{} (sha256 {}), {} usable rows of {}{}; photometry only: no redshift or other truth \
         column was read",
        loaded.catalogue.display(),
        loaded.sha256,
        report.rows_used,
        loaded.chunk.len(),
        selection.map_or(String::new(), |s| format!(
            ", selection {} <= {}",
            s.band, s.max_mag
        ))
    );
    let mut meta = HashMap::new();
    meta.insert("population_fit".into(), serde_json::to_string(report)?);
    let model = fit.model()?;
    model.save(&args.output, &meta)?;
    let curve: Vec<String> = report
        .loss_curve
        .iter()
        .step_by((report.loss_curve.len() / 10).max(1))
        .map(|(s, d)| format!("{s}:{d:.4}"))
        .collect();
    let zps: Vec<String> = survey
        .bands()
        .iter()
        .zip(&report.zero_points)
        .map(|(b, z)| format!("{} {z:.4}", b.label))
        .collect();
    let notes = format!(
        "popcosmos-cli fit-population {} --steps {} --seed {} (distance {:?}, batch {}). \
         Learned on {learned_on}. Survey {}; bands {}. Flux errors: {}. Fitted zero points: \
         {}.{} Loss curve (step:distance): {}. Started from {}.",
        args.manifest.display(),
        report.options.steps,
        report.options.seed,
        report.options.distance,
        report.options.batch_size,
        survey.name(),
        survey
            .bands()
            .iter()
            .map(|b| b.label.as_str())
            .collect::<Vec<_>>()
            .join(","),
        report.error_model,
        zps.join(", "),
        report
            .options
            .line_groups
            .iter()
            .zip(&report.line_scales)
            .map(|(g, s)| format!(" Fitted emission-line group {g}: flux × {s:.3}."))
            .collect::<String>(),
        curve.join(" "),
        args.initial
    );
    write_card(&args.output, survey, &model, &notes)?;
    let bands = survey
        .bands()
        .iter()
        .enumerate()
        .map(|(b, band)| BandCalibration {
            band: band.name.clone(),
            label: (band.label != band.name).then(|| band.label.clone()),
            zero_point: round6(report.zero_points[b]),
            error_floor: Some(round6(report.error_floors[b])),
            n_galaxies: Some(report.band_counts[b]),
        })
        .collect();
    let mut provenance = BTreeMap::new();
    provenance.insert(
        "created_by".into(),
        serde_json::json!(format!(
            "popcosmos-cli {} fit-population",
            env!("CARGO_PKG_VERSION")
        )),
    );
    provenance.insert("learned_on".into(), serde_json::json!(learned_on));
    provenance.insert(
        "population".into(),
        serde_json::json!(args.output.display().to_string()),
    );
    provenance.insert("seed".into(), serde_json::json!(report.options.seed));
    if !report.line_scales.is_empty() {
        provenance.insert(
            "line_groups".into(),
            serde_json::json!(
                report
                    .options
                    .line_groups
                    .iter()
                    .zip(&report.line_scales)
                    .map(|(g, s)| serde_json::json!({"group": g, "scale": round6(*s)}))
                    .collect::<Vec<_>>()
            ),
        );
    }
    // The manifest's line offsets (the population was fitted under them), with the fitted
    // groups' applied.
    CalibrationFile {
        survey: survey.name().to_string(),
        bands,
        emission_lines: crate::calibrate::line_offset_entries(line_offsets),
        provenance,
    }
    .save(&sibling(&args.output, ".calibration.yaml"))?;
    let path = sibling(&args.output, ".fit.json");
    std::fs::write(&path, serde_json::to_string_pretty(report)?)
        .with_context(|| path.display().to_string())?;
    Ok(())
}

fn write_card(weights: &Path, survey: &dyn Survey, model: &FlowModel, notes: &str) -> Result<()> {
    let bytes = std::fs::read(weights).with_context(|| weights.display().to_string())?;
    let file = weights
        .file_name()
        .and_then(|f| f.to_str())
        .context("output file name")?
        .to_string();
    let cfg = model.config();
    let card = popcosmos_models::ModelCard {
        schema: popcosmos_models::CARD_SCHEMA,
        name: file.trim_end_matches(".safetensors").to_string(),
        description: format!(
            "population prior over the 16 latent parameters fitted to {} photometry (no redshifts)",
            survey.name()
        ),
        file,
        format: popcosmos_models::WeightFormat::Safetensors,
        size_bytes: bytes.len() as u64,
        sha256: popcosmos_models::sha256_hex(&bytes),
        architecture: popcosmos_models::Architecture {
            kind: "flow".into(),
            layers: vec![N_PARAMS; cfg.layers() + 1],
            activation: format!(
                "{} rational-quadratic spline couplings, conditioners MLP {:?} SiLU",
                cfg.layers(),
                cfg.hidden
            ),
        },
        parameters: PARAM_NAMES
            .iter()
            .map(|n| popcosmos_models::Parameter {
                name: format!("phi_{n}"),
                unit: "latent phi".into(),
                min: None,
                max: None,
            })
            .collect(),
        bands: survey.bands().iter().map(|b| b.name.clone()).collect(),
        units: popcosmos_models::Units {
            input: "latent phi [16]".into(),
            output: "ln q(phi), exact (change of variables)".into(),
        },
        provenance: popcosmos_models::Provenance {
            source: "popcosmos-cli fit-population".into(),
            commit: None,
            code: Some("crates/population".into()),
            converted_from: None,
            notes: Some(notes.to_string()),
        },
        citations: vec![
            "Alsing et al. 2024, ApJS 274, 12 (pop-cosmos)".into(),
            "Thorp et al. 2024, ApJ 975, 145".into(),
        ],
        license: "MIT".into(),
    };
    let path = popcosmos_models::card_path_for(weights);
    std::fs::write(&path, card.to_yaml()).with_context(|| path.display().to_string())?;
    Ok(())
}

#[derive(clap::Args)]
pub struct SimulatePopulationArgs {
    /// Manifest whose survey, SPS, likelihood and catalogue (for its error model and
    /// missing-band patterns) are used; its prior is the population simulated.
    pub manifest: PathBuf,
    /// Mock catalogue to write (CSV: id, flux_<band>, fluxerr_<band>, true_<param>).
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(short, long, default_value_t = 10_000)]
    pub n: usize,
    /// Tilt the population by exp(a z + b log10 M_formed) (importance resampling), to make
    /// a truth population that differs from the manifest's prior: `a,b`.
    #[arg(long, value_parser = parse_tilt)]
    pub tilt: Option<(f64, f64)>,
    /// Multiply these bands' zero points (`label=factor,…`, e.g. `g=1.05,i=0.95`).
    #[arg(long, value_delimiter = ',')]
    pub zero_point_offsets: Vec<String>,
    /// Where simulated flux errors come from (as for `fit-population`)
    #[arg(long, value_enum, default_value = "auto")]
    pub error_model: ErrorModelKind,
    #[arg(long)]
    pub seed: Option<u64>,
}

fn parse_tilt(s: &str) -> std::result::Result<(f64, f64), String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("'{s}': {e}"))?;
    match v[..] {
        [a, b] if a.is_finite() && b.is_finite() => Ok((a, b)),
        _ => Err(format!("'{s}' is not two finite numbers a,b")),
    }
}

/// Draw `n` latent rows from `prior`, tilted by exp(a z + b log10 M) when asked
/// (`popcosmos_priors::tilted`, the same population as `prior: {kind: tilted}`).
pub fn tilted_draws(
    prior: &dyn Prior,
    n: usize,
    tilt: Option<(f64, f64)>,
    rng: &mut dyn RandomSource,
    device: &candle_core::Device,
) -> Result<candle_core::Tensor> {
    Ok(match tilt {
        None => prior.sample(n, rng, device)?,
        Some((a, b)) => popcosmos_priors::tilted::sample_tilted(prior, n, a, b, rng, device)?,
    })
}

pub fn simulate_population(args: &SimulatePopulationArgs) -> Result<()> {
    if args.output.exists() {
        bail!(
            "{} exists; choose another --output (nothing is overwritten)",
            args.output.display()
        );
    }
    let loaded = load(&args.manifest)?;
    let pipeline = &loaded.pipeline;
    let source = loaded.catalogue.display().to_string();
    let set = ObservedSet::new(&loaded.chunk, pipeline.survey.bands(), None, 1, &source)?;
    let (errors, why) = error_model(args.error_model, pipeline, &set)?;
    if let Some(why) = why {
        eprintln!("{why}");
    }
    let forward = forward_model(pipeline, &set, errors.as_ref(), Vec::new())?;
    let mut calibration: Calibration = pipeline.survey.calibration().clone();
    for spec in &args.zero_point_offsets {
        let (label, factor) = spec
            .split_once('=')
            .with_context(|| format!("--zero-point-offsets: '{spec}' is not label=factor"))?;
        let factor: f64 = factor
            .parse()
            .with_context(|| format!("--zero-point-offsets: '{factor}' is not a number"))?;
        let b = pipeline
            .survey
            .bands()
            .iter()
            .position(|x| x.label == label || x.name == label)
            .with_context(|| format!("--zero-point-offsets: no band '{label}'"))?;
        calibration.zero_points[b] *= factor;
    }
    let mut rng = HostRng::seed_from_u64(args.seed.unwrap_or(pipeline.manifest.seed));
    let tilt = args.tilt;
    let phi = tilted_draws(
        pipeline.prior.as_ref(),
        args.n,
        tilt,
        &mut rng,
        &pipeline.device,
    )?;
    let dev = &pipeline.device;
    let ln_zp = candle_core::Tensor::from_vec(
        calibration
            .zero_points
            .iter()
            .map(|z| z.ln() as f32)
            .collect::<Vec<_>>(),
        set.n_bands,
        dev,
    )?;
    let floors = candle_core::Tensor::from_vec(
        calibration
            .error_floors
            .iter()
            .map(|e| *e as f32)
            .collect::<Vec<_>>(),
        set.n_bands,
        dev,
    )?;
    // In chunks: the emulators' memory grows with the batch.
    let mut rows = String::from("id");
    for b in pipeline.survey.bands() {
        rows += &format!(",flux_{0},fluxerr_{0}", b.label);
    }
    for n in PARAM_NAMES {
        rows += &format!(",true_{n}");
    }
    rows += ",true_log10M_formed\n";
    let nb = set.n_bands;
    let params = DataModelParams {
        ln_zero_points: &ln_zp,
        error_floors: &floors,
        ln_line_scales: None,
    };
    for start in (0..args.n).step_by(4096) {
        let len = 4096.min(args.n - start);
        let part = phi.narrow(0, start, len)?;
        let sim = forward.simulate(&part, params, &mut rng)?;
        let flux: Vec<f32> = sim.flux_nmgy.flatten_all()?.to_vec1()?;
        let mask: Vec<f32> = sim.mask.flatten_all()?.to_vec1()?;
        let theta: Vec<Vec<f64>> = popcosmos_api::params::phi_to_theta(&part)?
            .to_dtype(candle_core::DType::F64)?
            .to_vec2()?;
        for i in 0..len {
            rows += &format!("mock{:06}", start + i);
            for b in 0..nb {
                let k = i * nb + b;
                if mask[k] > 0.0 {
                    rows += &format!(",{:.6e},{:.6e}", flux[k], sim.sigma_nmgy[k]);
                } else {
                    rows += ",nan,nan";
                }
            }
            for v in &theta[i] {
                rows += &format!(",{v:.6e}");
            }
            let (z, n) = (
                theta[i][popcosmos_api::params::IDX_Z],
                theta[i][popcosmos_api::params::IDX_N],
            );
            rows += &format!(",{:.6}\n", popcosmos_sps::log10_mass_formed(n, z));
        }
    }
    std::fs::write(&args.output, rows).with_context(|| args.output.display().to_string())?;
    eprintln!(
        "wrote {} ({} galaxies; errors and missing bands from {source})",
        args.output.display(),
        args.n
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FitPopulationArgs,
    }

    #[test]
    fn group_scales_multiply_the_lines_offsets_and_keep_the_others() {
        // Lines 0 (6564.6 Å, α −0.341) and 1 (6585.3 Å, α −0.6) form a group scaled by 2;
        // the manifest already set 6564.6 Å and 3727.1 Å.
        let lines = scaled_line_offsets(
            vec![(6564.6, -0.5), (3727.1, 0.2)],
            &[vec![0, 1]],
            &[2.0],
            &[6564.6, 6585.3, 4862.7],
            &[-0.341, -0.6, 0.0],
        );
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], (3727.1, 0.2));
        assert_eq!(lines[1].0, 6564.6);
        assert!((lines[1].1 - (2.0 * 0.659 - 1.0)).abs() < 1e-12);
        assert!((lines[2].1 - (2.0 * 0.4 - 1.0)).abs() < 1e-12);
    }

    /// A group scaled by s in the forward model simulates exactly what the SPS model with the
    /// offsets written to the calibration file simulates (same draws): the file carries what
    /// the fit found.
    #[test]
    fn a_scaled_group_simulates_as_its_written_offsets() {
        let manifest =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/kids-viking.yaml");
        let loaded = load(&manifest).unwrap();
        let pipeline = &loaded.pipeline;
        let set =
            ObservedSet::new(&loaded.chunk, pipeline.survey.bands(), None, 1, "kids_demo").unwrap();
        let errors = EmpiricalErrorModel::new(&set, 10);
        let names = vec!["halpha".to_string(), "oii".to_string()];
        let (_, groups) = resolve_line_groups(&names, pipeline).unwrap();
        let scales = [2.0, 0.5];
        let offsets = fitted_line_offsets(pipeline, &groups, &scales).unwrap();
        // The example's file sets 8 lines; Hα's 3 and [O II]'s 2 of them are replaced.
        assert_eq!(offsets.len(), 8);

        let dev = &pipeline.device;
        let nb = set.n_bands;
        let ln_zp = candle_core::Tensor::zeros(nb, candle_core::DType::F32, dev).unwrap();
        let floors = candle_core::Tensor::full(0.02f32, nb, dev).unwrap();
        let ln_s = candle_core::Tensor::new(&[2f32.ln(), 0.5f32.ln()], dev).unwrap();
        let mut rng = HostRng::seed_from_u64(4);
        let phi = pipeline.prior.sample(64, &mut rng, dev).unwrap();
        let scaled = forward_model(pipeline, &set, &errors, groups).unwrap();
        let params = DataModelParams {
            ln_zero_points: &ln_zp,
            error_floors: &floors,
            ln_line_scales: Some(&ln_s),
        };
        let (a, draws) = scaled.simulate_with_draws(&phi, params, &mut rng).unwrap();
        let written = pipeline.sps.clone().with_line_offsets(&offsets).unwrap();
        let plain = ForwardModel::new(&written, &set, &errors, Some(2.0)).unwrap();
        let params = DataModelParams {
            ln_line_scales: None,
            ..params
        };
        let b = plain.resimulate(&phi, params, &draws).unwrap();
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.flux_nmgy.flatten_all().unwrap().to_vec1().unwrap(),
            b.flux_nmgy.flatten_all().unwrap().to_vec1().unwrap(),
        );
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| ((x - y).abs() / x.abs().max(y.abs()).max(1e-3)) as f64)
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "largest relative difference {worst}");
        // And the scales did change the fluxes.
        let base = ForwardModel::new(&pipeline.sps, &set, &errors, Some(2.0)).unwrap();
        let c: Vec<f32> = base
            .resimulate(&phi, params, &draws)
            .unwrap()
            .flux_nmgy
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            a.iter()
                .zip(&c)
                .any(|(x, y)| (x - y).abs() > 1e-3 * x.abs())
        );
    }

    #[test]
    fn an_unknown_line_group_is_refused_before_the_catalogue_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.safetensors");
        let cli = Cli::parse_from([
            "fit-population",
            dir.path().join("missing.yaml").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--line-offsets",
            "halpha,lyman",
        ]);
        assert_eq!(cli.args.line_offsets, ["halpha", "lyman"]);
        let e = fit_population(&cli.args).err().unwrap().to_string();
        assert!(
            e.contains("--line-offsets") && e.contains("'lyman'") && !e.contains("missing.yaml"),
            "{e}"
        );
        assert!(!out.exists());
    }
}
