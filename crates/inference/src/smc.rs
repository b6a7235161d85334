//! `sampler: {kind: smc}` and `{kind: library}` for a batch of galaxies.
//!
//! Both start from the run's start library, which for these kinds holds prior draws only, in
//! the sampler's coordinates ψ ([`crate::reparam`]): its model fluxes are computed once per
//! run, so the stage-0 likelihood of every draw for every galaxy of a batch is one broadcast
//! evaluation.
//! * `library`: each galaxy's posterior is the library importance-weighted by its likelihood
//!   (SMC's stage 0 taken straight to β = 1); its ESS says how well the library covers it.
//! * `smc`: [`popcosmos_samplers::Smc`] tempers from the library to β = 1 with MCMC moves in
//!   ψ, galaxy by galaxy, and reports ln Z and its diagnostics.
//!
//! Both write p(z) on a grid as columns `pz_<z>` (density per unit z at bin centre z), from a
//! Gaussian kernel density estimate of the draws' redshifts (Silverman's robust bandwidth,
//! at least one bin).

use popcosmos_api::{
    DType, Error, HostRng, N_PARAMS, Observations, RandomSource, Result, Tensor,
    params::{IDX_Z, LOWER, UPPER, normal_quantile, phi_to_theta},
};
use popcosmos_catalog::{ObservedChunk, ResultTable};
use popcosmos_samplers::{
    Chain, GridChart, Reference, RunConfig, Smc, SmcDiagnostics, SmcStatus, TemperedTarget,
    next_temperature, next_temperature_weighted, systematic_resample,
};

use crate::init::InitLibrary;
use crate::manifest::SamplerKind;
use crate::pipeline::{Pipeline, SamplerReport, result_columns_of};
use crate::posterior::Posterior;
use crate::reparam::SamplingSpace;

/// Sampler columns of SMC and library runs (after `map_log_prob`).
pub const SMC_COLUMNS: [&str; 12] = [
    "acceptance",
    "log_evidence",
    "log_evidence_err",
    "smc_stages",
    "smc_sweeps",
    "smc_ess",
    "smc_unique_fraction",
    "smc_island_rhat",
    "smc_z_spread",
    "smc_importance_ess",
    "smc_rounds",
    "smc_z_se",
];

/// Fewest library draws that must carry a library-mode posterior (its ESS); below it the
/// galaxy is flagged.
pub const MIN_LIBRARY_ESS: f64 = 50.0;

/// Flag an SMC galaxy whose final draws hold fewer distinct particles than this share.
pub const MIN_UNIQUE_FRACTION: f64 = 0.5;

/// Bin centres of the p(z) grid for bin width `step` (none for 0).
pub fn pz_grid(step: f64) -> Vec<f64> {
    if step <= 0.0 {
        return Vec::new();
    }
    let n = (UPPER[IDX_Z] / step).ceil() as usize;
    (0..n).map(|i| (i as f64 + 0.5) * step).collect()
}

/// Column names `pz_<z>` of the grid.
pub fn pz_columns(step: f64) -> Vec<String> {
    pz_grid(step).iter().map(|z| format!("pz_{z:.3}")).collect()
}

/// p(z) at `grid` from draws `z` (Gaussian KDE, normalised on the grid).
pub fn pz_density(z: &[f64], grid: &[f64], step: f64) -> Vec<f64> {
    let mut v: Vec<f64> = z.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() || grid.is_empty() {
        return vec![f64::NAN; grid.len()];
    }
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let q = |p: f64| v[((n - 1.0) * p).round() as usize];
    let iqr = (q(0.75) - q(0.25)) / 1.34;
    let spread = if iqr > 0.0 { sd.min(iqr) } else { sd };
    let h = (0.9 * spread * n.powf(-0.2)).max(step);
    let mut p: Vec<f64> = grid
        .iter()
        .map(|g| {
            v.iter()
                .map(|x| (-0.5 * ((g - x) / h).powi(2)).exp())
                .sum::<f64>()
        })
        .collect();
    let total: f64 = p.iter().sum::<f64>() * step;
    if total > 0.0 {
        p.iter_mut().for_each(|x| *x /= total);
    }
    p
}

