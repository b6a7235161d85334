//! Final importance stage of the SMC: independent draws from a mixture of t fitted to the
//! final particles, weighted by the posterior.
//!
//! Why: the rejuvenation moves accept 5–17 % of proposals and decorrelate z only over
//! hundreds of sweeps, so the final particles are worth a few dozen independent draws and
//! sit tighter than the posterior (docs/validation.md). Their *location* is right, which is
//! what a proposal needs. Importance sampling from a widened mixture fitted to them
//! (the adaptive importance sampling of population Monte Carlo, Cappé et al. 2004)
//! turns that into independent, correctly weighted draws: each draw's weight
//! p(x) L(x) / q(x) corrects both the cloud's narrowness and the islands' disagreement on
//! mode weights, and the mean weight is an unbiased evidence estimate.
//!
//! The draws are split into blocks, one per SMC island, each self-normalised and resampled
//! into its island's walkers, so the blocks' disagreement still measures the Monte Carlo
//! error. Weights are truncated at w̄ √M (Ionides 2008) against a rare huge weight. Each
//! component's covariance is shrunk towards its own diagonal, not the whole cloud's as the
//! MH move does: a cloud-wide covariance smears a narrow mode's component over the others,
//! starves the mode of draws, and truncation then biases its weight (0.13 for 0.2 measured).
//!
//! Where it works: posteriors that a few t components describe (the 16-D mixtures of
//! docs/validation.md, ESS 400–1400 of 8192). Where it does not: real galaxies, whose
//! posteriors are thin curved ridges (ESS ~20 of 8192). A galaxy whose importance ESS falls
//! below `importance_min_ess` keeps its SMC particles and its tempering ln Z, since at low
//! ESS the importance evidence is biased low (4 nats at ESS 8, measured).

use popcosmos_api::{DType, Device, RandomSource, Result, Tensor};
use rayon::prelude::*;

use crate::mixture::ClusteredGlobalMove;
use crate::run::Chain;
use crate::smc::{SmcConfig, SmcDiagnostics, SmcStatus, TemperedTarget, systematic_resample};
use crate::{finite_max, sanitize_log_prob};

/// Degrees of freedom of the proposal's components: heavy enough tails that a posterior
/// somewhat wider than the fitted cloud keeps bounded weights.
const PROPOSAL_NU: u32 = 5;

/// Per-galaxy outcome of the importance stage.
struct Weighed {
    /// ESS of the truncated weights over all draws.
    ess: f64,
    /// ln mean of the raw weights (ln Z) and its first-order error.
    log_evidence: f64,
    log_evidence_err: f64,
    /// Resampled draw indices per block (`kept × walkers / blocks` each), or `None` to keep
    /// the SMC particles.
    index: Option<Vec<Vec<usize>>>,
}

