//! Tempered SMC on targets with known answers: narrow, well-separated Gaussian mixtures in
//! 16-D (mode weights and the evidence are analytic) and Neal's 10-D funnel (moments and
//! ln Z = 0 are known). Every "galaxy" of a batch is an independent replicate of the same
//! target, so the spread of the estimates across galaxies is an honest Monte Carlo error.
//! The ensemble sampler runs on the same targets for comparison (printed, and asserted to be
//! no better, as docs/validation.md reports).

use popcosmos_api::{DType, Device, HostRng, RandomSource, Result, Tensor};
use popcosmos_samplers::{
    ClusteredGlobalMove, DifferentialEvolutionMove, EnsembleSampler, GlobalMove, LocalMove,
    Reference, RunConfig, Smc, SmcConfig, SmcStatus, StretchMove, TemperedTarget, sample,
};

const LN_2PI: f64 = 1.837_877_066_409_345_5;

fn default_moves() -> EnsembleSampler {
    EnsembleSampler::new(vec![
        (Box::new(StretchMove { a: 2.0 }), 0.2),
        (
            Box::new(DifferentialEvolutionMove {
                gamma: None,
                sigma: 1e-5,
            }),
            0.2,
        ),
        (Box::new(GlobalMove::default()), 0.1),
        (Box::new(ClusteredGlobalMove::default()), 0.5),
    ])
    .unwrap()
}

/// Prior 𝒩(0, s² I) on every coordinate except those given their own scale; likelihood a
/// mixture Σ w_k 𝒩(x; μ_k, σ_k² I), normalised.
struct Mixture {
    dim: usize,
    means: Vec<Vec<f64>>,
    sigmas: Vec<f64>,
    log_weights: Vec<f64>,
}

impl Mixture {
    /// Modes with *posterior* weights `post` (prior 𝒩(0, I)).
    fn with_posterior_weights(
        dim: usize,
        means: Vec<Vec<f64>>,
        sigmas: Vec<f64>,
        post: &[f64],
    ) -> Self {
        // Z_k = 𝒩(μ_k; 0, (1 + σ_k²) I): likelihood weight w_k ∝ π_k / Z_k.
        let log_z: Vec<f64> = means
            .iter()
            .zip(&sigmas)
            .map(|(m, s)| gauss_log_norm(m, 1.0 + s * s))
            .collect();
        let raw: Vec<f64> = post.iter().zip(&log_z).map(|(p, z)| p.ln() - z).collect();
        let norm = log_sum_exp(&raw);
        Self {
            dim,
            means,
            sigmas,
            log_weights: raw.iter().map(|r| r - norm).collect(),
        }
    }

    /// ln(w_k Z_k) of each mode: its share of the evidence under the prior 𝒩(0, I).
    fn mode_log_masses(&self) -> Vec<f64> {
        self.means
            .iter()
            .zip(&self.sigmas)
            .zip(&self.log_weights)
            .map(|((m, s), w)| w + gauss_log_norm(m, 1.0 + s * s))
            .collect()
    }

    fn log_evidence(&self) -> f64 {
        log_sum_exp(&self.mode_log_masses())
    }

    fn posterior_weights(&self) -> Vec<f64> {
        let terms = self.mode_log_masses();
        let z = log_sum_exp(&terms);
        terms.iter().map(|t| (t - z).exp()).collect()
    }

    /// ln L `[n, g]` (same mixture for every column).
    fn log_like(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F64)?;
        let mut terms = Vec::new();
        for ((m, s), w) in self.means.iter().zip(&self.sigmas).zip(&self.log_weights) {
            let mu = Tensor::from_vec(m.clone(), self.dim, x.device())?;
            let r2 = x.broadcast_sub(&mu)?.sqr()?.sum(2)?;
            let c = w - 0.5 * self.dim as f64 * (LN_2PI + 2.0 * s.ln());
            terms.push((r2 * (-0.5 / (s * s)))?.affine(1.0, c)?);
        }
        let stacked = Tensor::stack(&terms, 0)?;
        let max = stacked.max_keepdim(0)?;
        let lse = (stacked.broadcast_sub(&max)?.exp()?.sum_keepdim(0)?.log()? + max)?.squeeze(0)?;
        Ok(lse.to_dtype(DType::F32)?)
    }

    fn mode_of(&self, x: &[f32]) -> usize {
        let d =
            |m: &Vec<f64>| -> f64 { m.iter().zip(x).map(|(a, b)| (a - *b as f64).powi(2)).sum() };
        (0..self.means.len())
            .min_by(|&a, &b| d(&self.means[a]).total_cmp(&d(&self.means[b])))
            .unwrap()
    }
}

