//! `train-emulator`: per-band photulators for any filter set, with the Speculator
//! Prospector-α spectrum emulator as teacher (issue #6 item 2; docs/emulators.md).
//!
//! Steps: filter curves from `--filters DIR` (every `*.txt`/`*.dat`/`*.res` file, bands in
//! increasing pivot wavelength unless `--bands` fixes the order) → θ draws (Prospector-α prior,
//! widened: z ~ U(0, z_max), √τ₂ ~ U(0, 2)) → teacher magnitudes from
//! [`popcosmos_sps::spectrum::SpectrumPhotometry`] → [`popcosmos_sps::train`] → weights in the
//! COSMOS photulator layout + JSON sidecar + model card, reloaded through
//! [`popcosmos_sps::Photulator`] for the held-out accuracy table.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use popcosmos_api::filters::FilterCurve;
use popcosmos_api::{HostRng, N_PARAMS};
use popcosmos_priors::prospector::ProspectorAlphaPrior;
use popcosmos_sps::Photulator;
use popcosmos_sps::photulator::theta_to_photulator_input;
use popcosmos_sps::spectrum::SpectrumPhotometry;
use popcosmos_sps::train::{TrainOptions, TrainedPhotulators, band_stats};
use rand::Rng;

#[derive(clap::Args)]
pub struct TrainEmulatorArgs {
    /// Directory of filter curves (two columns: wavelength Å, photon-counting throughput).
    #[arg(long)]
    pub filters: PathBuf,
    /// Band order (file stems, comma separated); default: all files by pivot wavelength.
    #[arg(long, value_delimiter = ',')]
    pub bands: Option<Vec<String>>,
    /// Output weights (`.safetensors`); `.json` sidecar and `.card.yaml` are written next to it.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Training draws.
    #[arg(long, default_value_t = 40_000)]
    pub train: usize,
    /// Held-out draws.
    #[arg(long, default_value_t = 2_000)]
    pub heldout: usize,
    #[arg(long, default_value_t = 20_000)]
    pub steps: usize,
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 2e-5)]
    pub lr_end: f64,
    /// Hidden widths (COSMOS photulators: 128,128,128,128).
    #[arg(long, value_delimiter = ',', default_value = "128,128,128,128")]
    pub hidden: Vec<usize>,
    /// Upper end of the training redshift range (uniform in z).
    #[arg(long, default_value_t = 6.0)]
    pub z_max: f64,
    /// Teacher magnitudes fainter than this (bands beyond the Lyman break) are capped.
    #[arg(long, default_value_t = 45.0)]
    pub mag_cap: f64,
    /// Asinh softening f_b stored for every band, nanomaggies.
    #[arg(long, default_value_t = 0.003)]
    pub softening_nmgy: f32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Evaluate the held-out set every this many steps.
    #[arg(long, default_value_t = 1000)]
    pub eval_every: usize,
    /// Model-card description.
    #[arg(long)]
    pub description: Option<String>,
}

/// Read every filter curve in `dir`, ordered by `bands` or by pivot wavelength.
pub fn read_filter_dir(dir: &Path, bands: Option<&[String]>) -> Result<Vec<FilterCurve>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("--filters {}", dir.display()))?;
    let mut curves = Vec::new();
    for e in entries {
        let path = e?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if matches!(ext, "txt" | "dat" | "res") {
            curves.push(FilterCurve::from_path(&path)?);
        }
    }
    if curves.is_empty() {
        bail!(
            "--filters {}: no filter curves (*.txt, *.dat, *.res) found",
            dir.display()
        );
    }
    match bands {
        Some(order) => order
            .iter()
            .map(|b| {
                curves
                    .iter()
                    .find(|c| &c.name == b)
                    .cloned()
                    .with_context(|| format!("--bands: no filter curve '{b}' in {}", dir.display()))
            })
            .collect(),
        None => {
            curves.sort_by(|a, b| a.pivot_wavelength_aa().total_cmp(&b.pivot_wavelength_aa()));
            Ok(curves)
        }
    }
}

/// Training draws: Prospector-α prior θ with z ~ U(0, z_max) and √τ₂ ~ U(0, 2).
pub fn training_draws(n: usize, z_max: f64, seed: u64) -> Vec<[f64; N_PARAMS]> {
    let mut rows = ProspectorAlphaPrior::new().sample_theta(n, seed);
    let mut rng = HostRng::seed_from_u64(seed ^ 0x5eed_7a11);
    for r in &mut rows {
        r[popcosmos_api::params::IDX_Z] = z_max * rng.inner().random::<f64>();
        r[popcosmos_api::params::IDX_DUST2] = (2.0 * rng.inner().random::<f64>()).powi(2);
    }
    rows
}

