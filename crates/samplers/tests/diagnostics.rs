//! Diagnostics against processes with known answers.

use popcosmos_api::HostRng;
use popcosmos_samplers::{
    Chain, RunConfig, Thresholds, autocorr_time, diagnose_chain, diagnose_galaxy, ess_bulk,
    ess_tail, rhat,
};
use rand_distr::{Distribution, StandardNormal};

fn normal(rng: &mut HostRng) -> f64 {
    StandardNormal.sample(rng.inner())
}

/// `chains` stationary AR(1) chains x_t = ρ x_{t−1} + √(1 − ρ²) ε_t, laid out `[chains][draws]`.
fn ar1(seed: u64, rho: f64, chains: usize, draws: usize) -> Vec<f64> {
    let mut rng = HostRng::seed_from_u64(seed);
    let s = (1.0 - rho * rho).sqrt();
    let mut out = Vec::with_capacity(chains * draws);
    for _ in 0..chains {
        let mut x = normal(&mut rng);
        for _ in 0..draws {
            out.push(x);
            x = rho * x + s * normal(&mut rng);
        }
    }
    out
}

#[test]
fn ar1_autocorrelation_time_and_ess() {
    let (chains, draws) = (16, 20_000);
    let n = (chains * draws) as f64;
    for rho in [0.5, 0.9] {
        let tau_true = (1.0 + rho) / (1.0 - rho);
        let x = ar1(7, rho, chains, draws);
        let tau = autocorr_time(&x, chains, 5.0);
        let ess = ess_bulk(&x, chains);
        let r = rhat(&x, chains);
        eprintln!(
            "AR(1) rho {rho}: tau {tau:.3} (true {tau_true:.3}), bulk ESS {ess:.0} (N/tau {:.0}), \
             tail ESS {:.0}, rhat {r:.4}",
            n / tau_true,
            ess_tail(&x, chains)
        );
        // Sokal: sd(τ̂)/τ ≈ √(2(2M + 1)/N) with window M ≈ 5τ → ≈ 3.5 % for ρ = 0.9.
        assert!(
            (tau / tau_true - 1.0).abs() < 0.12,
            "rho {rho}: tau {tau} vs {tau_true}"
        );
        assert!(
            (ess * tau_true / n - 1.0).abs() < 0.15,
            "rho {rho}: ESS {ess} vs {}",
            n / tau_true
        );
        assert!((r - 1.0).abs() < 0.01, "rho {rho}: rhat {r}");
    }
}

#[test]
fn iid_normals_have_rhat_one_and_ess_n() {
    let (chains, draws) = (8, 1000);
    let x = ar1(3, 0.0, chains, draws);
    let n = (chains * draws) as f64;
    let (r, eb, et, tau) = (
        rhat(&x, chains),
        ess_bulk(&x, chains),
        ess_tail(&x, chains),
        autocorr_time(&x, chains, 5.0),
    );
    eprintln!("iid: rhat {r:.4}, bulk ESS {eb:.0}, tail ESS {et:.0}, tau {tau:.3} (N = {n})");
    assert!((r - 1.0).abs() < 0.01, "rhat {r}");
    assert!((eb / n - 1.0).abs() < 0.1, "bulk ESS {eb}");
    assert!((et / n - 1.0).abs() < 0.2, "tail ESS {et}");
    assert!((tau - 1.0).abs() < 0.1, "tau {tau}");
}

#[test]
fn rhat_detects_chains_that_disagree() {
    let (chains, draws) = (4, 500);
    // Different means: bulk R̂ ≫ 1.
    let mut x = ar1(5, 0.0, chains, draws);
    for (c, chunk) in x.chunks_exact_mut(draws).enumerate() {
        chunk.iter_mut().for_each(|v| *v += c as f64);
    }
    let r = rhat(&x, chains);
    eprintln!("shifted means: rhat {r:.3}");
    assert!(r > 1.3, "rhat {r}");
    // Same mean, different scales: only the folded (tail) R̂ sees it.
    let mut y = ar1(6, 0.0, chains, draws);
    for (c, chunk) in y.chunks_exact_mut(draws).enumerate() {
        let scale = if c < 2 { 1.0 } else { 4.0 };
        chunk.iter_mut().for_each(|v| *v *= scale);
    }
    let r = rhat(&y, chains);
    eprintln!("different scales: rhat {r:.3}");
    assert!(r > 1.1, "rhat {r}");
    // A trend within each chain is caught by splitting.
    let mut t = ar1(8, 0.0, chains, draws);
    for chunk in t.chunks_exact_mut(draws) {
        chunk
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v += 3.0 * i as f64 / draws as f64);
    }
    let r = rhat(&t, chains);
    eprintln!("trending chains: rhat {r:.3}");
    assert!(r > 1.2, "rhat {r}");
}

