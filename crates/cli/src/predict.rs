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
use popcosmos_api::{Device, N_PARAMS, PARAM_NAMES, SpsModel, Survey, Tensor, params};
use popcosmos_sps::{CosmosSps, photulator};
use popcosmos_surveys::{CalibrationChoice, Cosmos};

/// Accepted `log10M` (stellar mass formed, M☉): from dwarfs to the most massive galaxies,
/// wider than any prior's 7–13.
pub const LOG10M_RANGE: (f64, f64) = (4.0, 15.0);
/// Accepted `N` (magnitudes, μ(z) − 2.5 log10 M): `LOG10M_RANGE` at 0 < z ≤ 6
/// (μ from 28.2 to 49.1) lies inside it.
pub const N_RANGE: (f64, f64) = (-20.0, 60.0);

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
    let mut theta: Vec<f32> = Vec::new();
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
        if mass_col.1 {
            row[0] = popcosmos_sps::derived::n_from_log10_mass(row[0], row[params::IDX_Z]);
        }
        theta.extend(row.iter().map(|v| *v as f32));
    }
    let n = theta.len() / N_PARAMS;
    if n == 0 {
        bail!("{}: no parameter rows", input.display());
    }
    let device = Device::Cpu;
    let survey = Cosmos::new(CalibrationChoice::Leistedt23);
    let sps = CosmosSps::builtin(survey.calibration(), &device)?;
    let theta = Tensor::from_vec(theta, (n, N_PARAMS), &device)?;
    let x = photulator::theta_to_photulator_input(&theta)?;
    let n_param = theta.narrow(1, 0, 1)?.contiguous()?;
    let mag = sps.photulator().magnitudes(&x, &n_param)?;
    let flux = photulator::mag_to_flux_nmgy(&mag)?;
    let soft: Vec<f32> = survey
        .bands()
        .iter()
        .map(|b| b.flux_softening_nmgy as f32)
        .collect();
    let soft = Tensor::from_vec(soft, survey.bands().len(), &device)?;
    let asinh = photulator::flux_to_asinh_mag(&flux, &soft)?;
    let mut blocks = vec![
        ("mag_", mag.to_vec2::<f32>()?),
        ("flux_nmgy_", flux.to_vec2::<f32>()?),
        ("asinh_mag_", asinh.to_vec2::<f32>()?),
    ];
    if lines {
        let m = sps.photometry(&theta)?;
        blocks.push(("flux_lines_nmgy_", m.flux_nmgy.to_vec2::<f32>()?));
        if let Some(s) = m.line_sigma_nmgy {
            blocks.push(("line_sigma_nmgy_", s.to_vec2::<f32>()?));
        }
    }
    let mut w = csv::Writer::from_path(output)
        .with_context(|| format!("{}: cannot create", output.display()))?;
    let mut header = Vec::new();
    for (prefix, _) in &blocks {
        for b in survey.bands() {
            header.push(format!("{prefix}{}", b.name));
        }
    }
    w.write_record(&header)?;
    for r in 0..n {
        let mut rec = Vec::with_capacity(header.len());
        for (_, v) in &blocks {
            rec.extend(v[r].iter().map(|x| format!("{x:.7e}")));
        }
        w.write_record(&rec)?;
    }
    w.flush()?;
    eprintln!("{n} rows → {}", output.display());
    Ok(())
}
