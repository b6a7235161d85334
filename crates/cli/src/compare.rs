//! `compare`: how reproducible a photo-z run is. Two runs over the same galaxies (two seeds,
//! two start-library sizes, two samplers) side by side: their median redshifts, their ln Z
//! and their p(z), with the galaxies whose p(z) is broad or multi-peaked counted apart,
//! since a median there moves with small changes of the modes' weights.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use popcosmos_api::stats::quantiles;
use popcosmos_catalog::{
    Agreement, OUTLIER_THRESHOLD, ResultTable, match_by_id, median_agreement, pz_odds,
    read_results, total_variation,
};
use serde::Serialize;

use crate::evaluate::print_quietly;

#[derive(clap::Args)]
pub struct CompareArgs {
    /// The first run's results folder (or a .parquet/.csv results file).
    pub first: PathBuf,
    /// The second run's results; galaxies are matched by id.
    pub second: PathBuf,
    /// Write the numbers as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A p(z) with less than this share of its mass within 0.15 (1 + z_50) of its median,
    /// in either run, counts as broad or multi-peaked (BPZ's ODDS at the outlier width).
    #[arg(long, default_value_t = 0.95)]
    pub odds: f64,
}

/// What `compare` measures (its JSON).
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// Galaxies in both runs.
    pub matched: usize,
    /// Galaxies in one run only.
    pub only_first: usize,
    pub only_second: usize,
    /// The median redshifts (`z_p50`) of all matched galaxies.
    pub median_z: Agreement,
    /// Median and 90th percentile of |Δ ln Z| where both runs report `log_evidence`.
    pub abs_dlog_evidence: Option<[f64; 2]>,
    /// p(z) comparison, when both runs wrote the same `pz_<z>` columns.
    pub pz: Option<PzComparison>,
}

/// The p(z) part of a [`Comparison`].
#[derive(Debug, Serialize)]
pub struct PzComparison {
    /// Median and 90th percentile of the total-variation distance between the runs' p(z).
    pub total_variation: [f64; 2],
    /// The ODDS threshold used for the split.
    pub odds_threshold: f64,
    /// Galaxies whose p(z) is peaked (ODDS ≥ threshold) in both runs.
    pub peaked: Agreement,
    /// The others: broad or multi-peaked in at least one run.
    pub broad: Agreement,
}

/// The `pz_<z>` columns of a table with their bin centres, in grid order.
fn pz_columns(t: &ResultTable) -> Vec<(String, f64)> {
    let mut cols: Vec<(String, f64)> = t
        .columns
        .keys()
        .filter_map(|k| {
            let z: f64 = k.strip_prefix("pz_")?.parse().ok()?;
            Some((k.clone(), z))
        })
        .collect();
    cols.sort_by(|a, b| a.1.total_cmp(&b.1));
    cols
}

fn column<'a>(t: &'a ResultTable, path: &Path, name: &str) -> Result<&'a [f64]> {
    t.column(name)
        .with_context(|| format!("{}: no column '{name}'", path.display()))
}

