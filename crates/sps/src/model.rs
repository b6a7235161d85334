//! The SPS model of a survey: θ → model photometry.
//!
//! `flux_nmgy_b = 10^((22.5 − M_b(θ₁₅) − N)/2.5) + Σ_l α_l F_bl(θ^power)` and
//! `line_sigma_nmgy_b = Σ_l e^{γ_l} (1 + α_l) F_bl(θ^power)`, with α, γ the
//! [`LineCalibration`]. Zero points are *not* applied: the likelihood does that.

use candle_core::{D, DType, Device, Tensor};
use serde::Deserialize;

use crate::emlines::{self, EmLineEmulator};
use crate::igm_scatter::IgmScatter;
use crate::photulator::{
    Photulator, PhotulatorConfig, mag_to_flux_nmgy, theta_to_photulator_input, theta_to_power,
};
use crate::weights::WeightFile;
use popcosmos_api::{
    Error, FilterCurve, ModelPhotometry, N_PARAMS, Result, SpsModel, params::IDX_Z,
};

/// Per-band scalars stacked over bands in a photulator file (first axis = band).
const PHOTULATOR_STACKED: [&str; 3] = ["output_shift", "output_scale", "f_b"];
/// Bandpass-model tensors of the emission-line emulator (`[bands, components]`).
const EMLINE_STACKED: [&str; 4] = [
    "bandpass.amps",
    "bandpass.sigs",
    "bandpass.betas",
    "bandpass.locs",
];

/// The emission-line terms of the data model, one per line of the line emulator: offsets α_l
/// and ln scatters γ_l. They describe the lines, not a survey.
#[derive(Debug, Clone, PartialEq)]
pub struct LineCalibration {
    /// Offsets α_l, one per line.
    pub offsets: Vec<f64>,
    /// ln of the scatters γ_l, one per line.
    pub ln_scatters: Vec<f64>,
}

impl LineCalibration {
    /// Leistedt et al. (2023), as shipped in `pop_cosmos.constants` (44 lines; see NOTICE).
    pub fn leistedt23() -> Self {
        #[derive(Deserialize)]
        #[allow(non_snake_case)]
        struct Constants {
            EMLINEOFFSETS_LEISTEDT23: Vec<f64>,
            EMLINEERRORS_LEISTEDT23: Vec<f64>,
        }
        let c: Constants = serde_json::from_str(include_str!(
            "../../../assets/models/pop_cosmos_constants.json"
        ))
        .expect("bundled constants are valid JSON");
        // The constants store line *standard deviations*; the data model uses their logs.
        Self {
            offsets: c.EMLINEOFFSETS_LEISTEDT23,
            ln_scatters: c.EMLINEERRORS_LEISTEDT23.iter().map(|s| s.ln()).collect(),
        }
    }
}

/// Photulator stack plus (optionally) the emission-line emulator with its line calibration:
/// the SPS model of any survey.
#[derive(Debug, Clone)]
pub struct PhotulatorSps {
    photulator: Photulator,
    lines: Option<LineModel>,
    igm: Option<IgmScatter>,
    device: Device,
}

#[derive(Debug, Clone)]
struct LineModel {
    emulator: EmLineEmulator,
    calibration: LineCalibration,
    /// `[44, 2]`: column 0 = α_l, column 1 = e^{γ_l}(1 + α_l).
    weights: Tensor,
}

impl LineModel {
    fn new(
        emulator: EmLineEmulator,
        calibration: &LineCalibration,
        device: &Device,
    ) -> Result<Self> {
        let nl = emulator.n_lines();
        let (a, g) = (&calibration.offsets, &calibration.ln_scatters);
        if a.len() != nl || g.len() != nl {
            return Err(Error::Invalid(format!(
                "line calibration has {} emission-line offsets and {} ln scatters; the \
                 line emulator has {nl} lines",
                a.len(),
                g.len()
            )));
        }
        let w: Vec<f32> = a
            .iter()
            .zip(g)
            .flat_map(|(&a, &g)| [a as f32, (g.exp() * (1.0 + a)) as f32])
            .collect();
        Ok(Self {
            emulator,
            calibration: calibration.clone(),
            weights: Tensor::from_vec(w, (nl, 2), device)?,
        })
    }
}

/// Largest distance (Å) between a requested rest wavelength and the line it names.
const LINE_MATCH_AA: f64 = 1.5;

