//! The SPS model of a run, restricted to the survey's bands.
//!
//! An emulator set (e.g. the 26 COSMOS photulators) can serve any survey whose bands are a
//! subset of its bands: a CFHT u + HSC grizy survey uses 6 of the 26 COSMOS networks. The
//! selected per-band networks (and the emission-line bandpass models of the same bands) are
//! re-packed into a smaller stacked model, so a 6-band survey costs 6/26 of the full
//! evaluation instead of computing 26 bands and discarding 20.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use popcosmos_api::{Calibration, Error, Result};
use popcosmos_sps::photulator::PhotulatorConfig;
use popcosmos_sps::weights::WeightFile;
use popcosmos_sps::{CosmosSps, EmLineEmulator, Photulator};

use crate::manifest::SpsSpec;

/// Per-band scalars stacked over bands in a photulator file (first axis = band).
const PHOTULATOR_STACKED: [&str; 3] = ["output_shift", "output_scale", "f_b"];
/// Bandpass-model tensors of the emission-line emulator (`[bands, components]`).
const EMLINE_STACKED: [&str; 4] = [
    "bandpass.amps",
    "bandpass.sigs",
    "bandpass.betas",
    "bandpass.locs",
];

/// Positions of `wanted` in `available`; errors name the manifest key and the missing band.
pub fn band_selection(available: &[String], wanted: &[String], source: &str) -> Result<Vec<usize>> {
    wanted
        .iter()
        .map(|w| {
            available.iter().position(|a| a == w).ok_or_else(|| {
                Error::config(
                    "sps.weights",
                    format!(
                        "survey band '{w}' is not a band of the emulator set {source} (its \
                         bands: {})",
                        available.join(", ")
                    ),
                )
            })
        })
        .collect()
}

/// A safetensors buffer holding the bands `keep` of a stacked per-band model: tensors
/// `band.{b}.*` are renamed to their new index, `stacked` tensors are row-selected, the rest
/// is copied.
pub fn select_band_tensors(
    bytes: &[u8],
    name: &str,
    keep: &[usize],
    stacked: &[&str],
) -> Result<Vec<u8>> {
    let tensors =
        candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| Error::Format {
            file: name.to_string(),
            message: format!("not a valid safetensors file: {e}"),
        })?;
    let idx = Tensor::from_vec(
        keep.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        keep.len(),
        &Device::Cpu,
    )?;
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for (key, t) in &tensors {
        if let Some(rest) = key.strip_prefix("band.") {
            let (b, tail) = rest.split_once('.').unwrap_or((rest, ""));
            let Ok(b) = b.parse::<usize>() else {
                out.insert(key.clone(), t.clone());
                continue;
            };
            if let Some(new) = keep.iter().position(|&k| k == b) {
                out.insert(format!("band.{new}.{tail}"), t.clone());
            }
        } else if stacked.contains(&key.as_str()) {
            out.insert(key.clone(), t.index_select(&idx, 0)?.contiguous()?);
        } else {
            out.insert(key.clone(), t.clone());
        }
    }
    safetensors::serialize(out.iter().map(|(k, v)| (k.as_str(), v)), None).map_err(|e| {
        Error::Format {
            file: name.to_string(),
            message: format!("re-packing the selected bands: {e}"),
        }
    })
}

