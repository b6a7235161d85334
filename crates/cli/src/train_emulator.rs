//! `train-emulator`: per-band photulators for any filter set, with the Speculator
//! Prospector-α spectrum emulator as teacher (docs/emulators.md).
//!
//! Steps: filter curves from `--filters DIR` (every `*.txt`/`*.dat`/`*.res` file, bands in
//! increasing pivot wavelength unless `--bands` fixes the order) → θ draws (Prospector-α prior,
//! widened: z ~ U(0, z_max), √τ₂ ~ U(0, 2)) → teacher magnitudes from
//! [`popcosmos_sps::SpectrumPhotometry`] → [`popcosmos_sps::train`] → weights in the
//! COSMOS photulator layout + JSON sidecar + model card, reloaded through
//! [`popcosmos_sps::Photulator`] for the held-out accuracy table.
//!
//! `--init` starts every band from the closest band of another photulator set (largest
//! overlap of the normalised filter curves, or `--init-bands`); with `--steps 0` the command
//! only evaluates that set against the teacher.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use popcosmos_api::FilterCurve;
use popcosmos_api::{HostRng, N_PARAMS};
use popcosmos_priors::ProspectorAlphaPrior;
use popcosmos_sps::photulator::theta_to_photulator_input;
use popcosmos_sps::train::{
    OBSERVABLE_MAG, Observability, checkpoint_path, closest_band, heldout_accuracy,
    observable_delta, rms as rms_of, soft_capped, teacher_magnitudes, theta_tensor,
};
use popcosmos_sps::train::{TrainOptions, TrainedPhotulators, WarmStart};
use popcosmos_sps::{Photulator, SpectrumPhotometry, WeightFile};
use rand::Rng;

#[derive(clap::Args)]
pub struct TrainEmulatorArgs {
    /// Directory of filter curves (two columns: wavelength Å, photon-counting throughput).
    #[arg(long)]
    pub filters: PathBuf,
    /// Band order (file stems, comma separated); default: all files by pivot wavelength.
    #[arg(long, value_delimiter = ',')]
    pub bands: Option<Vec<String>>,
    /// Output weights (`.safetensors`); `.json` sidecar and `.card.yaml` are written next to it.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Training draws.
    #[arg(long, default_value_t = 40_000)]
    pub train: usize,
    /// Held-out draws.
    #[arg(long, default_value_t = 2_000)]
    pub heldout: usize,
    #[arg(long, default_value_t = 20_000)]
    pub steps: usize,
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 2e-5)]
    pub lr_end: f64,
    /// Hidden widths (COSMOS photulators: 128,128,128,128).
    #[arg(long, value_delimiter = ',', default_value = "128,128,128,128")]
    pub hidden: Vec<usize>,
    /// Upper end of the training redshift range (uniform in z).
    #[arg(long, default_value_t = 6.0)]
    pub z_max: f64,
    /// Teacher magnitudes are smoothly capped here (bands beyond the Lyman limit get no flux;
    /// M = 30 is m ≳ 46 for any galaxy whose IGM can do that, ~10⁻⁹ nmgy).
    #[arg(long, default_value_t = 30.0)]
    pub mag_cap: f64,
    /// Width of the soft cap (mag): targets equal the teacher to 3·10⁻⁴ mag at 8 widths below.
    #[arg(long, default_value_t = 1.0)]
    pub cap_width: f64,
    /// Start from this photulator set (`builtin:NAME`, `hf://…`, or a `.safetensors` file
    /// with its `.json` sidecar) instead of random weights.
    #[arg(long)]
    pub init: Option<String>,
    /// Source band of `--init` for each target band (comma separated, target order); default:
    /// the band whose filter curve overlaps most (curves from `--init-filters`).
    #[arg(long, value_delimiter = ',')]
    pub init_bands: Option<Vec<String>>,
    /// Filter curves of the `--init` set's bands (default for the builtin: bundled COSMOS).
    #[arg(long)]
    pub init_filters: Option<PathBuf>,
    /// Asinh softening f_b stored for every band, nanomaggies.
    #[arg(long, default_value_t = 0.003)]
    pub softening_nmgy: f32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Evaluate the held-out set every this many steps.
    #[arg(long, default_value_t = 1000)]
    pub eval_every: usize,
    /// Model-card description.
    #[arg(long)]
    pub description: Option<String>,
    /// Train only these bands (names, comma separated); every other band keeps its `--init`
    /// network unchanged.
    #[arg(long, value_delimiter = ',')]
    pub train_bands: Option<Vec<String>>,
    /// Weight each draw's squared error in band b by EPS + P(N < 28 − M_b), the chance that a
    /// galaxy with this spectrum is observable (m < 28) given the draws' distribution of N:
    /// the network's accuracy goes where a likelihood can see it.
    #[arg(long, value_name = "EPS")]
    pub observable_weighting: Option<f64>,
    /// Redshift range `LO,HI` the teacher's age-setting z input is clamped to. The spectrum
    /// emulator was trained on 0.5 ≤ z ≤ 2.5 (the default), but clamped there its z < 0.5
    /// galaxies are no older than 8.6 Gyr: g − Ks 0.08 mag too blue against the COSMOS
    /// networks, which were trained on FSPS at every z. Passed through down to z = 0 and up to
    /// 3.5 it agrees with them to 0.015 mag in colour (docs/emulators.md, "The teacher's age
    /// clamp").
    #[arg(long, value_delimiter = ',', default_values_t = [0.5, 2.5])]
    pub teacher_age_z: Vec<f64>,
}

