//! Science check (slow; `cargo test --release -p popcosmos-cli --test mock_recovery -- --ignored --nocapture`):
//! mock galaxies drawn from the Prospector-α prior through the full data model, with flux
//! errors borrowed from real COSMOS2020 galaxies and Student-t (ν = 2) noise, are fitted
//! with the same model; the 68 % / 95 % intervals of z and log10 M_formed must cover the
//! truth at their nominal rates (issue: 68 % in [0.62, 0.74], 95 % in [0.92, 0.98]).
//!
//! 600 mocks by default (`POPCOSMOS_MOCKS` overrides): with 200 the Monte Carlo error of a
//! 95 % coverage is ±0.015, so the issue's window is only ±2σ and a calibrated sampler would
//! fail it on roughly one seed in five across the four checks; with 600 it is ±3.4σ (±3.1σ at
//! 68 %). The coverage of each consecutive block of 200 is printed as well.

mod common;
use common::*;

use popcosmos_api::{HostRng, Survey};
use popcosmos_sps::{LineCalibration, PhotulatorSps};

#[test]
#[ignore = "slow science check (~minutes in release)"]
fn mock_posteriors_have_nominal_coverage() {
    let n: usize = std::env::var("POPCOSMOS_MOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let dir = tempdir("mock-recovery");
    let survey = popcosmos_surveys::Cosmos::new(popcosmos_surveys::CalibrationChoice::Leistedt23);
    let device = candle_core::Device::Cpu;
    let sps = PhotulatorSps::builtin(&LineCalibration::leistedt23(), &device).unwrap();
    let prior = popcosmos_priors::ProspectorAlphaPrior::new();
    // Error templates: the real per-band errors of the demo galaxies (nmgy; NaN = missing).
    let spec: popcosmos_catalog::CatalogueSpec = serde_json::from_value(serde_json::json!({
        "path": repo().join("examples/data/cosmos2020_demo.csv"), "units": "mjy",
        "flux_pattern": "flux_{band}", "error_pattern": "fluxerr_{band}", "upper_limits": "negative_error"
    }))
    .unwrap();
    let mut reader = popcosmos_catalog::CatalogueReader::open(&spec, &survey.band_names()).unwrap();
    let chunk = reader.read_all().unwrap();
    let nb = chunk.n_bands;
    let templates: Vec<Vec<f64>> = (0..chunk.len())
        .map(|i| {
            (0..nb)
                .map(|b| {
                    if chunk.mask[i * nb + b] > 0.5 {
                        chunk.flux_err_nmgy[i * nb + b] as f64
                    } else {
                        f64::NAN
                    }
                })
                .collect()
        })
        .collect();
    let mut rng = HostRng::seed_from_u64(2026);
    let mock = popcosmos_inference::mock::simulate(
        &prior,
        &sps,
        survey.calibration(),
        &templates,
        n,
        Some(2.0),
        &mut rng,
    )
    .unwrap();
    let cat = dir.join("mock.csv");
    mock.write_csv(&cat, &survey.band_names()).unwrap();
    let out = dir.join("out");
    let manifest = format!(
        r#"survey: {{name: cosmos}}
catalogue: {{path: {cat}, units: nanomaggies, flux_pattern: "flux_{{band}}", error_pattern: "fluxerr_{{band}}"}}
prior: {{kind: prospector-alpha}}
sampler: {{walkers: 64, steps: 400, burn_in: 200}}
init: {{library_size: 30000, top_k: 8}}
output: {{dir: {out}}}
seed: 11
galaxies_per_batch: 100
"#,
        cat = cat.display(),
        out = out.display()
    );
    let m = dir.join("m.yaml");
    std::fs::write(&m, manifest).unwrap();
    let t = std::time::Instant::now();
    let o = run(&["run", m.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let secs = t.elapsed().as_secs_f64();
    let res = popcosmos_catalog::read_results(&out).unwrap();
    let truth_z: Vec<f64> = mock.theta.iter().map(|t| t[15]).collect();
    let truth_m: Vec<f64> = mock
        .theta
        .iter()
        .map(|t| popcosmos_sps::log10_mass_formed(t[0], t[15]))
        .collect();
    let idx = |id: &str| id.trim_start_matches("mock").parse::<usize>().unwrap();
    let mut report = Vec::new();
    for (q, truth) in [("z", &truth_z), ("log10M_formed", &truth_m)] {
        let col = |p: &str| res.column(&format!("{q}_{p}")).unwrap().to_vec();
        let (lo68, hi68, lo95, hi95) = (col("p16"), col("p84"), col("p2.5"), col("p97.5"));
        // (mocks, inside 68 %, inside 95 %) per consecutive block of 200.
        let mut blocks = vec![(0usize, 0usize, 0usize); n.div_ceil(200)];
        for (i, id) in res.ids.iter().enumerate() {
            let t = truth[idx(id)];
            let b = &mut blocks[idx(id) / 200];
            b.0 += 1;
            b.1 += usize::from(lo68[i] <= t && t <= hi68[i]);
            b.2 += usize::from(lo95[i] <= t && t <= hi95[i]);
        }
        for (k, (m, b68, b95)) in blocks.iter().enumerate() {
            println!(
                "  {q}, mocks {}..{}: 68% coverage {:.3}, 95% coverage {:.3}",
                200 * k,
                200 * k + m,
                *b68 as f64 / *m as f64,
                *b95 as f64 / *m as f64
            );
        }
        let (c68, c95) = blocks.iter().fold((0, 0), |(a, b), x| (a + x.1, b + x.2));
        let (f68, f95) = (c68 as f64 / res.len() as f64, c95 as f64 / res.len() as f64);
        report.push((q, f68, f95));
    }
    let flagged = res.strings["flags"]
        .iter()
        .filter(|f| !f.is_empty())
        .count();
    println!("mock recovery: {n} galaxies, {secs:.1} s, flagged {flagged}");
    for (q, f68, f95) in &report {
        println!("  {q}: 68% coverage {f68:.3}, 95% coverage {f95:.3}");
    }
    for (q, f68, f95) in report {
        assert!((0.62..=0.74).contains(&f68), "{q}: 68% coverage {f68}");
        assert!((0.92..=0.98).contains(&f95), "{q}: 95% coverage {f95}");
    }
}
