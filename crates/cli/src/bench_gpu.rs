//! `popcosmos-cli bench gpu`: the headline device benchmark (works on any device; on a CPU it
//! is a smoke test). Three tables:
//! 1. correctness of the device against the CPU (photometry, likelihood, prior log-density);
//! 2. photulator-stack throughput at batch 4096 … 1M: the fused device activation against the
//!    composed candle ops, and with TF32 matmuls (with its error against the CPU);
//! 3. device-seconds per galaxy of whole sampling runs (512 walkers × 100 steps by default)
//!    for batches of 100 and 1000 galaxies (the bundled demo galaxies, tiled), per prior; the
//!    diffusion prior, whose log-density costs ~100 emulator evaluations, on fewer galaxies.

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use popcosmos_api::LogDensity;
use popcosmos_api::{HostRng, Observations, SpsModel, params::phi_to_theta};
use popcosmos_api::{Likelihood, Sampler};
use popcosmos_inference::Pipeline;
use popcosmos_models::HubConfig;
use popcosmos_samplers::{EnsembleSampler, RunConfig, sample};

use crate::demo::DemoInput;

#[derive(clap::Args)]
pub struct GpuBenchArgs {
    /// Device under test (`cuda:0`; `cpu` runs the same code as a smoke test).
    #[arg(long, default_value = "cuda:0")]
    pub device: String,
    /// Emulator batch sizes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4096,65536,262144,1048576"
    )]
    pub batches: Vec<usize>,
    /// Galaxies per sampling batch.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub galaxies: Vec<usize>,
    /// Galaxies per sampling batch under a diffusion prior.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    pub diffusion_galaxies: Vec<usize>,
    #[arg(long, default_value_t = 512)]
    pub walkers: usize,
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Priors to time, as kinds or inline YAML specs separated by `;` (`flow` is the bundled
    /// flow distilled from the diffusion prior; `{kind: flow, weights: F.safetensors}` another).
    #[arg(
        long,
        default_value = "prospector-alpha;flow;{kind: diffusion, log_prob: {solver: {method: rk4, steps: 16}}}"
    )]
    pub priors: String,
    /// Only the sampling runs (skip the correctness checks, the step breakdown, the emulator
    /// tables and the composed-ops comparison run).
    #[arg(long)]
    pub runs_only: bool,
    /// Seconds per emulator configuration.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
}

/// Finite (device, CPU) value pairs of two tensors, on the host.
fn finite_pairs(a: &Tensor, b: &Tensor) -> Result<Vec<(f64, f64)>> {
    let host = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(t.to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?)
    };
    Ok(host(a)?
        .into_iter()
        .zip(host(b)?)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect())
}

fn max_rel(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok(finite_pairs(a, b)?
        .iter()
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
        .fold(0.0, f64::max))
}

fn max_abs(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok(finite_pairs(a, b)?
        .iter()
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max))
}

/// The demo manifest's pipeline on `device` with `prior`.
fn demo_pipeline(
    input: &DemoInput,
    device: &str,
    prior: &str,
    hub: &HubConfig,
) -> Result<Pipeline> {
    let mut m = input.manifest()?;
    m.device = device.to_string();
    m.prior = crate::prior_train::parse_prior(prior)?;
    Ok(Pipeline::new(m, hub)?)
}

/// The demo galaxies' observations, tiled to `n` galaxies.
fn tiled_observations(p: &Pipeline, n: usize) -> Result<Observations> {
    let mut reader =
        popcosmos_catalog::CatalogueReader::open(&p.manifest.catalogue, &p.survey.band_names())?;
    let chunk = reader.read_all()?;
    let obs = chunk.to_observations(&p.device)?;
    let g = obs.flux_nmgy.dim(0)?;
    let reps = n.div_ceil(g);
    let tile = |t: &Tensor| -> Result<Tensor> { Ok(t.repeat((reps, 1))?.narrow(0, 0, n)?) };
    Ok(Observations {
        flux_nmgy: tile(&obs.flux_nmgy)?,
        flux_err_nmgy: tile(&obs.flux_err_nmgy)?,
        mask: tile(&obs.mask)?,
    })
}

