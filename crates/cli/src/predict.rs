//! `predict`: forward model for physical parameter rows.
//!
//! Input CSV header: `N` (or `log10M`, stellar mass formed, converted with astropy-Planck18
//! μ(max(z, 10⁻³)) as the reference does) and the 15 other parameter names in any order.
//! Output, one row per input row:
//! * `mag_<band>`, `flux_nmgy_<band>`, `asinh_mag_<band>`: photulator continuum (lines are part
//!   of the photulator's training SEDs), no zero points;
//! * unless `--no-lines`: `flux_lines_nmgy_<band>` = continuum + Σ_l α_l F_bl with the
//!   Leistedt+23 line offsets (the model flux the likelihood compares with, before zero
//!   points), and `line_sigma_nmgy_<band>` = Σ_l e^{γ_l}(1 + α_l) F_bl.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use popcosmos_api::{N_PARAMS, PARAM_NAMES, params};
use popcosmos_inference::{LOG10M_RANGE, N_RANGE, predict_photometry};
use popcosmos_models::HubConfig;
use popcosmos_surveys::{CalibrationChoice, SurveySpec};

#[derive(clap::Args)]
pub struct PredictArgs {
    params: PathBuf,
    #[arg(short, long)]
    output: PathBuf,
    /// Leave out the emission-line columns.
    #[arg(long)]
    no_lines: bool,
}

pub fn run(args: &PredictArgs) -> Result<()> {
    predict(&args.params, &args.output, !args.no_lines)
}

fn predict(input: &Path, output: &Path, lines: bool) -> Result<()> {
    let mut rdr = csv::Reader::from_path(input)
        .with_context(|| format!("{}: cannot open", input.display()))?;
    let headers = rdr
        .headers()
        .with_context(|| format!("{}: cannot read the header", input.display()))?
        .clone();
    let find = |name: &str| headers.iter().position(|h| h.trim() == name);
    let mass_col = match (find("N"), find("log10M")) {
        (Some(i), _) => (i, false),
        (None, Some(i)) => (i, true),
        (None, None) => bail!("{}: header needs a column 'N' or 'log10M'", input.display()),
    };
    let mut cols = vec![mass_col.0];
    for name in &PARAM_NAMES[1..] {
        match find(name) {
            Some(i) => cols.push(i),
            None => bail!(
                "{}: missing column '{name}' (expected N or log10M, then {})",
                input.display(),
                PARAM_NAMES[1..].join(", ")
            ),
        }
    }
    let mut rows: Vec<[f64; N_PARAMS]> = Vec::new();
    for (r, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", input.display(), r + 1))?;
        let mut row = [0.0f64; N_PARAMS];
        for (p, &c) in cols.iter().enumerate() {
            let cell = rec.get(c).unwrap_or("").trim();
            let name = if p == 0 {
                headers.get(c).unwrap_or("N")
            } else {
                PARAM_NAMES[p]
            };
            let v: f64 = cell.parse().map_err(|_| {
                anyhow::anyhow!(
                    "{}: row {}, column '{name}': not a number: '{cell}'",
                    input.display(),
                    r + 1
                )
            })?;
            if !v.is_finite() {
                bail!(
                    "{}: row {}, column '{name}': value must be finite",
                    input.display(),
                    r + 1
                );
            }
            if p == 0 {
                let (lo, hi) = if mass_col.1 { LOG10M_RANGE } else { N_RANGE };
                if !(lo..=hi).contains(&v) {
                    bail!(
                        "{}: row {}, column '{name}': {cell} is outside the accepted range [{lo}, {hi}]",
                        input.display(),
                        r + 1,
                    );
                }
            }
            if p > 0 && !(params::LOWER[p]..=params::UPPER[p]).contains(&v) {
                bail!(
                    "{}: row {}, column '{name}': {v} is outside the emulators' range [{}, {}]",
                    input.display(),
                    r + 1,
                    params::LOWER[p],
                    params::UPPER[p]
                );
            }
            row[p] = v;
        }
        rows.push(row);
    }
    let n = rows.len();
    if n == 0 {
        bail!("{}: no parameter rows", input.display());
    }
    // The checked rows go through the library's forward model (the one the Python package
    // uses), on the COSMOS bands with the Leistedt+23 line terms.
    let mass_name = if mass_col.1 { "log10M" } else { "N" };
    let columns: Vec<(String, Vec<f64>)> = (0..N_PARAMS)
        .map(|p| {
            let name = if p == 0 { mass_name } else { PARAM_NAMES[p] };
            (name.to_string(), rows.iter().map(|r| r[p]).collect())
        })
        .collect();
    let mut survey = SurveySpec::named("cosmos");
    survey.calibration = Some(CalibrationChoice::Leistedt23);
    let hub = HubConfig::from_env();
    let blocks = predict_photometry(&input.display().to_string(), &columns, &survey, lines, &hub)?;
    let mut w = csv::Writer::from_path(output)
        .with_context(|| format!("{}: cannot create", output.display()))?;
    w.write_record(blocks.iter().map(|(name, _)| name))?;
    for r in 0..n {
        // The values are f32 model outputs widened exactly to f64, so they print as before.
        w.write_record(blocks.iter().map(|(_, v)| format!("{:.7e}", v[r])))?;
    }
    w.flush()?;
    eprintln!("{n} rows → {}", output.display());
    Ok(())
}
