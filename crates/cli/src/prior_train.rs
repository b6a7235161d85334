//! `sample-prior` (draws from a prior to Parquet) and `train-prior` (denoising score matching
//! of a diffusion model on such draws, written with its model card).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use popcosmos_api::{HostRng, PARAM_NAMES};
use popcosmos_catalog::{ResultSchema, write_table};
use popcosmos_models::HubConfig;
use popcosmos_priors::PriorSpec;
use popcosmos_priors::diffusion::{
    Activation, DiffusionModel, FitOptions, SdeConfig, TrainOptions,
};

/// Latent-φ column name of parameter `name` in sample tables.
pub fn phi_column(name: &str) -> String {
    format!("phi_{name}")
}

#[derive(clap::Args)]
pub struct SamplePriorArgs {
    /// Prior as a kind (`prospector-alpha`, `uniform`) or an inline YAML spec such as
    /// `{kind: diffusion, weights: prior.safetensors}`.
    #[arg(long, default_value = "prospector-alpha")]
    pub prior: String,
    /// Number of draws.
    #[arg(short = 'n', long)]
    pub draws: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// `.parquet` or `.csv`: id, the 16 physical parameters, log10M_formed and the 16
    /// latent coordinates `phi_<name>`.
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn parse_prior(s: &str) -> Result<PriorSpec> {
    let yaml = if s.trim_start().starts_with('{') {
        s.to_string()
    } else {
        format!("{{kind: {s}}}")
    };
    serde_saphyr::from_str(&yaml).with_context(|| format!("--prior '{s}'"))
}

pub fn sample_prior(args: &SamplePriorArgs) -> Result<()> {
    let spec = parse_prior(&args.prior)?;
    let device = Device::Cpu;
    let prior = popcosmos_inference::build_prior(&spec, &device, &HubConfig::from_env())?;
    let (cols, table) = popcosmos_inference::prior_table(prior.as_ref(), args.draws, args.seed)?;
    let mut schema = ResultSchema::new(cols);
    schema.string_columns.clear();
    write_table(&args.output, &schema, &table)?;
    println!(
        "wrote {} draws of the {} prior to {}",
        args.draws,
        prior.name(),
        args.output.display()
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct TrainPriorArgs {
    /// Training samples (Parquet, CSV or FITS), e.g. from `sample-prior`.
    #[arg(long)]
    pub samples: PathBuf,
    /// Columns to model, comma-separated (default: the 16 latent columns `phi_<name>`).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Conditioning columns, comma-separated (a conditional model p(x | c)).
    #[arg(long, value_delimiter = ',')]
    pub conditional: Vec<String>,
    /// Weights to write (safetensors; its model card is written next to it).
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 20_000)]
    pub steps: usize,
    #[arg(long, default_value_t = 1024)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub learning_rate: f64,
    /// Hidden layer widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,256,256")]
    pub hidden: Vec<usize>,
    /// `silu` or `tanh`.
    #[arg(long, default_value = "silu")]
    pub activation: String,
    #[arg(long, default_value_t = 16)]
    pub embedding_dim: usize,
    #[arg(long, default_value_t = 0.999)]
    pub ema_decay: f64,
    /// Fraction of rows held out to measure the loss on unseen draws.
    #[arg(long, default_value_t = 0.02)]
    pub holdout: f64,
    /// Write a resumable checkpoint (`OUTPUT.checkpoint.safetensors`) every this many steps.
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_every: usize,
    /// Continue from `OUTPUT.checkpoint.safetensors`.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Model-card description.
    #[arg(
        long,
        default_value = "Diffusion model trained with popcosmos-cli train-prior"
    )]
    pub description: String,
}

/// A progress bar over optimiser steps showing `what` (a loss) as its message.
fn steps_bar(steps: usize, what: &str) -> ProgressBar {
    let template =
        format!("{{bar:40}} {{pos}}/{{len}} steps  {what} {{msg}}  [{{elapsed}}<{{eta}}]");
    ProgressBar::new(steps as u64)
        .with_style(ProgressStyle::with_template(&template).expect("template"))
}