/// A chain of `samples` `[kept][walkers][galaxies][dim]` with zero log-densities, kept from
/// step 0 of `kept`.
fn chain(samples: Vec<f32>, shape: (usize, usize, usize, usize), acceptance: Vec<f64>) -> Chain {
    let (kept, walkers, galaxies, dim) = shape;
    Chain {
        samples,
        log_prob: vec![0.0; kept * walkers * galaxies],
        kept,
        walkers,
        galaxies,
        dim,
        acceptance,
        config: RunConfig {
            n_steps: kept,
            burn_in: 0,
            thin: 1,
        },
    }
}

#[test]
fn galaxy_layouts_and_flags() {
    // Two galaxies, 2 parameters: galaxy 0 well mixed, galaxy 1's walkers disagree.
    let (kept, walkers, galaxies, dim) = (200, 8, 2, 2);
    let mut rng = HostRng::seed_from_u64(1);
    let mut samples = vec![0f32; kept * walkers * galaxies * dim];
    for t in 0..kept {
        for w in 0..walkers {
            for g in 0..galaxies {
                for p in 0..dim {
                    let shift = if g == 1 && p == 1 { w as f64 } else { 0.0 };
                    samples[((t * walkers + w) * galaxies + g) * dim + p] =
                        (normal(&mut rng) + shift) as f32;
                }
            }
        }
    }
    let chain = chain(samples, (kept, walkers, galaxies, dim), vec![0.3, 0.01]);
    let diag = diagnose_chain(&chain);
    let thresholds = Thresholds {
        min_ess_bulk: 400.0,
        ..Thresholds::default()
    };
    assert!(diag[0].flags(&thresholds).is_empty(), "{:?}", diag[0]);
    let flags = thresholds.flags(&diag[1]);
    eprintln!("galaxy 1 flags: {flags:?}");
    assert!(
        flags
            .iter()
            .any(|f| f.starts_with("rhat") && f.ends_with("(parameter 1)"))
    );
    assert!(flags.iter().any(|f| f.starts_with("acceptance")));
    assert!(diag[1].rhat[0] < 1.05);

    // The per-galaxy entry point on a [draws][chains][dim] buffer agrees.
    let single = diagnose_galaxy(&chain.galaxy_samples(1), kept, walkers, dim, Some(0.01));
    assert_eq!(single, diag[1]);

    // τ = 50 draws per τ check.
    let strict = Thresholds {
        min_draws_per_tau: 500.0,
        ..thresholds
    };
    assert!(strict.flags(&diag[0]).iter().any(|f| f.contains("tau")));
}

#[test]
fn diagnostics_scale_to_many_walkers() {
    // A production-shaped slice (512 walkers × 50 draws × 16 parameters) for a few galaxies;
    // prints the time per galaxy (this test crate is built without optimisation).
    let (kept, walkers, galaxies, dim) = (50, 512, 2, 16);
    let mut rng = HostRng::seed_from_u64(2);
    let samples: Vec<f32> = (0..kept * walkers * galaxies * dim)
        .map(|_| normal(&mut rng) as f32)
        .collect();
    let chain = chain(samples, (kept, walkers, galaxies, dim), vec![0.3; galaxies]);
    let start = std::time::Instant::now();
    let diag = diagnose_chain(&chain);
    let per_galaxy = start.elapsed().as_secs_f64() / galaxies as f64;
    eprintln!(
        "diagnostics: {:.1} ms per galaxy (512 walkers × 50 draws × 16)",
        per_galaxy * 1e3
    );
    for d in &diag {
        assert!(d.max_rhat() < 1.02, "{}", d.max_rhat());
        assert!(d.min_ess_bulk() > 0.8 * 25_600.0, "{}", d.min_ess_bulk());
    }
}