/// Read every filter curve in `dir`, ordered by `bands` or by pivot wavelength.
pub fn read_filter_dir(dir: &Path, bands: Option<&[String]>) -> Result<Vec<FilterCurve>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("--filters {}", dir.display()))?;
    let mut curves = Vec::new();
    for e in entries {
        let path = e?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if matches!(ext, "txt" | "dat" | "res") {
            curves.push(FilterCurve::from_path(&path)?);
        }
    }
    if curves.is_empty() {
        bail!(
            "--filters {}: no filter curves (*.txt, *.dat, *.res) found",
            dir.display()
        );
    }
    match bands {
        Some(order) => order
            .iter()
            .map(|b| {
                curves
                    .iter()
                    .find(|c| &c.name == b)
                    .cloned()
                    .with_context(|| format!("--bands: no filter curve '{b}' in {}", dir.display()))
            })
            .collect(),
        None => {
            curves.sort_by(|a, b| a.pivot_wavelength_aa().total_cmp(&b.pivot_wavelength_aa()));
            Ok(curves)
        }
    }
}

/// Training draws: Prospector-α prior θ with z ~ U(0, z_max) and √τ₂ ~ U(0, 2).
pub fn training_draws(n: usize, z_max: f64, seed: u64) -> Vec<[f64; N_PARAMS]> {
    let mut rows = ProspectorAlphaPrior::new().sample_theta(n, seed);
    let mut rng = HostRng::seed_from_u64(seed ^ 0x5eed_7a11);
    for r in &mut rows {
        r[popcosmos_api::params::IDX_Z] = z_max * rng.inner().random::<f64>();
        r[popcosmos_api::params::IDX_DUST2] = (2.0 * rng.inner().random::<f64>()).powi(2);
    }
    rows
}