/// The columns `cols` of a table as row-major f32 rows.
fn read_columns(path: &Path, cols: &[String]) -> Result<Vec<f32>> {
    let mut data: Vec<Vec<f64>> = Vec::with_capacity(cols.len());
    for c in cols {
        let v = popcosmos_catalog::read_column_f64(path, c)
            .with_context(|| format!("reading column '{c}'"))?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            bail!(
                "{}: column '{c}' row {i} is not a finite number",
                path.display()
            );
        }
        data.push(v);
    }
    let n = data.first().map_or(0, Vec::len);
    let mut flat = Vec::with_capacity(n * cols.len());
    for i in 0..n {
        for col in &data {
            flat.push(col[i] as f32);
        }
    }
    Ok(flat)
}

pub fn train_prior(args: &TrainPriorArgs) -> Result<()> {
    let columns: Vec<String> = if args.columns.is_empty() {
        PARAM_NAMES.iter().map(|n| phi_column(n)).collect()
    } else {
        args.columns.clone()
    };
    let x = read_columns(&args.samples, &columns)?;
    let c = if args.conditional.is_empty() {
        None
    } else {
        Some(read_columns(&args.samples, &args.conditional)?)
    };
    let activation = match args.activation.as_str() {
        "silu" => Activation::Silu,
        "tanh" => Activation::Tanh,
        other => bail!("--activation: '{other}' is not silu or tanh"),
    };
    let opts = FitOptions {
        train: TrainOptions {
            hidden: args.hidden.clone(),
            activation,
            embedding_dim: args.embedding_dim,
            steps: args.steps,
            batch_size: args.batch_size,
            learning_rate: args.learning_rate,
            ema_decay: args.ema_decay,
            seed: args.seed,
            sde: SdeConfig::vp_default(),
            ..TrainOptions::default()
        },
        holdout: args.holdout,
        checkpoint: Some(args.output.with_extension("checkpoint.safetensors")),
        checkpoint_every: args.checkpoint_every,
        resume: args.resume,
        metadata: HashMap::from([("samples".into(), args.samples.display().to_string())]),
    };
    let bar = steps_bar(args.steps, "loss");
    let t0 = std::time::Instant::now();
    let fitted = popcosmos_priors::diffusion::fit(
        &x,
        c.as_deref(),
        columns,
        args.conditional.clone(),
        &opts,
        &Device::Cpu,
        &mut |step, loss| {
            if loss.is_nan() && step > 0 {
                eprintln!("resumed at step {step}");
            }
            bar.set_position(step as u64);
            if step % 50 == 0 && !loss.is_nan() {
                bar.set_message(format!("{loss:.3}"));
            }
        },
    )
    .with_context(|| args.samples.display().to_string())?;
    bar.finish();
    let secs = t0.elapsed().as_secs_f64();
    fitted.write(&args.output)?;
    let card = write_card(
        &fitted.model,
        &args.output,
        &args.description,
        &format!("trained on {}", args.samples.display()),
    )?;
    println!(
        "trained {} steps in {secs:.0} s; EMA model DSM loss: held-out {:.4}, train {:.4}",
        fitted.steps, fitted.heldout_loss, fitted.train_loss
    );
    println!("wrote {} and {}", args.output.display(), card.display());
    Ok(())
}

/// Write the model card next to `weights` for a diffusion model (sha256 of the file).
pub fn write_card(
    model: &DiffusionModel,
    weights: &Path,
    description: &str,
    notes: &str,
) -> Result<PathBuf> {
    let cfg = model.config();
    let mut layers = vec![cfg.embedding_dim + cfg.dim + cfg.conditional_dim];
    layers.extend(&cfg.hidden);
    layers.push(cfg.dim);
    let activation = format!(
        "{:?} (score network; config in the safetensors metadata)",
        cfg.activation
    )
    .to_lowercase();
    write_card_for(
        weights,
        "diffusion",
        layers,
        &activation,
        &cfg.names,
        description,
        notes,
    )
}

