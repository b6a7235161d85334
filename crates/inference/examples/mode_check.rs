//! Diagnostic: is the wrong-redshift answer the posterior's or the sampler's?
//! `cargo run --release -p popcosmos-inference --example mode_check -- MANIFEST [STEPS]`
//! For each galaxy of the first batch of a manifest's catalogue (with a `zspec` truth column),
//! run the ensemble sampler twice: unconstrained, and with a narrow Gaussian constraint on z
//! around zspec; then compare the *unconstrained* ln posterior at the best point of each.
use candle_core::{IndexOp, Tensor};
use popcosmos_api::{LogDensity, Prior, RandomSource, Result, params::IDX_Z, params::phi_to_theta};
use popcosmos_inference::{Manifest, Pipeline, init::InitLibrary};
use popcosmos_models::HubConfig;
use popcosmos_samplers::{RunConfig, sample};

struct ZConstrained<'a> {
    base: &'a dyn Prior,
    zspec: Tensor, // [G]
    width: f64,
}
impl Prior for ZConstrained<'_> {
    fn name(&self) -> &str {
        "zc"
    }
    fn log_prob(&self, phi: &Tensor) -> Result<Tensor> {
        let z = phi_to_theta(phi)?
            .narrow(phi.rank() - 1, IDX_Z, 1)?
            .squeeze(phi.rank() - 1)?;
        let pen = (z.broadcast_sub(&self.zspec)? / self.width)?
            .sqr()?
            .affine(-0.5, 0.0)?;
        Ok((self.base.log_prob(phi)? + pen)?)
    }
    fn sample(
        &self,
        n: usize,
        rng: &mut dyn RandomSource,
        d: &candle_core::Device,
    ) -> Result<Tensor> {
        self.base.sample(n, rng, d)
    }
}

fn main() -> Result<()> {
    popcosmos_api::configure_cpu_threads();
    let path = std::env::args().nth(1).unwrap();
    let steps: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(300);
    let m = Manifest::load(std::path::Path::new(&path))?;
    let p = Pipeline::new(m, &HubConfig::from_env())?;
    let mut reader =
        popcosmos_catalog::CatalogueReader::open(&p.manifest.catalogue, &p.survey.band_names())
            .unwrap();
    let chunk = reader
        .next_chunk(p.manifest.galaxies_per_batch)
        .unwrap()
        .unwrap();
    let zspec: Vec<f32> = chunk.truth["zspec"].iter().map(|&v| v as f32).collect();
    let g = zspec.len();
    let obs = chunk.to_observations(&p.device)?;
    let mut rng = popcosmos_api::random::HostRng::seed_from_u64(7);
    let lib = InitLibrary::build(
        p.prior.as_ref(),
        Some(&popcosmos_priors::UniformPrior::new()),
        &p.sps,
        p.manifest.init.library_size,
        8192,
        &mut rng,
    )?;
    let zs = Tensor::from_vec(zspec.clone(), g, &p.device)?;
    let zc = ZConstrained {
        base: p.prior.as_ref(),
        zspec: zs,
        width: 0.02,
    };
    let post_u = p.posterior(&obs);
    let mut post_c = p.posterior(&obs);
    post_c.prior = &zc;
    let config = RunConfig {
        n_steps: steps,
        burn_in: steps / 2,
        thin: 1,
    };
    let kernel = popcosmos_samplers::EnsembleSampler::stretch();
    let w = p.manifest.sampler.walkers;
    let mut best = vec![];
    for post in [&post_u, &post_c] {
        // Rank library draws by this posterior (constraint included) and start at the best.
        let init = {
            let ll = post.log_density(
                &lib.phi
                    .unsqueeze(1)?
                    .broadcast_as((lib.len(), g, 16))?
                    .contiguous()?,
            )?; // [draws, G]
            let ll = ll
                .eq(&ll)?
                .where_cond(&ll, &ll.ones_like()?.affine(0.0, -1e30)?)?;
            let idx = ll.t()?.contiguous()?.argmax_keepdim(1)?.squeeze(1)?; // [G]
            let start = lib
                .phi
                .index_select(&idx, 0)?
                .unsqueeze(0)?
                .broadcast_as((w, g, 16))?;
            let noise = rng.normal(&candle_core::Shape::from((w, g, 16)), &p.device)?;
            (start + (noise * 0.05)?)?
        };
        let chain = sample(&kernel, init, post, &mut rng, &config, None)?;
        // Best kept sample per galaxy, then its unconstrained ln P.
        let (k, wk) = (chain.kept, chain.walkers);
        let mut pts = vec![0f32; g * 16];
        for gal in 0..g {
            let mut bi = (0, f32::NEG_INFINITY);
            for s in 0..k * wk {
                let lp = chain.log_prob[s * g + gal];
                if lp > bi.1 {
                    bi = (s, lp);
                }
            }
            pts[gal * 16..gal * 16 + 16]
                .copy_from_slice(&chain.samples[(bi.0 * g + gal) * 16..(bi.0 * g + gal) * 16 + 16]);
        }
        let pts = Tensor::from_vec(pts, (1, g, 16), &p.device)?;
        let lp_u = post_u.log_density(&pts)?.i(0)?.to_vec1::<f32>()?;
        let z = phi_to_theta(&pts)?.i((0, .., IDX_Z))?.to_vec1::<f32>()?;
        best.push((lp_u, z));
    }
    let (mut sampler_fail, mut posterior_wrong, mut ok) = (0, 0, 0);
    for (gal, &zt) in zspec.iter().enumerate() {
        let (lu, zu) = (best[0].0[gal], best[0].1[gal]);
        let (lc, zc) = (best[1].0[gal], best[1].1[gal]);
        let outlier = (zu - zt).abs() / (1.0 + zt) > 0.15;
        let tag = if !outlier {
            ok += 1;
            "ok"
        } else if lc > lu + 1.0 {
            sampler_fail += 1;
            "SAMPLER"
        } else {
            posterior_wrong += 1;
            "POSTERIOR"
        };
        println!(
            "{gal:3} zspec {zt:.2} | unc z {zu:.2} lnP {lu:9.2} | con z {zc:.2} lnP {lc:9.2} | {tag}"
        );
    }
    println!(
        "ok {ok}, outlier where constrained mode is higher (sampler) {sampler_fail}, outlier where posterior prefers it {posterior_wrong}"
    );
    Ok(())
}
