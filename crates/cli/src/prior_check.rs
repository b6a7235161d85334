//! `compare-priors`: how well a learned prior q reproduces a reference prior p — forward KL
//! estimate E_p[ln p − ln q] with its standard error (p's normalising constant, which the
//! Prospector-α density does not include, estimated by importance sampling from q), per-parameter two-sample KS statistics
//! of draws (physical θ), and the cost of each log-density.

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use popcosmos_api::{
    HostRng, N_PARAMS, PARAM_NAMES, Prior, params::phi_row_to_theta, stats::ks_two_sample,
};
use popcosmos_models::HubConfig;
use serde::Serialize;

#[derive(clap::Args)]
pub struct ComparePriorsArgs {
    /// The learned prior q (kind or inline YAML, e.g. `{kind: diffusion}`).
    #[arg(long)]
    pub model: String,
    /// The reference prior p whose draws are the truth.
    #[arg(long, default_value = "prospector-alpha")]
    pub reference: String,
    /// Number of draws from each prior.
    #[arg(short = 'n', long, default_value_t = 2000)]
    pub draws: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the numbers as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
pub struct PriorComparison {
    pub model: String,
    pub reference: String,
    pub n: usize,
    /// Forward KL E_p[ln p − ln q] in nats with p normalised by `ln_z_reference`.
    pub kl_forward_nats: f64,
    /// Standard error of the E_p term (the normaliser's own error is `ln_z_stderr`).
    pub kl_forward_stderr: f64,
    /// ln ∫p of the reference density as evaluated (0 for a normalised density), estimated
    /// by importance sampling with q: ln mean_{x~q} p(x)/q(x).
    pub ln_z_reference: f64,
    /// Delta-method standard error of `ln_z_reference`.
    pub ln_z_stderr: f64,
    /// Standard deviation of ln p − ln q (shape mismatch, independent of normalisation).
    pub log_ratio_std: f64,
    /// Fraction of p's draws where q's log-density is not finite.
    pub model_nonfinite_fraction: f64,
    /// Per-parameter two-sample KS statistic (physical θ) between q's and p's draws.
    pub ks: Vec<(String, f64)>,
    /// Seconds per row of each log-density on this machine (same batch).
    pub model_log_prob_s_per_row: f64,
    pub reference_log_prob_s_per_row: f64,
    pub model_sample_s_per_row: f64,
}

fn timed_log_prob(prior: &dyn Prior, phi: &Tensor) -> Result<(Vec<f64>, f64)> {
    let t = Instant::now();
    let lp = prior
        .log_prob(phi)?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    Ok((lp, t.elapsed().as_secs_f64() / phi.dim(0)? as f64))
}

fn thetas(phi: &Tensor) -> Result<Vec<[f64; N_PARAMS]>> {
    Ok(phi
        .to_dtype(DType::F64)?
        .to_vec2::<f64>()?
        .iter()
        .map(|r| phi_row_to_theta(r))
        .collect())
}

pub fn compare(args: &ComparePriorsArgs) -> Result<PriorComparison> {
    let (device, hub) = (Device::Cpu, HubConfig::from_env());
    let build = |s: &str| -> Result<Box<dyn Prior>> {
        let spec = crate::prior_train::parse_prior(s)?;
        Ok(popcosmos_inference::build_prior(&spec, &device, &hub)?)
    };
    let q = build(&args.model).context("--model")?;
    let p = build(&args.reference).context("--reference")?;
    let mut rng = HostRng::seed_from_u64(args.seed);
    let from_p = p.sample(args.draws, &mut rng, &device)?;
    let (lp, p_cost) = timed_log_prob(&*p, &from_p)?;
    let (lq, q_cost) = timed_log_prob(&*q, &from_p)?;
    let t = Instant::now();
    let from_q = q.sample(args.draws, &mut rng, &device)?;
    let sample_cost = t.elapsed().as_secs_f64() / args.draws as f64;
    // Importance weights p/q on q's draws (p may be unnormalised and zero outside its support).
    let (lp_q, _) = timed_log_prob(&*p, &from_q)?;
    let (lq_q, _) = timed_log_prob(&*q, &from_q)?;
    let log_w: Vec<f64> = lp_q
        .iter()
        .zip(&lq_q)
        .map(|(a, b)| {
            if b.is_finite() {
                a - b
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let w_max = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = log_w.iter().map(|l| (l - w_max).exp()).collect();
    let w_mean = w.iter().sum::<f64>() / w.len() as f64;
    let w_var = w.iter().map(|x| (x - w_mean).powi(2)).sum::<f64>() / (w.len() as f64 - 1.0);
    let ln_z = w_max + w_mean.ln();
    let ln_z_stderr = (w_var / w.len() as f64).sqrt() / w_mean;
    let ratios: Vec<f64> = lp
        .iter()
        .zip(&lq)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(a, b)| a - b)
        .collect();
    let n = ratios.len() as f64;
    let mean = ratios.iter().sum::<f64>() / n;
    let var = ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let (tp, tq) = (thetas(&from_p)?, thetas(&from_q)?);
    let ks = (0..N_PARAMS)
        .map(|k| {
            let a: Vec<f64> = tp.iter().map(|r| r[k]).collect();
            let b: Vec<f64> = tq.iter().map(|r| r[k]).collect();
            (PARAM_NAMES[k].to_string(), ks_two_sample(&a, &b).0)
        })
        .collect();
    Ok(PriorComparison {
        model: q.name().to_string(),
        reference: p.name().to_string(),
        n: args.draws,
        kl_forward_nats: mean - ln_z,
        kl_forward_stderr: (var / n).sqrt(),
        ln_z_reference: ln_z,
        ln_z_stderr,
        log_ratio_std: var.sqrt(),
        model_nonfinite_fraction: lq.iter().filter(|v| !v.is_finite()).count() as f64
            / lq.len() as f64,
        ks,
        model_log_prob_s_per_row: q_cost,
        reference_log_prob_s_per_row: p_cost,
        model_sample_s_per_row: sample_cost,
    })
}

pub fn run(args: &ComparePriorsArgs) -> Result<()> {
    let c = compare(args)?;
    println!(
        "model     {}\nreference {}\ndraws     {}",
        c.model, c.reference, c.n
    );
    println!(
        "forward KL E_p[ln p − ln q] = {:.4} ± {:.4} (± {:.4} from ln Z_p = {:.4}) nats   (sd {:.3}; q non-finite on {:.2}% of p's draws)",
        c.kl_forward_nats,
        c.kl_forward_stderr,
        c.ln_z_stderr,
        c.ln_z_reference,
        c.log_ratio_std,
        100.0 * c.model_nonfinite_fraction
    );
    println!("{:<16} {:>8}", "parameter", "KS");
    for (name, d) in &c.ks {
        println!("{name:<16} {d:>8.4}");
    }
    let ks_crit = 1.36 * (2.0 / c.n as f64).sqrt();
    println!(
        "(KS 95% critical value for two samples of {}: {ks_crit:.4})",
        c.n
    );
    println!(
        "log-density cost: model {:.3e} s/row, reference {:.3e} s/row (model/reference = {:.3e}); model sampling {:.3e} s/row",
        c.model_log_prob_s_per_row,
        c.reference_log_prob_s_per_row,
        c.model_log_prob_s_per_row / c.reference_log_prob_s_per_row,
        c.model_sample_s_per_row
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&c)?)
            .with_context(|| path.display().to_string())?;
    }
    Ok(())
}
