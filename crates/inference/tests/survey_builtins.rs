//! The built-in KiDS and LSST surveys run on their bundled emulator sets
//! (`builtin:photulator_kids9` / `builtin:photulator_lsst6`), with emission-line band
//! responses computed from the surveys' filter curves.

use candle_core::{Device, Tensor};
use popcosmos_api::SpsModel;
use popcosmos_inference::{Manifest, Pipeline};
use popcosmos_models::HubConfig;

fn pipeline(survey: &str, weights: &str) -> Pipeline {
    let m = Manifest::from_yaml(
        &format!(
            "survey: {{name: {survey}}}\nsps: {{kind: photulator, weights: '{weights}'}}\n\
             catalogue: {{path: x.csv, units: nanomaggies}}\nprior: {{kind: uniform}}\n\
             output: {{dir: out}}\n"
        ),
        "m.yaml",
    )
    .unwrap();
    Pipeline::new(m, &HubConfig::from_env()).unwrap()
}

#[test]
fn kids_and_lsst_run_on_their_emulator_sets() {
    for (survey, weights, n) in [
        ("kids", "builtin:photulator_kids9", 9),
        ("lsst", "builtin:photulator_lsst6", 6),
    ] {
        let p = pipeline(survey, weights);
        assert_eq!(p.survey.band_names().len(), n);
        assert_eq!(p.sps.band_names(), p.survey.band_names().as_slice());
        assert!(p.sps.has_emission_lines(), "{survey}");
        // A star-forming galaxy at z = 0.5: finite, positive fluxes and line terms.
        let mut theta = [0f32; 16];
        theta.copy_from_slice(&[
            20.0, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.5, -3.0, 3.0, -1.0, -2.0, 0.5,
        ]);
        let t = Tensor::from_slice(&theta, (1, 16), &Device::Cpu).unwrap();
        let m = p.sps.photometry(&t).unwrap();
        let f: Vec<f32> = m.flux_nmgy.flatten_all().unwrap().to_vec1().unwrap();
        let s: Vec<f32> = m
            .line_sigma_nmgy
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            f.iter().all(|v| v.is_finite() && *v > 0.0),
            "{survey}: {f:?}"
        );
        assert!(
            s.iter().all(|v| v.is_finite() && *v >= 0.0),
            "{survey}: {s:?}"
        );
        assert!(s.iter().any(|v| *v > 0.0), "{survey}: no line term");
    }
}

/// 95th percentile of |bundled set − teacher| (mag) where the band sees flux (teacher
/// M < 22), on 400 fresh draws of the training distribution (Prospector-α θ, z ~ U(0, 6),
/// √dust2 ~ U(0, 2); a seed `train-emulator` never used). The teacher is the spectrum
/// emulator through the survey's curves. Limit: 1.5 × the held-out p95 of
/// docs/emulators.md (measured here 0.9–1.25×). Not the RMS: the errors are heavy-tailed
/// (single draws with extreme SFR ratios at z > 4 reach 0.3–0.5 mag) and one such draw
/// moves a 400-draw RMS by 0.02 mag.
///
/// And the requirement itself (≤ 0.02 mag RMS against the teacher), on the draws a
/// survey can see: the RMS with each draw weighted by its chance of being observable in the
/// band, P(N < 28 − M) over the draws' N (the `P(m < 28)-weighted RMS` of `train-emulator`).
#[test]
fn bundled_emulator_sets_reproduce_their_teacher() {
    use popcosmos_api::FilterCurve;
    use popcosmos_api::params::{IDX_DUST2, IDX_N, IDX_Z};
    use popcosmos_priors::ProspectorAlphaPrior;
    use popcosmos_sps::Photulator;
    use popcosmos_sps::photulator::theta_to_photulator_input;
    const ASSETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets");
    let dev = Device::Cpu;
    let n = 400;
    let mut rows = ProspectorAlphaPrior::new().sample_theta(n, 20_261_127);
    // Deterministic uniforms for z and √dust2 (splitmix64).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = state;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((x ^ (x >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    for r in &mut rows {
        r[IDX_Z] = 6.0 * uniform();
        r[IDX_DUST2] = (2.0 * uniform()).powi(2);
    }
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    let theta = Tensor::from_vec(flat, (n, 16), &dev).unwrap();
    let input = theta_to_photulator_input(&theta).unwrap();
    let mut n_sorted: Vec<f64> = rows.iter().map(|r| r[IDX_N]).collect();
    n_sorted.sort_by(f64::total_cmp);
    let observable =
        |abs_mag: f32| n_sorted.partition_point(|&v| v < 28.0 - abs_mag as f64) as f64 / n as f64;
    // Each set against the teacher it was trained on (its age clamp, docs/emulators.md).
    for (set, dir, limits, age) in [
        ("photulator_kids9", "kids", KIDS9_P95.as_slice(), (0.5, 2.5)),
        (
            "photulator_kids9_v2",
            "kids",
            KIDS9_V2_P95.as_slice(),
            (0.0, 3.5),
        ),
        ("photulator_lsst6", "lsst", LSST6_P95.as_slice(), (0.5, 2.5)),
    ] {
        let phot = Photulator::load(format!("{ASSETS}/models/{set}.safetensors"), &dev).unwrap();
        let filters: Vec<FilterCurve> = phot
            .band_names()
            .iter()
            .map(|b| {
                FilterCurve::from_path(std::path::Path::new(&format!(
                    "{ASSETS}/filters/{dir}/{b}.txt"
                )))
                .unwrap()
            })
            .collect();
        let teacher = teacher_magnitudes(&filters, Some(age), &theta);
        let pred = phot
            .absolute_magnitudes(&input)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (b, name) in phot.band_names().iter().enumerate() {
            let d: Vec<f64> = (0..n)
                .filter(|&r| teacher[r][b] < 22.0)
                .map(|r| (pred[r][b] - teacher[r][b]) as f64)
                .collect();
            let rms = (d.iter().map(|v| v * v).sum::<f64>() / d.len() as f64).sqrt();
            let mut a: Vec<f64> = d.iter().map(|v| v.abs()).collect();
            a.sort_by(f64::total_cmp);
            eprintln!(
                "{set} {name}: RMS {rms:.4} p50 {:.4} p95 {:.4} max {:.4} mag over {} draws",
                a[a.len() / 2],
                a[a.len() * 95 / 100],
                a[a.len() - 1],
                d.len()
            );
            let p95 = a[a.len() * 95 / 100];
            let (mut num, mut den) = (0.0, 0.0);
            for r in 0..n {
                let w = observable(teacher[r][b]);
                num += w * ((pred[r][b] - teacher[r][b]) as f64).powi(2);
                den += w;
            }
            let weighted = (num / den).sqrt();
            eprintln!("{set} {name}: P(m < 28)-weighted RMS {weighted:.4} mag");
            assert!(
                weighted <= 0.02,
                "{set} {name}: observable-weighted RMS {weighted:.4} > 0.02 mag"
            );
            assert!(d.len() > n / 2, "{set} {name}: {} draws see flux", d.len());
            assert!(
                p95 <= 1.5 * limits[b],
                "{set} {name}: p95 |Δ| {p95:.4} > 1.5 × {}",
                limits[b]
            );
        }
    }
}

