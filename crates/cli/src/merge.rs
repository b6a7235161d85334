//! `popcosmos-cli merge OUTDIR`: check and combine the shard folders of a sharded run.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct MergeArgs {
    /// The manifest's output.dir (holding shard-IIIII-of-NNNNN folders).
    dir: PathBuf,
}

pub fn merge(args: &MergeArgs) -> Result<()> {
    let dir = &args.dir;
    let s = popcosmos_inference::merge_shards(dir)
        .with_context(|| format!("merging the shards of {}", dir.display()))?;
    println!(
        "merged {} shards: {} galaxies, each exactly once{} ({} flagged) → {} part file(s) in {}, record {}",
        s.shards,
        s.galaxies,
        if s.checked_against_catalogue {
            ", checked against the catalogue ids"
        } else {
            " (catalogue not readable: checked by row counts)"
        },
        s.galaxies_flagged,
        s.parts.len(),
        dir.display(),
        s.record.display()
    );
    Ok(())
}
