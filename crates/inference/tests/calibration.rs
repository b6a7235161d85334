//! Zero-point calibration recovers offsets injected into a mock catalogue, and YAML surveys
//! with band subsets of the COSMOS emulators run through manifests.
//!
//! The mock: prior draws with 0.1 < z < 1.5 through the 6-band (u + HSC grizy) subset model,
//! multiplied by injected zero points (g × 0.9, z × 1.1), Gaussian noise at S/N = 50.
//! `calibrate` (redshift pinned at the truth, short chains) must recover them.
//! The default test is small (16 galaxies); `mock_calibration_many_galaxies` (ignored; run
//! with `cargo test --release -p popcosmos-inference --test calibration -- --ignored`)
//! uses 120 galaxies and tighter tolerances.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use popcosmos_api::{HostRng, N_PARAMS, RandomSource, SpsModel, params::phi_to_theta};
use popcosmos_inference::{CalibrationOptions, CalibrationOutcome, calibrate};
use popcosmos_inference::{Manifest, Pipeline};
use popcosmos_models::HubConfig;

const BANDS: [(&str, &str); 6] = [
    ("u_megaprime_sagem", "u"),
    ("hsc_g", "g"),
    ("hsc_r", "r"),
    ("hsc_i", "i"),
    ("hsc_z", "z"),
    ("hsc_y", "y"),
];
const INJECTED: [f64; 6] = [1.0, 0.9, 1.0, 1.0, 1.1, 1.0];

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/filters/cosmos")
}

fn write_survey(dir: &Path) -> PathBuf {
    let mut s = String::from(
        "name: mock-ugrizy\ncolumns: {flux: 'flux_{label}', error: 'fluxerr_{label}'}\nbands:\n",
    );
    for (name, label) in BANDS {
        s += &format!(
            "  - {{name: {name}, label: {label}, filter: {}/{name}.txt, depth_5sigma_ab: 27}}\n",
            assets().display()
        );
    }
    let p = dir.join("survey.yaml");
    std::fs::write(&p, s).unwrap();
    p
}

fn manifest(dir: &Path, catalogue: &str, walkers: usize, steps: usize, library: usize) -> Manifest {
    let survey = write_survey(dir);
    let text = format!(
        "survey: {{file: {}, calibration: uncalibrated}}\n\
         catalogue: {{path: {catalogue}, units: nanomaggies, truth_columns: [zspec]}}\n\
         prior: {{kind: prospector-alpha}}\n\
         likelihood: {{kind: gaussian}}\n\
         sampler: {{walkers: {walkers}, steps: {steps}, burn_in: {}}}\n\
         init: {{library_size: {library}}}\n\
         output: {{dir: out}}\nseed: 5\ngalaxies_per_batch: 64\n",
        survey.display(),
        steps * 2 / 3
    );
    let path = dir.join("manifest.yaml");
    std::fs::write(&path, text).unwrap();
    Manifest::load(&path).unwrap()
}

/// Write a mock catalogue of `n` galaxies with the injected zero points; returns its path.
fn write_mock(dir: &Path, pipeline: &Pipeline, n: usize, seed: u64) -> PathBuf {
    write_mock_with(dir, pipeline, n, seed, &INJECTED)
}

