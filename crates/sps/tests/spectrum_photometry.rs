//! Spectrum emulator → photometry: the Speculator forward pass against an
//! independent f64 implementation, exact AB magnitudes of a flat f_ν spectrum with the 1 + z
//! bandwidth factor, the batched integration against a direct f64 quadrature, filter-curve
//! line responses against the COSMOS App. B models, and a tiny photulator training run that
//! reduces the error and reloads through `Photulator`.

use candle_core::{DType, Device, Tensor};
use popcosmos_api::FilterCurve;
use popcosmos_sps::{
    EmLineEmulator, Photulator, SpectrumEmulator, SpectrumPhotometry, madau95_tau, photulator,
    theta_to_speculator_input,
};
use safetensors::SafeTensors;

const ASSETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets");

fn filter(survey: &str, name: &str) -> FilterCurve {
    FilterCurve::from_path(std::path::Path::new(&format!(
        "{ASSETS}/filters/{survey}/{name}.txt"
    )))
    .unwrap()
}

fn kids(bands: &[&str]) -> Vec<FilterCurve> {
    bands
        .iter()
        .map(|b| filter("kids", &format!("KiDSVIKING_aibn139_{b}")))
        .collect()
}

/// A physical θ row (N, log Z, r1..6, τ₂, n, τ₁/τ₂, ln fAGN, ln τAGN, log Zgas, log U, z).
fn theta_row(z: f64) -> Vec<f32> {
    [
        20.0, -0.5, 0.1, -0.2, 0.05, 0.0, 0.1, -0.1, 0.4, -0.3, 1.0, -6.0, 3.0, -0.5, -2.0, z,
    ]
    .iter()
    .map(|&v| v as f32)
    .collect()
}

fn theta(zs: &[f64]) -> Tensor {
    let flat: Vec<f32> = zs.iter().flat_map(|&z| theta_row(z)).collect();
    Tensor::from_vec(flat, (zs.len(), 16), &Device::Cpu).unwrap()
}

fn f64_tensor(st: &SafeTensors, name: &str) -> Vec<f64> {
    let t = st.tensor(name).unwrap();
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
        .collect()
}

#[test]
fn speculator_segment_matches_an_f64_reimplementation() {
    let bytes = std::fs::read(format!(
        "{ASSETS}/models/speculator_prospector_alpha_400_1100.safetensors"
    ))
    .unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let emu = SpectrumEmulator::builtin(&Device::Cpu).unwrap();
    let th = theta(&[0.7, 1.9]);
    let x14 = theta_to_speculator_input(&th).unwrap();
    let got = emu.segments()[1]
        .ln_lnu(&x14)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let x = x14.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let (sh, sc) = (
        f64_tensor(&st, "input_shift"),
        f64_tensor(&st, "input_scale"),
    );
    for (row, got) in x.iter().zip(&got) {
        let mut h: Vec<f64> = row
            .iter()
            .zip(&sh)
            .zip(&sc)
            .map(|((v, m), s)| (v - m) / s)
            .collect();
        for k in 0..4 {
            let w = f64_tensor(&st, &format!("layer.{k}.weight"));
            let b = f64_tensor(&st, &format!("layer.{k}.bias"));
            let n_out = b.len();
            let mut o: Vec<f64> = (0..n_out)
                .map(|j| b[j] + (0..h.len()).map(|i| w[j * h.len() + i] * h[i]).sum::<f64>())
                .collect();
            if k < 3 {
                let a = f64_tensor(&st, &format!("layer.{k}.alpha"));
                let be = f64_tensor(&st, &format!("layer.{k}.beta"));
                for j in 0..n_out {
                    let s = 1.0 / (1.0 + (-a[j] * o[j]).exp());
                    o[j] *= be[j] + (1.0 - be[j]) * s;
                }
            }
            h = o;
        }
        let (ps, pc) = (f64_tensor(&st, "pca_shift"), f64_tensor(&st, "pca_scale"));
        let basis = f64_tensor(&st, "pca_transform_matrix");
        let (ls, lc) = (
            f64_tensor(&st, "log_spectrum_shift"),
            f64_tensor(&st, "log_spectrum_scale"),
        );
        let nl = ls.len();
        let pca: Vec<f64> = h
            .iter()
            .zip(&ps)
            .zip(&pc)
            .map(|((v, m), s)| v * s + m)
            .collect();
        for j in (0..nl).step_by(97) {
            let want = (0..pca.len())
                .map(|p| pca[p] * basis[p * nl + j])
                .sum::<f64>()
                * lc[j]
                + ls[j];
            assert!(
                (got[j] as f64 - want).abs() < 2e-3 * (1.0 + want.abs()),
                "pixel {j}: {} vs {want}",
                got[j]
            );
        }
    }
}

