//! `popcosmos-cli`: the thin binary over the popcosmos crates.

mod bench;
mod bench_gpu;
mod calibrate;
mod demo;
mod evaluate;
mod fit_population;
mod import_torch;
mod merge;
mod mock;
mod models;
mod plots;
mod plugins_cmd;
mod predict;
mod prior_check;
mod prior_train;
mod reweight;
mod slurm;
mod train_emulator;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use popcosmos_inference::{Manifest, Pipeline, Progress, RunOptions};

#[derive(Parser)]
#[command(
    name = "popcosmos-cli",
    version,
    about = "Bayesian inference of galaxy properties from photometry (pop-cosmos in Rust)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sample the posterior of every galaxy of a catalogue described by a manifest.
    Run {
        manifest: PathBuf,
        /// Continue a killed run in the same output folder (finished galaxies are kept).
        #[arg(long)]
        resume: bool,
        /// Stop after this many batches (testing interruption).
        #[arg(long, hide = true)]
        max_batches: Option<usize>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Run only shard I of N (0 ≤ I < N): contiguous whole batches, written to
        /// output.dir/shard-IIIII-of-NNNNN (see `merge`, docs/scale-out.md).
        #[arg(long, value_name = "I/N")]
        shard: Option<popcosmos_inference::Shard>,
    },
    /// Check and combine the shard folders of a sharded run into one Parquet dataset.
    Merge {
        /// The manifest's output.dir (holding shard-IIIII-of-NNNNN folders).
        dir: PathBuf,
    },
    /// Write (and with --submit, submit) a Slurm job array running every shard.
    Slurm(slurm::SlurmArgs),
    /// Write a mock catalogue: prior draws through the full data model, uncertainties from
    /// the diffusion noise model, Student-t noise, a magnitude selection.
    Mock(mock::MockArgs),
    /// Convert whole-module PyTorch .pt checkpoints (flowfusion diffusion models, Photulators)
    /// to safetensors.
    ImportTorch(import_torch::ImportTorchArgs),
    /// Draw from a prior into a Parquet/CSV table (physical and latent columns).
    SamplePrior(prior_train::SamplePriorArgs),
    /// Train a diffusion prior by denoising score matching on a table of samples.
    TrainPrior(prior_train::TrainPriorArgs),
    /// Distil a diffusion prior into a normalizing flow (fast exact log-density).
    Distill(prior_train::DistillArgs),
    /// Compare a learned prior with a reference prior: forward KL, KS per parameter, cost.
    ComparePriors(prior_check::ComparePriorsArgs),
    /// Train per-band photulators for any filter set (spectrum emulator as teacher).
    TrainEmulator(train_emulator::TrainEmulatorArgs),
    /// Posteriors under another prior from a finished run's chains (importance weights).
    Reweight(reweight::ReweightArgs),
    /// Fit per-band zero points (and error floors) on spec-z galaxies → calibration.yaml.
    Calibrate(calibrate::CalibrateArgs),
    /// Learn the population prior, zero points and error floors from the catalogue's
    /// photometry alone (no redshifts) → a flow prior, its card and a calibration file.
    FitPopulation(fit_population::FitPopulationArgs),
    /// Mock catalogue through the population forward model (the manifest's prior, the
    /// catalogue's error model and missing-band patterns).
    SimulatePopulation(fit_population::SimulatePopulationArgs),
    /// Check a manifest, its weights and every catalogue value without sampling.
    Validate { manifest: PathBuf },
    /// Forward model: physical parameter rows → magnitudes and fluxes per band.
    Predict {
        params: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Leave out the emission-line columns.
        #[arg(long)]
        no_lines: bool,
    },
    /// Photo-z metrics of a results table against spectroscopic redshifts.
    Evaluate {
        /// Results folder (run output) or a single results file.
        results: PathBuf,
        /// `CATALOGUE:COLUMN` holding the true redshift, rows matched by id.
        #[arg(long)]
        truth: String,
        /// Id column of the truth catalogue.
        #[arg(long, default_value = "id")]
        id_column: String,
        /// Write the metrics as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write PNG plots into this folder (z_phot vs z_spec; corner and SED with --manifest).
        #[arg(long)]
        plots: Option<PathBuf>,
        /// The run's manifest (enables the corner and SED plots of one galaxy).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Galaxy id for the corner/SED plots (default: the first one).
        #[arg(long)]
        galaxy: Option<String>,
    },
    /// Benchmarks that print a table.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// Model weights: list, show cards, fetch from a Hugging Face hub, verify checksums.
    Models {
        #[command(subcommand)]
        what: models::ModelsCommand,
    },
    /// Survey and prior plugins (C-ABI shared libraries, docs/plugins.md).
    Plugins {
        #[command(subcommand)]
        what: plugins_cmd::PluginsCommand,
    },
    /// Run the bundled demo (100 real COSMOS2020 galaxies) and print photo-z metrics.
    Demo {
        /// Output folder: new, empty, or a previous popcosmos output (only its popcosmos files
        /// are replaced; any other non-empty folder is refused).
        #[arg(long, default_value = "out/cosmos-demo")]
        output: PathBuf,
    },
}