fn gauss_log_norm(m: &[f64], var: f64) -> f64 {
    let r2: f64 = m.iter().map(|v| v * v).sum();
    -0.5 * m.len() as f64 * (LN_2PI + var.ln()) - 0.5 * r2 / var
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

fn standard_normal_log_prior(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(2)? as f64;
    Ok(x.sqr()?.sum(2)?.affine(-0.5, -0.5 * d * LN_2PI)?)
}

impl TemperedTarget for Mixture {
    fn log_prior_and_like(&self, x: &Tensor, _galaxies: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((standard_normal_log_prior(x)?, self.log_like(x)?))
    }
}

/// ln p `[m]` and ln L `[m, g]` of reference draws `[m, dim]` for `g` replicate galaxies.
fn reference_densities(
    target: &dyn TemperedTarget,
    reference: &Tensor,
    g: usize,
) -> (Tensor, Tensor) {
    let (m, dim) = reference.dims2().unwrap();
    let all = Tensor::arange(0u32, g as u32, &Device::Cpu).unwrap();
    let rep = reference
        .unsqueeze(1)
        .unwrap()
        .broadcast_as((m, g, dim))
        .unwrap()
        .contiguous()
        .unwrap();
    let (lp, ll) = target.log_prior_and_like(&rep, &all).unwrap();
    (lp.narrow(1, 0, 1).unwrap().squeeze(1).unwrap(), ll)
}

/// Run SMC with `moves` on `g` replicate galaxies of `target` from `m` prior draws.
#[allow(clippy::too_many_arguments)]
fn run_smc(
    target: &dyn TemperedTarget,
    dim: usize,
    g: usize,
    m: usize,
    config: SmcConfig,
    seed: u64,
    prior_draws: &dyn Fn(&mut HostRng, usize) -> Tensor,
    moves: EnsembleSampler,
) -> (
    popcosmos_samplers::Chain,
    Vec<popcosmos_samplers::SmcDiagnostics>,
) {
    let mut rng = HostRng::seed_from_u64(seed);
    let reference = prior_draws(&mut rng, m);
    let (lp, ll) = reference_densities(target, &reference, g);
    let smc = Smc::new(config, moves, dim).unwrap();
    smc.run(
        &Reference {
            position: &reference,
            log_prior: &lp,
            log_like: &ll,
            log_weight: None,
        },
        target,
        &mut rng,
    )
    .unwrap()
}

/// The ensemble (the SMC's moves) on p·L from `init` `[walkers, galaxies, dim]`: `steps`
/// steps, the second half kept, every 10th.
fn run_ensemble(
    target: &dyn TemperedTarget,
    init: Tensor,
    steps: usize,
    rng: &mut HostRng,
) -> popcosmos_samplers::Chain {
    let g = init.dim(1).unwrap();
    let all = Tensor::arange(0u32, g as u32, &Device::Cpu).unwrap();
    let density = |x: &Tensor| -> Result<Tensor> {
        let (lp, ll) = target.log_prior_and_like(x, &all)?;
        Ok((lp + ll)?)
    };
    let config = RunConfig {
        n_steps: steps,
        burn_in: steps / 2,
        thin: 10,
    };
    sample(&default_moves(), init, &density, rng, &config, None).unwrap()
}

fn normal_draws(dim: usize) -> impl Fn(&mut HostRng, usize) -> Tensor {
    move |rng, m| rng.normal(&(m, dim).into(), &Device::Cpu).unwrap()
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Share of each mode among one galaxy's final draws.
fn mode_shares(chain: &popcosmos_samplers::Chain, target: &Mixture, galaxy: usize) -> Vec<f64> {
    let (k, w, g, d) = (chain.kept, chain.walkers, chain.galaxies, chain.dim);
    let mut counts = vec![0.0; target.means.len()];
    for t in 0..k {
        for j in 0..w {
            let s = ((t * w + j) * g + galaxy) * d;
            counts[target.mode_of(&chain.samples[s..s + d])] += 1.0;
        }
    }
    let total: f64 = counts.iter().sum();
    counts.iter().map(|c| c / total).collect()
}

/// Three modes with posterior weights 0.2 / 0.3 / 0.5 and the given widths, at x₁ = 0.6,
/// x₁ = −0.6 and x₂ = 0.6 (≥ 0.85 apart).
fn three_modes(dim: usize, widths: [f64; 3]) -> Mixture {
    Mixture::with_posterior_weights(
        dim,
        vec![axis(dim, 0, 0.6), axis(dim, 0, -0.6), axis(dim, 1, 0.6)],
        widths.to_vec(),
        &[0.2, 0.3, 0.5],
    )
}

fn axis(dim: usize, i: usize, v: f64) -> Vec<f64> {
    let mut m = vec![0.0; dim];
    m[i] = v;
    m
}

/// Three narrow modes (σ = 0.01, ≥ 85σ apart) with posterior weights 0.2/0.3/0.5, and two
/// modes (σ = 0.01, 100σ apart, 0.3/0.7): replicate-averaged
/// mode weights within 3 Monte Carlo σ (the replicates' spread), ln Z within 0.1 nats; the
/// ensemble beside it. Modes of different widths are under-weighted when narrow (measured,
/// docs/validation.md: 0.277 for 0.300 at a 10 % width ratio): at intermediate β the narrow
/// mode's share shrinks by (σ_narrow/σ_wide)^16 and few particles are left in it.
#[test]
fn narrow_mixtures_get_their_mode_weights_and_evidence() {
    let dim = 16;
    let g = 6;
    let cases = [
        three_modes(dim, [0.01, 0.01, 0.01]),
        Mixture::with_posterior_weights(
            dim,
            vec![axis(dim, 2, 0.5), axis(dim, 3, -0.5)],
            vec![0.01, 0.01],
            &[0.3, 0.7],
        ),
    ];
    let config = SmcConfig {
        particles: 1024,
        ..SmcConfig::default()
    };
    for (c, target) in cases.iter().enumerate() {
        let (chain, diag) = run_smc(
            target,
            dim,
            g,
            20_000,
            config,
            11 + c as u64,
            &normal_draws(dim),
            default_moves(),
        );
        let truth = target.posterior_weights();
        let shares: Vec<Vec<f64>> = (0..g).map(|gal| mode_shares(&chain, target, gal)).collect();
        for (k, want) in truth.iter().enumerate() {
            let per: Vec<f64> = shares.iter().map(|s| s[k]).collect();
            let (mean, sd) = mean_sd(&per);
            // The replicate spread, floored at the binomial σ of one run's particles.
            let se = (sd / (g as f64).sqrt()).max((want * (1.0 - want) / (g * 1024) as f64).sqrt());
            println!(
                "case {c} mode {k}: SMC {mean:.4} ± {se:.4} (truth {want:.4}), replicates {per:.3?}"
            );
            assert!(
                (mean - want).abs() < 3.0 * se,
                "case {c} mode {k}: {mean} vs {want} (σ {se})"
            );
        }
        let want = target.log_evidence();
        for d in &diag {
            assert_eq!(d.status, SmcStatus::Converged);
            assert!(
                d.unique_fraction > 0.5,
                "unique fraction {}",
                d.unique_fraction
            );
        }
        // The replicate mean of ln Ẑ (one run's error is ≈ 0.2 nats with 1024 particles).
        let (mean_ln_z, _) = mean_sd(&diag.iter().map(|d| d.log_evidence).collect::<Vec<_>>());
        assert!(
            (mean_ln_z - want).abs() < 0.1,
            "case {c}: mean ln Z {mean_ln_z} vs {want}"
        );
        println!(
            "case {c}: ln Z truth {want:.3}, SMC {:?}, stages {:?}, sweeps {:?}",
            diag.iter()
                .map(|d| format!("{:.3}±{:.3}", d.log_evidence, d.log_evidence_err))
                .collect::<Vec<_>>(),
            diag.iter().map(|d| d.stages).collect::<Vec<_>>(),
            diag.iter().map(|d| d.sweeps).collect::<Vec<_>>()
        );

        // The ensemble on the same posterior, 64 walkers from prior draws, 2000 steps.
        let mut rng = HostRng::seed_from_u64(100 + c as u64);
        let init = rng.normal(&(64, g, dim).into(), &Device::Cpu).unwrap();
        let ens = run_ensemble(target, init, 2000, &mut rng);
        let ens_shares: Vec<Vec<f64>> = (0..g).map(|gal| mode_shares(&ens, target, gal)).collect();
        let err_smc: f64 = (0..truth.len())
            .map(|k| shares.iter().map(|s| (s[k] - truth[k]).abs()).sum::<f64>() / g as f64)
            .sum();
        let err_ens: f64 = (0..truth.len())
            .map(|k| {
                ens_shares
                    .iter()
                    .map(|s| (s[k] - truth[k]).abs())
                    .sum::<f64>()
                    / g as f64
            })
            .sum();
        println!(
            "case {c}: ensemble mode shares {ens_shares:.3?}; mean |error| SMC {err_smc:.3}, ensemble {err_ens:.3}"
        );
    }
}

/// Known failure of the manifest's moves, kept to measure it (docs/validation.md): the
/// stretch, DE and global steps are too long for the neck, so the moves do not equilibrate v
/// within a stage and the SMC's mean v is biased upwards by about 0.6 σ_v (the long
/// ensemble run gets it right).
/// Neal's funnel in 10-D, v ~ 𝒩(0, 1), x_i | v ~ 𝒩(0, eᵛ), as prior 𝒩(0, diag(1, 10²…))
/// times L = funnel / prior: E v = 0, sd v = 1, E x_i = 0 within Monte Carlo error
/// (replicates) and ln Z = 0.
#[test]
#[ignore = "known failure of tempered SMC on the funnel; see docs/validation.md"]
fn funnel_moments_and_evidence() {
    check_funnel(default_moves(), true);
}

/// The same funnel with the local-covariance move in the mix ([`LocalMove`]): its steps
/// shrink in the neck, so the particles follow v down as β grows.
#[test]
fn funnel_moments_and_evidence_with_the_local_move() {
    check_funnel(local_moves(), false);
}

/// The manifest's moves at 0.1 each, and [`LocalMove`] at 0.6.
fn local_moves() -> EnsembleSampler {
    EnsembleSampler::new(vec![
        (Box::new(StretchMove { a: 2.0 }), 0.1),
        (Box::new(DifferentialEvolutionMove::default()), 0.1),
        (Box::new(GlobalMove::default()), 0.1),
        (Box::new(ClusteredGlobalMove::default()), 0.1),
        (Box::new(LocalMove::default()), 0.6),
    ])
    .unwrap()
}

/// SMC with `moves` on the 10-D funnel; with `ensemble`, the long ensemble run beside it.
fn check_funnel(moves: EnsembleSampler, ensemble: bool) {
    let dim = 10;
    let g = 8;
    struct Funnel;
    const S: f64 = 10.0;
    const SV: f64 = 1.0;
    impl TemperedTarget for Funnel {
        fn log_prior_and_like(&self, x: &Tensor, _g: &Tensor) -> Result<(Tensor, Tensor)> {
            let x = x.to_dtype(DType::F64)?;
            let d = x.dim(2)?;
            let v = x.narrow(2, 0, 1)?.squeeze(2)?;
            let rest = x.narrow(2, 1, d - 1)?;
            let k = (d - 1) as f64;
            let lp_v = v
                .sqr()?
                .affine(-0.5 / (SV * SV), -0.5 * (LN_2PI + (SV * SV).ln()))?;
            let lp_x = rest
                .sqr()?
                .sum(2)?
                .affine(-0.5 / (S * S), -0.5 * k * (LN_2PI + 2.0 * S.ln()))?;
            // ln 𝒩(x; 0, eᵛ) summed: −½ k (ln 2π + v) − ½ e^{−v} Σ x².
            let funnel_x = ((rest.sqr()?.sum(2)? * v.neg()?.exp()?)?
                .affine(-0.5, -0.5 * k * LN_2PI)?
                - v.affine(0.5 * k, 0.0)?)?;
            let ll = (funnel_x - &lp_x)?;
            Ok((
                (lp_v + lp_x)?.to_dtype(DType::F32)?,
                ll.to_dtype(DType::F32)?,
            ))
        }
    }
    let draws = move |rng: &mut HostRng, m: usize| -> Tensor {
        let z = rng.normal(&(m, dim).into(), &Device::Cpu).unwrap();
        let scale: Vec<f32> = (0..dim)
            .map(|i| if i == 0 { SV as f32 } else { S as f32 })
            .collect();
        z.broadcast_mul(&Tensor::from_vec(scale, dim, &Device::Cpu).unwrap())
            .unwrap()
    };
    let config = SmcConfig {
        particles: 1024,
        max_sweeps: 100,
        max_correlation: 0.1,
        ..SmcConfig::default()
    };
    let (chain, diag) = run_smc(&Funnel, dim, g, 20_000, config, 5, &draws, moves);
    if ensemble {
        let mut rng = HostRng::seed_from_u64(9);
        let init = draws(&mut rng, 64 * g).reshape((64, g, dim)).unwrap();
        let ens = run_ensemble(&Funnel, init, 4000, &mut rng);
        let v: Vec<f64> = (0..ens.kept * 64)
            .map(|s| ens.samples[(s * g) * dim] as f64)
            .collect();
        println!("ensemble funnel mean v {:?}", mean_sd(&v));
    }
    let (k, w, gg, d) = (chain.kept, chain.walkers, chain.galaxies, chain.dim);
    let mut means_v = Vec::new();
    let mut sds_v = Vec::new();
    let mut means_x = Vec::new();
    for gal in 0..gg {
        let mut v = Vec::new();
        let mut x1 = Vec::new();
        for t in 0..k {
            for j in 0..w {
                let s = ((t * w + j) * gg + gal) * d;
                v.push(chain.samples[s] as f64);
                x1.push(chain.samples[s + 1] as f64);
            }
        }
        let (m, sd) = mean_sd(&v);
        means_v.push(m);
        sds_v.push(sd);
        means_x.push(mean_sd(&x1).0);
    }
    let check = |name: &str, per: &[f64], want: f64| {
        let (m, sd) = mean_sd(per);
        let se = sd / (per.len() as f64).sqrt();
        println!("funnel {name}: {m:.3} ± {se:.3} (truth {want}), replicates {per:.3?}");
        assert!(
            (m - want).abs() < 3.0 * se.max(0.02),
            "{name}: {m} vs {want} (σ {se})"
        );
    };
    check("mean v", &means_v, 0.0);
    check("sd v", &sds_v, SV);
    check("mean x1", &means_x, 0.0);
    // ln Z = 0: the replicates' mean within 0.1 nats, each within 0.5 (the reported σ of
    // ≈ 0.085 is about half the replicates' spread, as on the mixtures).
    let ln_z: Vec<f64> = diag.iter().map(|d| d.log_evidence).collect();
    let sigma: Vec<f64> = diag.iter().map(|d| d.log_evidence_err).collect();
    println!("funnel ln Z {ln_z:.3?}, reported σ {sigma:.3?}");
    let (mean_ln_z, _) = mean_sd(&ln_z);
    assert!(mean_ln_z.abs() < 0.1, "mean ln Z {mean_ln_z}");
    assert!(ln_z.iter().all(|z| z.abs() < 0.5), "ln Z {ln_z:?}");
}

/// Prior 𝒩(0, I) × likelihood 𝒩(0, 0.1² I) (up to a constant), except galaxy 1, whose
/// likelihood is NaN everywhere.
struct HalfBroken;

impl TemperedTarget for HalfBroken {
    fn log_prior_and_like(&self, x: &Tensor, galaxies: &Tensor) -> Result<(Tensor, Tensor)> {
        let lp = standard_normal_log_prior(x)?;
        let ll = x.sqr()?.sum(2)?.affine(-0.5 / 0.01, 0.0)?;
        let broken = galaxies.eq(1u32)?.unsqueeze(0)?.broadcast_as(ll.shape())?;
        let nan = ll.ones_like()?.affine(0.0, f64::NAN)?;
        Ok((lp, broken.where_cond(&nan, &ll)?))
    }
}

/// [`HalfBroken`] in 4-D on 3 galaxies: galaxy 1 is reported and left alone, the others
/// converge, each island's draws have the posterior variance 1/101 and ln Z =
/// ln ∫ 𝒩(x; 0, I) e^{−50|x|²} dx = −(d/2) ln 101 within 3σ; with islands, R̂ across them
/// is near 1.
fn check_half_broken(
    particles: usize,
    islands: usize,
    library: usize,
    seed: u64,
    importance_draws: usize,
    strata: usize,
) {
    let dim = 4;
    let (chain, diag) = run_smc(
        &HalfBroken,
        dim,
        3,
        library,
        SmcConfig {
            particles,
            islands,
            importance_draws,
            strata,
            ..SmcConfig::default()
        },
        seed,
        &normal_draws(dim),
        default_moves(),
    );
    println!("{diag:#?}");
    if importance_draws > 0 {
        // The broken galaxy's proposal draws all have ln L = −∞: ESS 0, nothing replaced.
        assert_eq!(diag[1].importance_ess, 0.0);
        for gal in [0, 2] {
            assert!(diag[gal].importance_ess > 0.1 * importance_draws as f64);
        }
    } else {
        assert!(diag.iter().all(|d| d.importance_ess.is_nan()));
    }
    assert_eq!((chain.walkers, chain.galaxies), (particles, 3));
    assert_eq!(diag[1].status, SmcStatus::NoFiniteLikelihood);
    let (k, w, g, d) = (chain.kept, chain.walkers, chain.galaxies, chain.dim);
    for gal in [0, 2] {
        let dg = &diag[gal];
        assert_eq!(dg.status, SmcStatus::Converged);
        for island in 0..islands {
            let per = w / islands;
            let v: Vec<f64> = (0..k)
                .flat_map(|t| (island * per..(island + 1) * per).map(move |p| t * w + p))
                .map(|s| chain.samples[(s * g + gal) * d] as f64)
                .collect();
            let (_, sd) = mean_sd(&v);
            assert!(
                (sd * sd - 1.0 / 101.0).abs() < 0.004,
                "galaxy {gal} island {island}: var {}",
                sd * sd
            );
        }
        if islands > 1 {
            assert!(dg.island_rhat < 1.05, "R̂ {}", dg.island_rhat);
        } else {
            assert!(dg.island_rhat.is_nan());
        }
        let want = -0.5 * dim as f64 * 101f64.ln();
        assert!(
            (dg.log_evidence - want).abs() < 3.0 * dg.log_evidence_err,
            "ln Z {} ± {} vs {want}",
            dg.log_evidence,
            dg.log_evidence_err
        );
    }
}

/// A galaxy whose likelihood is −∞ (or NaN) everywhere is reported and left alone; its
/// neighbours in the batch are unaffected.
#[test]
fn a_galaxy_without_finite_likelihood_is_flagged_and_the_others_run() {
    check_half_broken(64, 1, 4000, 3, 0, 1);
}

/// Islands: two independent populations per galaxy, pooled. On a Gaussian posterior they
/// agree (R̂ near 1), each has the posterior's variance and ln Z is right.
#[test]
fn islands_agree_on_a_gaussian_and_pool_their_draws() {
    check_half_broken(256, 2, 8000, 5, 0, 1);
}

/// Strata: the Gaussian posterior is cut by the 3 inner edges of 4 strata along x₁ (each
/// stratum holds a quarter of the first stage's mass), run as 4 restricted populations and
/// pooled by their evidences. The pooled draws have the posterior's variance and ln Z is
/// right within its error; the broken galaxy is still reported alone.
#[test]
fn strata_pool_a_gaussian_cut_by_their_edges() {
    check_half_broken(256, 1, 8000, 5, 0, 4);
}

/// The final importance stage on the same Gaussian: each block's resampled draws keep the
/// posterior variance, ln Z is right within its reported error, and the galaxy without a
/// finite likelihood keeps its status and draws.
#[test]
fn importance_draws_keep_a_gaussian_posterior_and_leave_a_broken_galaxy_alone() {
    check_half_broken(256, 2, 8000, 5, 4096, 1);
}

/// The final importance stage on the mixtures SMC alone gets wrong (docs/validation.md):
/// two modes 10 % apart in width, 0.3 / 0.7 (SMC alone: 0.277 ± 0.007 for the narrow one),
/// and three modes 0.2 / 0.3 / 0.5 run as 2 islands of 512 (SMC alone: ln Z 0.19 nats low).
/// With 8192 importance draws the replicate-mean mode weights are within 3 Monte Carlo σ and
/// the replicate-mean ln Z within 0.1 nats.
#[test]
fn importance_stage_gets_modes_of_different_widths_and_the_evidence() {
    let dim = 16;
    let g = 6;
    let cases = [
        (
            Mixture::with_posterior_weights(
                dim,
                vec![axis(dim, 2, 0.5), axis(dim, 3, -0.5)],
                vec![0.01, 0.011],
                &[0.3, 0.7],
            ),
            1,
        ),
        (
            Mixture::with_posterior_weights(
                dim,
                vec![axis(dim, 0, 0.6), axis(dim, 0, -0.6), axis(dim, 1, 0.6)],
                vec![0.01, 0.01, 0.01],
                &[0.2, 0.3, 0.5],
            ),
            2,
        ),
    ];
    for (c, (target, islands)) in cases.iter().enumerate() {
        let config = SmcConfig {
            particles: 1024,
            islands: *islands,
            importance_draws: 8192,
            ..SmcConfig::default()
        };
        let (chain, diag) = run_smc(
            target,
            dim,
            g,
            20_000,
            config,
            31 + c as u64,
            &normal_draws(dim),
            default_moves(),
        );
        let ess: Vec<f64> = diag.iter().map(|d| d.importance_ess).collect();
        println!("case {c}: importance ESS {ess:.0?}");
        for e in &ess {
            assert!(*e >= config.importance_min_ess, "ESS {e}");
        }
        check_importance_weights_and_evidence(c, target, &chain, &diag);
    }
}

#[test]
fn bad_settings_are_refused_by_name() {
    let bad = |c: SmcConfig, key: &str| {
        let e = Smc::new(c, default_moves(), 16)
            .err()
            .expect("must be refused")
            .to_string();
        assert!(e.contains(key), "{e}");
    };
    let d = SmcConfig::default();
    for (config, key) in [
        (SmcConfig { particles: 31, ..d }, "sampler.particles"),
        (
            SmcConfig {
                particles: 48,
                islands: 2,
                ..d
            },
            "sampler.particles",
        ),
        (
            SmcConfig {
                particles: 64,
                islands: 3,
                ..d
            },
            "sampler.islands",
        ),
        (SmcConfig { islands: 0, ..d }, "sampler.islands"),
        (
            SmcConfig {
                ess_target: 1.0,
                ..d
            },
            "sampler.ess_target",
        ),
        (
            SmcConfig {
                ess_target: f64::NAN,
                ..d
            },
            "sampler.ess_target",
        ),
        (
            SmcConfig {
                ess_target: 0.0,
                ..d
            },
            "sampler.ess_target",
        ),
        (
            SmcConfig {
                max_correlation: 1.5,
                ..d
            },
            "sampler.max_correlation",
        ),
        (
            SmcConfig {
                final_sweeps: 0,
                ..d
            },
            "sampler.final_sweeps",
        ),
        (
            SmcConfig {
                importance_draws: 100,
                importance_scale: 0.0,
                ..d
            },
            "sampler.importance_scale",
        ),
        (
            SmcConfig {
                importance_draws: 100,
                importance_components: 0,
                ..d
            },
            "sampler.importance_components",
        ),
        (
            SmcConfig {
                importance_draws: 100,
                importance_min_ess: f64::NAN,
                ..d
            },
            "sampler.importance_min_ess",
        ),
        (SmcConfig { strata: 0, ..d }, "sampler.strata"),
        (
            SmcConfig {
                strata: 4,
                islands: 2,
                ..d
            },
            "sampler.strata",
        ),
        (
            SmcConfig {
                strata: 4,
                grid_gibbs: 1,
                ..d
            },
            "sampler.strata",
        ),
        (
            SmcConfig {
                strata: 4,
                strata_axis: 16,
                ..d
            },
            "sampler.strata_axis",
        ),
        (
            SmcConfig {
                particles: 96,
                strata: 4,
                ..d
            },
            "sampler.particles",
        ),
        (SmcConfig { rounds: 0, ..d }, "sampler.rounds"),
        (SmcConfig { rounds: 2, ..d }, "sampler.rounds"),
        (
            SmcConfig {
                rounds: 3,
                islands: 4,
                ..d
            },
            "sampler.rounds",
        ),
        (
            SmcConfig {
                rounds: 8,
                islands: 4,
                ..d
            },
            "sampler.rounds",
        ),
        (
            SmcConfig {
                rounds: 2,
                strata: 4,
                ..d
            },
            "sampler.rounds",
        ),
        (
            SmcConfig {
                round_tolerance: 0.0,
                ..d
            },
            "sampler.round_tolerance",
        ),
    ] {
        bad(config, key);
    }
}

/// Even galaxies: two equal modes at x₀ = ±0.6 (σ = 0.05, 4-D), whose median x₀ sits
/// between them and moves with their weights; odd galaxies: one mode (σ = 0.02) at the
/// origin. Prior 𝒩(0, I); the monitor is x₀.
struct PeakedOrSplit;

impl PeakedOrSplit {
    fn log_like(x: &Tensor, centre: f64, sigma: f64) -> Result<Tensor> {
        let dim = x.dim(2)?;
        let mut mu = vec![0f32; dim];
        mu[0] = centre as f32;
        let mu = Tensor::from_vec(mu, dim, x.device())?;
        Ok(x.broadcast_sub(&mu)?
            .sqr()?
            .sum(2)?
            .affine(-0.5 / (sigma * sigma), 0.0)?)
    }
}

impl TemperedTarget for PeakedOrSplit {
    fn log_prior_and_like(&self, x: &Tensor, galaxies: &Tensor) -> Result<(Tensor, Tensor)> {
        let split = {
            let (a, b) = (
                Self::log_like(x, 0.6, 0.05)?,
                Self::log_like(x, -0.6, 0.05)?,
            );
            let top = a.maximum(&b)?;
            ((a - &top)?.exp()? + (b - &top)?.exp()?)?.log()? + top
        }?;
        let peaked = Self::log_like(x, 0.0, 0.02)?;
        let even = galaxies
            .to_dtype(DType::F32)?
            .affine(0.5, 0.0)?
            .floor()?
            .affine(2.0, 0.0)?
            .eq(&galaxies.to_dtype(DType::F32)?)?
            .unsqueeze(0)?
            .broadcast_as(split.shape())?;
        Ok((
            standard_normal_log_prior(x)?,
            even.where_cond(&split, &peaked)?,
        ))
    }

    fn monitor(&self, x: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.narrow(x.rank() - 1, 0, 1)?.squeeze(x.rank() - 1)?))
    }
}

