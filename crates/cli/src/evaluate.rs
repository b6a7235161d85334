//! `evaluate`: photo-z metrics of a run against spectroscopic redshifts, plus plots.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use popcosmos_api::{Device, N_PARAMS, PARAM_NAMES, SpsModel, Tensor, stats::median};
use popcosmos_catalog::{
    CatalogueReader, match_by_id, photoz_metrics, read_column_f64, read_ids, read_results,
};
use popcosmos_inference::Manifest;
use popcosmos_models::HubConfig;

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// Results folder (run output) or a single results file.
    pub results: PathBuf,
    /// `CATALOGUE:COLUMN` holding the true redshift, rows matched by id.
    #[arg(long)]
    pub truth: String,
    /// Id column of the truth catalogue.
    #[arg(long, default_value = "id")]
    pub id_column: String,
    /// Write the metrics as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write PNG plots into this folder (z_phot vs z_spec; corner and SED with --manifest).
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// The run's manifest (enables the corner and SED plots of one galaxy).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Galaxy id for the corner/SED plots (default: the first one).
    #[arg(long)]
    pub galaxy: Option<String>,
}

/// `z_odds` at or above which `evaluate` also reports the galaxies as a clean sample.
const CLEAN_ODDS: f64 = 0.95;

/// `writeln!` into a `String` (cannot fail).
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Write `text` to stdout; a reader that went away (`evaluate … | head`) is not an error:
/// the rest of the command (JSON, plots) still runs and the exit status stays 0.
pub fn print_quietly(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

pub fn evaluate(a: &EvaluateArgs) -> Result<()> {
    let (cat, col) = a
        .truth
        .rsplit_once(':')
        .with_context(|| format!("--truth '{}': expected CATALOGUE:COLUMN", a.truth))?;
    if !a.results.exists() {
        bail!(
            "{}: no such results folder or file (expected a run's output folder or a \
             .parquet/.csv results file)",
            a.results.display()
        );
    }
    let results = read_results(&a.results)
        .with_context(|| format!("reading results {}", a.results.display()))?;
    if results.is_empty() {
        bail!("{}: no results", a.results.display());
    }
    let ids = read_ids(cat, &a.id_column)?;
    let z_true = read_column_f64(cat, col)?;
    let pairs = match_by_id(&results.ids, &ids);
    if pairs.is_empty() {
        bail!(
            "no result id matches an id in {cat} (column '{}')",
            a.id_column
        );
    }
    let get = |name: &str| {
        results
            .column(name)
            .with_context(|| format!("{}: no column '{name}'", a.results.display()))
    };
    let (p50, p16, p84) = (get("z_p50")?, get("z_p16")?, get("z_p84")?);
    let (p2, p97) = (get("z_p2.5")?, get("z_p97.5")?);
    let mut zs = Vec::new();
    let mut zp = Vec::new();
    let mut lo = Vec::new();
    let mut hi = Vec::new();
    let (mut in68, mut in95) = (0usize, 0usize);
    for &(r, t) in &pairs {
        if !z_true[t].is_finite() || !p50[r].is_finite() {
            continue;
        }
        zs.push(z_true[t]);
        zp.push(p50[r]);
        lo.push(p16[r]);
        hi.push(p84[r]);
        in68 += usize::from(p16[r] <= z_true[t] && z_true[t] <= p84[r]);
        in95 += usize::from(p2[r] <= z_true[t] && z_true[t] <= p97[r]);
    }
    let finite_truth = pairs.iter().filter(|(_, t)| z_true[*t].is_finite()).count();
    if finite_truth == 0 {
        bail!(
            "--truth {}: column '{col}' has no finite value for any of the {} galaxies matched by \
             id (empty or NaN truth); nothing to evaluate",
            a.truth,
            pairs.len()
        );
    }
    if zs.is_empty() {
        bail!(
            "{}: no galaxy with a finite truth value has a finite z_p50; nothing to evaluate",
            a.results.display()
        );
    }
    let m = photoz_metrics(&zp, &zs);
    // The clean sample that `z_odds` selects (posterior probability of a catastrophic
    // outlier below 5 %), when the run wrote it.
    let clean = results.column("z_odds").map(|odds| {
        let (mut p, mut s) = (Vec::new(), Vec::new());
        for &(r, t) in &pairs {
            if z_true[t].is_finite() && p50[r].is_finite() && odds[r] >= CLEAN_ODDS {
                p.push(p50[r]);
                s.push(z_true[t]);
            }
        }
        photoz_metrics(&p, &s)
    });
    let flagged = results
        .strings
        .get("flags")
        .map(|f| f.iter().filter(|s| !s.is_empty()).count())
        .unwrap_or(0);
    let mut out = String::new();
    outln!(out, "| metric | value |");
    outln!(out, "|---|---|");
    outln!(out, "| galaxies matched | {} |", m.n);
    outln!(out, "| bias (median Δz/(1+z)) | {:+.4} |", m.bias);
    outln!(out, "| σ_NMAD | {:.4} |", m.sigma_nmad);
    outln!(
        out,
        "| outlier fraction (|Δz|/(1+z) > 0.15) | {:.1}% |",
        100.0 * m.outlier_fraction
    );
    outln!(
        out,
        "| z_spec inside 68% interval | {:.1}% |",
        100.0 * in68 as f64 / m.n.max(1) as f64
    );
    outln!(
        out,
        "| z_spec inside 95% interval | {:.1}% |",
        100.0 * in95 as f64 / m.n.max(1) as f64
    );
    outln!(
        out,
        "| galaxies flagged by diagnostics | {flagged} of {} |",
        results.len()
    );
    if let Some(c) = clean {
        outln!(
            out,
            "| z_odds ≥ {CLEAN_ODDS}: galaxies / σ_NMAD / outliers | {} of {} / {:.4} / {:.1}% |",
            c.n,
            m.n,
            c.sigma_nmad,
            100.0 * c.outlier_fraction
        );
    }
    // Sampler health across galaxies: medians of the per-galaxy diagnostics.
    for (name, label) in [
        ("rhat_max", "median of per-galaxy max R̂"),
        ("ess_bulk_min", "median of per-galaxy min bulk ESS"),
        ("acceptance", "median acceptance"),
    ] {
        if let Some(v) = results.column(name) {
            let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
            if !v.is_empty() {
                let p = median(&v);
                outln!(out, "| {label} | {p:.3} |");
            }
        }
    }
    print_quietly(&out)?;
    if let Some(j) = &a.json {
        std::fs::write(j, serde_json::to_string_pretty(&m)?)
            .with_context(|| j.display().to_string())?;
    }
    if let Some(dir) = &a.plots {
        std::fs::create_dir_all(dir)?;
        let p = dir.join("photoz.png");
        crate::plots::photoz_plot(
            &p,
            &zs,
            &zp,
            &lo,
            &hi,
            "popcosmos: posterior median z vs spectroscopic z",
        )?;
        eprintln!("plots: {}", p.display());
        if let Some(mp) = &a.manifest {
            galaxy_plots(mp, &a.results, a.galaxy.as_deref(), dir)?;
        } else if a.results.join("chains").is_dir() {
            let mp = a.results.join("run.json");
            if mp.exists() {
                galaxy_plots_from_record(&mp, &a.results, a.galaxy.as_deref(), dir)?;
            }
        }
    }
    Ok(())
}

fn galaxy_plots_from_record(
    record: &Path,
    results: &Path,
    galaxy: Option<&str>,
    dir: &Path,
) -> Result<()> {
    let text = std::fs::read_to_string(record)?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let m: Manifest =
        serde_json::from_value(v["manifest"].clone()).context("run.json: manifest")?;
    galaxy_plots_with(m, results, galaxy, dir)
}

fn galaxy_plots(manifest: &Path, results: &Path, galaxy: Option<&str>, dir: &Path) -> Result<()> {
    galaxy_plots_with(Manifest::load(manifest)?, results, galaxy, dir)
}

/// Corner plot and SED of one galaxy from the run's thinned chains.
fn galaxy_plots_with(m: Manifest, results: &Path, galaxy: Option<&str>, dir: &Path) -> Result<()> {
    let chains_dir = results.join("chains");
    if !chains_dir.is_dir() {
        bail!(
            "{}: no chains/ folder; set output.chains: true in the manifest to get corner and SED plots",
            results.display()
        );
    }
    let chains = read_results(&chains_dir)?;
    let id = galaxy
        .map(str::to_string)
        .unwrap_or_else(|| chains.ids[0].clone());
    let rows: Vec<usize> = (0..chains.len()).filter(|&i| chains.ids[i] == id).collect();
    if rows.is_empty() {
        bail!(
            "galaxy '{id}' has no chain rows in {}",
            chains_dir.display()
        );
    }
    let col = |n: &str| -> Result<Vec<f64>> {
        let c = chains
            .column(n)
            .with_context(|| format!("chains: no column '{n}'"))?;
        Ok(rows.iter().map(|&i| c[i]).collect())
    };
    let z = col("z")?;
    let n_param = col("N")?;
    let logm: Vec<f64> = n_param
        .iter()
        .zip(&z)
        .map(|(n, z)| popcosmos_sps::log10_mass_formed(*n, *z))
        .collect();
    let names = [
        "z",
        "log10M_formed",
        "log10Z",
        "dust2",
        "logsfr_ratio1",
        "gaslog10U",
    ]
    .map(String::from)
    .to_vec();
    let samples = vec![
        z.clone(),
        logm,
        col("log10Z")?,
        col("dust2")?,
        col("logsfr_ratio1")?,
        col("gaslog10U")?,
    ];
    let safe: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let corner = dir.join(format!("corner_{safe}.png"));
    crate::plots::corner_plot(
        &corner,
        &names,
        &samples,
        None,
        &format!("galaxy {id}: posterior"),
    )?;

    // SED: observed fluxes vs model fluxes (with zero points) from the chain draws.
    let pipeline = popcosmos_inference::Pipeline::new(m, &HubConfig::from_env())?;
    let mut reader =
        CatalogueReader::open(&pipeline.manifest.catalogue, &pipeline.survey.band_names())?;
    let mut obs = None;
    while let Some(chunk) = reader.next_chunk(4096)? {
        if let Some(i) = chunk.ids.iter().position(|x| *x == id) {
            let b = chunk.n_bands;
            obs = Some((
                chunk.flux_nmgy[i * b..(i + 1) * b].to_vec(),
                chunk.flux_err_nmgy[i * b..(i + 1) * b].to_vec(),
                chunk.mask[i * b..(i + 1) * b].to_vec(),
            ));
            break;
        }
    }
    let (flux, err, mask) =
        obs.with_context(|| format!("galaxy '{id}' not found in the catalogue"))?;
    let mut theta = Vec::with_capacity(rows.len() * N_PARAMS);
    let cols: Vec<Vec<f64>> = PARAM_NAMES.iter().map(|n| col(n)).collect::<Result<_>>()?;
    for r in 0..rows.len() {
        for c in &cols {
            theta.push(c[r] as f32);
        }
    }
    let theta = Tensor::from_vec(theta, (rows.len(), N_PARAMS), &Device::Cpu)?;
    let model = pipeline
        .sps
        .photometry(&theta)?
        .flux_nmgy
        .to_vec2::<f32>()?;
    let zp = &pipeline.survey.calibration().zero_points;
    let nb = zp.len();
    let ujy = 3.631; // µJy per nmgy
    let mut med = vec![0.0; nb];
    let mut lo = vec![0.0; nb];
    let mut hi = vec![0.0; nb];
    for b in 0..nb {
        let v: Vec<f64> = model.iter().map(|r| r[b] as f64 * zp[b] * ujy).collect();
        let p = popcosmos_inference::percentiles(&v);
        (lo[b], med[b], hi[b]) = (p[1], p[2], p[3]);
    }
    let bands = pipeline.survey.bands();
    let lambda: Vec<f64> = bands
        .iter()
        .map(|b| {
            popcosmos_surveys::cosmos_filter(&b.name)
                .map(|f| f.pivot_wavelength_aa() / 1e4)
                .unwrap_or(f64::NAN)
        })
        .collect();
    let labels: Vec<String> = bands.iter().map(|b| b.label.clone()).collect();
    let of: Vec<f64> = flux.iter().map(|v| *v as f64 * ujy).collect();
    let oe: Vec<f64> = err.iter().map(|v| *v as f64 * ujy).collect();
    let used: Vec<bool> = mask.iter().map(|v| *v > 0.5).collect();
    let zmed = popcosmos_inference::percentiles(&z)[2];
    let sed = dir.join(format!("sed_{safe}.png"));
    crate::plots::sed_plot(
        &sed,
        &labels,
        &lambda,
        &of,
        &oe,
        &used,
        &med,
        &lo,
        &hi,
        &format!("galaxy {id}: observed vs model (z_phot = {zmed:.2})"),
    )?;
    eprintln!("plots: {}, {}", corner.display(), sed.display());
    Ok(())
}
