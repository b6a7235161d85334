//! `bench`: throughput tables (emulator; end-to-end inference).

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Subcommand;
use popcosmos_api::Device;
use popcosmos_inference::{Manifest, Pipeline, SamplerSpec};
use popcosmos_models::HubConfig;
use popcosmos_samplers::{EnsembleSampler, RunConfig, diagnose_chain, sample};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// COSMOS 26-band photulator throughput (galaxy-evaluations/s, GFLOP/s).
    Emulator {
        #[arg(long, value_delimiter = ',', default_value = "1,64,4096,65536")]
        batches: Vec<usize>,
        /// Thread counts (default: 1 and all cores).
        #[arg(long, value_delimiter = ',')]
        threads: Vec<usize>,
        /// Seconds per configuration.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// `cpu` or `cuda[:N]`.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Device benchmark: correctness vs CPU, emulator throughput, device-seconds per galaxy
    /// per prior (`--device cpu` is a smoke test).
    Gpu(crate::bench_gpu::GpuBenchArgs),
    /// Seconds per galaxy and ESS/s per galaxy for end-to-end sampling of demo galaxies.
    Inference {
        /// Galaxies per batch.
        #[arg(long, default_value_t = 20)]
        galaxies: usize,
        /// `cpu` or `cuda[:N]`.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Emulator {
            batches,
            mut threads,
            seconds,
            device,
        } => {
            let dev = popcosmos_api::parse_device(&device)?;
            if threads.is_empty() {
                let all = std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1);
                threads = if all > 1 { vec![1, all] } else { vec![1] };
            }
            let p = popcosmos_sps::Photulator::builtin(&dev)?;
            let table = popcosmos_sps::bench_emulator(
                &p,
                &batches,
                &threads,
                Duration::from_secs_f64(seconds),
            )?;
            println!(
                "COSMOS 26-band photulator stack, device {device}, RAYON_NUM_THREADS={}",
                std::env::var("RAYON_NUM_THREADS").unwrap_or_default()
            );
            println!("{table}");
            println!(
                "reference (PyTorch, this 2-core CPU, research/reference-cpu-speed.md): 29.8k galaxy-evals/s at batch 4096"
            );
            Ok(())
        }
        BenchCommand::Inference { galaxies, device } => bench_inference(galaxies, &device),
        BenchCommand::Gpu(args) => crate::bench_gpu::run(&args),
    }
}

fn bench_inference(galaxies: usize, device: &str) -> Result<()> {
    // Kept until the end: the pipelines read the catalogue it holds.
    let input = crate::demo::DemoInput::temporary()?;
    let mut m = input.manifest()?;
    m.device = device.to_string();
    m.galaxies_per_batch = galaxies;
    let configs = [
        (
            "reference (512 walkers × 100 steps, stretch)",
            512usize,
            100usize,
            50usize,
            true,
        ),
        (
            "ensemble (demo manifest's ensemble keys: ψ coordinates, stretch/DE/global)",
            m.sampler.walkers,
            m.sampler.steps,
            m.sampler.burn_in,
            false,
        ),
    ];
    println!(
        "| configuration | galaxies | walker-evals/s | s per galaxy | median bulk ESS (z) | ESS/s per galaxy (z) | acceptance |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, walkers, steps, burn, stretch_only) in configs {
        let mut mm = m.clone();
        mm.sampler = SamplerSpec {
            kind: popcosmos_inference::SamplerKind::Ensemble,
            walkers,
            steps,
            burn_in: burn,
            ..m.sampler.clone()
        };
        let pipeline = Pipeline::new(mm, &HubConfig::from_env())?;
        let obs = first_galaxies(&pipeline, galaxies)?;
        let post = pipeline.posterior(&obs);
        let mut rng = popcosmos_api::HostRng::seed_from_u64(1);
        let lib = init_library(
            &pipeline,
            Some(&popcosmos_priors::UniformPrior::new()),
            &mut rng,
        )?;
        let init = lib.initial_walkers(&post, walkers, 8, 0.05, &mut rng)?;
        let config = RunConfig {
            n_steps: steps,
            burn_in: burn,
            thin: 1,
        };
        let t = Instant::now();
        let chain = if stretch_only {
            // The reference: stretch moves in φ, no reparametrisation.
            sample(
                &EnsembleSampler::stretch(),
                init,
                &post,
                &mut rng,
                &config,
                None,
            )?
        } else {
            // The manifest's sampler as `run` uses it (coordinates, moves, burn-in stages).
            pipeline.sample_posterior(init, &post, &lib, &mut rng, &config)?
        };
        if let Device::Cuda(_) = pipeline.device {
            pipeline.device.synchronize()?;
        }
        let secs = t.elapsed().as_secs_f64();
        let diags = diagnose_chain(&chain);
        let mut ess: Vec<f64> = diags
            .iter()
            .map(|d| d.ess_bulk[popcosmos_api::params::IDX_Z])
            .collect();
        ess.sort_by(f64::total_cmp);
        let ess_med = ess[ess.len() / 2];
        let acc = chain.acceptance.iter().sum::<f64>() / chain.acceptance.len() as f64;
        let per_gal = secs / galaxies as f64;
        println!(
            "| {name} | {galaxies} | {:.3e} | {per_gal:.3} | {ess_med:.0} | {:.1} | {acc:.2} |",
            (walkers * steps * galaxies) as f64 / secs,
            ess_med / per_gal
        );
    }
    bench_smc(&m, galaxies, None)?;
    // The samplers crate's 20 sweeps per stage, the manifests' default before 2026-12-06.
    bench_smc(&m, galaxies, Some(20))
}