/// Rounds of islands (`rounds`): galaxies whose islands disagree on the median get more,
/// independent islands and the rest do not. On [`PeakedOrSplit`] (48 galaxies, 4 islands
/// of 64, tolerance 0.005 in x₀):
/// - every split galaxy gets all 4 rounds and every peaked one stays at 1;
/// - the peaked galaxies' draws keep the posterior's variance of x₀ (1/2501);
/// - over the 24 split replicates, the share of the x₀ > 0 mode is 0.5 within 3 Monte Carlo
///   σ, and its spread across replicates falls to at most 0.8 of one round's (1/√4 = 0.5 is
///   the ideal; seeds 11–14 gave 0.41–0.62), the Monte Carlo error that 4× the particles
///   buys where it is needed;
/// - a target without a monitor is refused.
#[test]
fn rounds_go_where_the_median_is_uncertain() {
    let (dim, g, particles) = (4, 48, 256);
    let run = |rounds: usize| {
        run_smc(
            &PeakedOrSplit,
            dim,
            g,
            32_000,
            SmcConfig {
                particles,
                islands: 4,
                rounds,
                round_tolerance: 0.005,
                ..SmcConfig::default()
            },
            11,
            &normal_draws(dim),
            default_moves(),
        )
    };
    let share_positive = |chain: &popcosmos_samplers::Chain, gal: usize| -> f64 {
        let (k, w, g, d) = (chain.kept, chain.walkers, chain.galaxies, chain.dim);
        let hits = (0..k * w)
            .filter(|s| chain.samples[(s * g + gal) * d] > 0.0)
            .count();
        hits as f64 / (k * w) as f64
    };
    let (one, one_diag) = run(1);
    let (four, four_diag) = run(4);
    assert_eq!((four.walkers, four.galaxies), (particles, g));
    let mut shares = (Vec::new(), Vec::new());
    for gal in 0..g {
        if gal % 2 == 0 {
            assert_eq!(four_diag[gal].rounds, 4, "split galaxy {gal}");
            shares.0.push(share_positive(&one, gal));
            shares.1.push(share_positive(&four, gal));
        } else {
            let dg = &four_diag[gal];
            assert_eq!(dg.rounds, 1, "peaked galaxy {gal}: se {}", dg.median_se);
            assert!(dg.median_se < 0.005);
            let (k, w, d) = (four.kept, four.walkers, four.dim);
            let x: Vec<f64> = (0..k * w)
                .map(|s| four.samples[(s * g + gal) * d] as f64)
                .collect();
            let (_, sd) = mean_sd(&x);
            assert!((sd * sd * 2501.0 - 1.0).abs() < 0.3, "var {}", sd * sd);
        }
        assert_eq!(one_diag[gal].rounds, 1);
        assert!(one_diag[gal].median_se.is_nan());
    }
    let (m1, sd1) = mean_sd(&shares.0);
    let (m4, sd4) = mean_sd(&shares.1);
    println!("share of x0 > 0: one round {m1:.3} ± {sd1:.3}, four rounds {m4:.3} ± {sd4:.3}");
    let n = shares.1.len() as f64;
    assert!((m4 - 0.5).abs() < 3.0 * sd4 / n.sqrt(), "{m4} ± {sd4}");
    assert!(sd4 < 0.8 * sd1, "{sd4} vs {sd1}");

    let e = Smc::new(
        SmcConfig {
            particles,
            islands: 4,
            rounds: 2,
            ..SmcConfig::default()
        },
        default_moves(),
        dim,
    )
    .unwrap()
    .run(
        &Reference {
            position: &Tensor::zeros((64, dim), DType::F32, &Device::Cpu).unwrap(),
            log_prior: &Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap(),
            log_like: &Tensor::zeros((64, 2), DType::F32, &Device::Cpu).unwrap(),
            log_weight: None,
        },
        &HalfBroken,
        &mut HostRng::seed_from_u64(1),
    )
    .err()
    .expect("no monitor")
    .to_string();
    assert!(e.contains("sampler.rounds"), "{e}");
}

