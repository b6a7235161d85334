//! The forward model of a catalogue: latent φ → observed asinh magnitudes, differentiable in
//! φ, the zero points and the error floors (Alsing et al. 2024, section 3).
//!
//! φ → θ → SPS emulators + emission lines (noiseless model flux f and line scatter σ_em;
//! optionally groups of lines scaled by fitted s_g) → zero points (Z f) → measurement error
//! σ^nm from the catalogue's error model given Z f → total σ² = σ^nm² + Z²(σ_em² +
//! (ε f)²), the likelihood's error model → reparameterised Student-t noise → a missing-band pattern taken from a random catalogue row → asinh
//! magnitudes standardised as the observed ones (0 where a band is missing).

use candle_core::{DType, Device, Tensor};
use popcosmos_api::{Error, RandomSource, Result, Shape, SpsModel, params::phi_to_theta};
use popcosmos_sps::photulator::flux_to_asinh_mag;

use crate::data::ObservedSet;
use crate::errors::ErrorModel;

/// A simulated minibatch.
pub struct Simulated {
    /// Standardised features `[n_kept, bands]` (tracked for autograd).
    pub features: Tensor,
    /// Noisy observed fluxes `[n_kept, bands]` nmgy (detached).
    pub flux_nmgy: Tensor,
    /// Measurement errors drawn for them `[n_kept × bands]` nmgy.
    pub sigma_nmgy: Vec<f32>,
    /// Missing-band pattern `[n_kept, bands]`.
    pub mask: Tensor,
    /// Which of the n simulated rows passed the selection (all without one).
    pub kept: Vec<u32>,
}

/// The random draws of one simulation: measurement errors `[n × bands]` nmgy, unit-scale
/// noise `[n, bands]` and the catalogue rows whose missing-band patterns are used.
#[derive(Debug, Clone)]
pub struct Draws {
    sigma_nm: Vec<f32>,
    noise: Tensor,
    rows: Vec<u32>,
}

impl Draws {
    /// The rows of `parts`, in order.
    pub fn concat(parts: &[Draws]) -> Result<Self> {
        let noise: Vec<&Tensor> = parts.iter().map(|d| &d.noise).collect();
        Ok(Self {
            sigma_nm: parts.iter().flat_map(|d| d.sigma_nm.clone()).collect(),
            noise: Tensor::cat(&noise, 0)?,
            rows: parts.iter().flat_map(|d| d.rows.clone()).collect(),
        })
    }

    /// The draws of rows `kept` (in that order).
    pub fn select(&self, kept: &[u32]) -> Result<Self> {
        let nb = self.noise.dim(1)?;
        let idx = Tensor::from_vec(kept.to_vec(), kept.len(), self.noise.device())?;
        Ok(Self {
            sigma_nm: select_rows(&self.sigma_nm, kept, nb),
            noise: self.noise.index_select(&idx, 0)?,
            rows: kept.iter().map(|&i| self.rows[i as usize]).collect(),
        })
    }
}

/// Rows `kept` (in that order) of a row-major `[n × nb]` host buffer.
fn select_rows(values: &[f32], kept: &[u32], nb: usize) -> Vec<f32> {
    kept.iter()
        .flat_map(|&i| {
            values[i as usize * nb..(i as usize + 1) * nb]
                .iter()
                .copied()
        })
        .collect()
}

/// Band fluxes of groups of emission lines, θ `[n, 16]` → `[n, bands, groups]` nmgy, under
/// the SPS model's current line offsets. A group scaled by s adds (s − 1) times its flux.
pub type LineGroupFlux<'a> = Box<dyn Fn(&Tensor) -> Result<Tensor> + 'a>;

/// The data-model parameters of a simulation; each may be a tracked variable.
#[derive(Clone, Copy)]
pub struct DataModelParams<'t> {
    /// ln Z_b, `[bands]`.
    pub ln_zero_points: &'t Tensor,
    /// Fractional error floors ε_b, `[bands]`.
    pub error_floors: &'t Tensor,
    /// ln s_g of the line groups of [`ForwardModel::with_line_groups`], `[groups]`
    /// (`None`: every s = 1).
    pub ln_line_scales: Option<&'t Tensor>,
}

