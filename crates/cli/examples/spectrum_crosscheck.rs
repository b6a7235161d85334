//! Cross-check of the Speculator spectrum emulator → photometry path against the COSMOS
//! photulators: per-band mean and RMS of M_spec − M_phot (AB mag) on Prospector-α
//! prior draws, overall and split by redshift (inside / outside the spectrum emulator's
//! 0.5 ≤ z ≤ 2.5 age range) and by log U (which the spectrum emulator lacks).
//!
//! ```text
//! cargo run --release -p popcosmos-cli --example spectrum_crosscheck -- [N] [SEED]
//! ```
//! Prints a markdown table (docs/emulators.md holds the committed one).

use candle_core::{Device, Tensor};
use popcosmos_priors::ProspectorAlphaPrior;
use popcosmos_sps::photulator::theta_to_photulator_input;
use popcosmos_sps::{Photulator, SpectrumPhotometry};

/// Magnitudes fainter than this (bands beyond the Lyman limit) are compared as equal.
const CAP: f32 = 45.0;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let seed: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(7);
    let device = Device::Cpu;
    let phot = Photulator::builtin(&device)?;
    let filters = phot
        .band_names()
        .iter()
        .map(|b| popcosmos_surveys::cosmos_filter(b))
        .collect::<Result<Vec<_>, _>>()?;
    let spec = SpectrumPhotometry::builtin(&filters, &device)?;
    let rows = ProspectorAlphaPrior::new().sample_theta(n, seed);
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&v| v as f32))
        .collect();
    let theta = Tensor::from_vec(flat, (n, 16), &device)?;
    let t0 = std::time::Instant::now();
    let m_spec = spec.absolute_magnitudes(&theta)?.to_vec2::<f32>()?;
    let dt = t0.elapsed().as_secs_f64();
    let m_phot = phot
        .absolute_magnitudes(&theta_to_photulator_input(&theta)?)?
        .to_vec2::<f32>()?;
    type Sel = Box<dyn Fn(&[f64; 16]) -> bool>;
    let groups: Vec<(&str, Sel)> = vec![
        ("all", Box::new(|_| true)),
        ("0.5≤z≤2.5", Box::new(|r| (0.5..=2.5).contains(&r[15]))),
        ("z<0.5", Box::new(|r| r[15] < 0.5)),
        ("2.5<z≤4", Box::new(|r| r[15] > 2.5 && r[15] <= 4.0)),
        ("z>4", Box::new(|r| r[15] > 4.0)),
        (
            "0.5≤z≤2.5, −2.5≤logU≤−1.5",
            Box::new(|r| (0.5..=2.5).contains(&r[15]) && (-2.5..=-1.5).contains(&r[14])),
        ),
    ];
    println!(
        "{n} Prospector-α prior draws (seed {seed}); spectrum photometry {dt:.2} s \
         ({:.2} ms/galaxy); Δ = M_spectrum − M_photulator (AB mag), both capped at {CAP}\n",
        1e3 * dt / n as f64
    );
    print!("| band |");
    for (g, sel) in &groups {
        let k = rows.iter().filter(|r| sel(r)).count();
        print!(" {g} (n={k}) mean | RMS |");
    }
    println!();
    print!("|---|");
    for _ in &groups {
        print!("---|---|");
    }
    println!();
    for (b, name) in phot.band_names().iter().enumerate() {
        print!("| {name} |");
        for (_, sel) in &groups {
            let d: Vec<f64> = (0..n)
                .filter(|&i| sel(&rows[i]))
                .map(|i| (m_spec[i][b].min(CAP) - m_phot[i][b].min(CAP)) as f64)
                .filter(|v| v.is_finite())
                .collect();
            let k = d.len().max(1) as f64;
            let mean = d.iter().sum::<f64>() / k;
            let rms = (d.iter().map(|v| v * v).sum::<f64>() / k).sqrt();
            print!(" {mean:+.3} | {rms:.3} |");
        }
        println!();
    }
    Ok(())
}