pub fn run(args: &GpuBenchArgs) -> Result<()> {
    let dev = popcosmos_api::parse_device(&args.device)?;
    let hub = HubConfig::from_env();
    let priors: Vec<&str> = args
        .priors
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    println!(
        "device {} ({:?}), {} walkers × {} steps",
        args.device, dev, args.walkers, args.steps
    );

    // 0. The fused device kernels compile (NVRTC) and agree with the composed ops; if not, say
    //    so and run the rest on the composed ops.
    if dev.is_cuda() {
        let x = Tensor::randn(0f32, 3f32, (26, 1000, 128), &dev)?;
        let (alpha, beta, bias) = (
            Tensor::randn(0f32, 1f32, (26, 128), &dev)?,
            Tensor::rand(0f32, 1f32, (26, 128), &dev)?,
            Tensor::randn(0f32, 1f32, (26, 128), &dev)?,
        );
        let fused =
            popcosmos_sps::activation::speculator_activation(&x, &alpha, &beta, Some(&bias));
        match fused {
            Ok(f) => {
                let c = popcosmos_sps::activation::composed(&x, &alpha, &beta, Some(&bias))?;
                println!(
                    "fused CUDA activation vs composed ops, 3.3M elements: max |Δ| {:.2e}",
                    max_abs(&f, &c)?
                );
            }
            Err(e) => {
                println!("fused CUDA activation failed ({e}); composed ops from here on");
                popcosmos_sps::activation::set_device_kernel(false);
            }
        }
    }

    let fused_ok = popcosmos_sps::activation::device_kernel_enabled();
    // The built-in demo manifest and galaxies, in a temporary folder kept to the end.
    let input = DemoInput::temporary()?;

    if !args.runs_only {
        checks(args, &input, &dev, &priors, fused_ok)?;
    }

    // 3. Device-seconds per galaxy of whole runs.
    println!(
        "\n| prior | galaxies | walkers × steps | wall s | device-s per galaxy | walker-evals/s | acceptance |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    // The reference setting with the composed candle ops instead of the fused kernels: what
    // they buy end to end (first, as the diffusion prior below is the slow part).
    if dev.is_cuda()
        && fused_ok
        && !args.runs_only
        && let Some(&n) = args.galaxies.iter().min()
    {
        popcosmos_sps::activation::set_device_kernel(false);
        let p = demo_pipeline(&input, &args.device, "prospector-alpha", &hub)?;
        time_run(
            &p,
            n,
            args.steps / 2,
            args,
            "Prospector-α, composed candle ops",
        )?;
        popcosmos_sps::activation::set_device_kernel(true);
    }
    // The same steps keeping no chain: what storing the kept half costs.
    if !args.runs_only
        && let Some(&n) = args.galaxies.iter().max()
    {
        let p = demo_pipeline(&input, &args.device, "prospector-alpha", &hub)?;
        time_run(&p, n, args.steps, args, "Prospector-α, no kept chain")?;
    }
    for spec in &priors {
        let p = demo_pipeline(&input, &args.device, spec, &hub)
            .with_context(|| format!("prior {spec}"))?;
        let galaxies = if p.prior.name().contains("diffusion") {
            &args.diffusion_galaxies
        } else {
            &args.galaxies
        };
        for &n in galaxies {
            time_run(&p, n, args.steps / 2, args, p.prior.name())?;
        }
    }
    println!(
        "\nreference (PyTorch, one H200, research/reference-gpu.md): 512 walkers × 100 steps cost 0.158 GPU-s per galaxy at 100 galaxies and 0.0992 at 1000 (Prospector-α prior); 15.6 with a 16-d diffusion prior (10 galaxies, dopri5, NFE 128); photulator stack 2.32e5 / 3.21e6 galaxy-evals/s at batch 4096 / 262144"
    );
    Ok(())
}

/// Time `args.walkers × args.steps` stretch-move steps of `n` tiled demo galaxies (the
/// reference setting: φ coordinates, walkers from prior draws; the start is not timed), the
/// states after `burn_in` steps kept as the chain, and print one table row.
fn time_run(
    p: &Pipeline,
    n: usize,
    burn_in: usize,
    args: &GpuBenchArgs,
    label: &str,
) -> Result<()> {
    let obs = tiled_observations(p, n)?;
    let post = p.posterior(&obs);
    let mut rng = HostRng::seed_from_u64(1);
    let start = p.prior.sample(args.walkers * n, &mut rng, &p.device)?;
    let init = start.reshape((args.walkers, n, 16))?;
    p.device.synchronize()?;
    // Unix time on stderr, to match the row to a GPU-memory trace (nvidia-smi --query-gpu
    // timestamp,memory.used -lms …).
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    eprintln!("[{:.1}] start: {label}, {n} galaxies", unix());
    let t = Instant::now();
    let chain = sample(
        &EnsembleSampler::stretch(),
        init,
        &post,
        &mut rng,
        &RunConfig {
            n_steps: args.steps,
            burn_in,
            thin: 1,
        },
        None,
    )?;
    p.device.synchronize()?;
    let secs = t.elapsed().as_secs_f64();
    eprintln!("[{:.1}] end: {label}, {n} galaxies", unix());
    let acceptance = chain.acceptance.iter().sum::<f64>() / chain.acceptance.len() as f64;
    println!(
        "| {label} | {n} | {} × {} | {secs:.2} | {:.4} | {:.3e} | {acceptance:.2} |",
        args.walkers,
        args.steps,
        secs / n as f64,
        (args.walkers * args.steps * n) as f64 / secs
    );
    Ok(())
}

/// Sections 1–2 of the benchmark: correctness against the CPU, the step breakdown and the
/// emulator tables.
fn checks(
    args: &GpuBenchArgs,
    input: &DemoInput,
    dev: &Device,
    priors: &[&str],
    fused_ok: bool,
) -> Result<()> {
    let (dev, hub) = (dev.clone(), HubConfig::from_env());
    // 1. Correctness against the CPU on 2048 prior draws.
    let cpu = demo_pipeline(input, "cpu", "prospector-alpha", &hub)?;
    let gpu = demo_pipeline(input, &args.device, "prospector-alpha", &hub)?;
    let mut rng = HostRng::seed_from_u64(3);
    let phi = cpu.prior.sample(2048, &mut rng, &Device::Cpu)?;
    let theta = phi_to_theta(&phi)?;
    let (m_cpu, m_gpu) = (
        cpu.sps.photometry(&theta)?,
        gpu.sps.photometry(&theta.to_device(&dev)?)?,
    );
    let obs_cpu = tiled_observations(&cpu, 16)?;
    let obs_gpu = tiled_observations(&gpu, 16)?;
    let phi_wg = phi.narrow(0, 0, 2048)?.reshape((128, 16, 16))?;
    let lp_cpu = cpu.posterior(&obs_cpu).log_density(&phi_wg)?;
    let lp_gpu = gpu
        .posterior(&obs_gpu)
        .log_density(&phi_wg.to_device(&dev)?)?;
    println!("\n| check (2048 prior draws) | max error |\n|---|---:|");
    println!(
        "| model flux, relative | {:.2e} |",
        max_rel(&m_gpu.flux_nmgy, &m_cpu.flux_nmgy)?
    );
    println!(
        "| log posterior (128 walkers × 16 galaxies), absolute | {:.2e} |",
        max_abs(&lp_gpu, &lp_cpu)?
    );
    for spec in priors {
        let pc = popcosmos_inference::build_prior(
            &crate::prior_train::parse_prior(spec)?,
            &Device::Cpu,
            &hub,
        )?;
        let pg =
            popcosmos_inference::build_prior(&crate::prior_train::parse_prior(spec)?, &dev, &hub)?;
        let x = phi.narrow(0, 0, 256)?;
        println!(
            "| prior log-density `{spec}` (256 rows), absolute | {:.2e} |",
            max_abs(&pg.log_prob(&x.to_device(&dev)?)?, &pc.log_prob(&x)?)?
        );
    }

    // 1b. Where a sampler step's time goes: each piece of the posterior at the size of one
    //     half-step of the largest batch (walkers/2 × galaxies rows).
    if let Some(&g) = args.galaxies.iter().max() {
        let half = args.walkers / 2;
        let obs = tiled_observations(&gpu, g)?;
        let post = gpu.posterior(&obs);
        let mut rng = HostRng::seed_from_u64(4);
        let phi = gpu.prior.sample(half * g, &mut rng, &dev)?;
        let theta = phi_to_theta(&phi)?;
        let theta15 = popcosmos_sps::photulator::theta_to_photulator_input(&theta)?;
        let phi_wg = phi.reshape((half, g, 16))?;
        let model = post.model_photometry(&phi_wg)?;
        let time = |f: &dyn Fn() -> Result<Tensor>| -> Result<f64> {
            f()?;
            dev.synchronize()?;
            let mut t = Vec::new();
            for _ in 0..5 {
                let t0 = Instant::now();
                f()?;
                dev.synchronize()?;
                t.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            t.sort_by(f64::total_cmp);
            Ok(t[2])
        };
        let kernel = EnsembleSampler::stretch();
        let state = kernel.init(phi_wg.repeat((2, 1, 1))?, &post)?;
        let rows: [(&str, f64); 7] = [
            ("φ → θ", time(&|| Ok(phi_to_theta(&phi)?))?),
            (
                "photulator stack (26 bands)",
                time(&|| Ok(gpu.sps.photulator().absolute_magnitudes(&theta15)?))?,
            ),
            (
                "model photometry (continuum + lines), in chunks of the manifest's rows",
                time(&|| Ok(post.model_photometry(&phi_wg)?.flux_nmgy))?,
            ),
            (
                "likelihood given the model",
                time(&|| Ok(gpu.likelihood.log_like(&model, &obs)?))?,
            ),
            (
                "prior log-density",
                time(&|| Ok(gpu.prior.log_prob(&phi)?))?,
            ),
            (
                "posterior log-density (all of the above)",
                time(&|| Ok(post.log_density(&phi_wg)?))?,
            ),
            (
                "one stretch step (two half-steps, 2 × the posterior)",
                time(&|| {
                    let mut r = HostRng::seed_from_u64(5);
                    Ok(kernel.step(&mut r, state.clone(), &post)?.0.position)
                })?,
            ),
        ];
        println!(
            "\n| piece, {half} walkers × {g} galaxies = {} rows | ms |\n|---|---:|",
            half * g
        );
        for (name, ms) in rows {
            println!("| {name} | {ms:.2} |");
        }
    }

    // 2. Emulator throughput: fused activation, composed candle ops, TF32 matmuls.
    let seconds = std::time::Duration::from_secs_f64(args.seconds);
    let threads = [std::thread::available_parallelism().map_or(1, |n| n.get())];
    let theta15 = popcosmos_sps::photulator::theta_to_photulator_input(&theta)?;
    let absmag_cpu = cpu.sps.photulator().absolute_magnitudes(&theta15)?;
    let theta15_dev = theta15.to_device(&dev)?;
    let variants: [(&str, bool, bool); 3] = [
        ("fused activation kernel", true, false),
        ("composed candle ops", false, false),
        ("fused activation kernel, TF32 matmuls", true, true),
    ];
    for (name, fused, tf32) in variants {
        if (!dev.is_cuda() && (!fused || tf32)) || (fused && !fused_ok) {
            continue; // CPU: one variant (its own fused kernel)
        }
        popcosmos_sps::activation::set_device_kernel(fused);
        candle_core::cuda::set_gemm_reduced_precision_f32(tf32);
        let err = max_abs(
            &gpu.sps.photulator().absolute_magnitudes(&theta15_dev)?,
            &absmag_cpu,
        )?;
        // The composed ops hold ~5 full-size temporaries: keep them to ≤ 262144 rows.
        let batches: Vec<usize> = args
            .batches
            .iter()
            .copied()
            .filter(|&b| fused || b <= 262_144)
            .collect();
        let table =
            popcosmos_sps::bench_emulator(gpu.sps.photulator(), &batches, &threads, seconds)?;
        println!(
            "\nphotulator stack (26 bands) on {}, {name}; max |Δ mag| vs CPU on 2048 prior draws {err:.2e}:\n{table}",
            args.device
        );
    }
    popcosmos_sps::activation::set_device_kernel(fused_ok);
    candle_core::cuda::set_gemm_reduced_precision_f32(false);
    Ok(())
}