#[test]
fn flat_fnu_spectrum_gives_the_exact_ab_magnitude_with_the_bandwidth_factor() {
    let dev = Device::Cpu;
    // Redward bands only, so no Lyman absorption enters (rest λ > 1216 Å for z ≤ 2).
    let filters = kids(&["r", "i", "Z", "Y", "J", "H", "Ks"]);
    let sp = SpectrumPhotometry::builtin(&filters, &dev).unwrap();
    let r = sp.emulator().wavelengths_aa().len();
    let zs = [0.0f64, 0.37, 1.0, 2.0];
    let ln_c = -20.0f64; // l_ν = e^−20 maggies at 10 pc per M☉
    let ln_l = Tensor::full(ln_c as f32, (zs.len(), r), &dev).unwrap();
    let z = Tensor::from_slice(&zs, (zs.len(), 1), &dev).unwrap();
    let m = sp
        .absolute_magnitudes_from_ln_lnu(&ln_l, &z)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (i, &zz) in zs.iter().enumerate() {
        // M = −2.5 log10[(1 + z) e^{ln c}]: AB of a flat f_ν, brighter by 2.5 log10(1+z).
        let want = -2.5 * ((1.0 + zz) * ln_c.exp()).log10();
        for (b, v) in m[i].iter().enumerate() {
            assert!(
                (*v as f64 - want).abs() < 2e-5,
                "z {zz} band {b}: {v} vs {want}"
            );
        }
    }
}

/// Direct f64 quadrature of the same integral on a fine observed-frame grid.
fn direct_magnitude(rest_aa: &[f64], lnu: &[f64], f: &FilterCurve, z: f64) -> f64 {
    let (w, t) = (&f.wavelength_aa, &f.transmission);
    let (a, b) = (w[0].ln(), w[w.len() - 1].ln());
    let n = 400_000;
    let ln_rest: Vec<f64> = rest_aa.iter().map(|v| v.ln()).collect();
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..=n {
        let u = a + (b - a) * i as f64 / n as f64;
        let lam = u.exp();
        let k = w.partition_point(|&x| x <= lam).clamp(1, w.len() - 1);
        let tt = (t[k - 1] + (lam - w[k - 1]) / (w[k] - w[k - 1]) * (t[k] - t[k - 1])).max(0.0);
        let ur = u - (1.0 + z).ln();
        let l = if ur < ln_rest[0] || ur > ln_rest[ln_rest.len() - 1] {
            0.0
        } else {
            let j = ln_rest
                .partition_point(|&x| x <= ur)
                .clamp(1, ln_rest.len() - 1);
            let fr = (ur - ln_rest[j - 1]) / (ln_rest[j] - ln_rest[j - 1]);
            lnu[j - 1] + fr * (lnu[j] - lnu[j - 1])
        };
        let wgt = if i == 0 || i == n { 0.5 } else { 1.0 };
        num += wgt * tt * l * (-madau95_tau(lam, z)).exp();
        den += wgt * tt;
    }
    -2.5 * ((1.0 + z) * num / den).log10()
}

