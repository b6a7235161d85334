//! Prospector-α prior: fixture reproduction and sampling correctness (measured).

mod common_stats;

use candle_core::{DType, Device, Tensor};
use common_stats::*;
use popcosmos_api::cosmology::pade;
use popcosmos_api::params::{LOWER, N_PARAMS, UPPER};
use popcosmos_api::{HostRng, Prior, RandomSource};
use popcosmos_priors::prospector::{
    self, ln_dvdz, ln_mass_function, ln_mass_metallicity, log_prob_row,
};
use popcosmos_priors::{PriorSpec, ProspectorAlphaPrior, UniformPrior};

fn fixture() -> std::collections::HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/prospector_prior_fixture.safetensors"
    );
    candle_core::safetensors::load(path, &Device::Cpu).expect("fixture")
}

#[test]
fn reproduces_reference_fixture() {
    let fx = fixture();
    let phi = &fx["phi"];
    let expect = fx["log_prob"].to_vec1::<f32>().unwrap();
    let prior = ProspectorAlphaPrior::new();
    let got = prior.log_prob(phi).unwrap().to_vec1::<f32>().unwrap();
    // Same values with a [walkers, galaxies, 16] leading shape.
    let got3 = prior
        .log_prob(&phi.reshape((4, 128, 16)).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(got, got3);
    let rows = phi.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let (mut max_abs, mut max_rel, mut max_abs64, mut finite) = (0f64, 0f64, 0f64, 0);
    for i in 0..expect.len() {
        let (e, g) = (expect[i] as f64, got[i] as f64);
        let host = log_prob_row(&rows[i].clone().try_into().unwrap());
        if e.is_finite() {
            finite += 1;
            assert!(g.is_finite(), "row {i}: expected {e}, got {g}");
            max_abs = max_abs.max((g - e).abs());
            max_rel = max_rel.max((g - e).abs() / e.abs());
            max_abs64 = max_abs64.max((host - e).abs());
        } else {
            assert!(
                e == f64::NEG_INFINITY && g == f64::NEG_INFINITY,
                "row {i}: {e} vs {g}"
            );
            assert_eq!(host, f64::NEG_INFINITY, "row {i} (host)");
        }
    }
    eprintln!(
        "fixture: {finite} finite rows; f32 tensor max |Δ| = {max_abs:.3e} (max rel {max_rel:.3e}); \
         host f64 max |Δ| = {max_abs64:.3e}"
    );
    assert_eq!(finite, 298);
    assert!(max_abs < 3e-4 && max_rel < 1e-5, "{max_abs} {max_rel}");
    assert!(max_abs64 < 3e-4);
}

#[test]
fn tensor_matches_host_f64_on_random_points() {
    let mut rng = HostRng::seed_from_u64(11);
    let n = 4000;
    let prior = ProspectorAlphaPrior::new();
    // φ from the prior's own sampler, perturbed so some rows leave the support.
    let phi = prior.sample(n, &mut rng, &Device::Cpu).unwrap();
    let noise = rng.normal(&(n, 16).into(), &Device::Cpu).unwrap();
    let phi = (phi + (noise * 0.3).unwrap()).unwrap();
    let got = prior.log_prob(&phi).unwrap().to_vec1::<f32>().unwrap();
    let rows = phi.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let mut n_inf = 0;
    for (i, row) in rows.iter().enumerate() {
        let host = log_prob_row(&row.clone().try_into().unwrap());
        if host.is_finite() {
            // Off-boundary rows agree closely; rows within f32 rounding of a boundary may flip.
            if got[i].is_finite() {
                assert!(
                    (got[i] as f64 - host).abs() < 2e-3,
                    "row {i}: {} vs {host}",
                    got[i]
                );
            }
        } else {
            n_inf += 1;
        }
    }
    assert!(
        n_inf > 0,
        "perturbation should push some rows off the support"
    );
}

#[test]
fn prior_spec_round_trips_and_builds() {
    let s: PriorSpec = serde_json::from_str(r#"{"kind":"prospector-alpha"}"#).unwrap();
    assert_eq!(s, PriorSpec::ProspectorAlpha {});
    assert_eq!(s.build().unwrap().name(), "prospector-alpha");
    let u: PriorSpec = serde_json::from_str(r#"{"kind":"uniform"}"#).unwrap();
    assert_eq!(u.build().unwrap().name(), "uniform");
    assert_eq!(
        serde_json::to_string(&s).unwrap(),
        r#"{"kind":"prospector-alpha"}"#
    );
    // Learned priors parse with their defaults but need a weights loader to build.
    let d: PriorSpec = serde_json::from_str(r#"{"kind":"diffusion"}"#).unwrap();
    assert!(
        matches!(&d, PriorSpec::Diffusion { weights, .. } if weights == popcosmos_priors::DEFAULT_DIFFUSION_PRIOR)
    );
    assert!(
        d.build()
            .err()
            .unwrap()
            .to_string()
            .contains("prior.weights")
    );
    let f: PriorSpec =
        serde_json::from_str(r#"{"kind":"flow","weights":"f.safetensors"}"#).unwrap();
    assert!(matches!(&f, PriorSpec::Flow { weights } if weights == "f.safetensors"));
    // `{kind: flow}` defaults to the bundled distilled flow.
    let f: PriorSpec = serde_json::from_str(r#"{"kind":"flow"}"#).unwrap();
    assert!(
        matches!(&f, PriorSpec::Flow { weights } if weights == popcosmos_priors::DEFAULT_FLOW_PRIOR)
    );
    assert!(serde_json::from_str::<PriorSpec>(r#"{"kind":"difusion"}"#).is_err());
    assert!(serde_json::from_str::<PriorSpec>(r#"{"kind":"uniform","x":1}"#).is_err());
    let _ = UniformPrior::new();
}

/// `{kind: tilted}` parses, builds, and its density is the base's plus a z + b log10 M up to
/// one constant (exact maths on the host f64 twin of the base density).
#[test]
fn tilted_spec_builds_and_adds_the_tilt() {
    let s: PriorSpec = serde_json::from_str(
        r#"{"kind":"tilted","base":{"kind":"prospector-alpha"},"z":0.4,"log10_mass":1.0}"#,
    )
    .unwrap();
    assert!(matches!(s.innermost(), PriorSpec::ProspectorAlpha {}));
    let prior = s.build().unwrap();
    assert!(prior.name().starts_with("tilted(prospector-alpha"));
    let base = ProspectorAlphaPrior::new();
    let phi = base
        .sample(64, &mut HostRng::seed_from_u64(2), &Device::Cpu)
        .unwrap();
    let lp: Vec<f32> = prior.log_prob(&phi).unwrap().to_vec1().unwrap();
    let rows: Vec<Vec<f32>> = phi.to_vec2().unwrap();
    let offsets: Vec<f64> = rows
        .iter()
        .zip(&lp)
        .map(|(r, &l)| {
            let row: [f64; N_PARAMS] = std::array::from_fn(|i| r[i] as f64);
            let z =
                LOWER[15] + (UPPER[15] - LOWER[15]) * popcosmos_api::params::normal_cdf(row[15]);
            let log10m = -0.4 * (row[0] - pade::distmod(z));
            l as f64 - (log_prob_row(&row) + 0.4 * z + log10m)
        })
        .collect();
    // The constant is −ln C; f32 evaluation limits agreement to ~1e-3 nats.
    let spread = offsets.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        - offsets.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(spread < 2e-3, "offsets {offsets:?}");
    // Tilting toward high z and mass makes C large: E[e^(0.4 z + log10 M)] ≫ 1.
    assert!(offsets[0] < -5.0, "−ln C = {}", offsets[0]);
    assert!(
        serde_json::from_str::<PriorSpec>(r#"{"kind":"tilted","z":0.4}"#).is_err(),
        "a tilt needs a base"
    );
}

/// Draws through the public path (φ f32 → θ via the f32 probit map), as MCMC would see them.
fn draws(n: usize, seed: u64) -> (Vec<[f64; N_PARAMS]>, Vec<f64>) {
    let prior = ProspectorAlphaPrior::new();
    // (c) every draw has a finite log-density.
    let theta = theta_draws(&prior, n, &mut HostRng::seed_from_u64(seed));
    let theta: Vec<[f64; N_PARAMS]> = theta.into_iter().map(|r| r.try_into().unwrap()).collect();
    let log10m = theta
        .iter()
        .map(|t| -0.4 * (t[0] - pade::distmod(t[15])))
        .collect();
    (theta, log10m)
}

/// g(m) = ∫ exp(ln p(Z|m)) · P(Z_gas > Z) dZ, the factor the metallicity/gas block adds
/// to p(z, m).
fn g_of_m(m: f64) -> f64 {
    simpson(LOWER[1], UPPER[1], 200, |zs| {
        ln_mass_metallicity(zs, m).exp() * (UPPER[13] - zs) / (UPPER[13] - LOWER[13])
    })
}

#[test]
fn sampling_matches_numerically_integrated_density() {
    let n = 200_000;
    let t0 = std::time::Instant::now();
    let (theta, log10m) = draws(n, 2024);
    eprintln!(
        "200k draws (debug build incl. checks): {:.2?}",
        t0.elapsed()
    );

    // (a) 1-D marginals of z and log10 M against numerical integration of the density
    //     ∝ dV/dz(z) φ_SMF(m, z) g(m) over the other variable.
    let nm = 601;
    let ms: Vec<f64> = (0..nm)
        .map(|i| 7.0 + 6.0 * i as f64 / (nm - 1) as f64)
        .collect();
    let gm: Vec<f64> = ms.iter().map(|&m| g_of_m(m)).collect();
    let nz = 601;
    let zs: Vec<f64> = (0..nz).map(|i| 6.0 * i as f64 / (nz - 1) as f64).collect();
    let h = |z: f64, m: f64| {
        if z <= 0.0 {
            0.0
        } else {
            (ln_dvdz(z) + ln_mass_function(m, z)).exp()
        }
    };
    let trap = |v: &[f64], dx: f64| dx * (v.iter().sum::<f64>() - 0.5 * (v[0] + v[v.len() - 1]));
    let p_z: Vec<f64> = zs
        .iter()
        .map(|&z| {
            trap(
                &ms.iter()
                    .zip(&gm)
                    .map(|(&m, g)| h(z, m) * g)
                    .collect::<Vec<_>>(),
                0.01,
            )
        })
        .collect();
    let p_m: Vec<f64> = ms
        .iter()
        .zip(&gm)
        .map(|(&m, g)| g * trap(&zs.iter().map(|&z| h(z, m)).collect::<Vec<_>>(), 0.01))
        .collect();
    let cdf_z = GridCdf::new(0.0, 6.0, &p_z);
    let cdf_m = GridCdf::new(7.0, 13.0, &p_m);
    let (dz, pz) = ks_test(&mut theta.iter().map(|t| t[15]).collect::<Vec<_>>(), |x| {
        cdf_z.cdf(x)
    });
    let (dm, pm) = ks_test(&mut log10m.clone(), |x| cdf_m.cdf(x));
    eprintln!("KS z: D = {dz:.2e}, p = {pz:.3}; KS log10M: D = {dm:.2e}, p = {pm:.3}");
    assert!(pz > 1e-3 && pm > 1e-3);

    // (b1) metallicity | mass: mean and variance of log10 Z* in mass bins.
    let ez = |m: f64, k: i32| {
        simpson(LOWER[1], UPPER[1], 200, |zs| {
            zs.powi(k) * ln_mass_metallicity(zs, m).exp() * (UPPER[13] - zs)
        })
    };
    for (lo, hi) in [
        (7.0, 8.0),
        (8.0, 9.0),
        (9.0, 10.0),
        (10.0, 11.0),
        (11.0, 12.0),
    ] {
        let sel: Vec<f64> = theta
            .iter()
            .zip(&log10m)
            .filter(|&(_, &m)| m >= lo && m < hi)
            .map(|(t, _)| t[1])
            .collect();
        // Expected moments: ∫_bin p(m) E[Z^k | m] dm with p(m) the integrated marginal.
        let (mut w, mut s1, mut s2) = (0.0, 0.0, 0.0);
        for (i, &m) in ms.iter().enumerate() {
            if m >= lo && m <= hi {
                let wt = if m == lo || m == hi { 0.5 } else { 1.0 } * p_m[i] / gm[i];
                w += wt * ez(m, 0);
                s1 += wt * ez(m, 1);
                s2 += wt * ez(m, 2);
            }
        }
        let (mean_e, var_e) = (s1 / w, s2 / w - (s1 / w).powi(2));
        let (mean_s, var_s) = mean_var(&sel);
        let k = sel.len() as f64;
        let zmean = (mean_s - mean_e) / (var_e / k).sqrt();
        let zvar = (var_s - var_e) / (var_e * (2.0 / k).sqrt());
        eprintln!(
            "log10Z* | log10M∈[{lo},{hi}): n={k} mean {mean_s:.4} vs {mean_e:.4} ({zmean:+.2}σ), \
             var {var_s:.4} vs {var_e:.4} ({zvar:+.2}σ~)"
        );
        assert!(zmean.abs() < 5.0 && zvar.abs() < 6.0);
    }

    // (b2) dust_index | dust2 in dust2 bins, and the dust2 marginal (KS).
    let w = |t2: f64, n: f64| {
        (-0.5 * (t2 - 0.3f64).powi(2) - 0.5 * ((n - prospector::dust_index_mean(t2)) / 0.4).powi(2))
            .exp()
    };
    for (lo, hi) in [(0.0, 0.3), (0.3, 0.7), (0.7, 1.2), (1.2, 2.0), (2.0, 4.0)] {
        let sel: Vec<f64> = theta
            .iter()
            .filter(|t| t[8] >= lo && t[8] < hi)
            .map(|t| t[9])
            .collect();
        let mom = |k: i32| {
            simpson(lo, hi, 60, |t2| {
                simpson(-1.0, 0.4, 80, |n| n.powi(k) * w(t2, n))
            })
        };
        let (m0, m1, m2) = (mom(0), mom(1), mom(2));
        let (mean_e, var_e) = (m1 / m0, m2 / m0 - (m1 / m0).powi(2));
        let (mean_s, var_s) = mean_var(&sel);
        let k = sel.len() as f64;
        let zmean = (mean_s - mean_e) / (var_e / k).sqrt();
        eprintln!(
            "dust_index | dust2∈[{lo},{hi}): n={k} mean {mean_s:.4} vs {mean_e:.4} ({zmean:+.2}σ), \
             var {var_s:.4} vs {var_e:.4}"
        );
        assert!(zmean.abs() < 5.0);
        assert!((var_s / var_e - 1.0).abs() < 6.0 * (2.0 / k).sqrt());
    }
    let nt = 801;
    let p_t2: Vec<f64> = (0..nt)
        .map(|i| {
            let t2 = 4.0 * i as f64 / (nt - 1) as f64;
            simpson(-1.0, 0.4, 80, |n| w(t2, n))
        })
        .collect();
    let cdf_t2 = GridCdf::new(0.0, 4.0, &p_t2);
    let (d, p) = ks_test(&mut theta.iter().map(|t| t[8]).collect::<Vec<_>>(), |x| {
        cdf_t2.cdf(x)
    });
    eprintln!("KS dust2 marginal (with the dust_index truncation weight): D = {d:.2e}, p = {p:.3}");
    assert!(p > 1e-3);

    // (b3) Z_gas | Z*: uniform on (Z*, 0.5).
    let (d, p) = ks_test(
        &mut theta
            .iter()
            .map(|t| (t[13] - t[1]) / (UPPER[13] - t[1]))
            .collect::<Vec<_>>(),
        |x| x.clamp(0.0, 1.0),
    );
    eprintln!("KS (Zgas − Z*)/(0.5 − Z*) ~ U(0,1): D = {d:.2e}, p = {p:.3}");
    assert!(p > 1e-3);

    // (b4) SFR ratio: Student-t ν = 2, scale 0.3, truncated to [−5, 5] (closed-form CDF).
    let f = |r: f64| {
        let t = r / 0.3;
        0.5 + t / (2.0 * (t * t + 2.0).sqrt())
    };
    let (flo, fhi) = (f(-5.0), f(5.0));
    let (d, p) = ks_test(&mut theta.iter().map(|t| t[4]).collect::<Vec<_>>(), |x| {
        (f(x) - flo) / (fhi - flo)
    });
    eprintln!("KS logsfr_ratio3 vs truncated t2: D = {d:.2e}, p = {p:.3}");
    assert!(p > 1e-3);

    // (b5) dust1_fraction: 𝒩(1, 0.3) truncated to [0, 2]; ln f_AGN uniform.
    let phi_n = |x: f64| 0.5 * libm_erfc(-x / std::f64::consts::SQRT_2);
    let (a, b) = (phi_n(-1.0 / 0.3), phi_n(1.0 / 0.3));
    let (d, p) = ks_test(&mut theta.iter().map(|t| t[10]).collect::<Vec<_>>(), |x| {
        (phi_n((x - 1.0) / 0.3) - a) / (b - a)
    });
    eprintln!("KS dust1_fraction: D = {d:.2e}, p = {p:.3}");
    assert!(p > 1e-3);
    let (d, p) = ks_test(&mut theta.iter().map(|t| t[11]).collect::<Vec<_>>(), |x| {
        ((x - LOWER[11]) / (UPPER[11] - LOWER[11])).clamp(0.0, 1.0)
    });
    eprintln!("KS lnfagn uniform: D = {d:.2e}, p = {p:.3}");
    assert!(p > 1e-3);
}

fn libm_erfc(x: f64) -> f64 {
    popcosmos_api::params::erfc(x)
}

#[test]
fn sampling_is_reproducible() {
    let prior = ProspectorAlphaPrior::new();
    let a = prior
        .sample(5000, &mut HostRng::seed_from_u64(5), &Device::Cpu)
        .unwrap();
    let b = prior
        .sample(5000, &mut HostRng::seed_from_u64(5), &Device::Cpu)
        .unwrap();
    let c = prior
        .sample(5000, &mut HostRng::seed_from_u64(6), &Device::Cpu)
        .unwrap();
    let (a, b, c) = (
        a.to_vec2::<f32>().unwrap(),
        b.to_vec2::<f32>().unwrap(),
        c.to_vec2::<f32>().unwrap(),
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
}

/// Throughput on the host: `cargo test -p popcosmos-priors --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn sampling_speed() {
    let prior = ProspectorAlphaPrior::new();
    let mut rng = HostRng::seed_from_u64(1);
    let _ = prior.sample(1000, &mut rng, &Device::Cpu).unwrap();
    for n in [100_000usize, 1_000_000] {
        let t0 = std::time::Instant::now();
        let s = prior.sample(n, &mut rng, &Device::Cpu).unwrap();
        let dt = t0.elapsed().as_secs_f64();
        assert_eq!(s.dims(), &[n, 16]);
        eprintln!(
            "prospector-alpha: {n} draws in {dt:.3} s = {:.3e} draws/s ({} rayon threads)",
            n as f64 / dt,
            rayon::current_num_threads()
        );
        let t0 = std::time::Instant::now();
        let th = prior.sample_theta(n, 3);
        let dt2 = t0.elapsed().as_secs_f64();
        eprintln!(
            "  sample_theta only (no φ map / check): {:.3e} draws/s",
            th.len() as f64 / dt2
        );
        let t0 = std::time::Instant::now();
        let _ = prior.log_prob(&s).unwrap().to_vec1::<f32>().unwrap();
        eprintln!(
            "  log_prob of {n} rows on CPU: {:.3} s",
            t0.elapsed().as_secs_f64()
        );
    }
    let u = UniformPrior::new();
    let t0 = std::time::Instant::now();
    let _ = u.sample(1_000_000, &mut rng, &Device::Cpu).unwrap();
    eprintln!("uniform: 1e6 draws in {:.3} s", t0.elapsed().as_secs_f64());
}
