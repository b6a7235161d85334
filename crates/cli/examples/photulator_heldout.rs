//! Held-out accuracy of a trained photulator set against its teacher, split by redshift
//! (docs/emulators.md). Regenerates the held-out draws of `train-emulator` (same seed, same
//! widened Prospector-α draws) and the teacher magnitudes:
//!
//! ```text
//! cargo run --release -p popcosmos-cli --example photulator_heldout -- \
//!     WEIGHTS.safetensors FILTER_DIR TRAIN HELDOUT [SEED] [Z_MAX]
//! ```

use candle_core::{Device, Tensor};
use popcosmos_api::{FilterCurve, HostRng};
use popcosmos_priors::prospector::ProspectorAlphaPrior;
use popcosmos_sps::Photulator;
use popcosmos_sps::photulator::theta_to_photulator_input;
use popcosmos_sps::spectrum::SpectrumPhotometry;
use rand::Rng;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let (weights, dir) = (&a[1], std::path::Path::new(&a[2]));
    let (n_train, n_held): (usize, usize) = (a[3].parse()?, a[4].parse()?);
    let seed: u64 = a.get(5).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let z_max: f64 = a.get(6).map(|s| s.parse()).transpose()?.unwrap_or(6.0);
    let device = Device::Cpu;
    let phot = Photulator::load(weights, &device)?;
    let filters = phot
        .band_names()
        .iter()
        .map(|b| FilterCurve::from_path(&dir.join(format!("{b}.txt"))))
        .collect::<Result<Vec<_>, _>>()?;
    let spec = SpectrumPhotometry::builtin(&filters, &device)?;
    // Same draws as `train-emulator` (crates/cli/src/train_emulator.rs::training_draws).
    let mut rows = ProspectorAlphaPrior::new().sample_theta(n_train + n_held, seed);
    let mut rng = HostRng::seed_from_u64(seed ^ 0x5eed_7a11);
    for r in &mut rows {
        r[15] = z_max * rng.inner().random::<f64>();
        r[8] = (2.0 * rng.inner().random::<f64>()).powi(2);
    }
    let held = &rows[n_train..];
    let flat: Vec<f32> = held.iter().flatten().map(|&v| v as f32).collect();
    let th = Tensor::from_vec(flat, (held.len(), 16), &device)?;
    let teacher = spec.absolute_magnitudes(&th)?.to_vec2::<f32>()?;
    let pred = phot
        .absolute_magnitudes(&theta_to_photulator_input(&th)?)?
        .to_vec2::<f32>()?;
    type Sel = Box<dyn Fn(usize, usize) -> bool>;
    let t2 = teacher.clone();
    let zs: Vec<f64> = held.iter().map(|r| r[15]).collect();
    let (z1, z2) = (zs.clone(), zs);
    let groups: Vec<(&str, Sel)> = vec![
        ("all", Box::new(|_, _| true)),
        ("z ≤ 2.5", Box::new(move |i, _| z1[i] <= 2.5)),
        ("z > 2.5", Box::new(move |i, _| z2[i] > 2.5)),
        ("teacher M < 30", Box::new(move |i, b| t2[i][b] < 30.0)),
    ];
    print!("| band |");
    for (g, _) in &groups {
        print!(" {g}: mean | RMS | max abs |");
    }
    println!();
    print!("|---|");
    for _ in &groups {
        print!("---|---|---|");
    }
    println!();
    for (b, name) in phot.band_names().iter().enumerate() {
        print!("| {name} |");
        for (_, sel) in &groups {
            let d: Vec<f64> = (0..held.len())
                .filter(|&i| sel(i, b))
                .map(|i| (pred[i][b] - teacher[i][b].min(45.0)) as f64)
                .collect();
            let k = d.len().max(1) as f64;
            let mean = d.iter().sum::<f64>() / k;
            let rms = (d.iter().map(|v| v * v).sum::<f64>() / k).sqrt();
            let mx = d.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            print!(" {mean:+.3} | {rms:.3} | {mx:.2} |");
        }
        println!();
    }
    Ok(())
}