/// The posterior in ψ split into ln p (with the Jacobian of ψ → φ) and ln L, for any subset
/// of the batch's galaxies.
struct TemperedPosterior<'a> {
    posterior: &'a Posterior<'a>,
    space: &'a SamplingSpace,
    /// φ_z of the griddy-Gibbs z grid (empty: no z updates).
    z_grid: Vec<f64>,
}

/// φ_z at `points` redshifts uniform in ln(1 + z) over the prior's z range (a hair inside its
/// ends, where φ_z = Φ⁻¹(·) is finite): a grid whose spacing is a fixed fraction of 1 + z,
/// like the photo-z error.
pub fn z_grid_phi(points: usize) -> Vec<f64> {
    let (lo, hi) = (LOWER[IDX_Z], UPPER[IDX_Z]);
    let margin = 1e-3 * (hi - lo);
    let (a, b) = ((1.0 + lo + margin).ln(), (1.0 + hi - margin).ln());
    (0..points)
        .map(|k| {
            let z = (a + (b - a) * k as f64 / (points - 1).max(1) as f64).exp() - 1.0;
            normal_quantile((z - lo) / (hi - lo))
        })
        .collect()
}

fn observation_rows(obs: &Observations, galaxies: &Tensor) -> Result<Observations> {
    Ok(Observations {
        flux_nmgy: obs.flux_nmgy.index_select(galaxies, 0)?,
        flux_err_nmgy: obs.flux_err_nmgy.index_select(galaxies, 0)?,
        mask: obs.mask.index_select(galaxies, 0)?,
    })
}

impl TemperedPosterior<'_> {
    /// (ln p(φ), ln L) of latent positions φ for columns `galaxies`.
    fn in_phi(&self, phi: &Tensor, galaxies: &Tensor) -> Result<(Tensor, Tensor)> {
        let obs = if galaxies.dim(0)? == self.posterior.obs.flux_nmgy.dim(0)? {
            self.posterior.obs.clone()
        } else {
            observation_rows(self.posterior.obs, galaxies)?
        };
        let model = self.posterior.model_photometry(phi)?;
        let ll = self.posterior.likelihood.log_like(&model, &obs)?;
        Ok((self.posterior.prior.log_prob(phi)?, ll))
    }
}

impl TemperedTarget for TemperedPosterior<'_> {
    fn log_prior_and_like(&self, psi: &Tensor, galaxies: &Tensor) -> Result<(Tensor, Tensor)> {
        let (phi, log_j) = self.space.to_phi(psi)?;
        let (lp, ll) = self.in_phi(&phi, galaxies)?;
        Ok(((lp + log_j)?, ll))
    }

    fn grid_chart(&self) -> Option<&dyn GridChart> {
        (!self.z_grid.is_empty()).then_some(self as &dyn GridChart)
    }

    /// ln(1 + z): `sampler.round_tolerance` then reads as Δz/(1 + z), the photo-z scale.
    fn monitor(&self, psi: &Tensor) -> Result<Option<Tensor>> {
        let (phi, _) = self.space.to_phi(psi)?;
        let z = phi_to_theta(&phi)?
            .narrow(phi.rank() - 1, IDX_Z, 1)?
            .squeeze(phi.rank() - 1)?;
        Ok(Some((z + 1.0)?.log()?))
    }
}

/// z moves in the latent φ: there N, the apparent-magnitude normalisation
/// (N = μ(z) − 2.5 log M), stays put while z changes, so the conditional p(z | ·) is set by
/// the colours, as in template fitting, not by the distance dimming at fixed mass.
impl GridChart for TemperedPosterior<'_> {
    fn to_chart(&self, psi: &Tensor) -> Result<(Tensor, Tensor)> {
        self.space.to_phi(psi)
    }

    fn from_chart(&self, phi: &Tensor) -> Result<Tensor> {
        self.space.from_phi(phi)
    }

    fn log_prior_and_like(&self, phi: &Tensor, galaxies: &Tensor) -> Result<(Tensor, Tensor)> {
        self.in_phi(phi, galaxies)
    }

    fn axis(&self) -> usize {
        IDX_Z
    }

    fn grid(&self) -> &[f64] {
        &self.z_grid
    }
}

