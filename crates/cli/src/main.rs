//! `popcosmos-cli`: the thin binary over the popcosmos crates.

mod bench;
mod bench_gpu;
mod calibrate;
mod compare;
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
mod run;
mod slurm;
mod train_emulator;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    Run(run::RunArgs),
    /// Check and combine the shard folders of a sharded run into one Parquet dataset.
    Merge(merge::MergeArgs),
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
    Validate(run::ValidateArgs),
    /// Forward model: physical parameter rows → magnitudes and fluxes per band.
    Predict(predict::PredictArgs),
    /// Photo-z metrics of a results table against spectroscopic redshifts.
    Evaluate(evaluate::EvaluateArgs),
    /// Reproducibility: how far two runs over the same galaxies (two seeds, two library
    /// sizes, two samplers) differ in median z, ln Z and p(z).
    Compare(compare::CompareArgs),
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
    Demo(demo::DemoArgs),
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
        Command::Run(args) => run::run(&args),
        Command::Merge(args) => merge::merge(&args),
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
        Command::Validate(args) => run::validate(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Evaluate(args) => evaluate::evaluate(&args),
        Command::Compare(args) => compare::compare(&args),
        Command::Bench { what } => bench::run(what),
        Command::Models { what } => models::run(what),
        Command::Plugins { what } => plugins_cmd::run(what),
        Command::Demo(args) => demo::run(&args),
    }
}
