//! `popcosmos-cli calibrate`: per-band zero points (and optionally error floors) from the
//! galaxies of a manifest's catalogue that have spectroscopic redshifts, written as a
//! calibration file that later runs load with `survey: {calibration_file: …}`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use popcosmos_api::stats::{median, nmad};
use popcosmos_inference::{BandResidual, CalibrationOptions, calibrate, line_group, subset};
use popcosmos_inference::{Manifest, Pipeline, line_name};
use popcosmos_models::HubConfig;
use popcosmos_surveys::{BandCalibration, CalibrationFile, LineOffset};

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
    /// Also fit the flux scale of these groups of emission lines (comma-separated: halpha
    /// = Hα + [N II], hbeta-oiii = Hβ + [O III], oii = [O II] 3727, 3730), written as the
    /// lines' offsets in the calibration file.
    #[arg(long, value_delimiter = ',')]
    pub line_offsets: Vec<String>,
    /// Band (name or label) whose zero point is held fixed (default: hold the geometric
    /// mean of all zero points).
    #[arg(long)]
    pub reference_band: Option<String>,
    /// Use at most this many galaxies (the first ones with a valid truth).
    #[arg(long)]
    pub max_galaxies: Option<usize>,
    /// Also write every measured band of every galaxy against its model at the spec-z
    /// (CSV with the rest-frame wavelength), and print the median observed / model flux
    /// in rest-frame wavelength bins.
    #[arg(long)]
    pub residuals: Option<PathBuf>,
    /// No per-iteration progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Calibration-file entries of (rest λ Å, α) line offsets, named where the line is known.
pub fn line_offset_entries(offsets: &[(f64, f64)]) -> Vec<LineOffset> {
    offsets
        .iter()
        .map(|&(lambda_aa, offset)| LineOffset {
            line: line_name(lambda_aa).map(str::to_string),
            lambda_aa,
            offset: round6(offset),
        })
        .collect()
}

/// Rest-frame wavelength bin edges (Å) of the printed residual summary: the far-UV, the
/// near-UV, either side of the 4000 Å break, the optical and the near-IR.
const REST_EDGES_AA: [f64; 10] = [
    912.0, 1500.0, 2500.0, 3500.0, 4500.0, 6000.0, 8000.0, 12000.0, 20000.0, 50000.0,
];

