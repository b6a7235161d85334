//! Mock catalogues with the diffusion uncertainty model against the reference
//! `CatalogueGenerator` run in `tests/fixtures/mock_catalogue.safetensors`.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use popcosmos_api::{HostRng, Survey};
use popcosmos_inference::mock::{MockErrors, NoiseModel, Selection, simulate_selected};
use popcosmos_sps::{LineCalibration, PhotulatorSps};

fn fixture() -> HashMap<String, Tensor> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/mock_catalogue.safetensors");
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2().unwrap()
}

#[test]
fn noise_model_reproduces_reference_uncertainties() {
    let f = fixture();
    let nm = NoiseModel::builtin(&Device::Cpu).unwrap();
    // Conditioning: asinh magnitudes of the zero-point-corrected model fluxes.
    let flux_zp_nmgy = (&f["model_flux_zp_maggies"] * 1e9).unwrap();
    let cond = rows(&nm.conditioning(&flux_zp_nmgy).unwrap());
    let cond_ref = rows(&f["cond_asinh_mag"]);
    let mut n_ok = 0;
    let mut ok_rows = Vec::new();
    for (i, (a, b)) in cond.iter().zip(&cond_ref).enumerate() {
        if b.iter().all(|v| v.is_finite() && v.abs() < 60.0) {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-3, "row {i}: conditioning {x} vs {y}");
            }
            n_ok += 1;
            if ok_rows.len() < 96 {
                ok_rows.push(i as u32);
            }
        }
    }
    assert!(n_ok > 500, "{n_ok} finite rows");
    // σ from the reference's own conditioning and base draws (96 ordinary rows).
    let idx = Tensor::new(ok_rows.as_slice(), &Device::Cpu).unwrap();
    let pick = |k: &str| f[k].index_select(&idx, 0).unwrap();
    let ln_sigma = nm
        .ln_sigma_maggies(&pick("cond_asinh_mag"), &pick("base_sigma"))
        .unwrap();
    let ours = rows(&ln_sigma);
    let want = rows(&pick("ln_sigma_maggies"));
    let err = ours
        .iter()
        .flatten()
        .zip(want.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!("max |Δ ln σ| over 96 rows: {err:e}");
    // The reference solved all 1000 rows (extreme ones included) with one shared dopri5
    // step, so it is itself off the converged solution by ~0.02; ours is per row at 1e−6
    // (measured 3.5e−4). Check both against a converged f64 solve of 16 rows.
    assert!(err < 0.05, "max |Δ ln σ| = {err}");
    let model = popcosmos_priors::diffusion::DiffusionModel::from_bytes(
        popcosmos_models::builtin("noise_model").unwrap().bytes,
        "noise_model",
        &Device::Cpu,
    )
    .unwrap()
    .to_dtype(DType::F64)
    .unwrap();
    let tight = popcosmos_priors::diffusion::OdeSolver::Dopri5 {
        atol: 1e-8,
        rtol: 1e-8,
        min_step: 0.0,
        max_steps: 100_000,
    };
    let sub = |k: &str| {
        pick(k)
            .narrow(0, 0, 16)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    };
    let (conv, _) = model
        .sample_ode(&sub("base_sigma"), Some(&sub("cond_asinh_mag")), &tight)
        .unwrap();
    let conv = rows(&conv);
    let max_dev = |a: &[Vec<f64>]| {
        a.iter()
            .take(16)
            .flatten()
            .zip(conv.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    let (ours_err, ref_err) = (max_dev(&ours), max_dev(&want));
    eprintln!("vs converged (16 rows): ours {ours_err:e}, reference {ref_err:e}");
    assert!(
        ours_err < 2e-3 && ours_err < ref_err,
        "ours {ours_err} reference {ref_err}"
    );
    // Clamp and units: σ_nmgy = exp(9 ln 10 + clamp(ln σ, −28, −19.5)).
    let s = rows(&nm.sigma_nmgy(&pick("ln_sigma_maggies")).unwrap());
    for (r, w) in s.iter().zip(&want) {
        for (x, l) in r.iter().zip(w) {
            let expect = (9.0 * std::f64::consts::LN_10 + l.clamp(-28.0, -19.5)).exp();
            assert!((x / expect - 1.0).abs() < 1e-5);
        }
    }
}

/// `n` Prospector-α galaxies through the COSMOS photulators (Leistedt+23 calibration) with
/// errors from `nm` and Student-t (ν = 2) noise, kept when the noisy IRAC Ch1 is brighter than
/// `max_mag`, drawing from `rng`; returns the catalogue, the draws it took, and Ch1's band index.
fn ch1_selected_mock(
    nm: &NoiseModel,
    n: usize,
    max_mag: f64,
    rng: &mut HostRng,
) -> (popcosmos_inference::mock::MockCatalogue, usize, usize) {
    let survey = popcosmos_surveys::Cosmos::new(popcosmos_surveys::CalibrationChoice::Leistedt23);
    let sps = PhotulatorSps::builtin(&LineCalibration::leistedt23(), &Device::Cpu).unwrap();
    let prior = popcosmos_priors::ProspectorAlphaPrior::new();
    let ch1 = survey
        .band_names()
        .iter()
        .position(|b| b == "irac1_cosmos")
        .unwrap();
    let (cat, drawn) = simulate_selected(
        &prior,
        &sps,
        survey.calibration(),
        MockErrors::NoiseModel(nm),
        n,
        Some(2.0),
        Some(Selection { band: ch1, max_mag }),
        rng,
    )
    .unwrap();
    (cat, drawn, ch1)
}

#[test]
fn selected_mock_obeys_the_cut_and_its_noise_law() {
    let nm = NoiseModel::builtin(&Device::Cpu).unwrap();
    let mut rng = HostRng::seed_from_u64(5);
    let (cat, drawn, ch1) = ch1_selected_mock(&nm, 24, 25.0, &mut rng);
    assert_eq!(cat.theta.len(), 24);
    assert!(drawn > 24);
    let nb = cat.n_bands;
    for i in 0..24 {
        let f = cat.flux_nmgy[i * nb + ch1];
        assert!(f > 0.0 && 22.5 - 2.5 * f.log10() < 25.0);
        for b in 0..nb {
            let e = cat.flux_err_nmgy[i * nb + b];
            // Every band has a measurement error inside the noise model's clamp range, so at
            // least its floor of 6.9e−4 nmgy.
            assert!(
                e.is_finite() && e > 6.9e-4 * 0.99,
                "row {i} band {b}: σ = {e}"
            );
        }
    }
}

/// `fit-population --error-model auto` takes the noise model only where it reproduces the
/// catalogue's errors (`noise_model_ks`). On photometry it made itself (a Ch1 < 26 mock, as
/// its training set) the per-band KS is small; on the bundled COSMOS2020 *Classic* demo
/// galaxies it is not: Classic errors are larger than the Farmer ones it learned, by about
/// 2× in the medium bands and IRAC, so the check must fail there.
#[test]
fn noise_model_check_passes_its_own_mocks_and_fails_classic_photometry() {
    use popcosmos_population::{ErrorModel, ObservedSet};
    let survey = popcosmos_surveys::Cosmos::new(popcosmos_surveys::CalibrationChoice::Leistedt23);
    let nm = NoiseModel::builtin(&Device::Cpu).unwrap().for_fitting();
    assert_eq!(ErrorModel::n_bands(&nm), 26);
    // Its own mock: Prospector-α draws with Ch1 < 26, σ from the noise model.
    let mut rng = HostRng::seed_from_u64(8);
    let (cat, _, _) = ch1_selected_mock(&nm, 300, 26.0, &mut rng);
    let chunk = popcosmos_catalog::ObservedChunk {
        ids: (0..300).map(|i| i.to_string()).collect(),
        n_bands: 26,
        flux_nmgy: cat.flux_nmgy.iter().map(|&f| f as f32).collect(),
        flux_err_nmgy: cat.flux_err_nmgy.iter().map(|&e| e as f32).collect(),
        mask: vec![1.0; 300 * 26],
        row_offset: 0,
        truth: Default::default(),
    };
    let own = ObservedSet::new(&chunk, survey.bands(), None, 1, "mock").unwrap();
    let median = |ks: &[f64]| {
        let mut v = ks.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ks_own = popcosmos_inference::mock::noise_model_ks(&nm, &own, 2000, &mut rng).unwrap();
    eprintln!("own mock, per-band KS: {ks_own:.3?}");
    // Classic photometry: the 100 bundled demo galaxies.
    let spec: popcosmos_catalog::CatalogueSpec = serde_json::from_value(serde_json::json!({
        "path": PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/data/cosmos2020_demo.csv"),
        "units": "mjy",
        "flux_pattern": "flux_{band}",
        "error_pattern": "fluxerr_{band}",
        "upper_limits": "negative_error",
    }))
    .unwrap();
    let chunk = popcosmos_catalog::CatalogueReader::open(&spec, &survey.band_names())
        .unwrap()
        .read_all()
        .unwrap();
    let classic = ObservedSet::new(&chunk, survey.bands(), None, 1, "demo").unwrap();
    let ks_classic =
        popcosmos_inference::mock::noise_model_ks(&nm, &classic, 2000, &mut rng).unwrap();
    eprintln!("Classic demo, per-band KS: {ks_classic:.3?}");
    let limit = popcosmos_inference::mock::NOISE_MODEL_MAX_KS;
    assert!(median(&ks_own) < limit, "own mock: {ks_own:?}");
    assert!(median(&ks_classic) > 2.0 * limit, "Classic: {ks_classic:?}");
}
