//! Cost of the diffusion prior's log-density on CPU: ODE work per row and wall time for a
//! few solvers. `cargo run --release -p popcosmos-priors --example diffusion_cost -- WEIGHTS [ROWS]`
use std::time::Instant;

use candle_core::{DType, Device};
use popcosmos_api::{HostRng, Prior};
use popcosmos_priors::diffusion::{DiffusionModel, LogProbOptions, OdeSolver};

fn main() -> anyhow::Result<()> {
    popcosmos_api::configure_cpu_threads();
    let args: Vec<String> = std::env::args().collect();
    let model = DiffusionModel::load(&args[1], &Device::Cpu)?;
    let rows: usize = args.get(2).map_or(Ok(256), |s| s.parse())?;
    let mut rng = HostRng::seed_from_u64(1);
    let phi = popcosmos_priors::ProspectorAlphaPrior::new().sample(rows, &mut rng, &Device::Cpu)?;
    let reference = {
        let m64 = model.to_dtype(DType::F64)?;
        let tight = LogProbOptions {
            solver: OdeSolver::tight(),
            ..Default::default()
        };
        m64.log_prob(&phi.narrow(0, 0, 16)?, None, &tight, None)?
            .log_prob
            .to_vec1::<f64>()?
    };
    println!(
        "{:<28} {:>10} {:>12} {:>14}",
        "solver", "NFE/row", "ms/row", "max|Δ| 16 rows"
    );
    for solver in [
        OdeSolver::default(),
        OdeSolver::Dopri5 {
            atol: 1e-4,
            rtol: 1e-4,
            min_step: 1e-6,
            max_steps: 100_000,
        },
        OdeSolver::Dopri5 {
            atol: 1e-3,
            rtol: 1e-3,
            min_step: 1e-6,
            max_steps: 100_000,
        },
        OdeSolver::Rk4 { steps: 32 },
        OdeSolver::Rk4 { steps: 16 },
        OdeSolver::Heun { steps: 32 },
    ] {
        let opts = LogProbOptions {
            solver,
            ..Default::default()
        };
        let t = Instant::now();
        let out = model.log_prob(&phi, None, &opts, None)?;
        let dt = t.elapsed().as_secs_f64();
        let lp: Vec<f32> = out.log_prob.to_vec1()?;
        let err = lp
            .iter()
            .zip(&reference)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        println!(
            "{:<28} {:>10.1} {:>12.3} {:>14.4}",
            format!("{solver:?}").chars().take(28).collect::<String>(),
            out.stats.row_evaluations as f64 / rows as f64,
            1e3 * dt / rows as f64,
            err
        );
    }
    Ok(())
}
