//! Cost of the plugin boundary for a prior: `log_prob` of a `[walkers, galaxies, 16]` batch
//! through the example prior plugin (one host call per batch, copies both ways, checks)
//! against the same density written as candle ops on the CPU.
//!
//! ```text
//! cargo build --release --manifest-path plugins/example-prior/Cargo.toml
//! cargo run --release -p popcosmos-plugin-host --example plugin_overhead -- \
//!     plugins/example-prior/target/release/libexample_prior.so
//! ```

use std::time::Instant;

use candle_core::{D, Device, Tensor};
use popcosmos_api::{HostRng, Prior, RandomSource};

fn main() -> popcosmos_api::Result<()> {
    let path = std::env::args()
        .nth(1)
        .expect("usage: plugin_overhead PATH/TO/libexample_prior.so");
    let prior = popcosmos_plugin_host::load_prior(path.as_ref(), "n_mean=19; n_sigma=3")?;
    let (n_mean, n_sigma) = (19.0f64, 3.0f64);
    let shift = Tensor::from_vec(
        [vec![n_mean as f32], vec![0.0; 15]].concat(),
        16,
        &Device::Cpu,
    )?;
    let scale = Tensor::from_vec(
        [vec![(1.0 / n_sigma) as f32], vec![1.0; 15]].concat(),
        16,
        &Device::Cpu,
    )?;
    let norm = -n_sigma.ln() - 8.0 * (2.0 * std::f64::consts::PI).ln();
    let native = |phi: &Tensor| -> candle_core::Result<Tensor> {
        let u = phi.broadcast_sub(&shift)?.broadcast_mul(&scale)?;
        (u.sqr()?.sum(D::Minus1)? * -0.5)? + norm
    };
    println!(
        "{:>8} {:>9} {:>12} {:>12} {:>8} {:>12}",
        "walkers", "galaxies", "plugin_ms", "candle_ms", "ratio", "max|Δ|"
    );
    for (w, g) in [(32, 100), (64, 1000), (64, 10_000)] {
        let mut rng = HostRng::seed_from_u64(1);
        let phi = rng
            .normal(&(w, g, 16).into(), &Device::Cpu)?
            .broadcast_add(&shift)?;
        let reps = if w * g > 100_000 { 5 } else { 50 };
        let time = |f: &dyn Fn() -> popcosmos_api::Result<Tensor>| -> popcosmos_api::Result<(f64, Tensor)> {
            let mut out = f()?; // warm-up
            let t0 = Instant::now();
            for _ in 0..reps {
                out = f()?;
            }
            Ok((t0.elapsed().as_secs_f64() * 1e3 / reps as f64, out))
        };
        let (tp, a) = time(&|| prior.log_prob(&phi))?;
        let (tc, b) = time(&|| Ok(native(&phi)?))?;
        let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        println!(
            "{w:>8} {g:>9} {tp:>12.3} {tc:>12.3} {:>8.2} {diff:>12.2e}",
            tp / tc
        );
    }
    Ok(())
}