impl PhotulatorSps {
    /// The bundled COSMOS photulators and emission-line emulator.
    pub fn builtin(lines: &LineCalibration, device: &Device) -> Result<Self> {
        Self::new(
            Photulator::builtin(device)?,
            Some((EmLineEmulator::builtin(device)?, lines)),
        )
    }

    /// Assemble from loaded emulators. With `lines = None` the model is continuum-only
    /// (`line_sigma_nmgy = None`).
    pub fn new(
        photulator: Photulator,
        lines: Option<(EmLineEmulator, &LineCalibration)>,
    ) -> Result<Self> {
        let device = photulator.device().clone();
        let lines = match lines {
            None => None,
            Some((emulator, calibration)) => {
                if emulator.n_bands() != photulator.n_bands() {
                    return Err(Error::Invalid(format!(
                        "line emulator has {} bands, photulator {}",
                        emulator.n_bands(),
                        photulator.n_bands()
                    )));
                }
                Some(LineModel::new(emulator, calibration, &device)?)
            }
        };
        Ok(Self {
            photulator,
            lines,
            igm: None,
            device,
        })
    }

    /// Any survey: a photulator set (e.g. trained by `popcosmos-cli train-emulator`, or
    /// `builtin:photulator_kids9` / `builtin:photulator_lsst6`) plus the emission-line emulator
    /// with band responses computed from the survey's own filter curves
    /// ([`EmLineEmulator::with_filter_curves`]). `filters` must be in the photulator's band
    /// order (checked by name).
    pub fn for_filter_set(
        photulator: Photulator,
        filters: &[FilterCurve],
        lines: &LineCalibration,
    ) -> Result<Self> {
        let names: Vec<&str> = filters.iter().map(|f| f.name.as_str()).collect();
        if names != photulator.band_names() {
            return Err(Error::Invalid(format!(
                "filter curves {names:?} do not match the photulator bands {:?} (same names, \
                 same order)",
                photulator.band_names()
            )));
        }
        let emulator = EmLineEmulator::builtin(photulator.device())?.with_filter_curves(filters)?;
        Self::new(photulator, Some((emulator, lines)))
    }