#[test]
fn batched_photometry_matches_a_direct_quadrature() {
    let dev = Device::Cpu;
    let filters = kids(&["u", "g", "r", "i", "Z", "Y", "J", "H", "Ks"]);
    let sp = SpectrumPhotometry::builtin(&filters, &dev).unwrap();
    let zs = [0.3f64, 1.2, 3.1];
    let th = theta(&zs);
    let got = sp
        .absolute_magnitudes(&th)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    // Same spectra (age input clamped as the default options do), extended to 912 Å.
    let mut x = theta_to_speculator_input(&th).unwrap();
    let za = th.narrow(1, 15, 1).unwrap().clamp(0.5f32, 2.5f32).unwrap();
    x = Tensor::cat(&[x.narrow(1, 0, 13).unwrap(), za], 1).unwrap();
    let ln_l = sp
        .emulator()
        .ln_lnu(&x)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let ln_l = ln_l.to_vec2::<f64>().unwrap();
    let rest = sp.rest_wavelengths_aa();
    let n_ext = rest.len() - ln_l[0].len();
    for (i, &z) in zs.iter().enumerate() {
        let lnu: Vec<f64> = std::iter::repeat_n(ln_l[i][0], n_ext)
            .chain(ln_l[i].iter().copied())
            .map(f64::exp)
            .collect();
        for (b, f) in filters.iter().enumerate() {
            let want = direct_magnitude(rest, &lnu, f, z);
            let d = got[i][b] as f64 - want;
            // Where the Lyman-series IGM steps (1216, 1026, … Å rest) fall inside the band the
            // batched path resolves them only to a native pixel (10 Å there): measured
            // 4e−3 mag for u at z = 3.1; elsewhere ≲ 1e−3.
            let lyman_in_band = f.wavelength_aa[0] / (1.0 + z) < 1216.0;
            let tol = if lyman_in_band { 6e-3 } else { 2e-3 };
            assert!(
                d.abs() < tol,
                "z {z} {}: batched {} direct {want}",
                f.name,
                got[i][b]
            );
        }
    }
}