/// The library in ψ with ln p(ψ), for SMC's stage 0 (computed once per run).
pub struct LibraryInPsi {
    /// The library's draws in the sampling coordinates ψ, `[draws, 16]` f32.
    pub psi: Tensor,
    /// ln p(ψ) = ln p(φ) + ln|∂φ/∂ψ| of each draw, `[draws]`.
    pub log_prior: Tensor,
}

impl LibraryInPsi {
    /// Map `library`'s draws to ψ with its sampling space and add the log-Jacobian to their
    /// ln p(φ).
    pub fn new(library: &InitLibrary) -> Result<Self> {
        let space = &library.sampling_space;
        let psi = space
            .from_phi(&library.phi)?
            .to_dtype(DType::F32)?
            .to_device(library.phi.device())?;
        let (_, log_j) = space.to_phi(&psi)?;
        Ok(Self {
            log_prior: (&library.log_prior + log_j)?,
            psi,
        })
    }
}

impl Pipeline {
    /// Draws from `posterior` with the manifest's SMC or library sampler, started from
    /// `library` (prior draws): the chain in φ (log-densities of the posterior in φ) and the
    /// per-galaxy SMC diagnostics.
    pub fn sample_smc(
        &self,
        posterior: &Posterior<'_>,
        library: &InitLibrary,
        rng: &mut HostRng,
    ) -> Result<(Chain, Vec<SmcDiagnostics>)> {
        let s = &self.manifest.sampler;
        let space = &library.sampling_space;
        let in_psi = library
            .in_psi
            .get_or_init(|| LibraryInPsi::new(library).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Invalid(e.clone()))?;
        let log_like = library.log_like(posterior.likelihood, posterior.obs)?;
        let (chain_psi, diag) = match s.kind {
            SamplerKind::Library => library_posterior(
                in_psi,
                &log_like,
                library.log_weight.as_ref(),
                s.particles,
                rng,
            )?,
            SamplerKind::Smc => {
                let smc = Smc::new(s.smc_config(), self.ensemble_moves(None)?, N_PARAMS)?;
                let target = TemperedPosterior {
                    posterior,
                    space,
                    z_grid: if s.z_gibbs > 0 {
                        z_grid_phi(s.z_grid)
                    } else {
                        Vec::new()
                    },
                };
                smc.run(
                    &Reference {
                        position: &in_psi.psi,
                        log_prior: &in_psi.log_prior,
                        log_like: &log_like,
                        log_weight: library.log_weight.as_ref(),
                    },
                    &target,
                    rng,
                )?
            }
            kind => {
                return Err(Error::config(
                    "sampler.kind",
                    format!("{kind:?} is not an SMC sampler"),
                ));
            }
        };
        Ok((space.chain_to_phi(&chain_psi)?, diag))
    }

    /// One batch with the SMC or library sampler: results rows (with p(z)) and chain rows.
    pub(crate) fn process_batch_smc(
        &self,
        chunk: &ObservedChunk,
        posterior: &Posterior<'_>,
        library: &InitLibrary,
        rng: &mut HostRng,
    ) -> Result<(ResultTable, Option<ResultTable>)> {
        let m = &self.manifest;
        let s = &m.sampler;
        let (chain, diag) = self.sample_smc(posterior, library, rng)?;
        let columns = result_columns_of(m);
        let z = draws_z(&chain)?;
        let z_spread = island_z_spread(&z, &chain, s.islands);
        let report = smc_report(&diag, &z_spread, s.kind, s.particles, &m.diagnostics);
        let mut table = self.summarise_with(chunk, &chain, report, &columns)?;
        // A galaxy without a finite likelihood has no posterior: NaN, not numbers that look real.
        for (gal, d) in diag.iter().enumerate() {
            if d.status == SmcStatus::NoFiniteLikelihood {
                for (name, values) in table.columns.iter_mut() {
                    if name != "n_bands_used" {
                        values[gal] = f64::NAN;
                    }
                }
            }
        }
        self.add_pz(&mut table, &z, &chain, &diag)?;
        let chains = m.output.chains.then(|| self.chain_rows(chunk, &chain));
        Ok((table, chains))
    }

