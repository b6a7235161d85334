//! The COSMOS SPS forward model: θ → model photometry.
//!
//! `flux_nmgy_b = 10^((22.5 − M_b(θ₁₅) − N)/2.5) + Σ_l α_l F_bl(θ^power)` and
//! `line_sigma_nmgy_b = Σ_l e^{γ_l} (1 + α_l) F_bl(θ^power)`, with α = `emline_offsets`,
//! γ = `ln_emline_scatters`. Zero points are *not* applied: the likelihood does that.

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};

use crate::emlines::EmLineEmulator;
use crate::photulator::{Photulator, mag_to_flux_nmgy, theta_to_photulator_input, theta_to_power};
use popcosmos_api::{Calibration, Error, ModelPhotometry, N_PARAMS, Result, SpsModel};

/// Photulator stack plus (optionally) the emission-line emulator, with the line calibration.
#[derive(Debug, Clone)]
pub struct CosmosSps {
    photulator: Photulator,
    lines: Option<LineModel>,
    device: Device,
}

#[derive(Debug, Clone)]
struct LineModel {
    emulator: EmLineEmulator,
    /// `[44, 2]`: column 0 = α_l, column 1 = e^{γ_l}(1 + α_l).
    weights: Tensor,
}

impl CosmosSps {
    /// Bundled weights with emission lines.
    pub fn builtin(calibration: &Calibration, device: &Device) -> Result<Self> {
        Self::new(
            Photulator::builtin(device)?,
            Some(EmLineEmulator::builtin(device)?),
            calibration,
        )
    }

    /// Weights from files; `emline_path = None` disables emission lines.
    pub fn from_paths(
        photulator_path: impl AsRef<Path>,
        emline_path: Option<&Path>,
        calibration: &Calibration,
        device: &Device,
    ) -> Result<Self> {
        let lines = emline_path
            .map(|p| EmLineEmulator::load(p, device))
            .transpose()?;
        Self::new(
            Photulator::load(photulator_path, device)?,
            lines,
            calibration,
        )
    }

    /// Assemble from loaded emulators. With `emlines = None` the model is continuum-only
    /// (`line_sigma_nmgy = None`) and the calibration's line terms are ignored.
    pub fn new(
        photulator: Photulator,
        emlines: Option<EmLineEmulator>,
        calibration: &Calibration,
    ) -> Result<Self> {
        let device = photulator.device().clone();
        let lines = match emlines {
            None => None,
            Some(emulator) => {
                if emulator.n_bands() != photulator.n_bands() {
                    return Err(Error::Invalid(format!(
                        "line emulator has {} bands, photulator {}",
                        emulator.n_bands(),
                        photulator.n_bands()
                    )));
                }
                let nl = emulator.n_lines();
                let (a, g) = (&calibration.emline_offsets, &calibration.ln_emline_scatters);
                if a.len() != nl || g.len() != nl {
                    return Err(Error::Invalid(format!(
                        "calibration has {} emission-line offsets and {} ln scatters; the line \
                         emulator has {nl} lines",
                        a.len(),
                        g.len()
                    )));
                }
                let w: Vec<f32> = a
                    .iter()
                    .zip(g)
                    .flat_map(|(&a, &g)| [a as f32, (g.exp() * (1.0 + a)) as f32])
                    .collect();
                let weights = Tensor::from_vec(w, (nl, 2), &device)?;
                Some(LineModel { emulator, weights })
            }
        };
        Ok(Self {
            photulator,
            lines,
            device,
        })
    }