/// A reference drawn half from the prior 𝒩(0, I) and half from a proposal q = 𝒩(μ, 0.04² I)
/// near a narrow 16-D posterior (σ = 0.02), rows interleaved, weighted back by p/m with
/// m = ½ p + ½ q: ln Z is the prior's, within 0.1 nats, the draws have the posterior's mean
/// and variance, and the tempering starts far closer to β = 1 than from prior draws alone.
#[test]
fn a_weighted_reference_from_a_proposal_keeps_the_prior_posterior() {
    let dim = 16;
    let (sigma, q_sd) = (0.02, 0.04);
    let mut mu = vec![0.0; dim];
    mu[0] = 1.5;
    mu[1] = -0.5;
    let target = Mixture {
        dim,
        means: vec![mu.clone()],
        sigmas: vec![sigma],
        log_weights: vec![0.0],
    };
    let (g, m) = (4, 8000);
    let mut rng = HostRng::seed_from_u64(21);
    let z = rng
        .normal(&(m, dim).into(), &Device::Cpu)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let rows: Vec<Vec<f64>> = z
        .iter()
        .enumerate()
        .map(|(r, v)| {
            v.iter()
                .zip(&mu)
                .map(|(&x, &c)| {
                    if r % 2 == 1 {
                        c + q_sd * x as f64
                    } else {
                        x as f64
                    }
                })
                .collect()
        })
        .collect();
    let ln_p = |x: &[f64]| gauss_log_norm(x, 1.0);
    let ln_q = |x: &[f64]| {
        let d: Vec<f64> = x.iter().zip(&mu).map(|(a, b)| a - b).collect();
        gauss_log_norm(&d, q_sd * q_sd)
    };
    let log_weight: Vec<f32> = rows
        .iter()
        .map(|x| (ln_p(x) - (0.5f64.ln() + log_sum_exp(&[ln_p(x), ln_q(x)]))) as f32)
        .collect();
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    let reference = Tensor::from_vec(flat, (m, dim), &Device::Cpu).unwrap();
    let log_weight = Tensor::from_vec(log_weight, m, &Device::Cpu).unwrap();
    let (lp, ll) = reference_densities(&target, &reference, g);
    let config = SmcConfig {
        particles: 256,
        islands: 2,
        ..SmcConfig::default()
    };
    let smc = Smc::new(config.clone(), default_moves(), dim).unwrap();
    let run = |weighted: bool, rng: &mut HostRng| {
        smc.run(
            &Reference {
                position: &reference,
                log_prior: &lp,
                log_like: &ll,
                log_weight: weighted.then_some(&log_weight),
            },
            &target,
            rng,
        )
        .unwrap()
    };
    let (chain, diag) = run(true, &mut rng);
    let want = target.log_evidence();
    let post_var = sigma * sigma / (1.0 + sigma * sigma);
    let (k, w, d) = (chain.kept, chain.walkers, chain.dim);
    for (gal, dg) in diag.iter().enumerate() {
        println!(
            "galaxy {gal}: ln Z {} ± {} (truth {want}), stages {}",
            dg.log_evidence, dg.log_evidence_err, dg.stages
        );
        assert_eq!(dg.status, SmcStatus::Converged);
        assert!(
            (dg.log_evidence - want).abs() < 3.0 * dg.log_evidence_err,
            "ln Z {} ± {} vs {want}",
            dg.log_evidence,
            dg.log_evidence_err
        );
        for (axis, &c) in mu.iter().enumerate().take(2) {
            let v: Vec<f64> = (0..k * w)
                .map(|s| chain.samples[(s * g + gal) * d + axis] as f64)
                .collect();
            let (mean, sd) = mean_sd(&v);
            let post_mean = c / (1.0 + sigma * sigma);
            assert!(
                (mean - post_mean).abs() < 0.005,
                "axis {axis}: mean {mean} vs {post_mean}"
            );
            assert!(
                (sd * sd / post_var - 1.0).abs() < 0.25,
                "axis {axis}: var {} vs {post_var}",
                sd * sd
            );
        }
    }
    let mean_ln_z = diag.iter().map(|d| d.log_evidence).sum::<f64>() / g as f64;
    assert!(
        (mean_ln_z - want).abs() < 0.1,
        "mean ln Z {mean_ln_z} vs {want}"
    );
    // The same rows read as prior draws (no weights) are a different, wrong reference; with
    // the weights, stage 1 alone reaches a far higher β than prior draws of the same size.
    let prior_only = run_smc(
        &target,
        dim,
        g,
        m,
        config.clone(),
        22,
        &normal_draws(dim),
        default_moves(),
    )
    .1;
    for (a, b) in diag.iter().zip(&prior_only) {
        println!(
            "prior draws only: ln Z {} ± {}, stages {}",
            b.log_evidence, b.log_evidence_err, b.stages
        );
        assert!(
            a.stages < b.stages,
            "stages {} with the proposal vs {} without",
            a.stages,
            b.stages
        );
    }
}