#[test]
fn knot_thinning_of_the_1_aa_lsst_curves_keeps_magnitudes_within_1e4_mag() {
    use popcosmos_sps::PhotometryOptions;
    let dev = Device::Cpu;
    let lsst: Vec<FilterCurve> = ["u", "g", "r", "i", "z", "y"]
        .iter()
        .map(|b| filter("lsst", &format!("lsst_baseline_1_9_{b}")))
        .collect();
    let th = theta(&[0.05, 0.4, 1.1, 2.3, 3.4, 5.0]);
    let emu = || SpectrumEmulator::builtin(&dev).unwrap();
    let exact = SpectrumPhotometry::new(
        emu(),
        &lsst,
        PhotometryOptions {
            knot_tolerance: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let thinned = SpectrumPhotometry::new(emu(), &lsst, PhotometryOptions::default()).unwrap();
    let a = exact
        .absolute_magnitudes(&th)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let b = thinned
        .absolute_magnitudes(&th)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    // z ≤ 2.3: < 1e-4 mag. z = 3.4 and 5 put steep Lyman-series/Lyman-limit IGM steps inside
    // u and g, where the method's own accuracy is ~6e-3 (docs/emulators.md); measured 5e-3.
    for ((ra, rb), tol) in a.iter().zip(&b).zip([1e-4, 1e-4, 1e-4, 1e-4, 6e-3, 6e-3]) {
        for (x, y) in ra.iter().zip(rb) {
            if *x < 40.0 {
                assert!((x - y).abs() < tol, "{x} vs {y}");
            }
        }
    }
}

#[test]
fn convention_matches_the_cosmos_photulators() {
    // Same θ through both paths at 0.5 ≤ z ≤ 2.5 (the spectrum emulator's range): the
    // optical/NIR broad bands agree to a few 0.01 mag on average if the units (maggies at
    // 10 pc per M☉), the (1 + z) factor and m = M + N are right; a units slip is ≥ 1 mag.
    let dev = Device::Cpu;
    let phot = Photulator::builtin(&dev).unwrap();
    let names = [
        "hsc_g",
        "hsc_r",
        "hsc_i",
        "hsc_z",
        "uvista_j_cosmos",
        "uvista_ks_cosmos",
    ];
    let filters: Vec<FilterCurve> = names.iter().map(|n| filter("cosmos", n)).collect();
    let sp = SpectrumPhotometry::builtin(&filters, &dev).unwrap();
    let zs = [0.6, 0.9, 1.3, 1.7, 2.2];
    let th = theta(&zs);
    let m_spec = sp
        .absolute_magnitudes(&th)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let m_phot = phot
        .absolute_magnitudes(&photulator::theta_to_photulator_input(&th).unwrap())
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let idx: Vec<usize> = names
        .iter()
        .map(|n| phot.band_names().iter().position(|b| b == n).unwrap())
        .collect();
    let mut sum = 0.0;
    for i in 0..zs.len() {
        for (b, &j) in idx.iter().enumerate() {
            let d = (m_spec[i][b] - m_phot[i][j]) as f64;
            assert!(d.abs() < 0.5, "z {} {}: Δ = {d}", zs[i], names[b]);
            sum += d;
        }
    }
    let mean = sum / (zs.len() * names.len()) as f64;
    assert!(mean.abs() < 0.1, "mean Δ = {mean}");
}

#[test]
fn filter_curve_line_responses_agree_with_the_cosmos_bandpass_models() {
    let dev = Device::Cpu;
    let phot = Photulator::builtin(&dev).unwrap();
    let filters: Vec<FilterCurve> = phot
        .band_names()
        .iter()
        .map(|n| filter("cosmos", n))
        .collect();
    let ggmm = EmLineEmulator::builtin(&dev).unwrap();
    let curves = EmLineEmulator::builtin(&dev)
        .unwrap()
        .with_filter_curves(&filters)
        .unwrap();
    assert!(curves.has_filter_curve_responses() && curves.n_bands() == 26);
    // Total line flux per band over galaxies spread in z, so lines sweep through every band.
    let zs: Vec<f64> = (0..60).map(|i| 0.05 + 0.07 * i as f64).collect();
    let th = photulator::theta_to_power(&theta(&zs)).unwrap();
    let sum = |e: &EmLineEmulator| -> Vec<f64> {
        let f = e
            .contributions(&th)
            .unwrap()
            .sum(2)
            .unwrap()
            .sum(0)
            .unwrap();
        f.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
    };
    let (a, b) = (sum(&ggmm), sum(&curves));
    for (k, name) in phot.band_names().iter().enumerate() {
        let ratio = b[k] / a[k];
        eprintln!("{name}: filter-curve / App. B line flux = {ratio:.3}");
        // The App. B fits are 2-component approximations of T/(c∫T/λ): measured agreement
        // 0.995–1.022 for these summed fluxes (docs/emulators.md); a units slip is ×10^k.
        assert!(
            (0.97..1.04).contains(&ratio),
            "{name}: curve/GGMM = {ratio}"
        );
    }
}

#[test]
fn tiny_training_run_reduces_the_error_and_reloads_through_photulator() {
    use popcosmos_sps::train::{TrainOptions, TrainedPhotulators, band_stats};
    let dev = Device::Cpu;
    let mut filters = kids(&["r", "J"]);
    for (f, n) in filters.iter_mut().zip(["r", "J"]) {
        f.name = n.into();
    }
    let sp = SpectrumPhotometry::builtin(&filters, &dev).unwrap();
    // Deterministic pseudo-random θ around theta_row, z in [0.2, 2].
    let mut s = 12345u64;
    let mut u = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let rows: Vec<Vec<f32>> = (0..400)
        .map(|_| {
            let mut r = theta_row(0.2 + 1.8 * u());
            r[1] = (-1.5 + 1.5 * u()) as f32;
            r[8] = (1.5 * u()) as f32;
            r
        })
        .collect();
    let th = Tensor::from_vec(rows.concat(), (rows.len(), 16), &dev).unwrap();
    let y = sp
        .absolute_magnitudes(&th)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let x = photulator::theta_to_photulator_input(&th)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let (xt, xh) = x.split_at(300);
    let (yt, yh) = y.split_at(300);
    let opts = TrainOptions {
        hidden: vec![16, 16],
        steps: 300,
        batch_size: 64,
        lr_start: 1e-2,
        lr_end: 1e-3,
        seed: 3,
        eval_every: 50,
        init: None,
        train_bands: None,
    };
    let mut curve = Vec::new();
    // A checkpoint written at step 100 reloads to the networks of that step.
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("step100.safetensors");
    let mut at_checkpoint = Vec::new();
    let model = TrainedPhotulators::train(
        vec!["r".into(), "J".into()],
        xt,
        yt,
        None,
        (xh, yh),
        &opts,
        &dev,
        &mut |p, m| {
            curve.push(p.heldout_rms_mag.clone().unwrap());
            if p.step == 100 {
                m.save(&checkpoint, &[0.003, 0.003], serde_json::json!({}))?;
                at_checkpoint = m.predict(xh);
            }
            Ok(())
        },
    )
    .unwrap();
    let reloaded = Photulator::load(&checkpoint, &dev).unwrap();
    let xh_rows = Tensor::from_vec(xh.concat(), (xh.len(), 15), &dev).unwrap();
    let again = reloaded
        .absolute_magnitudes(&xh_rows)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert!(
        band_stats(&again, &at_checkpoint)
            .iter()
            .all(|s| s.max_abs < 1e-3)
    );
    let end = model.predict(xh);
    assert!(
        band_stats(&end, &at_checkpoint)
            .iter()
            .any(|s| s.max_abs > 1e-2)
    );
    let first: f64 = curve[0].iter().sum();
    let last: f64 = curve.last().unwrap().iter().sum();
    assert!(last < 0.7 * first, "held-out RMS {first} → {last}");
    let path = dir.path().join("tiny.safetensors");
    model
        .save(&path, &[0.003, 0.003], serde_json::json!({"note": "test"}))
        .unwrap();
    let loaded = Photulator::load(&path, &dev).unwrap();
    assert_eq!(loaded.band_names(), ["r", "J"]);
    let xh_t = Tensor::from_vec(xh.concat(), (xh.len(), 15), &dev).unwrap();
    let a = model
        .absolute_magnitudes(&xh_t)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let b = loaded
        .absolute_magnitudes(&xh_t)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let st = band_stats(&b, &a);
    assert!(st.iter().all(|s| s.max_abs < 1e-3), "{st:?}");

    // Continue from the saved set, training only band J, once unweighted and once with the
    // loss weighted to the low-redshift rows: r must stay bit-identical, and the weighting
    // must buy accuracy where it points (held-out rows at z < 0.8).
    let file = popcosmos_sps::WeightFile::from_path(&path, &dev).unwrap();
    let arch = [15, 16, 16, 1];
    let cont = |weight: Option<&[Vec<f32>]>| {
        let opts = TrainOptions {
            steps: 400,
            lr_start: 3e-3,
            lr_end: 3e-4,
            eval_every: 0,
            init: Some(
                popcosmos_sps::train::WarmStart::from_photulator(&file, &arch, &[0, 1]).unwrap(),
            ),
            train_bands: Some(vec![1]),
            ..opts.clone()
        };
        TrainedPhotulators::train(
            vec!["r".into(), "J".into()],
            xt,
            yt,
            weight,
            (xh, yh),
            &opts,
            &dev,
            &mut |_, _| Ok(()),
        )
        .unwrap()
        .predict(xh)
    };
    let low_z = |rows: &[Vec<f32>]| -> Vec<bool> { rows.iter().map(|r| r[14] < 0.8).collect() };
    let w: Vec<Vec<f32>> = low_z(xt)
        .into_iter()
        .map(|l| vec![1.0, if l { 1.0 } else { 0.02 }])
        .collect();
    let (plain, weighted) = (cont(None), cont(Some(&w)));
    for p in [&plain, &weighted] {
        assert!(
            p.iter().zip(&end).all(|(a, b)| a[0] == b[0]),
            "band r moved"
        );
    }
    let keep = low_z(xh);
    let rms_low = |p: &[Vec<f32>]| -> f64 {
        let d: Vec<f64> = (0..p.len())
            .filter(|&r| keep[r])
            .map(|r| (p[r][1] - yh[r][1]) as f64)
            .collect();
        (d.iter().map(|v| v * v).sum::<f64>() / d.len() as f64).sqrt()
    };
    let (a, b) = (rms_low(&plain), rms_low(&weighted));
    eprintln!("J held-out RMS at z < 0.8: unweighted {a:.4}, weighted {b:.4}");
    assert!(
        b < 0.9 * a,
        "weighting did not help where it points: {a} → {b}"
    );

    // The generic SPS model over the trained set + filter-curve line responses.
    use popcosmos_api::SpsModel;
    let cal = popcosmos_sps::LineCalibration {
        offsets: vec![0.1; 44],
        ln_scatters: vec![-2.0; 44],
    };
    let sps = popcosmos_sps::PhotulatorSps::for_filter_set(loaded.clone(), &filters, &cal).unwrap();
    let out = sps.photometry(&th.narrow(0, 0, 5).unwrap()).unwrap();
    assert_eq!(out.flux_nmgy.dims(), [5, 2]);
    let sig = out.line_sigma_nmgy.unwrap().to_vec2::<f32>().unwrap();
    assert!(sig.iter().flatten().all(|v| v.is_finite() && *v >= 0.0));
    let swapped = [filters[1].clone(), filters[0].clone()];
    let err = popcosmos_sps::PhotulatorSps::for_filter_set(loaded, &swapped, &cal)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("do not match"), "{err}");
}
