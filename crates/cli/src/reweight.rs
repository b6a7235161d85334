//! `popcosmos-cli reweight RUN_DIR --to PRIOR -o OUT`: posteriors under another prior from a
//! finished run's chains, by importance weights p_to/p_run (popcosmos_inference::reweight).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Args;
use popcosmos_catalog::{ResultSchema, read_results, write_table};
use popcosmos_inference::reweight;
use popcosmos_priors::PriorSpec;

use crate::prior_train::parse_prior;
use popcosmos_models::HubConfig;

#[derive(Args)]
pub struct ReweightArgs {
    /// Output folder of a run made with `output.chains: true` (holds run.json and chains/).
    pub run_dir: PathBuf,
    /// Prior to reweight to: a kind (`diffusion`), an inline spec
    /// (`{kind: diffusion, log_prob: {solver: {method: rk4, steps: 16}}}`) or a YAML file holding one.
    #[arg(long)]
    pub to: String,
    /// Prior the run used (default: the `prior` of the run's manifest, from run.json).
    #[arg(long)]
    pub from: Option<String>,
    /// Per-galaxy summaries under the new prior (`.parquet` or `.csv`): the run's percentile
    /// columns plus `n_draws`, `importance_ess`, `max_weight`.
    #[arg(short, long)]
    pub output: PathBuf,
}

fn prior_arg(s: &str) -> Result<PriorSpec> {
    let path = std::path::Path::new(s);
    if path.is_file() {
        let text = std::fs::read_to_string(path).with_context(|| s.to_string())?;
        return serde_saphyr::from_str(&text).with_context(|| format!("prior file {s}"));
    }
    parse_prior(s)
}

/// Refuse chains that do not cover the run: an unfinished run, a batch interrupted between
/// its summary and chain parts (uncommitted parts or broken markers), or galaxies with a
/// summary row but no chain rows.
fn check_chains_complete(run_dir: &Path) -> Result<()> {
    let shown = run_dir.display();
    let record_path = run_dir.join("run.json");
    let mut merged = false;
    match std::fs::read_to_string(&record_path) {
        Ok(text) => {
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", record_path.display()))?;
            merged = v["merged"] == serde_json::Value::Bool(true);
            if v["complete"] != serde_json::Value::Bool(true) {
                let s = &v["summary"];
                let done = s["galaxies_computed"].as_u64().unwrap_or(0)
                    + s["galaxies_skipped"].as_u64().unwrap_or(0);
                bail!(
                    "{shown}: the run is not complete ({done} of {} galaxies done, run.json); \
                     finish it with `run MANIFEST --resume` before reweighting its chains",
                    s["galaxies_total"].as_u64().unwrap_or(0)
                );
            }
        }
        Err(_) => eprintln!(
            "warning: {}: no run record; cannot check that the run finished",
            record_path.display()
        ),
    }
    if !merged {
        let report = popcosmos_catalog::check_commits(run_dir)?;
        if !report.is_clean() {
            bail!(
                "{shown}: chains are incomplete: {}; resume the run (`run MANIFEST --resume`) \
                 to recompute those batches",
                report.problems()
            );
        }
    }
    // Every galaxy of the summary must have chain rows.
    let ids = |dir: &Path| -> Result<HashSet<String>> {
        let parts = popcosmos_catalog::list_parts(dir)?;
        let ids = parts.iter().map(popcosmos_catalog::part_ids);
        Ok(ids
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect())
    };
    let (summary, chains) = (ids(run_dir)?, ids(&run_dir.join("chains"))?);
    let mut missing: Vec<&String> = summary.difference(&chains).collect();
    if !missing.is_empty() {
        missing.sort();
        let shown_ids: Vec<&str> = missing.iter().take(5).map(|s| s.as_str()).collect();
        bail!(
            "{shown}: chains are incomplete: {} galax{} with results have no chain rows \
             (e.g. {}); resume the run to recompute them",
            missing.len(),
            if missing.len() == 1 { "y" } else { "ies" },
            shown_ids.join(", ")
        );
    }
    Ok(())
}