/// The first `galaxies` rows of the manifest's catalogue as observations.
fn first_galaxies(pipeline: &Pipeline, galaxies: usize) -> Result<popcosmos_api::Observations> {
    let mut reader = popcosmos_catalog::CatalogueReader::open(
        &pipeline.manifest.catalogue,
        &pipeline.survey.band_names(),
    )?;
    let chunk = reader
        .next_chunk(galaxies)?
        .expect("demo catalogue has galaxies");
    Ok(chunk.to_observations(&pipeline.device)?)
}

/// A 20 000-draw initialisation library of the pipeline's prior (`broad`: part of it from
/// that prior instead), built in batches of 16 384 rows.
fn init_library(
    pipeline: &Pipeline,
    broad: Option<&dyn popcosmos_api::Prior>,
    rng: &mut popcosmos_api::HostRng,
) -> Result<popcosmos_inference::InitLibrary> {
    Ok(popcosmos_inference::InitLibrary::build(
        pipeline.prior.as_ref(),
        broad,
        &pipeline.sps,
        20000,
        16384,
        rng,
    )?)
}

/// An SMC row: the demo manifest with `sampler: {kind: smc}` (defaults, or `max_sweeps`
/// per stage), started from a 20 000-draw prior library; ESS is the median final-stage ESS
/// of the incremental weights.
fn bench_smc(m: &Manifest, galaxies: usize, max_sweeps: Option<usize>) -> Result<()> {
    let mut mm = m.clone();
    let defaults = SamplerSpec::default();
    mm.sampler = SamplerSpec {
        kind: popcosmos_inference::SamplerKind::Smc,
        moves: None,
        max_sweeps: max_sweeps.unwrap_or(defaults.max_sweeps),
        ..defaults
    };
    let pipeline = Pipeline::new(mm, &HubConfig::from_env())?;
    let obs = first_galaxies(&pipeline, galaxies)?;
    let post = pipeline.posterior(&obs);
    let mut rng = popcosmos_api::HostRng::seed_from_u64(1);
    let lib = init_library(&pipeline, None, &mut rng)?;
    let t = Instant::now();
    let (_, diag) = pipeline.sample_smc(&post, &lib, &mut rng)?;
    if let Device::Cuda(_) = pipeline.device {
        pipeline.device.synchronize()?;
    }
    let secs = t.elapsed().as_secs_f64();
    // With islands each sweep moves one island's share of the particles, and the pooled
    // diagnostics sum the islands' sweeps.
    let sampler = &pipeline.manifest.sampler;
    let evals: usize =
        diag.iter().map(|d| d.sweeps).sum::<usize>() * sampler.particles / sampler.islands;
    let mut ess: Vec<f64> = diag.iter().map(|d| d.final_ess).collect();
    ess.sort_by(f64::total_cmp);
    let acc = diag.iter().map(|d| d.acceptance).sum::<f64>() / diag.len() as f64;
    let per_gal = secs / galaxies as f64;
    println!(
        "| SMC ({}: {} particles in {} islands, ≤ {} sweeps per stage; final ESS of the weights) | {galaxies} | {:.3e} | {per_gal:.3} | {:.0} | {:.1} | {acc:.2} |",
        if max_sweeps.is_some() {
            "previous default"
        } else {
            "defaults"
        },
        sampler.particles,
        sampler.islands,
        sampler.max_sweeps,
        evals as f64 / secs,
        ess[ess.len() / 2],
        ess[ess.len() / 2] / per_gal
    );
    Ok(())
}
