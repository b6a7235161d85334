//! Set-up shared by the diagnostic examples: the pipeline of the manifest named on the
//! command line, the first batch of its catalogue and a seeded initialisation library.

use popcosmos_api::{HostRng, Observations, Result};
use popcosmos_catalog::{CatalogueReader, ObservedChunk};
use popcosmos_inference::{InitLibrary, Manifest, Pipeline};

/// The pipeline of the manifest at the first command-line argument.
pub fn pipeline() -> Result<Pipeline> {
    let path = std::env::args().nth(1).unwrap();
    let manifest = Manifest::load(std::path::Path::new(&path))?;
    Pipeline::new(manifest, &popcosmos_models::HubConfig::from_env())
}

/// The first `rows` galaxies of `p`'s catalogue and their observations on `p`'s device.
pub fn first_chunk(p: &Pipeline, rows: usize) -> Result<(ObservedChunk, Observations)> {
    let mut reader = CatalogueReader::open(&p.manifest.catalogue, &p.survey.band_names()).unwrap();
    let chunk = reader.next_chunk(rows).unwrap().unwrap();
    let obs = chunk.to_observations(&p.device)?;
    Ok((chunk, obs))
}

/// An initialisation library of `n` draws of `p`'s prior (part from the uniform prior), in
/// batches of 8192 rows, and the generator (seed 7) that drew it, for the rest of the run.
pub fn library(p: &Pipeline, n: usize) -> Result<(InitLibrary, HostRng)> {
    let mut rng = HostRng::seed_from_u64(7);
    let lib = InitLibrary::build(
        p.prior.as_ref(),
        Some(&popcosmos_priors::UniformPrior::new()),
        &p.sps,
        n,
        8192,
        &mut rng,
    )?;
    Ok((lib, rng))
}
