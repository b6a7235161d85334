//! Reproduction of the reference fixtures (`tests/fixtures/README.md`).
//!
//! Each test prints the maximum errors it achieved. A missing fixture prints a loud message
//! and returns (CI always has them).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp, Tensor};
use popcosmos_api::{SpsModel, testing::max_abs_diff};
use popcosmos_sps::photulator::{
    flux_to_asinh_mag, mag_to_flux_nmgy, theta_to_photulator_input, theta_to_power,
};
use popcosmos_sps::{
    EmLineEmulator, LineCalibration, Photulator, PhotulatorSps, StellarMassEmulator,
    derived_quantities_batch,
};

fn fixture(name: &str) -> Option<HashMap<String, Tensor>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    if !path.exists() {
        eprintln!(
            "\n!!!!!!!! FIXTURE MISSING: {} — test skipped !!!!!!!!\n",
            path.display()
        );
        return None;
    }
    Some(candle_core::safetensors::load(&path, &Device::Cpu).expect("readable fixture"))
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Max |a − b| / max(|b|, floor) over pairs where `keep` holds; non-finite references must be
/// matched exactly (same infinity / both NaN) and are otherwise skipped when `finite_only`.
fn max_err(a: &[f64], b: &[f64], floor: f64, keep: impl Fn(usize) -> bool) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst: f64 = 0.0;
    for i in 0..a.len() {
        if !keep(i) || !b[i].is_finite() {
            continue;
        }
        let e = (a[i] - b[i]).abs() / b[i].abs().max(floor);
        worst = worst.max(if e.is_nan() { f64::INFINITY } else { e });
    }
    worst
}

#[test]
fn photulator_fixture() {
    let mut phot = Photulator::builtin(&Device::Cpu).unwrap();
    if phot.has_fused_kernel() {
        eprintln!("[fused CPU kernel]");
        check_photulator(&phot);
    }
    eprintln!("[batched tensor path]");
    phot.set_fused_kernel(false);
    check_photulator(&phot);
    // Chunked passes give the same numbers as one pass.
    let mut one_pass = phot.clone();
    one_pass.set_max_rows_per_pass(None);
    phot.set_max_rows_per_pass(Some(7));
    if let Some(fx) = fixture("photulator_fixture.safetensors") {
        let a = phot.absolute_magnitudes(&fx["theta15"]).unwrap();
        let b = one_pass.absolute_magnitudes(&fx["theta15"]).unwrap();
        assert_eq!(f64s(&a), f64s(&b));
    }
}

#[test]
fn fused_kernel_matches_tensor_path() {
    let mut phot = Photulator::builtin(&Device::Cpu).unwrap();
    if !phot.has_fused_kernel() {
        eprintln!("no AVX2/FMA: fused kernel not available, nothing to compare");
        return;
    }
    for n in [1usize, 5, 6, 47, 49, 300] {
        let x = popcosmos_sps::uniform_inputs(n, &Device::Cpu).unwrap();
        // Stay in the populated region so magnitudes are O(10), not O(100).
        let x = x.affine(0.2, 0.0).unwrap();
        phot.set_fused_kernel(true);
        let a = f64s(&phot.absolute_magnitudes(&x).unwrap());
        phot.set_fused_kernel(false);
        let b = f64s(&phot.absolute_magnitudes(&x).unwrap());
        let e = max_err(&a, &b, 1.0, |_| true);
        assert!(e < 2e-5, "n={n}: {e}");
    }
}