pub fn train_emulator(args: &TrainEmulatorArgs) -> Result<()> {
    let device = Device::Cpu;
    let filters = read_filter_dir(&args.filters, args.bands.as_deref())?;
    let names: Vec<String> = filters.iter().map(|f| f.name.clone()).collect();
    eprintln!("bands: {}", names.join(", "));
    let age = match args.teacher_age_z.as_slice() {
        &[lo, hi] if lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo < hi => (lo, hi),
        other => bail!("--teacher-age-z must be two redshifts 0 ≤ LO < HI, got {other:?}"),
    };
    let spec = SpectrumPhotometry::new(
        popcosmos_sps::SpectrumEmulator::builtin(&device)?,
        &filters,
        popcosmos_sps::PhotometryOptions {
            age_z_range: Some(age),
            ..Default::default()
        },
    )?;
    let rows = training_draws(args.train + args.heldout, args.z_max, args.seed);
    let (train_rows, held_rows) = rows.split_at(args.train);
    let teacher = |rows: &[[f64; N_PARAMS]], label: &str| {
        let t0 = std::time::Instant::now();
        teacher_magnitudes(&spec, rows, &device, &mut |done| {
            eprintln!(
                "teacher {label}: {done}/{} draws ({:.0} s)",
                rows.len(),
                t0.elapsed().as_secs_f64()
            )
        })
    };
    let (xt, yt_raw) = teacher(train_rows, "train")?;
    let (xh, yh_raw) = teacher(held_rows, "held-out")?;
    let (cap, width) = (args.mag_cap as f32, args.cap_width as f32);
    let (yt, yh) = (
        soft_capped(&yt_raw, cap, width),
        soft_capped(&yh_raw, cap, width),
    );
    let init = match &args.init {
        Some(spec) => Some(warm_start(spec, args, &filters)?),
        None => None,
    };
    let train_bands = match &args.train_bands {
        None => None,
        Some(_) if args.init.is_none() => {
            bail!("--train-bands needs --init (the other bands' networks)")
        }
        Some(list) => Some(
            list.iter()
                .map(|b| {
                    names.iter().position(|n| n == b).with_context(|| {
                        format!(
                            "--train-bands: '{b}' is not one of the bands ({})",
                            names.join(", ")
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    let observability = Observability::new(train_rows);
    let weights = match args.observable_weighting {
        None => None,
        Some(eps) if !(eps.is_finite() && eps >= 0.0) => {
            bail!("--observable-weighting: EPS must be finite and ≥ 0, got {eps}")
        }
        Some(eps) => Some(
            observability
                .loss_weights(eps, &yt_raw, &names)
                .context("--observable-weighting")?,
        ),
    };
    let opts = TrainOptions {
        hidden: args.hidden.clone(),
        steps: args.steps,
        batch_size: args.batch,
        lr_start: args.lr,
        lr_end: args.lr_end,
        seed: args.seed,
        eval_every: args.eval_every,
        init,
        train_bands: train_bands.clone(),
    };
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let sidecar = |extra: serde_json::Value| {
        let mut s = serde_json::json!({
            "model": "photulator set trained by popcosmos-cli train-emulator (teacher: Speculator Prospector-alpha spectrum emulator + Madau95 IGM)",
            "activation": "a(y) = (beta + (1 - beta) * sigmoid(alpha * y)) * y after every layer including the output layer",
            "weight_layout": "[out_features, in_features]",
            "training": {
                "train_draws": args.train, "heldout_draws": args.heldout, "steps": args.steps,
                "batch": args.batch, "lr": [args.lr, args.lr_end], "seed": args.seed,
                "z_range": [0.0, args.z_max], "soft_mag_cap": [args.mag_cap, args.cap_width],
                "init": args.init, "init_bands": args.init_bands,
                "train_bands": args.train_bands, "observable_weighting": args.observable_weighting,
                "teacher_age_z_range": args.teacher_age_z,
                "draws": "Prospector-alpha prior, z ~ U(0, z_max), sqrt(dust2) ~ U(0, 2)"
            },
            "filters": filters.iter().map(|f| serde_json::json!({"name": f.name, "pivot_aa": f.pivot_wavelength_aa()})).collect::<Vec<_>>(),
        });
        if !extra.is_null() {
            s["checkpoint"] = extra;
        }
        s
    };
    let f_b = vec![args.softening_nmgy; names.len()];
    // Networks as of the last evaluation: a crashed run restarts from them with `--init`.
    let checkpoint = checkpoint_path(&args.output);
    let t0 = std::time::Instant::now();
    let model = TrainedPhotulators::train(
        names.clone(),
        &xt,
        &yt,
        weights.as_deref(),
        (&xh, &yh),
        &opts,
        &device,
        &mut |p, m| {
            let rms = p.heldout_rms_mag.clone().unwrap_or_default();
            let worst = rms.iter().fold(0.0f64, |a, &b| a.max(b));
            let median = {
                let mut v = rms.clone();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
            };
            // Observable-draw accuracy of the bands being trained (all when none is named).
            let pred = p.heldout_magnitudes.as_deref().unwrap_or_default();
            let observable: Vec<String> = (0..names.len())
                .filter(|b| train_bands.as_ref().is_none_or(|t| t.contains(b)))
                .map(|b| {
                    let d = observable_delta(held_rows, pred, &yh_raw, b);
                    let w = observability.weighted_rms(pred, &yh_raw, b);
                    format!("{} {:.4}/{:.4}", names[b], rms_of(&d), w)
                })
                .collect();
            eprintln!(
                "step {:>6}/{}  lr {:.2e}  batch loss {:.3e}  held-out RMS median {:.4} worst {:.4} mag; m < {OBSERVABLE_MAG} RMS / P(m < {OBSERVABLE_MAG})-weighted RMS: {}  ({:.0} s)",
                p.step,
                opts.steps,
                p.learning_rate,
                p.batch_loss,
                median,
                worst,
                observable.join(", "),
                t0.elapsed().as_secs_f64()
            );
            if p.step < opts.steps {
                m.save(
                    &checkpoint,
                    &f_b,
                    sidecar(serde_json::json!({"step": p.step, "learning_rate": p.learning_rate})),
                )?;
            }
            Ok(())
        },
    )?;
    model.save(&args.output, &f_b, sidecar(serde_json::Value::Null))?;
    for f in [checkpoint.clone(), checkpoint.with_extension("json")] {
        if f.exists() {
            std::fs::remove_file(&f).with_context(|| f.display().to_string())?;
        }
    }
    // Reload through the production loader: the table is what users will get.
    let phot = Photulator::load(&args.output, &device)?;
    let pred = phot
        .absolute_magnitudes(
            &theta_tensor(held_rows, &device)
                .and_then(|t| theta_to_photulator_input(&t).map_err(Into::into))?,
        )?
        .to_vec2::<f32>()?;
    let card = write_photulator_card(&args.output, &names, args)?;
    println!(
        "wrote {}, {} and {}\n",
        args.output.display(),
        args.output.with_extension("json").display(),
        card.display()
    );
    print_heldout_table(
        &filters,
        held_rows,
        &pred,
        (&yh, &yh_raw),
        &observability,
        args,
    );
    Ok(())
}

/// Held-out Δ = network − teacher per band: against the soft-capped target on every draw;
/// against the raw teacher where the band sees flux (teacher M < cap − 8 widths), split at the
/// spectrum emulator's z = 2.5 training edge; and where the draw is observable in the band
/// (m = M + N < [`OBSERVABLE_MAG`]). p95 = 95th percentile of |Δ|.
fn print_heldout_table(
    filters: &[FilterCurve],
    held: &[[f64; N_PARAMS]],
    pred: &[Vec<f32>],
    (target, teacher): (&[Vec<f32>], &[Vec<f32>]),
    observability: &Observability,
    args: &TrainEmulatorArgs,
) {
    let seen = (args.mag_cap - 8.0 * args.cap_width) as f32;
    println!(
        "held-out accuracy vs the teacher ({} draws, z ~ U(0, {}), magnitudes; \"sees flux\": teacher M < {seen}):\n",
        held.len(),
        args.z_max
    );
    println!(
        "| band | pivot (Å) | all draws vs capped target: RMS | sees flux: n | mean Δ | RMS | p95 | max | z ≤ 2.5: RMS | p95 | z > 2.5: RMS | p95 | m < {OBSERVABLE_MAG}: n | RMS | p95 | P(m < {OBSERVABLE_MAG})-weighted RMS |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let bands = heldout_accuracy(held, pred, (target, teacher), observability, seen);
    for (f, a) in filters.iter().zip(bands) {
        println!(
            "| {} | {:.0} | {:.4} | {} | {:+.4} | {:.4} | {:.4} | {:.3} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {:.4} | {:.4} | {:.4} |",
            f.name,
            f.pivot_wavelength_aa(),
            a.capped_rms,
            a.seen,
            a.seen_mean,
            a.seen_spread.rms,
            a.seen_spread.p95,
            a.seen_max,
            a.low_z.rms,
            a.low_z.p95,
            a.high_z.rms,
            a.high_z.p95,
            a.observable,
            a.observable_spread.rms,
            a.observable_spread.p95,
            a.weighted_rms,
        );
    }
}

/// The warm start of `--init`: source bands from `--init-bands` or by largest filter overlap.
fn warm_start(spec: &str, args: &TrainEmulatorArgs, targets: &[FilterCurve]) -> Result<WarmStart> {
    let device = Device::Cpu;
    // COSMOS band names resolve to bundled curves without --init-filters.
    let builtin = spec == "builtin:photulator_cosmos26";
    let (file, source_names) = if spec.starts_with("builtin:") || spec.starts_with("hf://") {
        // A reference with a model card: bundled or on the Hub (verified against its card).
        let reference = spec
            .parse()
            .map_err(|e| anyhow::anyhow!("--init {spec}: {e}"))?;
        let model = popcosmos_models::load(&reference, &popcosmos_models::HubConfig::from_env())
            .map_err(|e| anyhow::anyhow!("--init {spec}: {e}"))?;
        let kind = &model.card.architecture.kind;
        if kind != "photulator" {
            bail!("--init {spec}: a '{kind}' model, not a photulator set");
        }
        (
            WeightFile::from_bytes(&model.bytes, model.source.clone(), &device)?,
            model.card.bands.clone(),
        )
    } else {
        // Loading validates every tensor's shape, with errors naming file and tensor.
        let phot = Photulator::load(spec, &device).with_context(|| format!("--init {spec}"))?;
        (
            WeightFile::from_path(spec, &device)?,
            phot.band_names().to_vec(),
        )
    };
    let chosen: Vec<String> = match &args.init_bands {
        Some(b) if b.len() != targets.len() => bail!(
            "--init-bands: {} names for {} target bands",
            b.len(),
            targets.len()
        ),
        Some(b) => b.clone(),
        None => {
            let sources: Vec<FilterCurve> = match (&args.init_filters, builtin) {
                (Some(dir), _) => read_filter_dir(dir, Some(&source_names))?,
                (None, true) => source_names
                    .iter()
                    .map(|n| popcosmos_surveys::cosmos_filter(n))
                    .collect::<Result<_, _>>()?,
                (None, false) => bail!(
                    "--init {spec}: give --init-filters DIR (its bands' curves) or --init-bands"
                ),
            };
            targets
                .iter()
                .map(|t| {
                    let (best, overlap) = closest_band(t, &sources).expect("non-empty source set");
                    eprintln!(
                        "init: {} ← {} (filter overlap {overlap:.2})",
                        t.name, best.name
                    );
                    best.name.clone()
                })
                .collect()
        }
    };
    let index: Vec<usize> = chosen
        .iter()
        .map(|c| {
            source_names
                .iter()
                .position(|n| n == c)
                .with_context(|| format!("--init-bands: '{c}' is not a band of {spec}"))
        })
        .collect::<Result<_>>()?;
    let mut arch = vec![popcosmos_sps::photulator::N_INPUTS];
    arch.extend(&args.hidden);
    arch.push(1);
    Ok(WarmStart::from_photulator(&file, &arch, &index)?)
}

/// Model card for a trained photulator set (parameters as the COSMOS card, z up to z_max).
fn write_photulator_card(
    weights: &Path,
    bands: &[String],
    args: &TrainEmulatorArgs,
) -> Result<PathBuf> {
    // Parameters and activation as the COSMOS set's card, z up to z_max.
    let cosmos = popcosmos_models::builtin("photulator_cosmos26")?;
    let cosmos =
        popcosmos_models::ModelCard::from_bytes(cosmos.card_text.as_bytes(), cosmos.card_file)?;
    let mut parameters = cosmos.parameters;
    if let Some(z) = parameters.iter_mut().find(|p| p.name == "z") {
        z.max = Some(args.z_max);
    }
    use popcosmos_models::{Architecture, Provenance, Units};
    let card = popcosmos_models::ModelCard {
        description: args.description.clone().unwrap_or_else(|| {
            format!(
                "Photulator set for {} bands trained by popcosmos-cli train-emulator, theta15 -> absolute AB magnitude per solar mass formed",
                bands.len()
            )
        }),
        parameters,
        bands: bands.to_vec(),
        units: Units {
            input: "theta15 = physical theta without N, dust2 replaced by sqrt(dust2) (popcosmos-sps theta_to_photulator_input); gaslog10U is accepted but the teacher ignores it".into(),
            output: "absolute AB magnitude per solar mass formed (m = M + N), one column per band in the order of `bands`".into(),
        },
        provenance: Provenance {
            source: "popcosmos-cli train-emulator".into(),
            code: Some("crates/sps/src/train.rs, crates/sps/src/spectrum".into()),
            notes: Some(format!(
                "teacher: Speculator Prospector-alpha spectrum emulators (Alsing+20, justinalsing/speculator@3c93274, MIT) + Madau (1995) IGM, age-setting z clamped to [{}, {}], magnitudes soft-capped at {} (width {}); {} training / {} held-out draws, {} steps of {}, lr {} -> {}, seed {}; initial networks: {}; {}; {}; see docs/emulators.md",
                args.teacher_age_z[0], args.teacher_age_z[1], args.mag_cap, args.cap_width, args.train, args.heldout, args.steps, args.batch, args.lr, args.lr_end, args.seed,
                match (&args.init, &args.init_bands) {
                    (None, _) => "random".to_string(),
                    (Some(i), Some(b)) => format!("{i}, bands {}", b.join(",")),
                    (Some(i), None) => format!("{i}, the band of largest filter overlap"),
                },
                match &args.train_bands {
                    None => "every band trained".to_string(),
                    Some(b) => format!("only {} trained, the other bands are the initial networks unchanged", b.join(",")),
                },
                match args.observable_weighting {
                    None => "unweighted loss".to_string(),
                    Some(eps) => format!("loss weighted by {eps} + P(m < {OBSERVABLE_MAG})"),
                }
            )),
            ..Default::default()
        },
        citations: vec![
            "Alsing J. et al. 2020, ApJS 249, 5 (SPECULATOR), arXiv:1911.11778".into(),
            "Madau P. 1995, ApJ 441, 18".into(),
        ],
        ..popcosmos_models::ModelCard::for_weights(
            weights,
            Architecture {
                layers: [&[15][..], &args.hidden, &[1]].concat(),
                ..cosmos.architecture
            },
        )?
    };
    Ok(card.write_beside(weights)?)
}