    /// The SPS model of a survey from an emulator set: the networks of `survey_bands`, in that
    /// order, of the stacked photulator file `set` whose bands and layer widths are `config`.
    /// A survey using some of the set's bands runs on a re-packed subset model (a CFHT u + HSC
    /// grizy survey costs 6/26 of the COSMOS set instead of computing 26 bands and discarding
    /// 20). Emission lines (`lines`; `None` = continuum only): for the COSMOS set the bundled
    /// line bandpass models of the selected bands; for any other set band responses from the
    /// survey's `filters` (one curve per survey band, in order;
    /// [`EmLineEmulator::with_filter_curves`]).
    pub fn for_survey(
        set: &WeightFile,
        config: PhotulatorConfig,
        survey_bands: &[String],
        filters: &[FilterCurve],
        lines: Option<&LineCalibration>,
        device: &Device,
    ) -> Result<Self> {
        let keep = survey_bands
            .iter()
            .map(|b| {
                config.bands.iter().position(|a| a == b).ok_or_else(|| {
                    Error::Invalid(format!(
                        "survey band '{b}' is not a band of the emulator set {} (its bands: {})",
                        set.name(),
                        config.bands.join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let is_cosmos = config.bands == PhotulatorConfig::builtin()?.bands;
        let config = PhotulatorConfig {
            bands: survey_bands.to_vec(),
            ..config
        };
        let set = set.select_bands(&keep, &PHOTULATOR_STACKED)?;
        let photulator = Photulator::from_weights(&set, config, device)?;
        let Some(lines) = lines else {
            return Self::new(photulator, None);
        };
        let emulator = if is_cosmos {
            let name = "emline_emulator.safetensors";
            let file = WeightFile::from_bytes(emlines::BUILTIN_WEIGHTS, name, device)?;
            EmLineEmulator::from_weights(&file.select_bands(&keep, &EMLINE_STACKED)?, device)?
        } else if filters.len() == survey_bands.len() {
            EmLineEmulator::builtin(device)?.with_filter_curves(filters)?
        } else {
            return Err(Error::Invalid(format!(
                "the emulator set {} is not the COSMOS set, so the emission-line band responses \
                 come from the survey's filter curves, but the survey has {} curves for {} bands \
                 (or turn the emission lines off)",
                set.name(),
                filters.len(),
                survey_bands.len()
            )));
        };
        Self::new(photulator, Some((emulator, lines)))
    }

    /// Drop the emission-line component (continuum-only model).
    pub fn without_emission_lines(mut self) -> Self {
        self.lines = None;
        self
    }

    /// Add the IGM scatter of the flux blueward of Lyα ([`IgmScatter`]) to the model-side
    /// error `line_sigma_nmgy`, in quadrature with the lines' scatter.
    pub fn with_igm_scatter(mut self, igm: IgmScatter) -> Result<Self> {
        let (w, nb) = (igm.bands(), self.photulator.n_bands());
        if w != nb {
            return Err(Error::Invalid(format!(
                "IGM scatter tabulated for {w} bands, the model has {nb}"
            )));
        }
        self.igm = Some(igm);
        Ok(self)
    }

    /// The emission-line offsets and scatters in use (`None` without the line component).
    pub fn line_calibration(&self) -> Option<&LineCalibration> {
        self.lines.as_ref().map(|l| &l.calibration)
    }

    /// Indices of the lines at the rest wavelengths `lambdas_aa` (each within 1.5 Å of
    /// exactly one line). Errors name the wavelength that matches no line.
    pub fn line_indices_at(&self, lambdas_aa: &[f64]) -> Result<Vec<usize>> {
        let Some(lines) = &self.lines else {
            return Err(Error::Invalid(
                "emission-line offsets were given, but the model has no emission lines".into(),
            ));
        };
        let have = lines.emulator.line_wavelengths_aa()?;
        lambdas_aa
            .iter()
            .map(|&want| {
                let near: Vec<usize> = (0..have.len())
                    .filter(|&l| (have[l] - want).abs() <= LINE_MATCH_AA)
                    .collect();
                match near.as_slice() {
                    [l] => Ok(*l),
                    _ => Err(Error::Invalid(format!(
                        "no single emission line at {want} Å (rest, vacuum) among the line \
                         emulator's {} lines",
                        have.len()
                    ))),
                }
            })
            .collect()
    }

    /// The same model with the offsets α_l of the lines at rest wavelengths λ replaced,
    /// `offsets` = [(λ Å, α)]; α > −1 (α = −1 removes a line). The scatters are kept.
    pub fn with_line_offsets(mut self, offsets: &[(f64, f64)]) -> Result<Self> {
        let lambdas: Vec<f64> = offsets.iter().map(|o| o.0).collect();
        let idx = self.line_indices_at(&lambdas)?;
        let lines = self.lines.take().expect("line_indices_at checked");
        let mut calibration = lines.calibration.clone();
        for (&l, &(lambda, alpha)) in idx.iter().zip(offsets) {
            if !(alpha.is_finite() && alpha >= -1.0) {
                return Err(Error::Invalid(format!(
                    "the offset of the line at {lambda} Å must be finite and ≥ −1, got {alpha}"
                )));
            }
            calibration.offsets[l] = alpha;
        }
        self.lines = Some(LineModel::new(lines.emulator, &calibration, &self.device)?);
        Ok(self)
    }

    /// Band fluxes of groups of lines with their current offsets, Σ_{l∈G} (1 + α_l) F_bl,
    /// θ `[..., 16]` → `[..., bands, groups]` nmgy (`groups` are line indices). A group
    /// scaled by s changes the model flux by (s − 1) times this.
    pub fn line_group_flux_nmgy(&self, theta: &Tensor, groups: &[Vec<usize>]) -> Result<Tensor> {
        let Some(lines) = &self.lines else {
            return Err(Error::Invalid("the model has no emission lines".into()));
        };
        let nl = lines.emulator.n_lines();
        let k = groups.len();
        let mut w = vec![0f32; nl * k];
        for (j, group) in groups.iter().enumerate() {
            for &l in group {
                if l >= nl {
                    return Err(Error::Invalid(format!("line index {l} ≥ {nl}")));
                }
                w[l * k + j] = (1.0 + lines.calibration.offsets[l]) as f32;
            }
        }
        let w = Tensor::from_vec(w, (nl, k), &self.device)?;
        let (flat, lead) = Self::flatten(theta)?;
        let sums = lines.emulator.contract(&theta_to_power(&flat)?, &w)?;
        let mut shape = lead;
        shape.extend([self.photulator.n_bands(), k]);
        Ok(sums.reshape(shape)?)
    }

    /// Whether the model has the emission-line component.
    pub fn has_emission_lines(&self) -> bool {
        self.lines.is_some()
    }

    /// The continuum photulator stack.
    pub fn photulator(&self) -> &Photulator {
        &self.photulator
    }

    /// The emission-line emulator, if the model has the line component.
    pub fn emission_lines(&self) -> Option<&EmLineEmulator> {
        self.lines.as_ref().map(|l| &l.emulator)
    }

    /// Flatten `[..., 16]` to `[n, 16]`, returning the leading dims.
    fn flatten(theta: &Tensor) -> Result<(Tensor, Vec<usize>)> {
        let dims = theta.dims();
        if dims.last() != Some(&N_PARAMS) {
            return Err(Error::Invalid(format!(
                "theta must have shape [..., {N_PARAMS}], got {dims:?}"
            )));
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

impl SpsModel for PhotulatorSps {
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
        let (flux, line_sigma) = match &self.lines {
            None => (continuum, None),
            Some(lines) => {
                // [n, bands, 2]: Σ_l α_l F_bl and Σ_l e^{γ_l}(1+α_l) F_bl.
                let sums = lines
                    .emulator
                    .contract(&theta_to_power(&flat)?, &lines.weights)?;
                let flux = (continuum + sums.narrow(2, 0, 1)?.squeeze(2)?)?;
                (flux, Some(sums.narrow(2, 1, 1)?.squeeze(2)?))
            }
        };
        let sigma = match (&self.igm, line_sigma) {
            (None, s) => s,
            (Some(igm), s) => {
                let z = flat.narrow(1, IDX_Z, 1)?.squeeze(1)?;
                let v = igm.sigma_nmgy(&z, &flux)?.sqr()?;
                let v = match s {
                    Some(s) => (v + s.sqr()?)?,
                    None => v,
                };
                // A floor far below any flux keeps d√v finite where both terms vanish (bands
                // clear of the forest and of every line), so autograd (the population fit)
                // never meets 0 · ∞.
                Some((v + 1e-30)?.sqrt()?)
            }
        };
        Ok(ModelPhotometry {
            flux_nmgy: Self::unflatten(flux, &lead, nb)?,
            line_sigma_nmgy: sigma
                .map(|s| Self::unflatten(s.contiguous()?, &lead, nb))
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::igm_scatter::top_hat;
    use popcosmos_api::{HostRng, RandomSource, params::phi_to_theta};

    fn cosmos_set() -> (WeightFile, PhotulatorConfig) {
        let file = WeightFile::from_bytes(
            crate::photulator::BUILTIN_WEIGHTS,
            "photulator_cosmos26.safetensors",
            &Device::Cpu,
        )
        .unwrap();
        (file, PhotulatorConfig::builtin().unwrap())
    }

    /// The 8-band subset model equals the corresponding columns of the 26-band model
    /// (continuum and line terms), to f32 round-off.
    #[test]
    fn band_subset_equals_full_model_columns() {
        let dev = Device::Cpu;
        let (set, config) = cosmos_set();
        let all = config.bands.clone();
        let lines = LineCalibration::leistedt23();
        let full =
            PhotulatorSps::for_survey(&set, config.clone(), &all, &[], Some(&lines), &dev).unwrap();
        let pick = [0usize, 1, 2, 3, 4, 5, 9, 24];
        let wanted: Vec<String> = pick.iter().map(|&i| all[i].clone()).collect();
        let sub =
            PhotulatorSps::for_survey(&set, config, &wanted, &[], Some(&lines), &dev).unwrap();
        assert_eq!(sub.band_names(), wanted.as_slice());
        let phi = HostRng::seed_from_u64(3)
            .normal(&(64, N_PARAMS).into(), &dev)
            .unwrap();
        let theta = phi_to_theta(&phi).unwrap();
        let a = full.photometry(&theta).unwrap();
        let b = sub.photometry(&theta).unwrap();
        let idx = Tensor::from_vec(
            pick.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            pick.len(),
            &dev,
        )
        .unwrap();
        for (x, y) in [
            (a.flux_nmgy, b.flux_nmgy),
            (a.line_sigma_nmgy.unwrap(), b.line_sigma_nmgy.unwrap()),
        ] {
            let x = x
                .index_select(&idx, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() <= 1e-5 * p.abs().max(1e-6), "{p} vs {q}");
            }
        }
    }

    /// Prior draws θ with their redshifts replaced by `z`, one row each.
    fn theta_at_z(seed: u64, z: &[f32]) -> Tensor {
        let phi = HostRng::seed_from_u64(seed)
            .normal(&(z.len(), N_PARAMS).into(), &Device::Cpu)
            .unwrap();
        let mut rows = phi_to_theta(&phi).unwrap().to_vec2::<f32>().unwrap();
        for (row, &zi) in rows.iter_mut().zip(z) {
            row[IDX_Z] = zi;
        }
        Tensor::new(rows, &Device::Cpu).unwrap()
    }

    /// The IGM term adds in quadrature to the lines' scatter, exactly σ = s · w · f_ref, in
    /// the bands the forest covers, and leaves the fluxes and the other bands alone.
    #[test]
    fn igm_scatter_adds_in_quadrature_blueward_of_lyman_alpha() {
        let dev = Device::Cpu;
        let (set, config) = cosmos_set();
        let bands: Vec<String> = config.bands[..3].to_vec(); // u, g, r
        let lines = LineCalibration::leistedt23();
        let plain =
            PhotulatorSps::for_survey(&set, config, &bands, &[], Some(&lines), &dev).unwrap();
        // Top-hat stand-ins for u, g, r: at z = 3 Lyα (4863 Å) covers u, part of g, not r.
        let filters = [
            top_hat("u", 3300.0, 4000.0),
            top_hat("g", 4000.0, 5500.0),
            top_hat("r", 5500.0, 7000.0),
        ];
        let s = 0.4;
        let igm = IgmScatter::new(&filters, s, 8.0, &dev).unwrap();
        let with = plain.clone().with_igm_scatter(igm).unwrap();
        let theta = theta_at_z(5, &[3.0, 3.0, 3.0, 3.0, 0.5, 0.5, 0.5, 0.5]);
        let a = plain.photometry(&theta).unwrap();
        let b = with.photometry(&theta).unwrap();
        assert_eq!(
            a.flux_nmgy.to_vec2::<f32>().unwrap(),
            b.flux_nmgy.to_vec2::<f32>().unwrap()
        );
        let flux = a.flux_nmgy.to_vec2::<f32>().unwrap();
        let (sa, sb) = (
            a.line_sigma_nmgy.unwrap().to_vec2::<f32>().unwrap(),
            b.line_sigma_nmgy.unwrap().to_vec2::<f32>().unwrap(),
        );
        let w_g = crate::igm_scatter::forest_share(&filters[1], 1215.67 * 4.0);
        for i in 0..8 {
            let w = if i < 4 { [1.0, w_g, 0.0] } else { [0.0; 3] };
            for b in 0..3 {
                let igm = s * w[b] * flux[i][2] as f64;
                let want = ((sa[i][b] as f64).powi(2) + igm * igm).sqrt();
                let got = sb[i][b] as f64;
                assert!(
                    (got - want).abs() <= 2e-3 * want.max(1e-9),
                    "row {i} band {b}: {got} vs {want}"
                );
            }
        }
    }

    /// Autograd through the model error stays finite where the IGM and line terms both vanish
    /// (a bare √ would give 0 · ∞ = NaN there and stall a population fit).
    #[test]
    fn igm_scatter_gradient_is_finite_where_the_terms_vanish() {
        let dev = Device::Cpu;
        let (set, config) = cosmos_set();
        let bands: Vec<String> = config.bands[..2].to_vec();
        let filters = [top_hat("u", 3300.0, 4000.0), top_hat("g", 4000.0, 5500.0)];
        let sps = PhotulatorSps::for_survey(&set, config, &bands, &[], None, &dev)
            .unwrap()
            .with_igm_scatter(IgmScatter::new(&filters, 0.5, 8.0, &dev).unwrap())
            .unwrap();
        // Two rows at z = 0.5, where neither band reaches the forest (σ = 0), two at z = 3.
        let theta = candle_core::Var::from_tensor(&theta_at_z(7, &[0.5, 0.5, 3.0, 3.0])).unwrap();
        let m = sps.photometry(theta.as_tensor()).unwrap();
        let sigma = m.line_sigma_nmgy.unwrap();
        let loss = (sigma.sum_all().unwrap() + m.flux_nmgy.sum_all().unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(theta.as_tensor()).unwrap();
        let v = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
    }

    /// Replacing a line's offset changes the band fluxes by exactly Δα · F_bl (the line's
    /// contribution at α = 0), and the group flux is Σ (1 + α_l) F_bl.
    #[test]
    fn line_offsets_change_the_flux_by_the_line_contribution() {
        let dev = Device::Cpu;
        let (set, config) = cosmos_set();
        let all = config.bands.clone();
        let lines = LineCalibration::leistedt23();
        let base = PhotulatorSps::for_survey(&set, config, &all, &[], Some(&lines), &dev).unwrap();
        // Hα (6564.6 Å) and [N II] 6585 Å.
        let idx = base.line_indices_at(&[6564.6, 6585.3]).unwrap();
        assert_eq!(idx, vec![42, 25]);
        let theta = theta_at_z(3, &[0.3, 0.6, 1.1]);
        let moved = base
            .clone()
            .with_line_offsets(&[(6564.6, 0.5), (6585.3, 0.0)])
            .unwrap();
        let group = |s: &PhotulatorSps| {
            s.line_group_flux_nmgy(&theta, &[vec![42], vec![25]])
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec3::<f64>()
                .unwrap()
        };
        let (g0, g1) = (group(&base), group(&moved));
        let f0 = base.photometry(&theta).unwrap().flux_nmgy;
        let f1 = moved.photometry(&theta).unwrap().flux_nmgy;
        let f0v = f0.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
        let d = (f1 - f0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        let (a_ha, a_n2) = (lines.offsets[42], lines.offsets[25]);
        let mut biggest = 0f64;
        for (n, row) in d.iter().enumerate() {
            for (b, dv) in row.iter().enumerate() {
                // F_bl from the group flux at the old offsets, then Δα · F_bl.
                let (f_ha, f_n2) = (g0[n][b][0] / (1.0 + a_ha), g0[n][b][1] / (1.0 + a_n2));
                let want = (0.5 - a_ha) * f_ha + (0.0 - a_n2) * f_n2;
                // f32 fluxes: the difference carries the rounding of f itself.
                let tol = 1e-4 * want.abs() + 1e-6 * f0v[n][b].abs() + 1e-9;
                assert!((dv - want).abs() <= tol, "{n} {b}: {dv} vs {want}");
                // The new group flux is (1 + α_new) F_bl.
                assert!((g1[n][b][0] - 1.5 * f_ha).abs() <= 1e-5 * f_ha.abs() + 1e-12);
                biggest = biggest.max(want.abs() / tol);
            }
        }
        // The check discriminates: somewhere the line term is far above the f32 rounding.
        assert!(biggest > 100.0, "Hα must land in some band: {biggest}");
        assert_eq!(moved.line_calibration().unwrap().offsets[42], 0.5);
        assert_eq!(
            moved.line_calibration().unwrap().ln_scatters,
            lines.ln_scatters
        );
    }

    #[test]
    fn a_wavelength_that_names_no_line_is_refused() {
        let (set, config) = cosmos_set();
        let all = config.bands.clone();
        let lines = LineCalibration::leistedt23();
        let sps =
            PhotulatorSps::for_survey(&set, config, &all, &[], Some(&lines), &Device::Cpu).unwrap();
        let e = sps
            .with_line_offsets(&[(6000.0, 0.1)])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("6000"), "{e}");
        let e = PhotulatorSps::for_survey(
            &cosmos_set().0,
            cosmos_set().1,
            &all,
            &[],
            None,
            &Device::Cpu,
        )
        .unwrap()
        .with_line_offsets(&[(6564.6, 0.1)])
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("no emission lines"), "{e}");
    }

    #[test]
    fn leistedt23_line_terms() {
        let l = LineCalibration::leistedt23();
        assert_eq!((l.offsets.len(), l.ln_scatters.len()), (44, 44));
        // Appendix A: [O III] 5007 σ = 2.6403e−02 → ln σ.
        assert!((l.ln_scatters[43] - 2.6403e-2f64.ln()).abs() < 1e-3);
    }

    #[test]
    fn unknown_band_is_named() {
        let (set, config) = cosmos_set();
        let bands = ["hsc_g".to_string(), "omegacam_u".to_string()];
        let e = PhotulatorSps::for_survey(&set, config, &bands, &[], None, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("omegacam_u") && e.contains("photulator_cosmos26"),
            "{e}"
        );
    }
}