fn main() {
    popcosmos_api::configure_cpu_threads();
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli) {
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// The error and its causes joined by ": ", skipping a cause whose text the message already
/// holds (library errors such as `path: io error` also expose the io error as their source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            manifest,
            resume,
            max_batches,
            quiet,
            shard,
        } => {
            let m = Manifest::load(&manifest)?;
            m.check_output_dir()?;
            run_manifest(
                m,
                &RunOptions {
                    resume,
                    max_batches,
                    shard,
                },
                quiet,
            )?;
            Ok(())
        }
        Command::Merge { dir } => merge::merge(&dir),
        Command::Slurm(args) => slurm::run(&args),
        Command::Mock(args) => mock::mock(&args),
        Command::ImportTorch(args) => import_torch::run(&args),
        Command::SamplePrior(args) => prior_train::sample_prior(&args),
        Command::TrainPrior(args) => prior_train::train_prior(&args),
        Command::ComparePriors(args) => prior_check::run(&args),
        Command::TrainEmulator(args) => train_emulator::train_emulator(&args),
        Command::Reweight(args) => reweight::reweight(&args),
        Command::Distill(args) => prior_train::distill(&args),
        Command::Calibrate(args) => calibrate::run(&args),
        Command::FitPopulation(args) => fit_population::fit_population(&args),
        Command::SimulatePopulation(args) => fit_population::simulate_population(&args),
        Command::Validate { manifest } => validate(&manifest),
        Command::Predict {
            params,
            output,
            no_lines,
        } => predict::predict(&params, &output, !no_lines),
        Command::Evaluate {
            results,
            truth,
            id_column,
            json,
            plots,
            manifest,
            galaxy,
        } => evaluate::evaluate(&evaluate::EvaluateArgs {
            results,
            truth,
            id_column,
            json,
            plots,
            manifest,
            galaxy,
        }),
        Command::Bench { what } => bench::run(what),
        Command::Models { what } => models::run(what),
        Command::Plugins { what } => plugins_cmd::run(what),
        Command::Demo { output } => demo(&output),
    }
}

/// Run a manifest with a progress bar; returns the output folder.
pub fn run_manifest(m: Manifest, options: &RunOptions, quiet: bool) -> Result<PathBuf> {
    let pipeline = Pipeline::new(m)?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:<12} [{bar:30}] {pos}/{len} galaxies  {per_sec}  ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut on_progress = |p: Progress| match p {
        Progress::Total(n) => bar.set_length(n as u64),
        Progress::Done(n) => bar.inc(n as u64),
        Progress::Stage(s) => {
            bar.set_message(s.split_whitespace().next().unwrap_or("").to_string())
        }
    };
    let summary = pipeline.run(options, &mut on_progress)?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "{} galaxies computed ({} already done, {} flagged) in {:.1} s ({:.2} s/galaxy); results in {}",
            summary.galaxies_computed,
            summary.galaxies_skipped,
            summary.galaxies_flagged,
            summary.seconds_total,
            summary.seconds_sampling / summary.galaxies_computed.max(1) as f64,
            summary.output_dir.display()
        );
    }
    Ok(summary.output_dir)
}

fn validate(path: &Path) -> Result<()> {
    let m = Manifest::load(path)?;
    m.check_output_dir()?;
    let pipeline = Pipeline::new(m)?;
    let n = pipeline.scan_catalogue()?;
    if n == 0 {
        anyhow::bail!(
            "catalogue.path: {} has no galaxies",
            pipeline.manifest.catalogue.path.display()
        );
    }
    let s = &pipeline.manifest.sampler;
    let size = if s.kind.is_smc() {
        format!("{} particles", s.particles)
    } else {
        format!("{} walkers × {} steps", s.walkers, s.steps)
    };
    println!(
        "{}: OK — survey {} ({} bands), {} galaxies in {}, prior {}, sampler {:?} ({size})",
        path.display(),
        pipeline.survey.name(),
        pipeline.survey.bands().len(),
        n,
        pipeline.manifest.catalogue.path.display(),
        pipeline.prior.name(),
        s.kind,
    );
    let m = &pipeline.manifest;
    if m.sampler.whiten && !m.whitening_fitted() {
        eprintln!(
            "note: init.library_size {} has too few prior draws for sampler.whiten's marginal \
             whitening (needs 2000, 1000 for SMC); the sampler runs in the constraint-mapped \
             coordinates only",
            m.init.library_size
        );
    }
    Ok(())
}

fn demo(output: &Path) -> Result<()> {
    // Never delete what popcosmos did not write (see demo.rs).
    demo::prepare_output(output)?;
    // The built-in manifest and catalogue, written inside the output folder.
    let input = demo::DemoInput::write(&output.join(demo::INPUT_DIR))?;
    let mut m = input.manifest()?;
    m.output.dir = output.to_path_buf();
    let catalogue = m.catalogue.path.clone();
    eprintln!(
        "popcosmos demo: {} galaxies of {} (COSMOS2020, 2.5 ≤ z_spec < 8.3)",
        count_lines(&catalogue)?,
        catalogue.display()
    );
    let out = run_manifest(m, &RunOptions::default(), false)?;
    evaluate::evaluate(&evaluate::EvaluateArgs {
        results: out.clone(),
        truth: format!("{}:zspec", catalogue.display()),
        id_column: "id".into(),
        json: Some(out.join("metrics.json")),
        plots: Some(out.join("plots")),
        manifest: None,
        galaxy: None,
    })
}

fn count_lines(path: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(text.lines().count().saturating_sub(1))
}