pub fn reweight(args: &ReweightArgs) -> Result<()> {
    let device = Device::Cpu;
    let record_path = args.run_dir.join("run.json");
    let from_spec = match &args.from {
        Some(s) => prior_arg(s)?,
        None => {
            let text = std::fs::read_to_string(&record_path).with_context(|| {
                format!(
                    "{} (pass --from if the run record is missing)",
                    record_path.display()
                )
            })?;
            let record: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", record_path.display()))?;
            let prior = record
                .get("manifest")
                .and_then(|m| m.get("prior"))
                .with_context(|| format!("{}: no manifest.prior", record_path.display()))?;
            serde_json::from_value(prior.clone())
                .with_context(|| format!("{}: manifest.prior", record_path.display()))?
        }
    };
    let to_spec = prior_arg(&args.to)?;
    let chains_dir = args.run_dir.join("chains");
    if !chains_dir.is_dir() {
        bail!(
            "{}: no chains folder — rerun with `output: {{chains: true}}` in the manifest",
            chains_dir.display()
        );
    }
    check_chains_complete(&args.run_dir)?;
    let chains = read_results(&chains_dir).with_context(|| chains_dir.display().to_string())?;
    let hub = HubConfig::from_env();
    let from =
        popcosmos_inference::build_prior(&from_spec, &device, &hub).context("--from prior")?;
    let to = popcosmos_inference::build_prior(&to_spec, &device, &hub).context("--to prior")?;
    let t0 = std::time::Instant::now();
    let galaxies = reweight::reweight_chains(&chains, from.as_ref(), to.as_ref(), &device)?;
    let seconds = t0.elapsed().as_secs_f64();
    let stellar_mass = popcosmos_sps::StellarMassEmulator::builtin(&device)?;
    let before = reweight::summarise(&galaxies, &stellar_mass, true, &device)?;
    let after = reweight::summarise(&galaxies, &stellar_mass, false, &device)?;
    let ess = after.column("importance_ess").unwrap_or(&[]);
    let n_draws = after.column("n_draws").unwrap_or(&[]);
    let mut frac: Vec<f64> = ess.iter().zip(n_draws).map(|(e, n)| e / n).collect();
    frac.sort_by(f64::total_cmp);
    let q = |p: f64| frac[((frac.len() - 1) as f64 * p).round() as usize];
    println!(
        "reweighted {} draws of {} galaxies from {} to {} in {seconds:.1} s ({:.2} ms per draw for both priors)",
        chains.len(),
        galaxies.len(),
        from.name(),
        to.name(),
        1e3 * seconds / chains.len().max(1) as f64
    );
    if !frac.is_empty() {
        println!(
            "importance ESS / draws: median {:.3}, 5th percentile {:.3}, minimum {:.3}",
            q(0.5),
            q(0.05),
            frac[0]
        );
    }
    println!(
        "\n{:<18} {:>5} {:>14} {:>14} {:>12} {:>10} {:>10}",
        "quantity (new vs run)",
        "n",
        "median |Δ|/σ",
        "95th |Δ|/σ",
        "mean Δ/σ",
        "w68 ratio",
        "w95 ratio"
    );
    for quantity in ["z", "log10M_formed", "log10M_remaining", "log10SFR"] {
        let s = reweight::shift_stats(&before, &after, quantity)?;
        println!(
            "{:<18} {:>5} {:>14.3} {:>14.3} {:>12.3} {:>10.3} {:>10.3}",
            quantity,
            s.n,
            s.median_abs_shift_sigma,
            s.p95_abs_shift_sigma,
            s.mean_shift_sigma,
            s.width68_ratio,
            s.width95_ratio
        );
    }
    write_table(
        &args.output,
        &ResultSchema::new(reweight::summary_columns()),
        &after,
    )?;
    println!("wrote {}", args.output.display());
    Ok(())
}