/// The same with zero points `zp`.
fn write_mock_with(dir: &Path, pipeline: &Pipeline, n: usize, seed: u64, zp: &[f64]) -> PathBuf {
    let dev = Device::Cpu;
    let mut rng = HostRng::seed_from_u64(seed);
    let phi = pipeline.prior.sample(20 * n, &mut rng, &dev).unwrap();
    let theta = phi_to_theta(&phi).unwrap();
    let th: Vec<Vec<f32>> = theta.to_vec2().unwrap();
    let keep: Vec<u32> = (0..th.len() as u32)
        .filter(|&i| (0.1..1.5).contains(&th[i as usize][N_PARAMS - 1]))
        .take(n)
        .collect();
    assert_eq!(keep.len(), n);
    let idx = Tensor::from_vec(keep.clone(), n, &dev).unwrap();
    let theta = theta.index_select(&idx, 0).unwrap();
    let flux: Vec<Vec<f32>> = pipeline
        .sps
        .photometry(&theta)
        .unwrap()
        .flux_nmgy
        .to_vec2()
        .unwrap();
    let noise: Vec<Vec<f32>> = rng.normal(&(n, 6).into(), &dev).unwrap().to_vec2().unwrap();
    let mut csv = String::from("id,zspec");
    for (_, l) in BANDS {
        csv += &format!(",flux_{l},fluxerr_{l}");
    }
    csv += "\n";
    for g in 0..n {
        csv += &format!("g{g},{}", th[keep[g] as usize][N_PARAMS - 1]);
        for b in 0..6 {
            let f = zp[b] * flux[g][b] as f64;
            let sigma = 0.02 * f;
            csv += &format!(",{},{}", f + sigma * noise[g][b] as f64, sigma);
        }
        csv += "\n";
    }
    let p = dir.join("mock.csv");
    std::fs::write(&p, csv).unwrap();
    p
}

/// `calibrate` on the whole catalogue of `m` (the 6-band mock survey); the pipeline after it.
fn calibrate_mock(m: Manifest, options: &CalibrationOptions) -> (CalibrationOutcome, Pipeline) {
    let mut pipeline = Pipeline::new(m, &HubConfig::from_env()).unwrap();
    assert_eq!(pipeline.survey.band_names().len(), 6);
    let all = popcosmos_catalog::CatalogueReader::open(
        &pipeline.manifest.catalogue,
        &pipeline.survey.band_names(),
    )
    .unwrap()
    .read_all()
    .unwrap();
    let out = calibrate(&mut pipeline, &all, options, &mut |_, _, _| {}).unwrap();
    (out, pipeline)
}

fn run(n: usize, walkers: usize, steps: usize, library: usize) -> CalibrationOutcome {
    let dir = tempfile::tempdir().unwrap();
    // A first pipeline (same survey and SPS) makes the mock.
    std::fs::write(dir.path().join("mock.csv"), "id,zspec\n").unwrap();
    let m = manifest(dir.path(), "mock.csv", walkers, steps, library);
    let maker = Pipeline::new(m.clone(), &HubConfig::from_env()).unwrap();
    write_mock(dir.path(), &maker, n, 11);
    let options = CalibrationOptions {
        iterations: 3,
        reference_band: Some("i".into()),
        ..Default::default()
    };
    let (out, _) = calibrate_mock(m, &options);
    assert_eq!(out.n_galaxies, n);
    assert_eq!(out.history.len(), 4);
    assert_eq!(out.zero_points[3], 1.0, "reference band held fixed");
    eprintln!("history {:?}", out.history);
    out
}

#[test]
fn mock_calibration_recovers_injected_zero_points() {
    let out = run(16, 32, 150, 4000);
    let zp = out.zero_points.clone();
    // Every band of every galaxy is measured, so each has a residual at its spec-z.
    assert_eq!(out.residuals.len(), 16 * 6);
    for b in 0..6 {
        let rows: Vec<_> = out.residuals.iter().filter(|r| r.band == b).collect();
        assert_eq!(rows.len(), 16, "band {b}");
        // The mock's model is the fitted one, so once the fitted zero points are applied
        // the median observed / model flux is 1 within the zero points' own error (< 0.045
        // below; 16 galaxies at 2 % noise).
        let ratios: Vec<f64> = rows.iter().map(|r| r.ratio()).collect();
        let m = popcosmos_api::stats::median(&ratios);
        assert!((m - 1.0).abs() < 0.045, "band {b}: median obs / model {m}");
        for r in &rows {
            // Each row is its galaxy's: the mock's ids are g0… and its z in (0.1, 1.5).
            assert!(r.id.starts_with('g') && (0.1..1.5).contains(&r.z), "{r:?}");
            assert_eq!(r.normalised(0.0) > 0.0, r.ratio() > 1.0, "{r:?}");
        }
    }
    for (b, (z, t)) in zp.iter().zip(INJECTED).enumerate() {
        assert!(
            (z - t).abs() < 0.045,
            "band {b}: fitted {z}, injected {t} ({zp:?})"
        );
    }
    // The offsets are found, not just bounded: g and z moved most of the way from 1.
    assert!(zp[1] < 0.93 && zp[4] > 1.07, "{zp:?}");
}