fn theta_tensor(rows: &[[f64; N_PARAMS]], device: &Device) -> Result<Tensor> {
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    Ok(Tensor::from_vec(flat, (rows.len(), N_PARAMS), device)?)
}

/// Host rows (one `Vec` per draw).
type Rows = Vec<Vec<f32>>;

/// Photulator inputs and teacher magnitudes (capped) for `rows`.
fn teacher(
    spec: &SpectrumPhotometry,
    rows: &[[f64; N_PARAMS]],
    mag_cap: f64,
    device: &Device,
    label: &str,
) -> Result<(Rows, Rows)> {
    let (mut x, mut y) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    let t0 = std::time::Instant::now();
    for (k, chunk) in rows.chunks(2048).enumerate() {
        let th = theta_tensor(chunk, device)?;
        let m = spec.absolute_magnitudes(&th)?.to_vec2::<f32>()?;
        y.extend(
            m.into_iter()
                .map(|r| r.into_iter().map(|v| v.min(mag_cap as f32)).collect()),
        );
        x.extend(theta_to_photulator_input(&th)?.to_vec2::<f32>()?);
        eprintln!(
            "teacher {label}: {}/{} draws ({:.0} s)",
            ((k + 1) * 2048).min(rows.len()),
            rows.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok((x, y))
}

pub fn train_emulator(args: &TrainEmulatorArgs) -> Result<()> {
    let device = Device::Cpu;
    let filters = read_filter_dir(&args.filters, args.bands.as_deref())?;
    let names: Vec<String> = filters.iter().map(|f| f.name.clone()).collect();
    eprintln!("bands: {}", names.join(", "));
    let spec = SpectrumPhotometry::builtin(&filters, &device)?;
    let rows = training_draws(args.train + args.heldout, args.z_max, args.seed);
    let (train_rows, held_rows) = rows.split_at(args.train);
    let (xt, yt) = teacher(&spec, train_rows, args.mag_cap, &device, "train")?;
    let (xh, yh) = teacher(&spec, held_rows, args.mag_cap, &device, "held-out")?;
    let opts = TrainOptions {
        hidden: args.hidden.clone(),
        steps: args.steps,
        batch_size: args.batch,
        lr_start: args.lr,
        lr_end: args.lr_end,
        seed: args.seed,
        eval_every: args.eval_every,
    };
    let t0 = std::time::Instant::now();
    let model = TrainedPhotulators::train(
        names.clone(),
        &xt,
        &yt,
        (&xh, &yh),
        &opts,
        &device,
        &mut |p| {
            let rms = p.heldout_rms_mag.clone().unwrap_or_default();
            let worst = rms.iter().fold(0.0f64, |a, &b| a.max(b));
            let median = {
                let mut v = rms.clone();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
            };
            eprintln!(
                "step {:>6}/{}  lr {:.2e}  batch loss {:.3e}  held-out RMS median {:.4} worst {:.4} mag  ({:.0} s)",
                p.step,
                opts.steps,
                p.learning_rate,
                p.batch_loss,
                median,
                worst,
                t0.elapsed().as_secs_f64()
            );
        },
    )?;
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let sidecar = serde_json::json!({
        "model": "photulator set trained by popcosmos-cli train-emulator (teacher: Speculator Prospector-alpha spectrum emulator + Madau95 IGM)",
        "activation": "a(y) = (beta + (1 - beta) * sigmoid(alpha * y)) * y after every layer including the output layer",
        "weight_layout": "[out_features, in_features]",
        "training": {
            "train_draws": args.train, "heldout_draws": args.heldout, "steps": args.steps,
            "batch": args.batch, "lr": [args.lr, args.lr_end], "seed": args.seed,
            "z_range": [0.0, args.z_max], "mag_cap": args.mag_cap,
            "draws": "Prospector-alpha prior, z ~ U(0, z_max), sqrt(dust2) ~ U(0, 2)"
        },
        "filters": filters.iter().map(|f| serde_json::json!({"name": f.name, "pivot_aa": f.pivot_wavelength_aa()})).collect::<Vec<_>>(),
    });
    let f_b = vec![args.softening_nmgy; names.len()];
    model.save(&args.output, &f_b, sidecar)?;
    // Reload through the production loader: the table is what users will get.
    let phot = Photulator::load(&args.output, &device)?;
    let pred = phot
        .absolute_magnitudes(
            &theta_tensor(held_rows, &device)
                .and_then(|t| theta_to_photulator_input(&t).map_err(Into::into))?,
        )?
        .to_vec2::<f32>()?;
    let stats = band_stats(&pred, &yh);
    let card = write_photulator_card(&args.output, &names, args)?;
    println!(
        "wrote {}, {} and {}\n",
        args.output.display(),
        args.output.with_extension("json").display(),
        card.display()
    );
    println!(
        "held-out accuracy vs the teacher ({} draws, magnitudes):\n",
        held_rows.len()
    );
    println!("| band | pivot (Å) | mean Δ | RMS | max abs Δ |\n|---|---|---|---|---|");
    for ((f, s), n) in filters.iter().zip(&stats).zip(&names) {
        println!(
            "| {n} | {:.0} | {:+.4} | {:.4} | {:.3} |",
            f.pivot_wavelength_aa(),
            s.mean,
            s.rms,
            s.max_abs
        );
    }
    Ok(())
}

/// Model card for a trained photulator set (parameters as the COSMOS card, z up to z_max).
fn write_photulator_card(
    weights: &Path,
    bands: &[String],
    args: &TrainEmulatorArgs,
) -> Result<PathBuf> {
    let cosmos = popcosmos_models::builtin::builtin("photulator_cosmos26")?;
    let mut parameters =
        popcosmos_models::ModelCard::from_bytes(cosmos.card_text.as_bytes(), cosmos.card_file)?
            .parameters;
    if let Some(z) = parameters.iter_mut().find(|p| p.name == "z") {
        z.max = Some(args.z_max);
    }
    let bytes = std::fs::read(weights).with_context(|| weights.display().to_string())?;
    let file = weights
        .file_name()
        .and_then(|f| f.to_str())
        .context("output file name")?
        .to_string();
    let card = popcosmos_models::ModelCard {
        schema: popcosmos_models::card::CARD_SCHEMA,
        name: file.trim_end_matches(".safetensors").to_string(),
        description: args.description.clone().unwrap_or_else(|| {
            format!(
                "Photulator set for {} bands trained by popcosmos-cli train-emulator, theta15 -> absolute AB magnitude per solar mass formed",
                bands.len()
            )
        }),
        file,
        format: popcosmos_models::card::WeightFormat::Safetensors,
        size_bytes: bytes.len() as u64,
        sha256: popcosmos_models::verify::sha256_hex(&bytes),
        architecture: popcosmos_models::card::Architecture {
            kind: "photulator".into(),
            layers: {
                let mut l = vec![15];
                l.extend(&args.hidden);
                l.push(1);
                l
            },
            activation: "a(y) = (beta + (1 - beta) * sigmoid(alpha * y)) * y, elementwise with per-unit alpha, beta; applied after EVERY layer including the last (output) layer".into(),
        },
        parameters,
        bands: bands.to_vec(),
        units: popcosmos_models::card::Units {
            input: "theta15 = physical theta without N, dust2 replaced by sqrt(dust2) (popcosmos-sps theta_to_photulator_input); gaslog10U is accepted but the teacher ignores it".into(),
            output: "absolute AB magnitude per solar mass formed (m = M + N), one column per band in the order of `bands`".into(),
        },
        provenance: popcosmos_models::card::Provenance {
            source: "popcosmos-cli train-emulator".into(),
            commit: None,
            code: Some("crates/sps/src/train.rs, crates/sps/src/spectrum".into()),
            converted_from: None,
            notes: Some(format!(
                "teacher: Speculator Prospector-alpha spectrum emulators (Alsing+20, justinalsing/speculator@3c93274, MIT) + Madau (1995) IGM; {} training / {} held-out draws, {} steps, seed {}; see docs/emulators.md",
                args.train, args.heldout, args.steps, args.seed
            )),
        },
        citations: vec![
            "Alsing J. et al. 2020, ApJS 249, 5 (SPECULATOR), arXiv:1911.11778".into(),
            "Madau P. 1995, ApJ 441, 18".into(),
        ],
        license: "MIT".into(),
    };
    let path = popcosmos_models::card::card_path_for(weights);
    std::fs::write(&path, card.to_yaml()).with_context(|| path.display().to_string())?;
    Ok(path)
}