enum Source<'a> {
    Draw(&'a mut dyn RandomSource),
    Given(&'a Draws),
}

/// φ → simulated catalogue rows.
pub struct ForwardModel<'a> {
    sps: &'a dyn SpsModel,
    set: &'a ObservedSet,
    errors: &'a dyn ErrorModel,
    /// Student-t degrees of freedom (integer 1–4), `None` = Gaussian noise.
    nu: Option<usize>,
    softening: Tensor,
    shift: Tensor,
    scale: Tensor,
    device: Device,
    /// Line groups whose flux scales are fitted, and how many there are.
    line_groups: Option<(LineGroupFlux<'a>, usize)>,
}

impl<'a> ForwardModel<'a> {
    /// `student_t_nu`: the likelihood's ν, rounded to an integer in 1–4 (the reference ν = 2);
    /// `None` for Gaussian noise.
    pub fn new(
        sps: &'a dyn SpsModel,
        set: &'a ObservedSet,
        errors: &'a dyn ErrorModel,
        student_t_nu: Option<f64>,
    ) -> Result<Self> {
        let nb = set.n_bands;
        if sps.band_names().len() != nb || errors.n_bands() != nb {
            return Err(Error::Invalid(format!(
                "forward model: the SPS has {} bands, the catalogue {nb}, the error model {}",
                sps.band_names().len(),
                errors.n_bands()
            )));
        }
        let device = sps.device().clone();
        let vec = |v: &[f64]| -> Result<Tensor> {
            Ok(Tensor::from_vec(
                v.iter().map(|x| *x as f32).collect::<Vec<_>>(),
                v.len(),
                &device,
            )?)
        };
        Ok(Self {
            sps,
            set,
            errors,
            nu: student_t_nu.map(|nu| nu.round().clamp(1.0, 4.0) as usize),
            softening: vec(&set.softening_nmgy)?,
            shift: vec(&set.feature_shift)?,
            scale: vec(&set.feature_scale)?,
            device,
            line_groups: None,
        })
    }

    /// Let the simulations scale `n_groups` groups of emission lines, whose band fluxes
    /// `flux` gives ([`DataModelParams::ln_line_scales`]).
    pub fn with_line_groups(mut self, n_groups: usize, flux: LineGroupFlux<'a>) -> Self {
        self.line_groups = (n_groups > 0).then_some((flux, n_groups));
        self
    }

    /// Groups of emission lines whose scales the simulations take (0 = none).
    pub fn n_line_groups(&self) -> usize {
        self.line_groups.as_ref().map_or(0, |g| g.1)
    }

    /// Where the simulated flux errors come from.
    pub fn error_model(&self) -> &dyn ErrorModel {
        self.errors
    }

    /// The device the forward model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Standardised features of observed-space fluxes `[n, bands]` with `mask` applied.
    pub fn features(&self, flux_nmgy: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let m = flux_to_asinh_mag(flux_nmgy, &self.softening)?;
        Ok(m.broadcast_sub(&self.shift)?
            .broadcast_div(&self.scale)?
            .mul(mask)?)
    }

    /// Simulate observed rows for latent `phi` `[n, 16]` under the data model `params`.
    pub fn simulate(
        &self,
        phi: &Tensor,
        params: DataModelParams,
        rng: &mut dyn RandomSource,
    ) -> Result<Simulated> {
        Ok(self.simulate_inner(phi, params, Source::Draw(rng), true)?.0)
    }

    /// [`Self::simulate`], also returning the random draws, so that the rows that pass the
    /// selection can be simulated again with gradients and the same noise
    /// ([`Self::resimulate`]).
    pub fn simulate_with_draws(
        &self,
        phi: &Tensor,
        params: DataModelParams,
        rng: &mut dyn RandomSource,
    ) -> Result<(Simulated, Draws)> {
        self.simulate_inner(phi, params, Source::Draw(rng), true)
    }

    /// Simulate `phi` with given draws (one row each; no selection is applied).
    pub fn resimulate(
        &self,
        phi: &Tensor,
        params: DataModelParams,
        draws: &Draws,
    ) -> Result<Simulated> {
        Ok(self
            .simulate_inner(phi, params, Source::Given(draws), false)?
            .0)
    }

    /// Whether the observed set carries an explicit selection.
    pub fn has_selection(&self) -> bool {
        self.set.selection.is_some()
    }

    fn simulate_inner(
        &self,
        phi: &Tensor,
        params: DataModelParams,
        source: Source,
        select: bool,
    ) -> Result<(Simulated, Draws)> {
        let n = phi.dim(0)?;
        let nb = self.set.n_bands;
        let error_floors = params.error_floors;
        let theta = phi_to_theta(phi)?;
        let model = self.sps.photometry(&theta)?;
        let zp = params.ln_zero_points.exp()?;
        let mut f = model.flux_nmgy;
        if let (Some((flux, k)), Some(ln_s)) = (&self.line_groups, params.ln_line_scales) {
            // f + Σ_g (s_g − 1) F_g: the line flux is linear in each group's scale.
            let extra = flux(&theta)?
                .to_dtype(f.dtype())?
                .broadcast_mul(&(ln_s.exp()? - 1.0)?.reshape((1, 1, *k))?)?
                .sum(2)?;
            f = (f + extra)?;
        }
        let zf = f.broadcast_mul(&zp)?;
        let draws = match source {
            Source::Given(d) => d.clone(),
            Source::Draw(rng) => {
                let host: Vec<f32> = zf.detach().to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                let sigma_nm = self.errors.sample(&host, rng)?;
                let noise = self.noise(n, nb, rng)?;
                let rows = rng.indices(n, self.set.len());
                Draws {
                    sigma_nm,
                    noise,
                    rows,
                }
            }
        };
        let sigma_nm_t = Tensor::from_vec(draws.sigma_nm.clone(), (n, nb), &self.device)?;
        let mut model_var = f.broadcast_mul(error_floors)?.sqr()?;
        if let Some(em) = &model.line_sigma_nmgy {
            model_var = (model_var + em.sqr()?)?;
        }
        let var = (model_var.broadcast_mul(&zp.sqr()?)? + sigma_nm_t.sqr()?)?;
        let observed = (zf + (var.sqrt()? * &draws.noise)?)?;
        let mask = self.set.masks(&draws.rows, &self.device)?;
        let features = self.features(&observed, &mask)?;
        let selection = if select { self.set.selection } else { None };
        let (kept, features, observed, mask, sigma_nm) = match selection {
            None => (
                (0..n as u32).collect(),
                features,
                observed,
                mask,
                draws.sigma_nm.clone(),
            ),
            Some((b, max_mag)) => {
                let mags: Vec<f32> = flux_to_asinh_mag(&observed.detach(), &self.softening)?
                    .narrow(1, b, 1)?
                    .flatten_all()?
                    .to_vec1()?;
                let kept: Vec<u32> = (0..n as u32)
                    .filter(|&i| (mags[i as usize] as f64) <= max_mag)
                    .collect();
                let idx = Tensor::from_vec(kept.clone(), kept.len(), &self.device)?;
                let sigma = select_rows(&draws.sigma_nm, &kept, nb);
                (
                    kept,
                    features.index_select(&idx, 0)?,
                    observed.index_select(&idx, 0)?,
                    mask.index_select(&idx, 0)?,
                    sigma,
                )
            }
        };
        Ok((
            Simulated {
                features,
                flux_nmgy: observed.detach(),
                sigma_nmgy: sigma_nm,
                mask,
                kept,
            },
            draws,
        ))
    }

    /// Unit-scale noise `[n, bands]`: Student-t(ν) = 𝒩 / √(χ²_ν/ν), χ²_ν from ν squared
    /// normals (reparameterised: it multiplies σ, which carries the gradient).
    fn noise(&self, n: usize, nb: usize, rng: &mut dyn RandomSource) -> Result<Tensor> {
        let k = 1 + self.nu.unwrap_or(0);
        let g = rng
            .normal(&Shape::from((n, nb, k)), &self.device)?
            .to_dtype(DType::F32)?;
        let z = g.narrow(2, 0, 1)?.squeeze(2)?;
        Ok(match self.nu {
            None => z,
            Some(nu) => {
                let chi2 = g.narrow(2, 1, nu)?.sqr()?.sum(2)?;
                z.div(&(chi2 / nu as f64)?.sqrt()?)?
            }
        })
    }
}