/// Strata along x₁ with the final importance stage, on modes of different widths: the case
/// the tempered path gets wrong (docs/validation.md, "Strata in z"). Three modes 0.2 / 0.3 /
/// 0.5 with σ = 0.01 / 0.012 / 0.015 (at intermediate β the narrowest holds 1.5¹⁶ = 657×
/// less of π_β than the widest, and plain SMC loses it in every replicate), and two modes
/// 0.3 / 0.7 with σ = 0.01 / 0.015; each mode sits at its own place along x₁. 6 strata,
/// 1024 particles, 8192 importance draws: replicate-mean mode weights within 3 Monte Carlo σ
/// and ln Z within 0.1 nats.
#[test]
fn strata_get_modes_of_different_widths() {
    let dim = 16;
    let g = 6;
    let cases = [
        three_modes(dim, [0.01, 0.012, 0.015]),
        Mixture::with_posterior_weights(
            dim,
            vec![axis(dim, 0, 0.5), axis(dim, 0, -0.5)],
            vec![0.01, 0.015],
            &[0.3, 0.7],
        ),
    ];
    let config = SmcConfig {
        particles: 1024,
        strata: 6,
        strata_axis: 0,
        importance_draws: 8192,
        ..SmcConfig::default()
    };
    for (c, target) in cases.iter().enumerate() {
        let (chain, diag) = run_smc(
            target,
            dim,
            g,
            20_000,
            config,
            41,
            &normal_draws(dim),
            default_moves(),
        );
        check_importance_weights_and_evidence(c, target, &chain, &diag);
        for d in &diag {
            assert_eq!(d.status, SmcStatus::Converged);
        }
    }
}