/// The Hα + [N II] flux of the mock is twice the model's (offsets written in a calibration
/// file, which also checks that the file reaches the SPS model); `calibrate --line-offsets
/// halpha`, starting from the model's offsets, must move the scale up from 1 toward 2 at
/// every iteration after the first, with the zero points (none injected) staying at 1.
/// Measured (2026-12-07): 0.99, 1.04, 1.10 after 1–3 iterations. Under Prospector-α each
/// galaxy's gas parameters are free, so the posteriors absorb most of a line-flux error and
/// the plain steps are slow; a secant step recovered 1.68 in 5 iterations here but ran away
/// on real galaxies (docs/surveys.md).
#[test]
fn mock_calibration_recovers_a_scaled_line_group() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mock.csv"), "id,zspec\n").unwrap();
    let m = manifest(dir.path(), "mock.csv", 32, 150, 4000);
    let plain = Pipeline::new(m.clone(), &HubConfig::from_env()).unwrap();
    let base = plain.sps.line_calibration().unwrap().offsets.clone();
    let group = &popcosmos_inference::LINE_GROUPS[0];
    assert_eq!(group.0, "halpha");
    let idx = plain
        .sps
        .line_indices_at(&group.1.iter().map(|l| l.1).collect::<Vec<_>>())
        .unwrap();
    // A maker whose calibration file doubles the group's flux.
    let mut cal = String::from("survey: mock-ugrizy\nbands:\n");
    for (_, l) in BANDS {
        cal += &format!("  - {{band: {l}, zero_point: 1, error_floor: 0}}\n");
    }
    cal += "emission_lines:\n";
    for ((_, lambda), &i) in group.1.iter().zip(&idx) {
        cal += &format!(
            "  - {{lambda_aa: {lambda}, offset: {}}}\n",
            2.0 * (1.0 + base[i]) - 1.0
        );
    }
    std::fs::write(dir.path().join("lines.yaml"), &cal).unwrap();
    let mut maker_manifest = m.clone();
    maker_manifest.survey.calibration_file = Some(dir.path().join("lines.yaml"));
    let maker = Pipeline::new(maker_manifest, &HubConfig::from_env()).unwrap();
    let doubled = &maker.sps.line_calibration().unwrap().offsets;
    for &i in &idx {
        assert!((1.0 + doubled[i] - 2.0 * (1.0 + base[i])).abs() < 1e-9);
    }
    let n = 40;
    write_mock_with(dir.path(), &maker, n, 13, &[1.0; 6]);
    let options = CalibrationOptions {
        iterations: 3,
        reference_band: Some("i".into()),
        line_groups: vec!["halpha".into()],
        ..Default::default()
    };
    let (out, pipeline) = calibrate_mock(m, &options);
    let g = &out.line_groups[0];
    eprintln!("halpha {g:?}; zero points {:?}", out.zero_points);
    assert_eq!(g.history.len(), 4);
    assert_eq!(g.history[0], 1.0);
    assert!(g.error > 0.0 && g.error < 0.3, "{g:?}");
    assert!(
        g.history[3] > g.history[2] && g.history[2] > g.history[1],
        "{g:?}"
    );
    assert!(g.scale > 1.05 && g.scale < 2.0, "{g:?}");
    // The fitted offsets are in the model the pipeline now holds.
    let now = &pipeline.sps.line_calibration().unwrap().offsets;
    for (&i, (_, _, alpha)) in idx.iter().zip(&g.offsets) {
        assert!((now[i] - alpha).abs() < 1e-12);
    }
    for (b, z) in out.zero_points.iter().enumerate() {
        assert!((z - 1.0).abs() < 0.045, "band {b}: {:?}", out.zero_points);
    }
}

