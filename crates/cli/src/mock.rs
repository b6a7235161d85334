//! `popcosmos-cli mock`: a mock catalogue through the full data model: prior draws
//! → SPS + emission lines → zero points → flux uncertainties → Student-t noise → selection.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use popcosmos_api::{HostRng, Survey};
use popcosmos_inference::mock::{MockErrors, NoiseModel, Selection, simulate_selected};
use popcosmos_models::HubConfig;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ErrorSource {
    /// The pop-cosmos diffusion uncertainty model conditioned on each galaxy's magnitudes.
    NoiseModel,
    /// Per-band errors (and missing bands) of the bundled real demo galaxies.
    Templates,
}

#[derive(clap::Args)]
pub struct MockArgs {
    /// Manifest whose survey, SPS settings and prior are used (default: COSMOS with the
    /// Prospector-α prior).
    pub manifest: Option<PathBuf>,
    /// Number of galaxies (after the selection).
    #[arg(short = 'n', long = "n")]
    pub galaxies: usize,
    /// Seed of the draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Student-t ν of the noise (0 = Gaussian).
    #[arg(long, default_value_t = 2.0)]
    pub nu: f64,
    /// Where the flux uncertainties come from.
    #[arg(long, value_enum, default_value = "noise-model")]
    pub errors: ErrorSource,
    /// Multiply the template errors by this before drawing the noise (e.g. 0.2: S/N × 5, for
    /// coverage tests at high signal-to-noise); `--errors templates` only.
    #[arg(long, default_value_t = 1.0)]
    pub error_scale: f64,
    /// Selection `BAND<MAG` on the noisy AB magnitude, e.g. `irac1_cosmos<26`; `none` for no
    /// cut. Default: `irac1_cosmos<26` with the noise model, none with templates.
    #[arg(long)]
    pub select: Option<String>,
    /// Output `.parquet` or `.csv` (nanomaggies; `flux_{band}`, `fluxerr_{band}`,
    /// `true_{param}`, `z_true`, `log10M_true`).
    #[arg(short, long)]
    pub output: PathBuf,
}

fn parse_selection(s: &str, bands: &[String]) -> Result<Option<Selection>> {
    if s == "none" {
        return Ok(None);
    }
    let (band, mag) = s
        .split_once('<')
        .with_context(|| format!("--select '{s}': expected BAND<MAG or none"))?;
    let band = band.trim();
    let idx = bands.iter().position(|b| b == band).with_context(|| {
        format!(
            "--select: no band '{band}' in the survey ({})",
            bands.join(", ")
        )
    })?;
    let max_mag: f64 = mag
        .trim()
        .parse()
        .with_context(|| format!("--select: '{mag}' is not a magnitude"))?;
    Ok(Some(Selection { band: idx, max_mag }))
}

pub fn mock(args: &MockArgs) -> Result<()> {
    let device = candle_core::Device::Cpu;
    let (survey, sps, prior): (Box<dyn Survey>, Box<dyn popcosmos_api::SpsModel>, _) = match &args
        .manifest
    {
        Some(path) => {
            let m = popcosmos_inference::Manifest::load(path)?;
            let p = popcosmos_inference::Pipeline::new(m, &HubConfig::from_env())?;
            (p.survey, Box::new(p.sps), p.prior)
        }
        None => {
            let survey =
                popcosmos_surveys::Cosmos::new(popcosmos_surveys::CalibrationChoice::Leistedt23);
            let lines = popcosmos_sps::LineCalibration::leistedt23();
            let sps = popcosmos_sps::PhotulatorSps::builtin(&lines, &device)?;
            let prior: Box<dyn popcosmos_api::Prior> =
                Box::new(popcosmos_priors::ProspectorAlphaPrior::new());
            (Box::new(survey), Box::new(sps), prior)
        }
    };
    let bands = survey.band_names();
    let default_select = match args.errors {
        ErrorSource::NoiseModel if bands.iter().any(|b| b == "irac1_cosmos") => "irac1_cosmos<26",
        _ => "none",
    };
    let selection = parse_selection(args.select.as_deref().unwrap_or(default_select), &bands)?;
    let templates: Vec<Vec<f64>>;
    let noise;
    let errors = match args.errors {
        ErrorSource::Templates => {
            if !(args.error_scale.is_finite() && args.error_scale > 0.0) {
                bail!(
                    "--error-scale must be finite and > 0, got {}",
                    args.error_scale
                );
            }
            templates = demo_error_templates(&*survey)?
                .into_iter()
                .map(|row| row.into_iter().map(|e| e * args.error_scale).collect())
                .collect();
            MockErrors::Templates(&templates)
        }
        ErrorSource::NoiseModel => {
            if args.error_scale != 1.0 {
                bail!("--error-scale applies to --errors templates only");
            }
            noise = NoiseModel::builtin(&device)?;
            if noise.n_bands() != bands.len() {
                bail!(
                    "--errors noise-model: the bundled uncertainty model covers the 26 COSMOS \
                     bands, survey '{}' has {}; use --errors templates",
                    survey.name(),
                    bands.len()
                );
            }
            MockErrors::NoiseModel(&noise)
        }
    };
    let mut rng = HostRng::seed_from_u64(args.seed);
    let nu = (args.nu > 0.0).then_some(args.nu);
    let (cat, drawn) = simulate_selected(
        &*prior,
        &*sps,
        survey.calibration(),
        errors,
        args.galaxies,
        nu,
        selection,
        &mut rng,
    )?;
    if args.output.extension().and_then(|e| e.to_str()) == Some("csv")
        && matches!(args.errors, ErrorSource::Templates)
    {
        cat.write_csv(&args.output, &bands)?;
    } else {
        cat.write_table(&args.output, &bands)?;
    }
    eprintln!(
        "{} mock galaxies ({} drawn, selection efficiency {:.3}) written to {}",
        args.galaxies,
        drawn,
        args.galaxies as f64 / drawn as f64,
        args.output.display()
    );
    Ok(())
}

/// The real per-band errors (and missing bands) of the bundled demo galaxies.
fn demo_error_templates(survey: &dyn Survey) -> Result<Vec<Vec<f64>>> {
    let input = crate::demo::DemoInput::temporary()?;
    let demo = input.catalogue();
    let spec: popcosmos_catalog::CatalogueSpec = serde_json::from_value(serde_json::json!({
        "path": demo, "units": "mjy", "flux_pattern": "flux_{band}",
        "error_pattern": "fluxerr_{band}", "upper_limits": "negative_error"
    }))?;
    let chunk = popcosmos_catalog::CatalogueReader::open(&spec, &survey.band_names())
        .and_then(|mut r| r.read_all())
        .with_context(|| format!("reading error templates from {}", demo.display()))?;
    let nb = chunk.n_bands;
    Ok((0..chunk.len())
        .map(|i| {
            (0..nb)
                .map(|b| {
                    let k = i * nb + b;
                    if chunk.mask[k] > 0.5 {
                        chunk.flux_err_nmgy[k] as f64
                    } else {
                        f64::NAN
                    }
                })
                .collect()
        })
        .collect())
}
