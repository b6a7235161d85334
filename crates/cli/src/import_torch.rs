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
    Ok(())
}
