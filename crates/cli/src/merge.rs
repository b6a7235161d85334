//! `popcosmos-cli merge OUTDIR`: check and combine the shard folders of a sharded run.

use std::path::Path;

use anyhow::{Context, Result};

pub fn merge(dir: &Path) -> Result<()> {
    let s = popcosmos_inference::shard::merge_shards(dir)
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
