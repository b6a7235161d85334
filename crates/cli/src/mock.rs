//! `popcosmos-cli mock` (hidden): a mock catalogue drawn from the Prospector-α prior through
//! the full data model, for tests and scale-out rehearsals (`scripts/slurm-integration.sh`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use popcosmos_api::{HostRng, Survey};

#[derive(clap::Args)]
pub struct MockArgs {
    /// Number of galaxies.
    #[arg(short = 'n', long)]
    pub galaxies: usize,
    /// Seed of the draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Student-t ν of the noise (0 = Gaussian).
    #[arg(long, default_value_t = 2.0)]
    pub nu: f64,
    /// CSV to write (nanomaggies; `flux_{band}`, `fluxerr_{band}`, `true_{param}`).
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn mock(args: &MockArgs) -> Result<()> {
    let survey = popcosmos_surveys::Cosmos::new(popcosmos_surveys::CalibrationChoice::Leistedt23);
    let device = candle_core::Device::Cpu;
    let sps = popcosmos_sps::CosmosSps::builtin(survey.calibration(), &device)?;
    let prior = popcosmos_priors::ProspectorAlphaPrior::new();
    // Error templates: the real per-band errors (and missing bands) of the demo galaxies.
    let demo = crate::repo_root().join("examples/data/cosmos2020_demo.csv");
    let spec: popcosmos_catalog::CatalogueSpec = serde_json::from_value(serde_json::json!({
        "path": demo, "units": "mjy", "flux_pattern": "flux_{band}",
        "error_pattern": "fluxerr_{band}", "upper_limits": "negative_error"
    }))?;
    let chunk = popcosmos_catalog::CatalogueReader::open(&spec, &survey.band_names())
        .and_then(|mut r| r.read_all())
        .with_context(|| format!("reading error templates from {}", demo.display()))?;
    let nb = chunk.n_bands;
    let templates: Vec<Vec<f64>> = (0..chunk.len())
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
        .collect();
    let mut rng = HostRng::seed_from_u64(args.seed);
    let nu = (args.nu > 0.0).then_some(args.nu);
    let cat = popcosmos_inference::mock::simulate(
        &prior,
        &sps,
        survey.calibration(),
        &templates,
        args.galaxies,
        nu,
        &mut rng,
    )?;
    cat.write_csv(&args.output, &survey.band_names())?;
    eprintln!(
        "{} mock galaxies written to {}",
        args.galaxies,
        args.output.display()
    );
    Ok(())
}