/// KNOWN FAILURE (measured 2026-11-26, release, 154 s): with 120 galaxies the fitted zero
/// points are biased along a smooth tilt with wavelength — u 1.062, g 0.941, r 1.014,
/// z 1.089, y 0.976 (i fixed at 1) against injected 1, 0.9, 1, 1.1, 1 — i.e. up to 6 % in
/// u and 4.5 % in g. A tilt of the zero points trades against the population's dust / SFH
/// parameters, and the non-mixing pinned-z chains plus the secant update drift along that
/// direction. The requirement (0.015) is kept so the test shows the problem.
#[test]
#[ignore = "slow (120 galaxies × 3 iterations) and currently failing; run with --release -- --ignored"]
fn mock_calibration_many_galaxies() {
    let zp = run(120, 48, 200, 20000).zero_points;
    for (b, (z, t)) in zp.iter().zip(INJECTED).enumerate() {
        assert!(
            (z - t).abs() < 0.015,
            "band {b}: fitted {z}, injected {t} ({zp:?})"
        );
    }
}

/// A YAML survey and a calibration file given by paths relative to the manifest reach the
/// pipeline's likelihood calibration; `{label}` patterns expand; a bad band is named.
#[test]
fn calibration_file_loads_through_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    write_survey(dir.path());
    std::fs::write(dir.path().join("cat.csv"), "id,zspec\n").unwrap();
    let zps = [1.05, 0.95, 1.0, 1.0, 1.1, 0.9];
    let mut cal = String::from("survey: mock-ugrizy\nbands:\n");
    for ((_, l), z) in BANDS.iter().zip(zps) {
        cal += &format!("  - {{band: {l}, zero_point: {z}, error_floor: 0.04}}\n");
    }
    std::fs::write(dir.path().join("cal.yaml"), &cal).unwrap();
    let text = "survey: {file: survey.yaml, calibration_file: cal.yaml}\n\
                catalogue: {path: cat.csv, units: nanomaggies, flux_pattern: 'F_{label}', error_pattern: 'E_{label}'}\n\
                prior: {kind: prospector-alpha}\noutput: {dir: out}\n";
    let path = dir.path().join("m.yaml");
    std::fs::write(&path, text).unwrap();
    let m = Manifest::load(&path).unwrap();
    let cols = m.catalogue.bands.clone().unwrap();
    assert_eq!(
        (cols[1].band.as_str(), cols[1].flux.as_str()),
        ("hsc_g", "F_g")
    );
    let p = Pipeline::new(m, &HubConfig::from_env()).unwrap();
    assert_eq!(p.survey.calibration().zero_points, zps.to_vec());
    assert_eq!(p.survey.calibration().error_floors, vec![0.04; 6]);
    // A calibration file with a band the survey lacks.
    std::fs::write(
        dir.path().join("cal.yaml"),
        cal.replace("band: y", "band: Ks"),
    )
    .unwrap();
    let e = Manifest::load(&path).err().unwrap().to_string();
    assert!(
        e.contains("survey.calibration_file") && e.contains("'Ks'"),
        "{e}"
    );
    // Line offsets at a wavelength with no line, or without the line model, are refused.
    let lines =
        |lambda: f64| format!("{cal}emission_lines:\n  - {{lambda_aa: {lambda}, offset: 0.2}}\n");
    std::fs::write(dir.path().join("cal.yaml"), lines(6000.0)).unwrap();
    let m = Manifest::load(&path).unwrap();
    let e = Pipeline::new(m, &HubConfig::from_env())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("survey.calibration_file") && e.contains("6000"),
        "{e}"
    );
    std::fs::write(dir.path().join("cal.yaml"), lines(6564.6)).unwrap();
    let mut m = Manifest::load(&path).unwrap();
    let p = Pipeline::new(m.clone(), &HubConfig::from_env()).unwrap();
    assert!((p.sps.line_calibration().unwrap().offsets[42] - 0.2).abs() < 1e-12);
    m.sps = popcosmos_inference::SpsSpec::Photulator {
        weights: "builtin:photulator_cosmos26".into(),
        emission_lines: false,
        max_rows: None,
        igm_scatter: 0.0,
    };
    let e = Pipeline::new(m, &HubConfig::from_env())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("survey.calibration_file") && e.contains("emission_lines"),
        "{e}"
    );
}