fn check_photulator(phot: &Photulator) {
    let Some(fx) = fixture("photulator_fixture.safetensors") else {
        return;
    };
    let dev = Device::Cpu;
    let theta = &fx["theta"];
    // Our θ → θ₁₅ helper reproduces the stored input.
    let theta15 = theta_to_photulator_input(theta).unwrap();
    let e_in = max_err(&f64s(&theta15), &f64s(&fx["theta15"]), 1.0, |_| true);
    assert!(e_in < 1e-6, "theta15 {e_in}");

    let n_param = theta.i((.., 0)).unwrap();
    let absmag = phot.absolute_magnitudes(&theta15).unwrap();
    let mag = phot.magnitudes(&theta15, &n_param).unwrap();
    let flux = mag_to_flux_nmgy(&mag).unwrap();
    let f_b = Tensor::from_slice(phot.flux_softening_nmgy(), 26, &dev).unwrap();
    let asinh = flux_to_asinh_mag(&flux, &f_b).unwrap();
    let e_fb = max_err(&f64s(&f_b), &f64s(&fx["f_b"]), 0.0, |_| true);
    assert!(e_fb < 1e-7);

    let realistic: Vec<u8> = fx["realistic"].to_vec1::<u8>().unwrap();
    let real = |i: usize| realistic[i / 26] == 1;
    let extreme = |i: usize| realistic[i / 26] == 0;
    let d = |a: &Tensor, b: &str, keep: &dyn Fn(usize) -> bool| {
        let (x, y) = (f64s(a), f64s(&fx[b]));
        (0..x.len())
            .filter(|&i| keep(i) && y[i].is_finite())
            .map(|i| (x[i] - y[i]).abs())
            .fold(0.0, f64::max)
    };
    let abs_err = d(&absmag, "absmag", &real);
    let mag_err = d(&mag, "mag", &real);
    let asinh_err = d(&asinh, "asinh_mag", &real);
    let flux_rel = max_err(&f64s(&flux), &f64s(&fx["flux_nmgy"]), 0.0, real);
    let abs_err_extreme = d(&absmag, "absmag", &extreme);
    let mag_err_extreme = d(&mag, "mag", &extreme);
    eprintln!(
        "photulator realistic rows: absmag {abs_err:.2e} mag {mag_err:.2e} asinh {asinh_err:.2e} mag, \
         flux {flux_rel:.2e} rel; extreme rows: absmag {abs_err_extreme:.2e} mag {mag_err_extreme:.2e} mag"
    );
    assert!(
        abs_err < 1e-4 && mag_err < 1e-4 && asinh_err < 1e-4,
        "realistic magnitudes"
    );
    assert!(flux_rel < 1e-4, "realistic fluxes");
    assert!(
        abs_err_extreme < 1e-3 && mag_err_extreme < 1e-3,
        "extreme rows"
    );
    // Infinite reference fluxes (float32 overflow at the box corners) are infinite here too.
    let (ours, refs) = (f64s(&flux), f64s(&fx["flux_nmgy"]));
    for i in 0..refs.len() {
        if refs[i].is_infinite() {
            assert_eq!(ours[i], refs[i], "element {i}");
        }
    }
}

#[test]
fn photulator_debug_intermediates() {
    let Some(fx) = fixture("photulator_fixture.safetensors") else {
        return;
    };
    let phot = Photulator::builtin(&Device::Cpu).unwrap();
    let trace = phot.trace(&fx["theta15"].i(0..8).unwrap()).unwrap();
    let check = |ours: &Tensor, name: &str| {
        let e = max_err(&f64s(ours), &f64s(&fx[name]), 1.0, |_| true);
        eprintln!("{name}: max error {e:.2e} (abs, relative above 1)");
        assert!(e < 1e-4, "{name}: {e}");
    };
    check(&trace.h_in.i(0).unwrap(), "debug.band0.h_in");
    for k in 0..5 {
        check(
            &trace.pre[k].i(0).unwrap(),
            &format!("debug.band0.layer{k}.pre"),
        );
        check(
            &trace.post[k].i(0).unwrap(),
            &format!("debug.band0.layer{k}.post"),
        );
    }
}

#[test]
fn emline_fixture() {
    let Some(fx) = fixture("emline_fixture.safetensors") else {
        return;
    };
    let Some(ph) = fixture("photulator_fixture.safetensors") else {
        return;
    };
    let em = EmLineEmulator::builtin(&Device::Cpu).unwrap();
    let theta16t = &fx["theta16t"];
    // The reference input is θ^power of the photulator-fixture rows.
    let ours_t = theta_to_power(&ph["theta"].i(0..64).unwrap()).unwrap();
    assert!(max_err(&f64s(&ours_t), &f64s(theta16t), 1.0, |_| true) < 1e-6);

    let ls = em.log_spectrum(theta16t).unwrap();
    let e_ls = max_err(&f64s(&ls), &f64s(&fx["log_spectrum"]), 1.0, |_| true);
    let contrib = em.contributions(theta16t).unwrap();
    let (c, r) = (f64s(&contrib), f64s(&fx["contrib_nmgy"]));
    // Relative error, with a floor at 1e-6 of the galaxy's largest contribution so that
    // contributions many decades below the ones that matter do not dominate.
    let per_gal = 26 * 44;
    let scale: Vec<f64> = r
        .chunks(per_gal)
        .map(|g| g.iter().fold(0.0f64, |m, v| m.max(v.abs())))
        .collect();
    let mut e_c: f64 = 0.0;
    let mut e_c_plain: f64 = 0.0;
    for i in 0..r.len() {
        let floor = 1e-6 * scale[i / per_gal];
        e_c = e_c.max((c[i] - r[i]).abs() / r[i].abs().max(floor).max(f64::MIN_POSITIVE));
        if r[i].abs() > 1e-30 {
            e_c_plain = e_c_plain.max((c[i] - r[i]).abs() / r[i].abs());
        }
    }
    // The fused contraction with identity weights equals the full F as well.
    let eye = Tensor::eye(44, DType::F32, &Device::Cpu).unwrap();
    let contracted = em.contract(theta16t, &eye).unwrap();
    let e_k = max_err(&f64s(&contracted), &r, 0.0, |i| {
        r[i].abs() > 1e-6 * scale[i / per_gal]
    });
    eprintln!(
        "emline: log_spectrum {e_ls:.2e} (rel above 1), contrib {e_c:.2e} rel (floor 1e-6 of galaxy max; \
         {e_c_plain:.2e} rel over all |ref| > 1e-30), fused contraction {e_k:.2e} rel"
    );
    assert!(e_ls < 1e-4, "log_spectrum {e_ls}");
    assert!(e_c < 1e-4, "contrib {e_c}");
    assert!(e_k < 1e-4, "contract {e_k}");
}