pub fn run(args: &CalibrateArgs) -> Result<()> {
    // Refuse before the sampling, not after: nothing already written is replaced.
    for path in std::iter::once(&args.output).chain(args.residuals.as_ref()) {
        if path.exists() {
            bail!(
                "{} exists; calibrate does not overwrite files (choose another path or remove it)",
                path.display()
            );
        }
    }
    for group in &args.line_offsets {
        line_group(group)?;
    }
    let mut m = Manifest::load(&args.manifest)?;
    if !m.catalogue.truth_columns.contains(&args.truth) {
        m.catalogue.truth_columns.push(args.truth.clone());
    }
    let catalogue = m.catalogue.path.clone();
    // Offsets the manifest's calibration file already sets, carried into the new file.
    let mut line_offsets = m.survey.build_defined()?.line_offsets;
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
        line_groups: args.line_offsets.clone(),
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
    for g in &outcome.line_groups {
        println!(
            "line group {:<11} flux × {:.3} ± {:.3} (per iteration: {})",
            g.name,
            g.scale,
            g.error,
            g.history
                .iter()
                .map(|s| format!("{s:.3}"))
                .collect::<Vec<_>>()
                .join(" → ")
        );
        for (_, lambda, alpha) in &g.offsets {
            line_offsets.retain(|(l, _)| (l - lambda).abs() > 1.5);
            line_offsets.push((*lambda, *alpha));
        }
    }
    if !outcome.line_groups.is_empty() {
        provenance.insert(
            "line_groups".into(),
            serde_json::json!(
                outcome
                    .line_groups
                    .iter()
                    .map(|g| serde_json::json!({
                        "group": g.name,
                        "scale": round6(g.scale),
                        "error": round6(g.error),
                        "history": g.history.iter().map(|s| round6(*s)).collect::<Vec<_>>(),
                    }))
                    .collect::<Vec<_>>()
            ),
        );
    }
    let file = CalibrationFile {
        survey: survey.name().to_string(),
        bands: file_bands,
        emission_lines: line_offset_entries(&line_offsets),
        provenance,
    };
    if let Some(path) = &args.residuals {
        let pivots = band_pivots(&pipeline)?;
        let floors = outcome
            .error_floors
            .clone()
            .unwrap_or_else(|| survey.calibration().error_floors.clone());
        write_residuals(path, &outcome.residuals, survey.bands(), &pivots, &floors)?;
        print_rest_frame_summary(&outcome.residuals, &pivots, &floors);
        eprintln!(
            "wrote {} ({} band measurements)",
            path.display(),
            outcome.residuals.len()
        );
    }
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

/// Pivot wavelength of every band (Å), from the survey's filter curves.
fn band_pivots(pipeline: &Pipeline) -> Result<Vec<f64>> {
    let defined = pipeline.manifest.survey.build_defined()?;
    let nb = pipeline.survey.bands().len();
    if defined.filters.len() != nb {
        bail!(
            "--residuals needs a filter curve per band to place them in the rest frame; the \
             survey has {} curves for {nb} bands",
            defined.filters.len()
        );
    }
    Ok(defined
        .filters
        .iter()
        .map(|f| f.pivot_wavelength_aa())
        .collect())
}

/// One row per measured band: the galaxy, its spec-z, the band, the rest-frame pivot
/// wavelength, the fluxes and the residuals.
fn write_residuals(
    path: &std::path::Path,
    residuals: &[BandResidual],
    bands: &[popcosmos_api::Band],
    pivots: &[f64],
    floors: &[f64],
) -> Result<()> {
    use std::fmt::Write as _;
    let mut csv = String::from(
        "id,z_spec,band,label,pivot_aa,rest_aa,flux_nmgy,fluxerr_nmgy,model_nmgy,\
         model_sigma_nmgy,ratio,normalised\n",
    );
    for r in residuals {
        let b = &bands[r.band];
        writeln!(
            csv,
            "{},{},{},{},{:.1},{:.1},{:e},{:e},{:e},{:e},{:.6},{:.4}",
            r.id,
            r.z,
            b.name,
            b.label,
            pivots[r.band],
            pivots[r.band] / (1.0 + r.z),
            r.flux_nmgy,
            r.flux_err_nmgy,
            r.model_nmgy,
            r.model_sigma_nmgy,
            r.ratio(),
            r.normalised(floors[r.band])
        )?;
    }
    let tmp = path.with_extension("csv.tmp");
    std::fs::write(&tmp, csv).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Per rest-frame bin: measurements, median observed / model, NMAD of the normalised
/// residuals (1 where the errors and floors describe the scatter); NaN for an empty bin.
#[derive(Debug, Clone, PartialEq)]
struct RestFrameBin {
    lo_aa: f64,
    hi_aa: f64,
    n: usize,
    median_ratio: f64,
    nmad_normalised: f64,
}

fn rest_frame_bins(
    residuals: &[BandResidual],
    pivots: &[f64],
    floors: &[f64],
) -> Vec<RestFrameBin> {
    REST_EDGES_AA
        .windows(2)
        .map(|e| {
            let inside: Vec<&BandResidual> = residuals
                .iter()
                .filter(|r| {
                    let rest = pivots[r.band] / (1.0 + r.z);
                    rest >= e[0] && rest < e[1]
                })
                .collect();
            let ratios: Vec<f64> = inside.iter().map(|r| r.ratio()).collect();
            let norm: Vec<f64> = inside
                .iter()
                .map(|r| r.normalised(floors[r.band]))
                .collect();
            RestFrameBin {
                lo_aa: e[0],
                hi_aa: e[1],
                n: inside.len(),
                median_ratio: median(&ratios),
                nmad_normalised: nmad(&norm),
            }
        })
        .collect()
}

fn print_rest_frame_summary(residuals: &[BandResidual], pivots: &[f64], floors: &[f64]) {
    println!(
        "\n{:>14} {:>6} {:>14} {:>18}",
        "rest frame, Å", "n", "obs / model", "NMAD normalised"
    );
    for b in rest_frame_bins(residuals, pivots, floors) {
        if b.n == 0 {
            continue;
        }
        println!(
            "{:>6.0}–{:<7.0} {:>6} {:>14.3} {:>18.2}",
            b.lo_aa, b.hi_aa, b.n, b.median_ratio, b.nmad_normalised
        );
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn residual(z: f64, band: usize, flux: f64, model: f64) -> BandResidual {
        BandResidual {
            id: format!("g{band}"),
            z,
            band,
            flux_nmgy: flux,
            flux_err_nmgy: 0.1,
            model_nmgy: model,
            model_sigma_nmgy: 0.0,
        }
    }

    #[test]
    fn residuals_land_in_their_rest_frame_bins() {
        // Pivots 4000 and 8000 Å. At z = 1 they sit at 2000 and 4000 Å rest; at z = 0 at
        // 4000 and 8000 Å.
        let pivots = [4000.0, 8000.0];
        let floors = [0.0, 0.0];
        let r = vec![
            residual(1.0, 0, 1.0, 2.0), // 2000 Å: ratio 0.5
            residual(1.0, 1, 3.0, 2.0), // 4000 Å: ratio 1.5
            residual(0.0, 0, 2.0, 2.0), // 4000 Å: ratio 1.0
            residual(0.0, 1, 4.0, 2.0), // 8000 Å: the 8000–12000 bin (lower edge inclusive)
        ];
        let bins = rest_frame_bins(&r, &pivots, &floors);
        let find = |lo: f64| bins.iter().find(|b| b.lo_aa == lo).unwrap();
        assert_eq!(find(1500.0).n, 1);
        assert_eq!(find(1500.0).median_ratio, 0.5);
        assert_eq!(find(3500.0).n, 2);
        assert!((find(3500.0).median_ratio - 1.25).abs() < 1e-12);
        assert_eq!(find(8000.0).n, 1);
        assert_eq!(find(8000.0).median_ratio, 2.0);
        assert_eq!(bins.iter().map(|b| b.n).sum::<usize>(), 4);
        assert!(find(912.0).median_ratio.is_nan());
    }

    #[test]
    fn normalised_residual_adds_the_floor_in_quadrature() {
        let r = BandResidual {
            model_sigma_nmgy: 0.3,
            ..residual(0.5, 0, 10.0, 9.0)
        };
        // σ² = 0.1² + 0.3² + (0.1 × 9)² = 0.01 + 0.09 + 0.81 = 0.91.
        assert!((r.normalised(0.1) - 1.0 / 0.91f64.sqrt()).abs() < 1e-12);
        assert!((r.normalised(0.0) - 1.0 / 0.1f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn the_residual_csv_has_the_rest_frame_wavelength() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("res.csv");
        let bands = vec![popcosmos_api::Band {
            name: "kids_r".into(),
            label: "r".into(),
            flux_softening_nmgy: 0.1,
        }];
        write_residuals(
            &path,
            &[residual(1.0, 0, 3.0, 2.0)],
            &bands,
            &[6000.0],
            &[0.0],
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let row: Vec<&str> = lines.next().unwrap().split(',').collect();
        let col = |k: &str| row[header.iter().position(|h| *h == k).unwrap()];
        assert_eq!(col("rest_aa").parse::<f64>().unwrap(), 3000.0);
        assert_eq!(col("ratio").parse::<f64>().unwrap(), 1.5);
        assert_eq!(col("label"), "r");
        assert!(!path.with_extension("csv.tmp").exists());
    }

    #[test]
    fn line_offset_entries_name_the_known_lines() {
        let e = line_offset_entries(&[(6564.6, 0.123_456_789), (9071.1, -1.0)]);
        assert_eq!(e[0].line.as_deref(), Some("H-alpha"));
        assert_eq!(e[0].offset, 0.123457);
        assert_eq!((e[1].line.as_deref(), e[1].lambda_aa), (None, 9071.1));
    }

    #[test]
    fn an_unknown_line_group_is_refused_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let args = CalibrateArgs {
            manifest: dir.path().join("missing.yaml"),
            truth: "zspec".into(),
            output: dir.path().join("cal.yaml"),
            iterations: 1,
            min_snr: 5.0,
            error_floors: false,
            line_offsets: vec!["halpha".into(), "lyman".into()],
            reference_band: None,
            max_galaxies: None,
            residuals: None,
            quiet: true,
        };
        let e = run(&args).err().unwrap().to_string();
        assert!(
            e.contains("--line-offsets") && e.contains("'lyman'") && e.contains("hbeta-oiii"),
            "{e}"
        );
    }
}