/// Held-out p95 |Δ| (mag, bands that see flux) of `builtin:photulator_kids9`, u … Ks
/// (docs/emulators.md: u, g from the 20 000-draw seed-9 table of the retrained bands, the
/// others from the 5 000-draw stage-1 table).
const KIDS9_P95: [f64; 9] = [
    0.0842, 0.0428, 0.0229, 0.0181, 0.0158, 0.0110, 0.0089, 0.0056, 0.0058,
];
/// Absolute magnitudes `[n, bands]` of the spectrum emulator through `filters`, its
/// age-setting z clamped to `age` (`None`: passed through).
fn teacher_magnitudes(
    filters: &[popcosmos_api::FilterCurve],
    age: Option<(f64, f64)>,
    theta: &Tensor,
) -> Vec<Vec<f32>> {
    use popcosmos_sps::{PhotometryOptions, SpectrumEmulator, SpectrumPhotometry};
    let options = PhotometryOptions {
        age_z_range: age,
        ..Default::default()
    };
    SpectrumPhotometry::new(
        SpectrumEmulator::builtin(theta.device()).unwrap(),
        filters,
        options,
    )
    .unwrap()
    .absolute_magnitudes(theta)
    .unwrap()
    .to_vec2::<f32>()
    .unwrap()
}

/// The same for `builtin:photulator_kids9_v2` (its 5 000 held-out draws, teacher age passed
/// through below z = 3.5), u … Ks.
const KIDS9_V2_P95: [f64; 9] = [
    0.0892, 0.0619, 0.0409, 0.0337, 0.0325, 0.0255, 0.0158, 0.0105, 0.0086,
];
/// The same for `builtin:photulator_lsst6`, u … y.
const LSST6_P95: [f64; 6] = [0.0412, 0.0337, 0.0219, 0.0205, 0.0151, 0.0126];