/// Replicate-mean mode weights of `target` after an importance stage within 3 Monte Carlo σ
/// (the replicates' spread, floored at the binomial σ of the mean importance ESS), and the
/// replicate-mean ln Z within 0.1 nats.
fn check_importance_weights_and_evidence(
    c: usize,
    target: &Mixture,
    chain: &popcosmos_samplers::Chain,
    diag: &[popcosmos_samplers::SmcDiagnostics],
) {
    let g = diag.len();
    let truth = target.posterior_weights();
    let shares: Vec<Vec<f64>> = (0..g).map(|gal| mode_shares(chain, target, gal)).collect();
    let mean_ess = diag.iter().map(|d| d.importance_ess).sum::<f64>() / g as f64;
    for (k, want) in truth.iter().enumerate() {
        let per: Vec<f64> = shares.iter().map(|s| s[k]).collect();
        let (mean, sd) = mean_sd(&per);
        let se = (sd / (g as f64).sqrt()).max((want * (1.0 - want) / (g as f64 * mean_ess)).sqrt());
        println!("case {c} mode {k}: {mean:.4} ± {se:.4} (truth {want:.4}), replicates {per:.3?}");
        assert!(
            (mean - want).abs() < 3.0 * se,
            "case {c} mode {k}: {mean} vs {want} (σ {se})"
        );
    }
    let want = target.log_evidence();
    let (mean_ln_z, _) = mean_sd(&diag.iter().map(|d| d.log_evidence).collect::<Vec<_>>());
    println!(
        "case {c}: ln Z truth {want:.3}, replicates {:?}",
        diag.iter()
            .map(|d| format!("{:.3}±{:.3}", d.log_evidence, d.log_evidence_err))
            .collect::<Vec<_>>()
    );
    assert!(
        (mean_ln_z - want).abs() < 0.1,
        "case {c}: mean ln Z {mean_ln_z} vs {want}"
    );
}