/// Replace each galaxy's SMC draws in `chain` (`blocks` islands pooled) by importance draws;
/// books the importance ESS (and, where the draws are used, the importance evidence) in
/// `diag`. Needs `config.importance_draws` > 0.
pub(crate) fn refine(
    chain: Chain,
    diag: &mut [SmcDiagnostics],
    blocks: usize,
    target: &dyn TemperedTarget,
    config: &SmcConfig,
    device: &Device,
    rng: &mut dyn RandomSource,
) -> Result<Chain> {
    let (kept, w, g, d) = (chain.kept, chain.walkers, chain.galaxies, chain.dim);
    let proposal = ClusteredGlobalMove {
        components: config.importance_components,
        nu: PROPOSAL_NU,
        scale: config.importance_scale,
    };
    let cloud =
        Tensor::from_slice(&chain.samples, (kept * w, g, d), device)?.to_dtype(DType::F64)?;
    let mixture = proposal.fit_shrunk(&cloud, true)?;
    let per_block = config.importance_draws.div_ceil(blocks);
    let total = per_block * blocks;
    let galaxies = Tensor::arange(0u32, g as u32, device)?;
    let mut position: Vec<f32> = Vec::with_capacity(total * g * d);
    let mut log_post: Vec<f32> = Vec::with_capacity(total * g);
    let mut log_weight: Vec<f64> = Vec::with_capacity(total * g);
    let mut done = 0;
    while done < total {
        let n = w.min(total - done);
        // Evaluate q where the target is evaluated: at the f32-rounded draw.
        let y = proposal.sample(&mixture, rng, n)?.to_dtype(DType::F32)?;
        let log_q = proposal.log_density_normalised(&mixture, &y.to_dtype(DType::F64)?)?;
        let (lp, ll) = target.log_prior_and_like(&y, &galaxies)?;
        let lpost = (sanitize_log_prob(&lp)? + sanitize_log_prob(&ll)?)?;
        let lw = (lpost.to_dtype(DType::F64)? - log_q)?;
        position.extend(y.flatten_all()?.to_vec1::<f32>()?);
        log_post.extend(
            lpost
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
        log_weight.extend(lw.flatten_all()?.to_vec1::<f64>()?);
        done += n;
    }
    let per_walkers = w / blocks;
    let uniforms: Vec<Vec<f64>> = (0..g)
        .map(|_| (0..blocks).map(|_| rng.next_f64()).collect())
        .collect();
    let weighed: Vec<Weighed> = (0..g)
        .into_par_iter()
        .map(|a| {
            let lw: Vec<f64> = (0..total)
                .map(|j| {
                    let v = log_weight[j * g + a];
                    if v.is_nan() { f64::NEG_INFINITY } else { v }
                })
                .collect();
            weigh(
                &lw,
                blocks,
                kept * per_walkers,
                config.importance_min_ess,
                &uniforms[a],
            )
        })
        .collect();
    let mut samples = chain.samples;
    let mut log_prob = chain.log_prob;
    for (a, (wd, dg)) in weighed.into_iter().zip(diag.iter_mut()).enumerate() {
        dg.importance_ess = wd.ess;
        let Some(index) = wd.index else { continue };
        if dg.status == SmcStatus::NoFiniteLikelihood {
            continue;
        }
        dg.log_evidence = wd.log_evidence;
        dg.log_evidence_err = wd.log_evidence_err;
        for (b, idx) in index.iter().enumerate() {
            for (s, &j) in idx.iter().enumerate() {
                let (t, p) = (s / per_walkers, b * per_walkers + s % per_walkers);
                let src = (b * per_block + j) * g + a;
                let to = (t * w + p) * g + a;
                samples[to * d..(to + 1) * d].copy_from_slice(&position[src * d..(src + 1) * d]);
                log_prob[to] = log_post[src];
            }
        }
    }
    Ok(Chain {
        samples,
        log_prob,
        ..chain
    })
}

/// Weigh one galaxy's draws (log-weights in draw order, `blocks` equal blocks): truncate,
/// measure the ESS and ln Z, and resample `per_block_out` draws within each block when the
/// ESS reaches `min_ess`.
fn weigh(
    log_weight: &[f64],
    blocks: usize,
    per_block_out: usize,
    min_ess: f64,
    uniforms: &[f64],
) -> Weighed {
    let m = log_weight.len();
    let Some(max) = finite_max(log_weight) else {
        return Weighed {
            ess: 0.0,
            log_evidence: f64::NEG_INFINITY,
            log_evidence_err: f64::NAN,
            index: None,
        };
    };
    let raw: Vec<f64> = log_weight.iter().map(|&l| (l - max).exp()).collect();
    let sum: f64 = raw.iter().sum();
    let sum_sq: f64 = raw.iter().map(|v| v * v).sum();
    let raw_ess = sum * sum / sum_sq;
    let log_evidence = max + (sum / m as f64).ln();
    let log_evidence_err = (1.0 / raw_ess - 1.0 / m as f64).max(0.0).sqrt();
    let per_block = m / blocks;
    let truncated: Vec<f64> = (0..blocks)
        .flat_map(|b| {
            let block = &raw[b * per_block..(b + 1) * per_block];
            let cap = block.iter().sum::<f64>() / per_block as f64 * (per_block as f64).sqrt();
            block.iter().map(move |&v| v.min(cap))
        })
        .collect();
    let t_sum: f64 = truncated.iter().sum();
    let ess = t_sum * t_sum / truncated.iter().map(|v| v * v).sum::<f64>();
    let index = (ess >= min_ess).then(|| {
        (0..blocks)
            .map(|b| {
                let block = &truncated[b * per_block..(b + 1) * per_block];
                let total: f64 = block.iter().sum();
                let norm: Vec<f64> = block.iter().map(|v| v / total).collect();
                systematic_resample(&norm, per_block_out, uniforms[b])
                    .into_iter()
                    .map(|j| j as usize)
                    .collect()
            })
            .collect()
    });
    Weighed {
        ess,
        log_evidence,
        log_evidence_err,
        index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_give_full_ess_and_the_exact_evidence() {
        let lw = vec![-2.0; 400];
        let wd = weigh(&lw, 4, 10, 1.0, &[0.32; 4]);
        assert!((wd.ess - 400.0).abs() < 1e-9);
        assert!((wd.log_evidence + 2.0).abs() < 1e-12);
        let index = wd.index.unwrap();
        assert_eq!(index.len(), 4);
        // Ten evenly spaced picks of each block of 100: ⌊100 (i + 0.32)/10⌋.
        for block in &index {
            assert_eq!(*block, (0..10).map(|i| i * 10 + 3).collect::<Vec<_>>());
        }
    }

    #[test]
    fn one_huge_weight_is_truncated_and_a_low_ess_keeps_the_particles() {
        let mut lw = vec![0.0; 100];
        lw[3] = 50.0;
        let wd = weigh(&lw, 1, 10, 5.0, &[0.5]);
        // Capped at mean · √100 = (e⁵⁰ + 99)/100 · 10 ≈ e⁵⁰/10: ESS (1/10 + 99 e⁻⁵⁰)² / … ≈ 1.
        assert!(wd.ess < 1.5, "{}", wd.ess);
        assert!(wd.index.is_none());
        // ln Z keeps the raw weights: ln((e⁵⁰ + 99)/100).
        assert!((wd.log_evidence - (50.0 - 100f64.ln())).abs() < 1e-9);
        let none = weigh(&[f64::NEG_INFINITY; 8], 1, 4, 1.0, &[0.5]);
        assert_eq!(none.ess, 0.0);
        assert!(none.index.is_none());
    }
}