/// The spectrum emulator that taught the KiDS and LSST sets was trained on 0.5 ≤ z ≤ 2.5,
/// and its age-setting z input is clamped there (docs/emulators.md), so below z = 0.5 its
/// galaxies are no older than t_univ(0.5) ≈ 8.6 Gyr. The COSMOS photulators (Alsing et al.
/// 2024) were trained on FSPS over the whole range. On bands both model through the same
/// curves (HSC g, r, i and UltraVISTA J, Ks), the teacher minus the COSMOS networks should
/// then be flat in z where the teacher was trained, and drift in colour below z = 0.5 for
/// the galaxies whose old stars the clamp removes. Printed per z bin (median over draws) and
/// checked as measured (docs/emulators.md, "The teacher's age clamp"). Run with
/// `--ignored --nocapture`.
#[test]
#[ignore = "diagnostic: prints the teacher's colour offset against the COSMOS networks by z"]
fn the_teacher_against_the_cosmos_networks_by_redshift() {
    use popcosmos_api::FilterCurve;
    use popcosmos_api::params::IDX_Z;
    use popcosmos_api::stats::median;
    use popcosmos_priors::ProspectorAlphaPrior;
    use popcosmos_sps::Photulator;
    use popcosmos_sps::photulator::theta_to_photulator_input;
    const ASSETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets");
    let dev = Device::Cpu;
    let bands = [
        "hsc_g",
        "hsc_r",
        "hsc_i",
        "uvista_j_cosmos",
        "uvista_ks_cosmos",
    ];
    let filters: Vec<FilterCurve> = bands
        .iter()
        .map(|b| {
            FilterCurve::from_path(std::path::Path::new(&format!(
                "{ASSETS}/filters/cosmos/{b}.txt"
            )))
            .unwrap()
        })
        .collect();
    let cosmos = Photulator::load(
        format!("{ASSETS}/models/photulator_cosmos26.safetensors"),
        &dev,
    )
    .unwrap();
    let idx: Vec<usize> = bands
        .iter()
        .map(|b| cosmos.band_names().iter().position(|n| n == b).unwrap())
        .collect();
    let edges = [0.03, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 2.5, 3.5, 5.0];
    let per_bin = 300;
    let mut rows = ProspectorAlphaPrior::new().sample_theta(per_bin * (edges.len() - 1), 71);
    for (k, r) in rows.iter_mut().enumerate() {
        let bin = k / per_bin;
        let u = (k % per_bin) as f64 / per_bin as f64;
        r[IDX_Z] = edges[bin] + (edges[bin + 1] - edges[bin]) * u;
    }
    let n = rows.len();
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    let theta = Tensor::from_vec(flat, (n, 16), &dev).unwrap();
    let net = cosmos
        .absolute_magnitudes(&theta_to_photulator_input(&theta).unwrap())
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let teach = teacher_magnitudes(&filters, Some((0.5, 2.5)), &theta);
    let teach_free = teacher_magnitudes(&filters, None, &theta);
    // Colours g − Ks and r − J: teacher minus networks.
    let colour = |m: &[f32], a: usize, b: usize| (m[a] - m[b]) as f64;
    eprintln!("z bin | Δ(g − Ks) clamped / free | Δ(r − J) clamped / free | Δ Ks clamped / free");
    for bin in 0..edges.len() - 1 {
        let rs = bin * per_bin..(bin + 1) * per_bin;
        let d = |t: &Vec<Vec<f32>>, a: usize, b: usize| {
            let v: Vec<f64> = rs
                .clone()
                .map(|r| colour(&t[r], a, b) - colour(&net[r], idx[a], idx[b]))
                .collect();
            median(&v)
        };
        let ks: Vec<f64> = rs
            .clone()
            .map(|r| (teach[r][4] - net[r][idx[4]]) as f64)
            .collect();
        let ks_free: Vec<f64> = rs
            .clone()
            .map(|r| (teach_free[r][4] - net[r][idx[4]]) as f64)
            .collect();
        eprintln!(
            "{:.2}–{:.2} | {:+.3} / {:+.3} | {:+.3} / {:+.3} | {:+.3} / {:+.3}",
            edges[bin],
            edges[bin + 1],
            d(&teach, 0, 4),
            d(&teach_free, 0, 4),
            d(&teach, 1, 3),
            d(&teach_free, 1, 3),
            median(&ks),
            median(&ks_free)
        );
        if edges[bin] >= 0.5 && edges[bin + 1] <= 2.0 {
            assert!(
                d(&teach, 0, 4).abs() < 0.1,
                "bin {bin}: teacher off where trained"
            );
        }
        // Below z = 0.5 and up to 3.5 the teacher with its age passed through agrees with the
        // FSPS-trained networks (measured ≤ 0.014 mag in colour), which is why the KiDS set
        // is trained with `--teacher-age-z 0,3.5`; clamped it is 0.08–0.09 too blue below 0.2.
        if edges[bin + 1] <= 3.5 && !(0.5..2.5).contains(&edges[bin]) {
            assert!(d(&teach_free, 0, 4).abs() < 0.03, "bin {bin}: g − Ks");
            assert!(d(&teach_free, 1, 3).abs() < 0.03, "bin {bin}: r − J");
        }
        if edges[bin + 1] <= 0.2 {
            assert!(
                d(&teach, 0, 4) < -0.05,
                "bin {bin}: the clamp no longer matters"
            );
        }
    }
}