/// Write `weights`' model card of `kind` (architecture summary, parameter names, checksum).
pub fn write_card_for(
    weights: &Path,
    kind: &str,
    layers: Vec<usize>,
    activation: &str,
    names: &[String],
    description: &str,
    notes: &str,
) -> Result<PathBuf> {
    use popcosmos_models::{Architecture, Parameter, Provenance, Units};
    let card = popcosmos_models::ModelCard {
        description: description.to_string(),
        parameters: names
            .iter()
            .map(|n| Parameter {
                name: n.clone(),
                unit: "as in the training samples".into(),
                min: None,
                max: None,
            })
            .collect(),
        units: Units {
            input: "the modelled columns (config.names), physical units of the samples".into(),
            output: format!("{kind} model; config in the safetensors metadata"),
        },
        provenance: Provenance {
            source: "popcosmos-cli".into(),
            code: Some(format!("crates/priors/src/{kind}")),
            notes: Some(notes.to_string()),
            ..Default::default()
        },
        ..popcosmos_models::ModelCard::for_weights(
            weights,
            Architecture {
                kind: kind.into(),
                layers,
                activation: activation.into(),
            },
        )?
    };
    Ok(card.write_beside(weights)?)
}

#[derive(clap::Args)]
pub struct DistillArgs {
    /// Teacher: a diffusion prior as an inline spec (`{kind: diffusion, weights: …}`), or a
    /// YAML file holding such a spec. Default: the bundled diffusion prior.
    #[arg(long, default_value = "{kind: diffusion}")]
    pub teacher: String,
    /// Flow weights to write (its model card is written next to it).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Teacher samples to train on.
    #[arg(long, default_value_t = 200_000)]
    pub samples: usize,
    /// Optimiser steps.
    #[arg(long, default_value_t = 20_000)]
    pub steps: usize,
    /// Held-out teacher samples for the KL estimate (each needs one teacher log-density).
    #[arg(long, default_value_t = 1000)]
    pub n_kl: usize,
    /// Coupling layers and conditioner widths.
    #[arg(long, default_value_t = 8)]
    pub layers: usize,
    #[arg(long, value_delimiter = ',', default_value = "128,128")]
    pub hidden: Vec<usize>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fixed RK4 steps of the teacher's probability-flow ODE when drawing its samples.
    #[arg(long, default_value_t = 50)]
    pub sample_steps: usize,
    /// What to distil: a normalizing flow (fast exact log-density, `prior: {kind: flow}`) or a
    /// consistency model (one- or few-step draws, `prior: {kind: diffusion, fast_sampler: …}`).
    /// For consistency, `--samples` is the number of teacher draws it trains on and
    /// `--n-kl` the number of draws of its two-sample report.
    #[arg(long, value_enum, default_value_t = DistillModel::Flow)]
    pub model: DistillModel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DistillModel {
    Flow,
    Consistency,
}

/// Consistency distillation (`distill --model consistency`): trains, saves with a card,
/// and prints the 1/2/4-step two-sample report against the teacher's ODE sampler.
fn distill_consistency(args: &DistillArgs, teacher: &DiffusionModel, source: &str) -> Result<()> {
    use popcosmos_priors::consistency;
    // The settings measured in docs/priors.md (examples/consistency_report.rs).
    let opts = consistency::TrainOptions {
        steps: args.steps,
        n_data: args.samples,
        batch_size: 256,
        learning_rate: 3e-3,
        loss: consistency::CdLoss::PseudoHuber { c: 0.3 },
        ..Default::default()
    };
    let mut rng = HostRng::seed_from_u64(args.seed);
    let t0 = std::time::Instant::now();
    let bar = steps_bar(args.steps, "CD loss");
    let mut window = 0.0;
    let model = consistency::distill(teacher, &opts, &mut rng, &mut |step, loss| {
        window += loss;
        if step % 50 == 0 {
            bar.set_message(format!("{:.5}", window / 50.0));
            window = 0.0;
        }
        bar.inc(1);
    })?;
    bar.finish();
    let mut meta = HashMap::new();
    meta.insert("teacher".to_string(), source.to_string());
    meta.insert("train_options".to_string(), serde_json::to_string(&opts)?);
    model.save(&args.output, &meta)?;
    let report = consistency::compare_to_teacher(&model, teacher, args.n_kl, &mut rng)?;
    let cfg = model.config();
    let card = write_card_for(
        &args.output,
        "consistency",
        vec![model.dim(), model.dim()],
        &format!(
            "consistency model f(x_t, t) = c_skip x_t + c_out F(x_t, t), F an MLP {:?}",
            cfg.hidden
        ),
        &teacher.config().names,
        &format!("Consistency model distilled from {source} (one- to few-step draws)"),
        &format!(
            "popcosmos-cli distill --model consistency --teacher {} --samples {} --steps {} --seed {}; two-sample report vs the teacher's ODE sampler on {} draws:\n{}",
            args.teacher, args.samples, args.steps, args.seed, args.n_kl, report
        ),
    )?;
    println!(
        "distilled in {:.0} s ({} steps)\n{report}",
        t0.elapsed().as_secs_f64(),
        args.steps
    );
    println!("wrote {} and {}", args.output.display(), card.display());
    Ok(())
}

pub fn distill(args: &DistillArgs) -> Result<()> {
    use popcosmos_priors::flow;
    let text = if Path::new(&args.teacher).is_file() {
        std::fs::read_to_string(&args.teacher).with_context(|| args.teacher.clone())?
    } else {
        args.teacher.clone()
    };
    let spec = parse_prior(&text)?;
    let PriorSpec::Diffusion { weights, .. } = &spec else {
        bail!("--teacher: must be a diffusion prior (kind: diffusion), got {spec:?}");
    };
    let device = Device::Cpu;
    let hub = HubConfig::from_env();
    let (bytes, source) =
        popcosmos_inference::load_weights("--teacher", weights, "diffusion", &hub)?;
    let teacher = DiffusionModel::from_bytes(&bytes, &source, &device)?;
    if args.model == DistillModel::Consistency {
        return distill_consistency(args, &teacher, &source);
    }
    let opts = flow::DistillOptions {
        flow: flow::TrainOptions {
            layers: args.layers,
            hidden: args.hidden.clone(),
            steps: args.steps,
            seed: args.seed,
            ..Default::default()
        },
        n_samples: args.samples,
        n_kl: args.n_kl,
        n_ks: 20_000,
        sample_solver: popcosmos_priors::diffusion::OdeSolver::Rk4 {
            steps: args.sample_steps,
        },
        teacher_log_prob: popcosmos_priors::diffusion::LogProbOptions {
            solver: popcosmos_priors::diffusion::OdeSolver::Rk4 { steps: 32 },
            ..Default::default()
        },
        ..Default::default()
    };
    let bar = steps_bar(args.steps, "nll");
    let mut rng = HostRng::seed_from_u64(args.seed);
    let t0 = std::time::Instant::now();
    let (model, report) = flow::distill(&teacher, &opts, &mut rng, &device, &mut |step, nll| {
        bar.set_position(step as u64);
        if step % 50 == 0 {
            bar.set_message(format!("{nll:.3}"));
        }
    })?;
    bar.finish();
    let mut meta = HashMap::new();
    meta.insert("teacher".to_string(), source.clone());
    meta.insert(
        "distill_report".to_string(),
        serde_json::to_string(&report)?,
    );
    model.save(&args.output, &meta)?;
    let cfg = model.config();
    let ks_max = report.ks.iter().copied().fold(0.0, f64::max);
    let notes = format!(
        "popcosmos-cli distill --teacher {} --samples {} --steps {} --seed {}; forward KL E_p[ln p_teacher - ln q] = {:.4} +- {:.4} nats on {} held-out teacher draws; max per-parameter KS {:.4}",
        args.teacher,
        args.samples,
        args.steps,
        args.seed,
        report.kl,
        report.kl_stderr,
        report.kl_rows,
        ks_max
    );
    let card = write_card_for(
        &args.output,
        "flow",
        vec![cfg.dim; cfg.masks.len() + 1],
        &format!(
            "{} rational-quadratic spline couplings ({} bins), conditioners MLP {:?} SiLU",
            cfg.masks.len(),
            cfg.spline.bins,
            cfg.hidden
        ),
        &cfg.names,
        &format!("Normalizing flow distilled from {source}"),
        &notes,
    )?;
    println!(
        "distilled in {:.0} s: forward KL {:.4} ± {:.4} nats ({} rows); held-out NLL {:.4} vs teacher {:.4}",
        t0.elapsed().as_secs_f64(),
        report.kl,
        report.kl_stderr,
        report.kl_rows,
        report.heldout_nll,
        report.teacher_nll
    );
    println!("{:<16} {:>8}", "parameter", "KS");
    for (n, k) in report.names.iter().zip(&report.ks) {
        println!("{n:<16} {k:>8.4}");
    }
    println!("wrote {} and {}", args.output.display(), card.display());
    Ok(())
}