/// The built-in KiDS survey on the COSMOS emulator set: the error names the key and the
/// first band the set lacks.
#[test]
fn kids_survey_on_the_cosmos_set_names_the_missing_band() {
    let m = Manifest::from_yaml(
        "survey: {name: kids}\ncatalogue: {path: x.csv, units: nanomaggies}\n\
         prior: {kind: uniform}\noutput: {dir: out}\n",
        "m.yaml",
    )
    .unwrap();
    let e = Pipeline::new(m, &HubConfig::from_env())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("sps.weights") && e.contains("KiDSVIKING_aibn139_u"),
        "{e}"
    );
}

/// The opt-in KiDS calibration with emission-line offsets loads through the example
/// manifest: its offsets reach the SPS model, the other lines keep Leistedt+23's, and its
/// fitted Hα + [N II] scale is the ratio of the file's to Leistedt+23's 1 + α.
#[test]
fn kids_line_offset_calibration_reaches_the_sps_model() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut manifest = Manifest::load(&examples.join("kids-viking.yaml")).unwrap();
    let file =
        examples.join("calibrations/kids_kv450_specz_population_r2_kids9v2_lines.calibration.yaml");
    manifest.survey.calibration_file = Some(file.clone());
    let pipeline = Pipeline::new(manifest, &HubConfig::from_env()).unwrap();
    let lines = popcosmos_surveys::CalibrationFile::load(&file)
        .unwrap()
        .line_offsets("f")
        .unwrap();
    assert_eq!(lines.len(), 8);
    let base = popcosmos_sps::LineCalibration::leistedt23().offsets;
    let used = &pipeline.sps.line_calibration().unwrap().offsets;
    let idx = pipeline
        .sps
        .line_indices_at(&lines.iter().map(|l| l.0).collect::<Vec<_>>())
        .unwrap();
    for (&i, (_, alpha)) in idx.iter().zip(&lines) {
        assert_eq!(used[i], *alpha);
    }
    // Hα (42) and [N II] 6585 (25) carry the same group scale, about 2.
    let scale = |i: usize| (1.0 + used[i]) / (1.0 + base[i]);
    assert!((scale(42) - scale(25)).abs() < 1e-5 && (1.8..2.4).contains(&scale(42)));
    for i in (0..44).filter(|i| !idx.contains(i)) {
        assert_eq!(used[i], base[i], "line {i}");
    }
}