/// Compare two results tables (see the module docs).
pub fn compare_tables(
    a: &ResultTable,
    a_path: &Path,
    b: &ResultTable,
    b_path: &Path,
    odds_threshold: f64,
) -> Result<Comparison> {
    let pairs = match_by_id(&a.ids, &b.ids);
    if pairs.is_empty() {
        bail!(
            "no galaxy id of {} is in {}: compare needs two runs over the same galaxies",
            a_path.display(),
            b_path.display()
        );
    }
    let (za, zb) = (column(a, a_path, "z_p50")?, column(b, b_path, "z_p50")?);
    let pick = |v: &[f64], first: bool| -> Vec<f64> {
        pairs
            .iter()
            .map(|&(i, j)| if first { v[i] } else { v[j] })
            .collect()
    };
    let (za, zb) = (pick(za, true), pick(zb, false));
    let abs_dlog_evidence = match (a.column("log_evidence"), b.column("log_evidence")) {
        (Some(la), Some(lb)) => {
            let d: Vec<f64> = pick(la, true)
                .iter()
                .zip(pick(lb, false))
                .map(|(x, y)| (x - y).abs())
                .filter(|d| d.is_finite())
                .collect();
            (!d.is_empty()).then(|| quantiles(&d, [0.5, 0.9]))
        }
        _ => None,
    };
    let (ga, gb) = (pz_columns(a), pz_columns(b));
    let same_grid = !ga.is_empty() && ga.iter().map(|c| &c.0).eq(gb.iter().map(|c| &c.0));
    let pz = if same_grid {
        let grid: Vec<f64> = ga.iter().map(|c| c.1).collect();
        let rows = |t: &ResultTable, first: bool| -> Vec<Vec<f64>> {
            let cols: Vec<&[f64]> = ga.iter().map(|c| t.column(&c.0).unwrap()).collect();
            pairs
                .iter()
                .map(|&(i, j)| {
                    let r = if first { i } else { j };
                    cols.iter().map(|c| c[r]).collect()
                })
                .collect()
        };
        let (pa, pb) = (rows(a, true), rows(b, false));
        let tv: Vec<f64> = pa
            .iter()
            .zip(&pb)
            .map(|(p, q)| total_variation(p, q))
            .collect();
        // Peaked in both runs: each p(z) keeps the threshold's share within the outlier
        // width of its own median.
        let peaked: Vec<bool> = (0..pairs.len())
            .map(|k| {
                let odds = |p: &[f64], z: f64| pz_odds(p, &grid, z, OUTLIER_THRESHOLD * (1.0 + z));
                odds(&pa[k], za[k]) >= odds_threshold && odds(&pb[k], zb[k]) >= odds_threshold
            })
            .collect();
        let split = |want: bool| {
            let keep = |v: &[f64]| -> Vec<f64> {
                v.iter()
                    .zip(&peaked)
                    .filter(|(_, p)| **p == want)
                    .map(|(x, _)| *x)
                    .collect()
            };
            median_agreement(&keep(&za), &keep(&zb))
        };
        Some(PzComparison {
            total_variation: quantiles(&tv, [0.5, 0.9]),
            odds_threshold,
            peaked: split(true),
            broad: split(false),
        })
    } else {
        None
    };
    Ok(Comparison {
        matched: pairs.len(),
        only_first: a.len() - pairs.len(),
        only_second: b.len() - pairs.len(),
        median_z: median_agreement(&za, &zb),
        abs_dlog_evidence,
        pz,
    })
}

fn read(path: &Path) -> Result<ResultTable> {
    if !path.exists() {
        bail!(
            "{}: no such results folder or file (expected a run's output folder or a \
             .parquet/.csv results file)",
            path.display()
        );
    }
    let t = read_results(path).with_context(|| format!("reading results {}", path.display()))?;
    if t.is_empty() {
        bail!("{}: no results", path.display());
    }
    Ok(t)
}

fn agreement_rows(out: &mut String, label: &str, m: &Agreement) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "| {label}: galaxies | {} |\n| {label}: median z within 0.01 (1+z) | {:.1}% |\n\
         | {label}: differ by more than 0.15 (1+z) | {:.1}% |\n\
         | {label}: median / 90th percentile |Δz|/(1+z) | {:.4} / {:.4} |",
        m.n,
        100.0 * m.within_tolerance,
        100.0 * m.beyond_outlier,
        m.median_abs_dz,
        m.p90_abs_dz
    );
}

pub fn compare(args: &CompareArgs) -> Result<()> {
    if !(args.odds > 0.0 && args.odds <= 1.0) {
        bail!("--odds {}: must be in (0, 1]", args.odds);
    }
    let a = read(&args.first)?;
    let b = read(&args.second)?;
    let c = compare_tables(&a, &args.first, &b, &args.second, args.odds)?;
    let mut out = String::from("| metric | value |\n|---|---|\n");
    {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "| galaxies in both / first only / second only | {} / {} / {} |",
            c.matched, c.only_first, c.only_second
        );
        agreement_rows(&mut out, "all", &c.median_z);
        if let Some([m, p90]) = c.abs_dlog_evidence {
            let _ = writeln!(
                out,
                "| median / 90th percentile |Δ ln Z| | {m:.2} / {p90:.2} |"
            );
        }
        match &c.pz {
            Some(pz) => {
                let [m, p90] = pz.total_variation;
                let _ = writeln!(
                    out,
                    "| median / 90th percentile p(z) total-variation distance | {m:.3} / {p90:.3} |"
                );
                agreement_rows(
                    &mut out,
                    &format!("p(z) peaked (ODDS ≥ {})", pz.odds_threshold),
                    &pz.peaked,
                );
                agreement_rows(&mut out, "p(z) broad or multi-peaked", &pz.broad);
            }
            None => {
                let _ = writeln!(out, "| p(z) | not compared (no common pz_ columns) |");
            }
        }
    }
    print_quietly(&out)?;
    if let Some(j) = &args.json {
        std::fs::write(j, serde_json::to_string_pretty(&c)?)
            .with_context(|| j.display().to_string())?;
    }
    Ok(())
}