type Getter = fn(&popcosmos_sps::DerivedQuantities) -> f64;

#[test]
fn stellar_mass_fixture() {
    let Some(fx) = fixture("stellar_mass_fixture.safetensors") else {
        return;
    };
    let emu = StellarMassEmulator::builtin(&Device::Cpu).unwrap();
    let theta = &fx["theta"];
    let mfrac = f64s(&emu.mass_fraction(theta).unwrap());
    let e_m = mfrac
        .iter()
        .zip(f64s(&fx["Mfrac"]))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    // Derived quantities use the reference's float32 Mfrac so that only our maths is tested.
    let d = derived_quantities_batch(&f64s(theta), Some(&f64s(&fx["Mfrac"]))).unwrap();
    let cols: [(&str, Getter, f64); 6] = [
        ("log10M_formed", |q| q.log10_mass_formed, 1e-4),
        ("mw_age_gyr", |q| q.mass_weighted_age_gyr, 1e-4),
        ("log10SFR", |q| q.log10_sfr, 1e-4),
        ("log10sSFR_formed", |q| q.log10_ssfr_formed, 1e-4),
        ("log10M_remaining", |q| q.log10_mass_remaining, 1e-4),
        ("log10sSFR_remaining", |q| q.log10_ssfr_remaining, 1e-4),
    ];
    let mut report = format!("stellar mass: Mfrac {e_m:.2e}");
    for (name, get, tol) in cols {
        let ours: Vec<f64> = d.iter().map(get).collect();
        let refs = f64s(&fx[name]);
        let e = ours
            .iter()
            .zip(&refs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        report += &format!(", {name} {e:.2e}");
        assert!(e < tol, "{name}: {e}");
    }
    // End to end with our own Mfrac.
    let d2 = derived_quantities_batch(&f64s(theta), Some(&mfrac)).unwrap();
    let e_rem = d2
        .iter()
        .zip(f64s(&fx["log10M_remaining"]))
        .map(|(q, r)| (q.log10_mass_remaining - r).abs())
        .fold(0.0, f64::max);
    report += &format!("; log10M_remaining with our Mfrac {e_rem:.2e}");
    eprintln!("{report}");
    assert!(e_m < 1e-5, "Mfrac {e_m}");
    assert!(e_rem < 1e-4);
}

#[test]
fn mock_catalogue_noiseless_fluxes() {
    let Some(fx) = fixture("mock_catalogue.safetensors") else {
        return;
    };
    let v = |k: &str| f64s(&fx[k]);
    let lines = LineCalibration {
        offsets: v("emline_offsets"),
        ln_scatters: v("ln_emline_scatters"),
    };
    let sps = PhotulatorSps::builtin(&lines, &Device::Cpu).unwrap();
    let theta = &fx["theta"];
    let phot = sps.photometry(theta).unwrap();
    let flux = f64s(&phot.flux_nmgy);
    let sigma_em = f64s(phot.line_sigma_nmgy.as_ref().unwrap());
    let zp = v("zero_points");
    let model_ref: Vec<f64> = v("model_flux_zp_maggies").iter().map(|f| f * 1e9).collect();
    let absmag_ref = v("absmag");
    let continuum = f64s(&sps.continuum_flux_nmgy(theta).unwrap());
    // "Not extreme": the photulator output is in the realistic range and the flux is finite.
    let ok = |i: usize| {
        absmag_ref[i].abs() < 60.0 && model_ref[i].is_finite() && model_ref[i].abs() < 1e8
    };
    let mut e_flux: f64 = 0.0;
    let mut n_checked = 0;
    for i in 0..flux.len() {
        if !ok(i) {
            continue;
        }
        n_checked += 1;
        let ours = zp[i % 26] * flux[i];
        // Relative to the continuum so that cancellation by negative line offsets cannot blow
        // up the ratio.
        let denom = model_ref[i].abs().max(zp[i % 26] * continuum[i].abs());
        e_flux = e_flux.max((ours - model_ref[i]).abs() / denom);
    }
    // Intermediates captured from the reference.
    let absmag = f64s(
        &sps.photulator()
            .absolute_magnitudes(&theta_to_photulator_input(theta).unwrap())
            .unwrap(),
    );
    let e_absmag = (0..absmag.len())
        .filter(|&i| ok(i))
        .map(|i| (absmag[i] - absmag_ref[i]).abs())
        .fold(0.0, f64::max);

    // Line-error term: σ̂ = Z sqrt((σ_nm/Z)² + σ_em²), error floor 0.
    let ln_sig = v("ln_sigma_maggies");
    let sig_ref = v("flux_sigma_maggies");
    let nine_ln10 = 9.0 * std::f64::consts::LN_10;
    let (mut e_sig, mut e_sig_em, mut n_em) = (0.0f64, 0.0f64, 0);
    for i in 0..flux.len() {
        if !ok(i) || !sig_ref[i].is_finite() {
            continue;
        }
        let z = zp[i % 26];
        let sigma_nm = (nine_ln10 + ln_sig[i].clamp(-28.0, -19.5)).exp();
        let ours = z * ((sigma_nm / z).powi(2) + sigma_em[i].powi(2)).sqrt();
        let r = sig_ref[i] * 1e9;
        let e = (ours - r).abs() / r;
        e_sig = e_sig.max(e);
        // Where the line term is a sizeable part of the total, this checks σ_em itself.
        if z * sigma_em[i] > 0.1 * r {
            n_em += 1;
            e_sig_em = e_sig_em.max(e);
        }
    }
    eprintln!(
        "mock catalogue ({n_checked} non-extreme band fluxes): model_flux_zp {e_flux:.2e} rel, absmag {e_absmag:.2e} mag; \
         flux_sigma {e_sig:.2e} rel ({n_em} bands where the line term is >10% of sigma: {e_sig_em:.2e})"
    );
    assert!(n_checked > 10_000);
    assert!(e_absmag < 1e-3, "absmag {e_absmag}");
    assert!(e_flux < 1e-4, "model flux {e_flux}");
    assert!(e_sig < 1e-4, "flux sigma {e_sig}");
}

#[test]
fn cosmos_sps_shapes_and_options() {
    let Some(fx) = fixture("mock_catalogue.safetensors") else {
        return;
    };
    let v = |k: &str| f64s(&fx[k]);
    let lines = LineCalibration {
        offsets: v("emline_offsets"),
        ln_scatters: v("ln_emline_scatters"),
    };
    let sps = PhotulatorSps::builtin(&lines, &Device::Cpu).unwrap();
    let theta = fx["theta"].i(0..6).unwrap();
    let flat = sps.photometry(&theta).unwrap();
    let nested = sps.photometry(&theta.reshape((2, 3, 16)).unwrap()).unwrap();
    assert_eq!(nested.flux_nmgy.dims(), &[2, 3, 26]);
    assert_eq!(nested.line_sigma_nmgy.as_ref().unwrap().dims(), &[2, 3, 26]);
    let nested = nested.flux_nmgy.reshape((6, 26)).unwrap();
    assert_eq!(max_abs_diff(&nested, &flat.flux_nmgy), 0.0);
    let continuum = sps.clone().without_emission_lines();
    let c = continuum.photometry(&theta).unwrap();
    assert!(c.line_sigma_nmgy.is_none());
    let expect = sps.continuum_flux_nmgy(&theta).unwrap();
    assert_eq!(max_abs_diff(&c.flux_nmgy, &expect), 0.0);
    // Wrong calibration length is reported.
    let mut bad = lines.clone();
    bad.offsets.pop();
    let err = PhotulatorSps::builtin(&bad, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("43 emission-line offsets"), "{err}");
}