    /// Any survey: a photulator set (e.g. trained by `popcosmos-cli train-emulator`, or
    /// `builtin:photulator_kids9` / `builtin:photulator_lsst6`) plus the emission-line emulator
    /// with band responses computed from the survey's own filter curves
    /// ([`EmLineEmulator::with_filter_curves`]). `filters` must be in the photulator's band
    /// order (checked by name); the calibration supplies the 44 line offsets / ln scatters.
    pub fn for_filter_set(
        photulator: Photulator,
        filters: &[popcosmos_api::FilterCurve],
        calibration: &Calibration,
    ) -> Result<Self> {
        let names: Vec<&str> = filters.iter().map(|f| f.name.as_str()).collect();
        if names != photulator.band_names() {
            return Err(Error::Invalid(format!(
                "filter curves {names:?} do not match the photulator bands {:?} (same names,                  same order)",
                photulator.band_names()
            )));
        }
        let lines = EmLineEmulator::builtin(photulator.device())?.with_filter_curves(filters)?;
        Self::new(photulator, Some(lines), calibration)
    }

    /// Drop the emission-line component (continuum-only model).
    pub fn without_emission_lines(mut self) -> Self {
        self.lines = None;
        self
    }

    pub fn has_emission_lines(&self) -> bool {
        self.lines.is_some()
    }

    pub fn photulator(&self) -> &Photulator {
        &self.photulator
    }

    pub fn emission_lines(&self) -> Option<&EmLineEmulator> {
        self.lines.as_ref().map(|l| &l.emulator)
    }

    /// Flatten `[..., 16]` to `[n, 16]`, returning the leading dims.
    fn flatten(theta: &Tensor) -> Result<(Tensor, Vec<usize>)> {
        let dims = theta.dims();
        if dims.last() != Some(&N_PARAMS) {
            return Err(Error::shape("theta", format!("[..., {N_PARAMS}]"), dims));
        }
        let lead = dims[..dims.len() - 1].to_vec();
        let n = lead.iter().product::<usize>();
        Ok((theta.to_dtype(DType::F32)?.reshape((n, N_PARAMS))?, lead))
    }

    fn unflatten(t: Tensor, lead: &[usize], bands: usize) -> Result<Tensor> {
        let mut shape = lead.to_vec();
        shape.push(bands);
        Ok(t.reshape(shape)?)
    }

    fn continuum_flat(&self, theta: &Tensor) -> Result<Tensor> {
        let absmag = self
            .photulator
            .absolute_magnitudes(&theta_to_photulator_input(theta)?)?;
        mag_to_flux_nmgy(&absmag.broadcast_add(&theta.narrow(D::Minus1, 0, 1)?)?)
    }

    /// Photulator fluxes only (no emission-line offsets), θ `[..., 16]` → `[..., bands]` nmgy.
    pub fn continuum_flux_nmgy(&self, theta: &Tensor) -> Result<Tensor> {
        let (flat, lead) = Self::flatten(theta)?;
        Self::unflatten(
            self.continuum_flat(&flat)?,
            &lead,
            self.photulator.n_bands(),
        )
    }
}

impl SpsModel for CosmosSps {
    fn band_names(&self) -> &[String] {
        self.photulator.band_names()
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn photometry(&self, theta: &Tensor) -> Result<ModelPhotometry> {
        let (flat, lead) = Self::flatten(theta)?;
        let nb = self.photulator.n_bands();
        let continuum = self.continuum_flat(&flat)?;
        let Some(lines) = &self.lines else {
            return Ok(ModelPhotometry {
                flux_nmgy: Self::unflatten(continuum, &lead, nb)?,
                line_sigma_nmgy: None,
            });
        };
        // [n, bands, 2]: Σ_l α_l F_bl and Σ_l e^{γ_l}(1+α_l) F_bl.
        let sums = lines
            .emulator
            .contract(&theta_to_power(&flat)?, &lines.weights)?;
        let flux = (continuum + sums.narrow(2, 0, 1)?.squeeze(2)?)?;
        let sigma = sums.narrow(2, 1, 1)?.squeeze(2)?;
        Ok(ModelPhotometry {
            flux_nmgy: Self::unflatten(flux, &lead, nb)?,
            line_sigma_nmgy: Some(Self::unflatten(sigma.contiguous()?, &lead, nb)?),
        })
    }
}
