//! `run` (posterior summaries for every galaxy of a manifest's catalogue, with a progress bar)
//! and `validate` (the same checks without sampling).

use std::path::PathBuf;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use popcosmos_inference::{Manifest, Pipeline, Progress, RunOptions};
use popcosmos_models::HubConfig;

#[derive(clap::Args)]
pub struct RunArgs {
    manifest: PathBuf,
    /// Continue a killed run in the same output folder (finished galaxies are kept).
    #[arg(long)]
    resume: bool,
    /// Stop after this many batches (testing interruption).
    #[arg(long, hide = true)]
    max_batches: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Run only shard I of N (0 ≤ I < N): contiguous whole batches, written to
    /// output.dir/shard-IIIII-of-NNNNN (see `merge`, docs/scale-out.md).
    #[arg(long, value_name = "I/N")]
    shard: Option<popcosmos_inference::Shard>,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let m = Manifest::load(&args.manifest)?;
    m.check_output_dir()?;
    let options = RunOptions {
        resume: args.resume,
        max_batches: args.max_batches,
        shard: args.shard,
    };
    run_manifest(m, &options, args.quiet)?;
    Ok(())
}

/// Run a manifest with a progress bar; returns the output folder.
pub fn run_manifest(m: Manifest, options: &RunOptions, quiet: bool) -> Result<PathBuf> {
    let pipeline = Pipeline::new(m, &HubConfig::from_env())?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:<12} [{bar:30}] {pos}/{len} galaxies  {per_sec}  ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut on_progress = |p: Progress| match p {
        Progress::Total(n) => bar.set_length(n as u64),
        Progress::Done(n) => bar.inc(n as u64),
        Progress::Stage(s) => {
            bar.set_message(s.split_whitespace().next().unwrap_or("").to_string())
        }
    };
    let summary = pipeline.run(options, &mut on_progress)?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "{} galaxies computed ({} already done, {} flagged) in {:.1} s ({:.2} s/galaxy); results in {}",
            summary.galaxies_computed,
            summary.galaxies_skipped,
            summary.galaxies_flagged,
            summary.seconds_total,
            summary.seconds_sampling / summary.galaxies_computed.max(1) as f64,
            summary.output_dir.display()
        );
    }
    Ok(summary.output_dir)
}

#[derive(clap::Args)]
pub struct ValidateArgs {
    manifest: PathBuf,
}

pub fn validate(args: &ValidateArgs) -> Result<()> {
    let path = &args.manifest;
    let m = Manifest::load(path)?;
    m.check_output_dir()?;
    let pipeline = Pipeline::new(m, &HubConfig::from_env())?;
    let n = pipeline.scan_catalogue()?;
    if n == 0 {
        anyhow::bail!(
            "catalogue.path: {} has no galaxies",
            pipeline.manifest.catalogue.path.display()
        );
    }
    let s = &pipeline.manifest.sampler;
    let size = if s.kind.is_smc() {
        format!("{} particles", s.particles)
    } else {
        format!("{} walkers × {} steps", s.walkers, s.steps)
    };
    println!(
        "{}: OK — survey {} ({} bands), {} galaxies in {}, prior {}, sampler {:?} ({size})",
        path.display(),
        pipeline.survey.name(),
        pipeline.survey.bands().len(),
        n,
        pipeline.manifest.catalogue.path.display(),
        pipeline.prior.name(),
        s.kind,
    );
    let m = &pipeline.manifest;
    if m.sampler.whiten && !m.whitening_fitted() {
        eprintln!(
            "note: init.library_size {} has too few prior draws for sampler.whiten's marginal \
             whitening (needs 2000, 1000 for SMC); the sampler runs in the constraint-mapped \
             coordinates only",
            m.init.library_size
        );
    }
    Ok(())
}
