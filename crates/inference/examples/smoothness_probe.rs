//! Diagnostic: is the log posterior smooth at the scale the sampler moves on?
//! `cargo run --release -p popcosmos-inference --example smoothness_probe -- MANIFEST`
//! For the first batch of a manifest's catalogue: start at each galaxy's best library draw,
//! refine it with Adam, then evaluate ln P along random unit directions in φ at steps
//! t = k·h and print, per galaxy, the ln P drop at |t| = 0.01, 0.03, 0.1 and the RMS of the
//! second differences at h = 1e-3 (a smooth function gives ≈ h²·curvature ≈ 0).
use candle_core::Tensor;
use popcosmos_api::{LogDensity, N_PARAMS, Result};

mod support;

fn main() -> Result<()> {
    popcosmos_api::configure_cpu_threads();
    let p = support::pipeline()?;
    let (_, obs) = support::first_chunk(&p, 10)?;
    let (lib, mut rng) = support::library(&p, 30000)?;
    let post = p.posterior(&obs);
    let start = lib.initial_walkers(&post, 4, 1, 0.0, &mut rng)?;
    let best = popcosmos_inference::refine_walkers(&post, &start, 300, 0.01, 0.0, &mut rng)?
        .narrow(0, 0, 1)?; // [1, G, 16]
    // Probe in the sampler's coordinates ψ.
    let space = &lib.sampling_space;
    let best = space.from_phi(&best)?;
    let phi_post = post;
    let post = popcosmos_inference::InSamplingSpace {
        target: &phi_post,
        space,
    };
    let g = best.dim(1)?;
    let h = 1e-3f64;
    let ks: Vec<i64> = (-100..=100).collect();
    for dir in 0..3 {
        use popcosmos_api::RandomSource;
        let v = rng.normal(&(1, g, N_PARAMS).into(), &p.device)?;
        let v = v.broadcast_div(&v.sqr()?.sum_keepdim(2)?.sqrt()?)?;
        let pts: Vec<Tensor> = ks
            .iter()
            .map(|&k| (&best + (&v * (k as f64 * h))?).map_err(Into::into))
            .collect::<Result<_>>()?;
        let x = Tensor::cat(&pts, 0)?; // [K, G, 16]
        let lp = post
            .log_density(&x)?
            .to_dtype(candle_core::DType::F64)?
            .t()?
            .to_vec2::<f64>()?;
        let xphi = space.to_phi(&x)?.0;
        let prior_lp = p
            .prior
            .log_prob(&xphi)?
            .to_dtype(candle_core::DType::F64)?
            .t()?
            .to_vec2::<f64>()?;
        let theta = popcosmos_api::params::phi_to_theta(&xphi)?;
        for gi in 0..g {
            if let Some(i) = (0..ks.len()).find(|&i| !lp[gi][i].is_finite()) {
                let th = theta
                    .narrow(0, i, 1)?
                    .narrow(1, gi, 1)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let th0 = theta
                    .narrow(0, 100, 1)?
                    .narrow(1, gi, 1)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let logm = popcosmos_sps::log10_mass_formed(th0[0] as f64, th0[15] as f64);
                println!(
                    "  galaxy {gi}: first non-finite at t = {:.3}: prior {:.2}; θ(best) = {:?} log10M {logm:.3}; θ(edge) N {:.4} z {:.4}",
                    ks[i] as f64 * h,
                    prior_lp[gi][i],
                    th0.iter()
                        .map(|v| (v * 1000.0).round() / 1000.0)
                        .collect::<Vec<_>>(),
                    th[0],
                    th[15]
                );
            }
        }
        for (gi, row) in lp.iter().enumerate() {
            let c = row[100];
            let drop = |t: usize| c - 0.5 * (row[100 + t] + row[100 - t]);
            let d2: Vec<f64> = (1..row.len() - 1)
                .map(|i| row[i + 1] - 2.0 * row[i] + row[i - 1])
                .collect();
            let rms = (d2.iter().map(|x| x * x).sum::<f64>() / d2.len() as f64).sqrt();
            println!(
                "dir {dir} galaxy {gi}: lnP {c:.2}; drop at |t| 0.01 {:.3}, 0.03 {:.3}, 0.1 {:.3}; rms 2nd diff {rms:.2e}",
                drop(10),
                drop(30),
                drop(100)
            );
        }
    }
    Ok(())
}
