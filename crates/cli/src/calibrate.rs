//! `popcosmos-cli calibrate`: per-band zero points (and optionally error floors) from the
//! galaxies of a manifest's catalogue that have spectroscopic redshifts, written as a
//! calibration file that later runs load with `survey: {calibration_file: …}`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use popcosmos_inference::{CalibrationOptions, calibrate, subset};
use popcosmos_inference::{Manifest, Pipeline};
use popcosmos_models::HubConfig;
use popcosmos_surveys::{BandCalibration, CalibrationFile};

#[derive(clap::Args)]
pub struct CalibrateArgs {
    /// Run manifest (survey, SPS, prior, sampler settings; its catalogue = calibration sample).
    pub manifest: PathBuf,
    /// Catalogue column with the spectroscopic redshift.
    #[arg(long)]
    pub truth: String,
    /// Output calibration file (YAML).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Inference → zero-point iterations.
    #[arg(long, default_value_t = 4)]
    pub iterations: usize,
    /// Minimum S/N of a band measurement entering its zero point.
    #[arg(long, default_value_t = 5.0)]
    pub min_snr: f64,
    /// Also fit fractional error floors (normalised-residual NMAD = 1).
    #[arg(long)]
    pub error_floors: bool,
    /// Band (name or label) whose zero point is held fixed (default: hold the geometric
    /// mean of all zero points).
    #[arg(long)]
    pub reference_band: Option<String>,
    /// Use at most this many galaxies (the first ones with a valid truth).
    #[arg(long)]
    pub max_galaxies: Option<usize>,
    /// No per-iteration progress lines.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: &CalibrateArgs) -> Result<()> {
    let mut m = Manifest::load(&args.manifest)?;
    if !m.catalogue.truth_columns.contains(&args.truth) {
        m.catalogue.truth_columns.push(args.truth.clone());
    }
    let catalogue = m.catalogue.path.clone();
    let mut pipeline = Pipeline::new(m, &HubConfig::from_env())?;
    let bands = pipeline.survey.band_names();
    let mut reader = popcosmos_catalog::CatalogueReader::open(&pipeline.manifest.catalogue, &bands)
        .with_context(|| format!("reading {}", catalogue.display()))?;
    let mut all = reader
        .read_all()
        .with_context(|| format!("reading {}", catalogue.display()))?;
    if let Some(n) = args.max_galaxies {
        let truth = &all.truth[&args.truth];
        let rows: Vec<usize> = (0..all.len())
            .filter(|&i| truth[i].is_finite())
            .take(n)
            .collect();
        all = subset(&all, &rows);
    }
    if all.is_empty() {
        bail!("{}: no galaxies to calibrate on", catalogue.display());
    }
    let options = CalibrationOptions {
        truth_column: args.truth.clone(),
        iterations: args.iterations,
        min_snr: args.min_snr,
        fit_error_floors: args.error_floors,
        reference_band: args.reference_band.clone(),
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    let quiet = args.quiet;
    let mut last = (0, 0);
    let outcome = calibrate(&mut pipeline, &all, &options, &mut |it, done, total| {
        if !quiet && (it, done) != last && done == total {
            eprintln!(
                "iteration {it}/{}: {total} galaxies sampled ({:.0} s)",
                options.iterations,
                t0.elapsed().as_secs_f64()
            );
        }
        last = (it, done);
    })?;

    let survey = &pipeline.survey;
    let start = &outcome.history[0];
    println!(
        "{:<22} {:>6} {:>9} {:>9} {:>7} {:>9}",
        "band", "label", "start", "fitted", "n_used", "floor"
    );
    let mut file_bands = Vec::new();
    for (b, band) in survey.bands().iter().enumerate() {
        let floor = outcome.error_floors.as_ref().map(|f| f[b]);
        println!(
            "{:<22} {:>6} {:>9.4} {:>9.4} {:>7} {:>9}",
            band.name,
            band.label,
            start[b],
            outcome.zero_points[b],
            outcome.n_used[b],
            floor.map_or("-".into(), |f| format!("{f:.4}"))
        );
        file_bands.push(BandCalibration {
            band: band.name.clone(),
            label: (band.label != band.name).then(|| band.label.clone()),
            zero_point: round6(outcome.zero_points[b]),
            error_floor: floor.map(round6),
            n_galaxies: Some(outcome.n_used[b]),
        });
    }
    let mut provenance = BTreeMap::new();
    let s = &pipeline.manifest.sampler;
    for (k, v) in [
        (
            "created_by",
            serde_json::json!(format!(
                "popcosmos-cli {} calibrate",
                env!("CARGO_PKG_VERSION")
            )),
        ),
        (
            "manifest",
            serde_json::json!(args.manifest.display().to_string()),
        ),
        (
            "catalogue",
            serde_json::json!(catalogue.display().to_string()),
        ),
        ("truth_column", serde_json::json!(args.truth)),
        ("n_galaxies", serde_json::json!(outcome.n_galaxies)),
        ("iterations", serde_json::json!(args.iterations)),
        ("min_snr", serde_json::json!(args.min_snr)),
        ("reference_band", serde_json::json!(args.reference_band)),
        (
            "sampler",
            serde_json::json!(format!(
                "{} walkers, {} steps, {} burn-in",
                s.walkers, s.steps, s.burn_in
            )),
        ),
        ("seed", serde_json::json!(pipeline.manifest.seed)),
        (
            "history",
            serde_json::json!(
                outcome
                    .history
                    .iter()
                    .map(|h| h.iter().map(|z| round6(*z)).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            ),
        ),
        (
            "seconds",
            serde_json::json!((t0.elapsed().as_secs_f64() * 10.0).round() / 10.0),
        ),
    ] {
        provenance.insert(k.to_string(), v);
    }
    let file = CalibrationFile {
        survey: survey.name().to_string(),
        bands: file_bands,
        provenance,
    };
    file.save(&args.output)?;
    eprintln!(
        "wrote {} ({} galaxies, {} iterations, {:.0} s)",
        args.output.display(),
        outcome.n_galaxies,
        args.iterations,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