/// `examples/kids-viking.yaml` runs on the fitted population, the retrained KiDS emulators
/// and the calibration shipped beside them: the pipeline's zero points, floors and
/// emission-line offsets are the file's, band by band and line by line. The calibration files were fitted on KV450 rows disjoint from the
/// example's and from the evaluation half (docs/population.md, docs/emulators.md, docs/
/// validation.md "With SMC: the spec-z calibration"). Under Prospector-α (earlier emulators)
/// the u zero point carries the OmegaCAM-u colour term (0.92); under the population every
/// band is within 10 % of 1 (u and Ks 1.07–1.09 with the retrained set).
#[test]
fn kids_example_uses_its_shipped_calibration() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let manifest = Manifest::load(&examples.join("kids-viking.yaml")).unwrap();
    let pipeline = Pipeline::new(manifest, &HubConfig::from_env()).unwrap();
    assert!(
        pipeline
            .prior
            .name()
            .contains("population_kids_kv450_specz_r2"),
        "{}",
        pipeline.prior.name()
    );
    let popcosmos_inference::SpsSpec::Photulator { weights, .. } = &pipeline.manifest.sps;
    assert_eq!(weights, "builtin:photulator_kids9_v2");
    let load = |name: &str| {
        popcosmos_surveys::CalibrationFile::load(&examples.join("calibrations").join(name)).unwrap()
    };
    let file = load("kids_kv450_population_r2_kids9v2_photlines.calibration.yaml");
    assert_eq!(file.bands.len(), 9);
    // Its zero points and floors are the spec-z calibration's; its line offsets, fitted
    // from photometry alone, reach the SPS model, and every other line keeps Leistedt+23's.
    assert_eq!(
        file.bands,
        load("kids_kv450_specz_population_r2_kids9v2.calibration.yaml").bands
    );
    assert_eq!(file.line_offsets("f").unwrap().len(), 8);
    file_reaches_the_pipeline(&pipeline, &file);
    for band in &file.bands {
        assert!((band.zero_point - 1.0).abs() < 0.10, "{}", band.band);
    }
    for band in &load("kids_kv450_specz.calibration.yaml").bands {
        if band.label.as_deref() == Some("u") {
            assert!((0.85..0.95).contains(&band.zero_point));
        } else {
            assert!((band.zero_point - 1.0).abs() < 0.07, "{}", band.band);
        }
    }
}

/// Every band's zero point and floor of `file` is the pipeline's, its line offsets reach the
/// SPS model, and every other line keeps Leistedt+23's offset.
fn file_reaches_the_pipeline(pipeline: &Pipeline, file: &popcosmos_surveys::CalibrationFile) {
    let used = pipeline.survey.calibration();
    let lines = file.line_offsets("f").unwrap();
    let idx = pipeline
        .sps
        .line_indices_at(&lines.iter().map(|l| l.0).collect::<Vec<_>>())
        .unwrap();
    let (used_lines, base) = (
        &pipeline.sps.line_calibration().unwrap().offsets,
        popcosmos_sps::LineCalibration::leistedt23().offsets,
    );
    for (&i, (_, alpha)) in idx.iter().zip(&lines) {
        assert_eq!(used_lines[i], *alpha);
    }
    for i in (0..base.len()).filter(|i| !idx.contains(i)) {
        assert_eq!(used_lines[i], base[i], "line {i}");
    }
    assert_eq!(used.zero_points.len(), file.bands.len());
    for (b, band) in file.bands.iter().enumerate() {
        assert_eq!(used.zero_points[b], band.zero_point, "{}", band.band);
        assert_eq!(
            Some(used.error_floors[b]),
            band.error_floor,
            "{}",
            band.band
        );
    }
}

/// The COSMOS demo runs on the spec-z calibration fitted on z > 2.5 galaxies outside it
/// (docs/validation.md, "COSMOS z > 2.5: a spec-z calibration"): its 26 zero points and
/// floors and its Hβ + [O III] / [O II] offsets reach the pipeline, with the IGM scatter it
/// was fitted under.
#[test]
fn cosmos_demo_uses_its_shipped_spec_z_calibration() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let manifest = Manifest::load(&examples.join("cosmos-demo.yaml")).unwrap();
    let popcosmos_inference::SpsSpec::Photulator { igm_scatter, .. } = &manifest.sps;
    assert_eq!(*igm_scatter, 0.5);
    let pipeline = Pipeline::new(manifest, &HubConfig::from_env()).unwrap();
    let file = popcosmos_surveys::CalibrationFile::load(
        &examples.join("calibrations/cosmos2020_zgt2p5_specz.calibration.yaml"),
    )
    .unwrap();
    assert_eq!(file.bands.len(), 26);
    // Hβ, [O III] 4960 / 5008, [O II] 3727 / 3730.
    assert_eq!(file.line_offsets("f").unwrap().len(), 5);
    file_reaches_the_pipeline(&pipeline, &file);
}