/// The run's SPS model for `survey_bands`: the full emulator set when the bands match, else
/// the subset of its networks in survey order.
///
/// Emission lines: for the COSMOS set the bundled line-bandpass models of the selected
/// bands; for any other set (e.g. `builtin:photulator_kids9`) band responses computed from
/// the survey's `filters` (survey order, one per band; [`CosmosSps::for_filter_set`]).
pub fn build_sps(
    spec: &SpsSpec,
    survey_bands: &[String],
    filters: &[popcosmos_api::FilterCurve],
    calibration: &Calibration,
    device: &Device,
) -> Result<CosmosSps> {
    let model = spec.load_model()?;
    let all_bands = model.card.bands.clone();
    let cosmos_bands = PhotulatorConfig::builtin()?.bands;
    let from_filters = |photulator: Photulator| -> Result<CosmosSps> {
        if !spec.emission_lines {
            return CosmosSps::new(photulator, None, calibration);
        }
        if filters.len() != survey_bands.len() {
            return Err(Error::config(
                "sps.emission_lines",
                format!(
                    "the emulator set {} is not the COSMOS set, so the line band responses \
                     come from the survey's filter curves, but the survey has {} curves for {} \
                     bands (set sps.emission_lines: false)",
                    model.source,
                    filters.len(),
                    survey_bands.len()
                ),
            ));
        }
        // Curves carry their file stem; the photulator checks them by band name.
        let named: Vec<popcosmos_api::FilterCurve> = filters
            .iter()
            .zip(survey_bands)
            .map(|(f, b)| popcosmos_api::FilterCurve {
                name: b.clone(),
                ..f.clone()
            })
            .collect();
        CosmosSps::for_filter_set(photulator, &named, calibration)
    };
    let sps = if all_bands == survey_bands {
        let config = PhotulatorConfig {
            bands: all_bands.clone(),
            architecture: model.card.architecture.layers.clone(),
        };
        let file = WeightFile::from_bytes(&model.bytes, model.source.clone(), device)?;
        let photulator = Photulator::from_weights(&file, config, device)?;
        if all_bands == cosmos_bands {
            let lines = if spec.emission_lines {
                Some(EmLineEmulator::builtin(device)?)
            } else {
                None
            };
            CosmosSps::new(photulator, lines, calibration)?
        } else {
            from_filters(photulator)?
        }
    } else {
        let keep = band_selection(&all_bands, survey_bands, &model.source)?;
        let name = format!("{} (bands {})", model.source, survey_bands.join(","));
        let bytes = select_band_tensors(&model.bytes, &name, &keep, &PHOTULATOR_STACKED)?;
        let config = PhotulatorConfig {
            bands: survey_bands.to_vec(),
            architecture: model.card.architecture.layers.clone(),
        };
        let photulator = Photulator::from_weights(
            &WeightFile::from_bytes(&bytes, &name, device)?,
            config,
            device,
        )?;
        if all_bands != cosmos_bands {
            return from_filters(photulator);
        }
        let lines = if spec.emission_lines {
            // The bundled line bandpass models follow the COSMOS band order.
            let cosmos_card = cosmos_bands.clone();
            let line_keep =
                band_selection(&cosmos_card, survey_bands, "emline_emulator (COSMOS bands)")
                    .map_err(|e| {
                        Error::config(
                            "sps.emission_lines",
                            format!(
                                "no emission-line bandpass model for a survey band ({e}); set \
                                 sps.emission_lines: false"
                            ),
                        )
                    })?;
            let lbytes = select_band_tensors(
                popcosmos_sps::emlines::BUILTIN_WEIGHTS,
                "emline_emulator.safetensors",
                &line_keep,
                &EMLINE_STACKED,
            )?;
            Some(EmLineEmulator::from_weights(
                &WeightFile::from_bytes(
                    &lbytes,
                    "emline_emulator.safetensors (band subset)",
                    device,
                )?,
                device,
            )?)
        } else {
            None
        };
        CosmosSps::new(photulator, lines, calibration)?
    };
    Ok(sps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use popcosmos_api::{Prior, SpsModel};

    /// The 6-band subset model equals the corresponding columns of the 26-band model
    /// (continuum and line terms), to f32 round-off.
    #[test]
    fn band_subset_equals_full_model_columns() {
        let dev = Device::Cpu;
        let survey = popcosmos_surveys::SurveySpec::named("cosmos")
            .build()
            .unwrap();
        let cal = survey.calibration().clone();
        let full = build_sps(&SpsSpec::default(), &survey.band_names(), &[], &cal, &dev).unwrap();
        let all = survey.band_names();
        let pick = [0usize, 1, 2, 3, 4, 5, 9, 24];
        let wanted: Vec<String> = pick.iter().map(|&i| all[i].clone()).collect();
        let mut sub_cal = cal.clone();
        sub_cal.zero_points = pick.iter().map(|&i| cal.zero_points[i]).collect();
        sub_cal.error_floors = pick.iter().map(|&i| cal.error_floors[i]).collect();
        let sub = build_sps(&SpsSpec::default(), &wanted, &[], &sub_cal, &dev).unwrap();
        assert_eq!(sub.band_names(), wanted.as_slice());
        let theta = popcosmos_priors::UniformPrior::new()
            .sample(64, &mut popcosmos_api::HostRng::seed_from_u64(3), &dev)
            .and_then(|phi| popcosmos_api::params::phi_to_theta(&phi))
            .unwrap();
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

    #[test]
    fn unknown_band_is_named() {
        let e = build_sps(
            &SpsSpec::default(),
            &["hsc_g".to_string(), "omegacam_u".to_string()],
            &[],
            &popcosmos_surveys::Cosmos::new(popcosmos_surveys::CalibrationChoice::Uncalibrated)
                .calibration,
            &Device::Cpu,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("sps.weights") && e.contains("omegacam_u"), "{e}");
    }
}