    /// p(z) columns from the draws' redshifts.
    fn add_pz(
        &self,
        table: &mut ResultTable,
        z: &[f64],
        chain: &Chain,
        diag: &[SmcDiagnostics],
    ) -> Result<()> {
        let step = self.manifest.output.pz_step;
        let grid = pz_grid(step);
        if grid.is_empty() {
            return Ok(());
        }
        let (k, w, g) = (chain.kept, chain.walkers, chain.galaxies);
        let names = pz_columns(step);
        let mut cols = vec![Vec::with_capacity(g); grid.len()];
        for (gal, dg) in diag.iter().enumerate() {
            let draws: Vec<f64> = (0..k * w).map(|s| z[s * g + gal]).collect();
            let p = if dg.status == SmcStatus::NoFiniteLikelihood {
                vec![f64::NAN; grid.len()]
            } else {
                pz_density(&draws, &grid, step)
            };
            for (c, v) in cols.iter_mut().zip(p) {
                c.push(v);
            }
        }
        for (name, values) in names.into_iter().zip(cols) {
            table.columns.insert(name, values);
        }
        Ok(())
    }
}

/// The library importance-weighted by each galaxy's likelihood, resampled (systematic) to
/// `draws` equally weighted draws: a chain of one kept state, and diagnostics with the
/// weights' ESS, ln Z = ln mean L and its error √(1/ESS − 1/M).
fn library_posterior(
    library: &LibraryInPsi,
    log_like: &Tensor,
    log_weight: Option<&Tensor>,
    draws: usize,
    rng: &mut HostRng,
) -> Result<(Chain, Vec<SmcDiagnostics>)> {
    let psi = &library.psi;
    let (m, g) = log_like.dims2()?;
    let d = psi.dim(1)?;
    let ll = log_like
        .t()?
        .contiguous()?
        .to_dtype(DType::F64)?
        .to_device(&popcosmos_api::Device::Cpu)?
        .to_vec2::<f64>()?;
    let log_weight = log_weight
        .map(|w| -> Result<Vec<f64>> {
            Ok(w.to_dtype(DType::F64)?
                .to_device(&popcosmos_api::Device::Cpu)?
                .to_vec1::<f64>()?)
        })
        .transpose()?;
    let mut index = vec![0u32; draws * g];
    let mut diag = Vec::with_capacity(g);
    for (gal, row) in ll.iter().enumerate() {
        let u = rng.next_f64();
        let mut dg = SmcDiagnostics {
            log_evidence: f64::NEG_INFINITY,
            log_evidence_err: f64::NAN,
            stages: 0,
            beta: 0.0,
            final_ess: 0.0,
            unique_fraction: f64::NAN,
            acceptance: f64::NAN,
            sweeps: 0,
            grid_acceptance: f64::NAN,
            grid_updates: 0,
            island_rhat: f64::NAN,
            importance_ess: f64::NAN,
            rounds: 1,
            median_se: f64::NAN,
            status: SmcStatus::NoFiniteLikelihood,
        };
        // Target ESS 0: the whole step to β = 1.
        let step = match &log_weight {
            Some(b) => next_temperature_weighted(row, b, 1.0, 0.0),
            None => next_temperature(row, 1.0, 0.0),
        };
        if let Some(r) = step {
            let idx = systematic_resample(&r.weights, draws, u);
            let mut unique = idx.clone();
            unique.sort_unstable();
            unique.dedup();
            dg = SmcDiagnostics {
                log_evidence: r.log_mean_weight,
                log_evidence_err: (1.0 / r.ess - 1.0 / m as f64).max(0.0).sqrt(),
                beta: 1.0,
                final_ess: r.ess,
                unique_fraction: unique.len() as f64 / draws as f64,
                status: SmcStatus::Converged,
                ..dg
            };
            for (i, j) in idx.into_iter().enumerate() {
                index[i * g + gal] = j;
            }
        }
        diag.push(dg);
    }
    let flat = Tensor::from_vec(index.clone(), draws * g, psi.device())?;
    let samples = psi
        .index_select(&flat, 0)?
        .to_device(&popcosmos_api::Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    // ln p(ψ) + ln L of each draw, [m, g].
    let lp_flat = log_like
        .broadcast_add(&library.log_prior.unsqueeze(1)?)?
        .to_device(&popcosmos_api::Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let log_prob = index
        .iter()
        .enumerate()
        .map(|(k, &j)| lp_flat[j as usize * g + k % g])
        .collect();
    let chain = Chain {
        samples,
        log_prob,
        kept: 1,
        walkers: draws,
        galaxies: g,
        dim: d,
        acceptance: vec![f64::NAN; g],
        config: RunConfig {
            n_steps: 1,
            burn_in: 0,
            thin: 1,
        },
    };
    Ok((chain, diag))
}

/// Redshift of every draw, `[kept × walkers × galaxies]` in the chain's order.
fn draws_z(chain: &Chain) -> Result<Vec<f64>> {
    let (k, w, g, d) = (chain.kept, chain.walkers, chain.galaxies, chain.dim);
    Ok(phi_to_theta(
        &chain
            .samples_tensor(&popcosmos_api::Device::Cpu)?
            .reshape((k * w * g, d))?,
    )?
    .narrow(1, IDX_Z, 1)?
    .to_dtype(DType::F64)?
    .flatten_all()?
    .to_vec1::<f64>()?)
}

/// Per galaxy, the spread (max − min) of the islands' median redshifts over 1 + the pooled
/// median: how far the answer moves between independent populations (NaN with one island).
/// Island i holds walkers i·w/k … (i+1)·w/k − 1 of the pooled chain.
fn island_z_spread(z: &[f64], chain: &Chain, islands: usize) -> Vec<f64> {
    let (k, w, g) = (chain.kept, chain.walkers, chain.galaxies);
    (0..g)
        .map(|gal| {
            if islands < 2 {
                return f64::NAN;
            }
            let per = w / islands;
            let draws = |walkers: std::ops::Range<usize>| -> Vec<f64> {
                (0..k)
                    .flat_map(|t| walkers.clone().map(move |p| z[(t * w + p) * g + gal]))
                    .collect()
            };
            let medians: Vec<f64> = (0..islands)
                .map(|i| popcosmos_api::stats::median(&draws(i * per..(i + 1) * per)))
                .collect();
            let pooled = popcosmos_api::stats::median(&draws(0..w));
            let (lo, hi) = medians
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &m| {
                    (a.min(m), b.max(m))
                });
            (hi - lo) / (1.0 + pooled)
        })
        .collect()
}

/// SMC columns and flags per galaxy.
fn smc_report(
    diag: &[SmcDiagnostics],
    z_spread: &[f64],
    kind: SamplerKind,
    particles: usize,
    thresholds: &crate::manifest::DiagnosticsSpec,
) -> SamplerReport {
    let min_acceptance = thresholds.min_acceptance;
    let columns = vec![
        diag.iter().map(|d| d.acceptance).collect(),
        diag.iter().map(|d| d.log_evidence).collect(),
        diag.iter().map(|d| d.log_evidence_err).collect(),
        diag.iter().map(|d| d.stages as f64).collect(),
        diag.iter().map(|d| d.sweeps as f64).collect(),
        diag.iter().map(|d| d.final_ess).collect(),
        diag.iter().map(|d| d.unique_fraction).collect(),
        diag.iter().map(|d| d.island_rhat).collect(),
        z_spread.to_vec(),
        diag.iter().map(|d| d.importance_ess).collect(),
        diag.iter().map(|d| d.rounds as f64).collect(),
        diag.iter().map(|d| d.median_se).collect(),
    ];
    let flags = diag
        .iter()
        .zip(z_spread)
        .map(|(d, &spread)| {
            let mut f = Vec::new();
            match d.status {
                SmcStatus::NoFiniteLikelihood => {
                    f.push("no_finite_likelihood: no library draw has a finite likelihood".into());
                    return f;
                }
                SmcStatus::MaxStages => f.push(format!(
                    "smc_max_stages: stopped at beta {:.3} after {} stages",
                    d.beta, d.stages
                )),
                SmcStatus::Converged => {}
            }
            match kind {
                SamplerKind::Library => {
                    if d.final_ess < MIN_LIBRARY_ESS {
                        f.push(format!(
                            "library_low_ess: {:.1} < {MIN_LIBRARY_ESS}",
                            d.final_ess
                        ));
                    }
                }
                _ => {
                    if d.unique_fraction < MIN_UNIQUE_FRACTION {
                        f.push(format!(
                            "smc_low_unique_fraction: {:.2} < {MIN_UNIQUE_FRACTION}",
                            d.unique_fraction
                        ));
                    }
                    if d.acceptance < min_acceptance {
                        f.push(format!(
                            "smc_low_acceptance: {:.3} < {min_acceptance}",
                            d.acceptance
                        ));
                    }
                    if d.final_ess < 0.25 * particles as f64 {
                        f.push(format!("smc_low_ess: {:.1}", d.final_ess));
                    }
                    if spread > thresholds.max_z_spread {
                        f.push(format!(
                            "smc_z_spread: the islands' median z differ by {spread:.3} (1+z) > {}",
                            thresholds.max_z_spread
                        ));
                    }
                }
            }
            f
        })
        .collect();
    SamplerReport { columns, flags }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn island_z_spread_is_the_range_of_island_medians() {
        // 2 kept states × 4 walkers (2 islands of 2) × 2 galaxies; galaxy 0's island 0 sits at
        // z = 1.0 and island 1 at 1.3, galaxy 1's islands agree at 0.5.
        let (k, w, g) = (2, 4, 2);
        let mut z = vec![0.0; k * w * g];
        for t in 0..k {
            for p in 0..w {
                z[(t * w + p) * g] = if p < 2 { 1.0 } else { 1.3 };
                z[(t * w + p) * g + 1] = 0.5;
            }
        }
        let chain = Chain {
            samples: vec![0.0; k * w * g],
            log_prob: vec![0.0; k * w * g],
            kept: k,
            walkers: w,
            galaxies: g,
            dim: 1,
            acceptance: vec![0.0; g],
            config: popcosmos_samplers::RunConfig {
                n_steps: k,
                burn_in: 0,
                thin: 1,
            },
        };
        let s = island_z_spread(&z, &chain, 2);
        // Pooled median of galaxy 0: (1.0 + 1.3)/2.
        assert!((s[0] - 0.3 / 2.15).abs() < 1e-12, "{}", s[0]);
        assert_eq!(s[1], 0.0);
        assert!(island_z_spread(&z, &chain, 1)[0].is_nan());
    }

    #[test]
    fn pz_integrates_to_one_and_peaks_at_the_draws() {
        let step = 0.02;
        let grid = pz_grid(step);
        let z: Vec<f64> = (0..1000)
            .map(|i| 1.0 + 0.05 * ((i as f64 / 999.0) - 0.5))
            .collect();
        let p = pz_density(&z, &grid, step);
        let total: f64 = p.iter().sum::<f64>() * step;
        assert!((total - 1.0).abs() < 1e-9);
        let peak = grid[p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0];
        assert!((peak - 1.0).abs() <= step, "peak at {peak}");
        assert_eq!(pz_columns(step)[0], "pz_0.010");
    }
}
