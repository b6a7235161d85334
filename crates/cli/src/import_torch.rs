//! `popcosmos-cli import-torch`: convert whole-module PyTorch `.pt` checkpoints (a flowfusion
//! diffusion model, or one speculator Photulator per band) into a safetensors file.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use popcosmos_torch_import::{
    ImportedFile, ModelKind, detect_kind, import_diffusion, import_photulators,
};

/// Which importer to use.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportKind {
    /// Detect from the first file's pickled classes.
    Auto,
    /// flowfusion PopulationModelDiffusion[Conditional] (also wrapped, e.g. pop_cosmos NoiseModel).
    Diffusion,
    /// speculator Photulator files, one per band, stacked in the order given.
    Photulator,
}

#[derive(clap::Args, Debug)]
pub struct ImportTorchArgs {
    /// One `.pt` file (diffusion model), or several Photulator `.pt` files in band order.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The safetensors file to write (atomically).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value_t = ImportKind::Auto)]
    pub kind: ImportKind,
}

pub fn run(args: &ImportTorchArgs) -> Result<()> {
    let Some(first) = args.inputs.first() else {
        bail!("no input files given");
    };
    let kind = match args.kind {
        ImportKind::Diffusion => ModelKind::Diffusion,
        ImportKind::Photulator => ModelKind::Photulator,
        ImportKind::Auto => detect_kind(first)?,
    };
    let imported: ImportedFile = match kind {
        ModelKind::Diffusion => {
            if args.inputs.len() != 1 {
                bail!(
                    "a diffusion model is one .pt file, got {} (several files are for photulators)",
                    args.inputs.len()
                );
            }
            import_diffusion(first)?
        }
        ModelKind::Photulator => import_photulators(&args.inputs)?,
    };
    imported
        .write(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;

    println!(
        "wrote {} ({} tensors, format {})",
        args.output.display(),
        imported.tensors.len(),
        imported.format().unwrap_or("?")
    );
    for key in ["config", "bands", "solver", "source_class"] {
        if let Some(v) = imported.metadata.get(key) {
            println!("  {key}: {v}");
        }
    }
    let sources: Vec<String> = args
        .inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let card = match kind {
        ModelKind::Diffusion => {
            let model = popcosmos_priors::diffusion::DiffusionModel::load(
                &args.output,
                &candle_core::Device::Cpu,
            )?;
            crate::prior_train::write_card(
                &model,
                &args.output,
                &format!(
                    "Diffusion model imported from {} ({})",
                    sources[0],
                    imported
                        .metadata
                        .get("source_class")
                        .map_or("?", |s| s.as_str())
                ),
                &format!("popcosmos-cli import-torch {}", sources.join(" ")),
            )?
        }
        ModelKind::Photulator => photulator_card(&imported, &args.output, &sources)?,
    };
    println!(
        "wrote {} (manifests can now refer to the weights by path)",
        card.display()
    );
    Ok(())
}

/// A card for an imported photulator stack: the bundled COSMOS card as template (parameter
/// names and bounds, activation), with this file's bands, size and checksum.
fn photulator_card(
    imported: &ImportedFile,
    weights: &std::path::Path,
    sources: &[String],
) -> Result<PathBuf> {
    let template = popcosmos_models::builtin("photulator_cosmos26")?;
    let template =
        popcosmos_models::ModelCard::from_bytes(template.card_text.as_bytes(), template.card_file)?;
    let bands: Vec<String> = serde_json::from_str(
        imported
            .metadata
            .get("bands")
            .context("imported photulators carry no `bands` metadata")?,
    )?;
    let card = popcosmos_models::ModelCard {
        description: format!(
            "Photulator stack ({} bands) imported from .pt files",
            bands.len()
        ),
        parameters: template.parameters,
        bands,
        units: template.units,
        provenance: popcosmos_models::Provenance {
            converted_from: Some(sources.join(", ")),
            notes: Some("popcosmos-cli import-torch".into()),
            ..template.provenance
        },
        citations: template.citations,
        license: template.license,
        ..popcosmos_models::ModelCard::for_weights(weights, template.architecture)?
    };
    Ok(card.write_beside(weights)?)
}
