//! `popcosmos-cli train-emulator` as a user runs it: bad filter directories fail naming the
//! file, and a tiny run writes weights + sidecar + a model card that load through
//! `Photulator` and verify against their sha256.

use std::path::Path;
use std::process::{Command, Output};

const KIDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/filters/kids");

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_popcosmos-cli"))
        .env("RAYON_NUM_THREADS", "2")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A temporary folder with a `filters/` subfolder holding the KiDS J and r curves.
fn kids_j_and_r() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let filters = dir.path().join("filters");
    std::fs::create_dir(&filters).unwrap();
    for b in ["KiDSVIKING_aibn139_J", "KiDSVIKING_aibn139_r"] {
        std::fs::copy(
            Path::new(KIDS).join(format!("{b}.txt")),
            filters.join(format!("{b}.txt")),
        )
        .unwrap();
    }
    (dir, filters)
}

/// `train-emulator --filters DIR -o OUT --heldout 16 EXTRA…`.
fn train(filters: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut a = vec![
        "train-emulator",
        "--filters",
        filters.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--heldout",
        "16",
    ];
    a.extend(extra);
    cli(&a)
}

#[test]
fn bad_filter_file_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.txt"), "4000 0\n5000 1\n6000 0\n").unwrap();
    std::fs::write(dir.path().join("broken.txt"), "# hdr\n4000 0\n4500 x\n").unwrap();
    let out = dir.path().join("o.safetensors");
    let o = cli(&[
        "train-emulator",
        "--filters",
        dir.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("broken.txt") && e.contains("line 3"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    let o = cli(&[
        "train-emulator",
        "--filters",
        empty.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("no filter curves") && e.contains(empty.path().to_str().unwrap()),
        "{e}"
    );
}

#[test]
fn tiny_run_writes_a_loadable_verified_photulator_set() {
    let (dir, filters) = kids_j_and_r();
    let out = dir.path().join("tiny.safetensors");
    let o = train(
        &filters,
        &out,
        &[
            "--train",
            "96",
            "--steps",
            "20",
            "--batch",
            "32",
            "--hidden",
            "8,8",
            "--eval-every",
            "10",
            "--teacher-age-z",
            "0,3.5",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // The teacher's age range is recorded in the sidecar and the card.
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(
        sidecar["training"]["teacher_age_z_range"],
        serde_json::json!([0.0, 3.5])
    );
    assert!(
        std::fs::read_to_string(out.with_extension("card.yaml"))
            .unwrap()
            .contains("age-setting z clamped to [0, 3.5]")
    );
    // The step-10 checkpoint is removed once the final set is written.
    assert!(!out.with_extension("checkpoint.safetensors").exists());
    assert!(!out.with_extension("checkpoint.json").exists());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| KiDSVIKING_aibn139_r |"), "{stdout}");
    // Bands ordered by pivot wavelength (r before J), whatever the directory order.
    let phot = popcosmos_sps::Photulator::load(&out, &candle_core::Device::Cpu).unwrap();
    assert_eq!(
        phot.band_names(),
        ["KiDSVIKING_aibn139_r", "KiDSVIKING_aibn139_J"]
    );
    let card_path = out.with_extension("card.yaml");
    let card = popcosmos_models::ModelCard::from_path(&card_path).unwrap();
    assert_eq!(card.architecture.kind, "photulator");
    assert_eq!(card.architecture.layers, [15, 8, 8, 1]);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(card.sha256, popcosmos_models::sha256_hex(&bytes));
    assert_eq!(card.bands, phot.band_names());
}

#[test]
fn warm_start_from_cosmos_picks_the_overlapping_bands_and_keeps_their_networks() {
    let (dir, filters) = kids_j_and_r();
    let out = dir.path().join("warm.safetensors");
    let run = |extra: &[&str]| {
        let mut a = vec!["--train", "64", "--init", "builtin:photulator_cosmos26"];
        a.extend(extra);
        train(&filters, &out, &a)
    };
    // Zero steps: the written set is the chosen COSMOS networks, bit for bit in outputs.
    let o = run(&["--steps", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("KiDSVIKING_aibn139_r ← hsc_r")
            && e.contains("KiDSVIKING_aibn139_J ← uvista_j_cosmos"),
        "{e}"
    );
    let dev = candle_core::Device::Cpu;
    let warm = popcosmos_sps::Photulator::load(&out, &dev).unwrap();
    let cosmos = popcosmos_sps::Photulator::builtin(&dev).unwrap();
    let theta15 = candle_core::Tensor::from_vec(
        (0..4 * 15)
            .map(|i| {
                ((i * 7 % 13) as f32 / 13.0) * 0.8 - 0.4 + if i % 15 == 14 { 1.5 } else { 0.0 }
            })
            .collect::<Vec<f32>>(),
        (4, 15),
        &dev,
    )
    .unwrap();
    assert_bands_match(&warm, &cosmos, &theta15, &["hsc_r", "uvista_j_cosmos"]);
    // A source band the set does not have is named.
    let o = run(&["--steps", "0", "--init-bands", "hsc_r,nope"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("'nope'") && e.contains("builtin:photulator_cosmos26"),
        "{e}"
    );
}

#[test]
fn warm_start_from_a_bundled_survey_set_keeps_its_own_networks() {
    let (dir, filters) = kids_j_and_r();
    let out = dir.path().join("kids.safetensors");
    let init = [
        "--train",
        "64",
        "--steps",
        "0",
        "--init",
        "builtin:photulator_kids9",
    ];
    // Its curves are not the COSMOS ones: without --init-filters the run says what to give.
    let o = train(&filters, &out, &init);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--init-filters"), "{}", stderr(&o));
    // With them, each KiDS band starts from itself (overlap 1) and the written networks
    // reproduce the bundled set's.
    let mut a = init.to_vec();
    a.extend(["--init-filters", KIDS]);
    let o = train(&filters, &out, &a);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("KiDSVIKING_aibn139_r ← KiDSVIKING_aibn139_r (filter overlap 1.00)"),
        "{}",
        stderr(&o)
    );
    let dev = candle_core::Device::Cpu;
    let warm = popcosmos_sps::Photulator::load(&out, &dev).unwrap();
    let bundled = bundled_kids9();
    let theta15 = candle_core::Tensor::rand(0f32, 1f32, (32, 15), &dev).unwrap();
    assert_bands_match(
        &warm,
        &bundled,
        &theta15,
        &["KiDSVIKING_aibn139_r", "KiDSVIKING_aibn139_J"],
    );
}

/// The bundled `builtin:photulator_kids9` set, loaded as a manifest would (card verified).
fn bundled_kids9() -> popcosmos_sps::Photulator {
    let kids = popcosmos_surveys::SurveySpec::named("kids")
        .build_defined()
        .unwrap();
    popcosmos_inference::SpsSpec::Photulator {
        weights: "builtin:photulator_kids9".into(),
        emission_lines: false,
        max_rows: None,
        igm_scatter: 0.0,
    }
    .build(
        &kids,
        &popcosmos_models::HubConfig::from_env(),
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .photulator()
    .clone()
}

/// Absolute magnitudes `[rows][bands]` of `p` for θ₁₅ rows.
fn mags(p: &popcosmos_sps::Photulator, theta15: &candle_core::Tensor) -> Vec<Vec<f32>> {
    p.absolute_magnitudes(theta15)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

/// Band i of `warm` reproduces band `sources[i]` of `source` to 1e-4 mag on `theta15`.
fn assert_bands_match(
    warm: &popcosmos_sps::Photulator,
    source: &popcosmos_sps::Photulator,
    theta15: &candle_core::Tensor,
    sources: &[&str],
) {
    let (a, b) = (mags(warm, theta15), mags(source, theta15));
    for (i, name) in sources.iter().enumerate() {
        let j = source.band_names().iter().position(|n| n == name).unwrap();
        for (ra, rb) in a.iter().zip(&b) {
            assert!((ra[i] - rb[j]).abs() < 1e-4, "{name}: {ra:?} vs {rb:?}");
        }
    }
}

#[test]
fn a_missing_init_file_is_named_once() {
    let (dir, filters) = kids_j_and_r();
    let out = dir.path().join("o.safetensors");
    let o = train(
        &filters,
        &out,
        &["--train", "8", "--steps", "0", "--init", "nope.safetensors"],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    // The io error is both in the library error's text and its source: printed once.
    assert!(e.contains("--init nope.safetensors"), "{e}");
    assert_eq!(e.matches("(os error 2)").count(), 1, "{e}");
}

#[test]
fn training_a_subset_of_bands_keeps_the_others_bit_for_bit() {
    let (dir, filters) = kids_j_and_r();
    let out = dir.path().join("blue.safetensors");
    let base = [
        "--train",
        "64",
        "--batch",
        "32",
        "--init",
        "builtin:photulator_kids9",
        "--init-filters",
        KIDS,
    ];
    let run = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend(extra);
        train(&filters, &out, &a)
    };
    let o = run(&[
        "--steps",
        "20",
        "--lr",
        "1e-3",
        "--train-bands",
        "KiDSVIKING_aibn139_J",
        "--observable-weighting",
        "0.01",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("P(m < 28)-weighted RMS"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let dev = candle_core::Device::Cpu;
    let trained = popcosmos_sps::Photulator::load(&out, &dev).unwrap();
    let bundled = bundled_kids9();
    let theta15 = candle_core::Tensor::rand(0f32, 1f32, (32, 15), &dev).unwrap();
    // Band order here is by pivot: r, J. r was not trained: identical to the bundled r.
    assert_bands_match(&trained, &bundled, &theta15, &["KiDSVIKING_aibn139_r"]);
    // J was trained (20 Adam steps at 1e-3 move a network by far more than 1e-4 mag).
    let j = bundled
        .band_names()
        .iter()
        .position(|n| n == "KiDSVIKING_aibn139_J")
        .unwrap();
    let moved = mags(&trained, &theta15)
        .iter()
        .zip(mags(&bundled, &theta15))
        .map(|(a, b)| (a[1] - b[j]).abs())
        .fold(0.0f32, f32::max);
    assert!(moved > 1e-3, "J did not train: max change {moved}");

    // Bad values are named.
    let o = run(&["--steps", "0", "--train-bands", "KiDSVIKING_aibn139_u"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--train-bands: 'KiDSVIKING_aibn139_u'") && e.contains("KiDSVIKING_aibn139_J"),
        "{e}"
    );
    let o = run(&["--steps", "0", "--observable-weighting=-1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--observable-weighting"),
        "{}",
        stderr(&o)
    );
    let o = train(
        &filters,
        &out,
        &[
            "--train",
            "8",
            "--steps",
            "0",
            "--train-bands",
            "KiDSVIKING_aibn139_r",
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--train-bands needs --init"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_bad_teacher_age_range_is_refused_before_any_work() {
    let (dir, filters) = kids_j_and_r();
    let out = dir.path().join("x.safetensors");
    for bad in ["2.5,0.5", "0.5", "-1,2", "0,1,2"] {
        let o = train(&filters, &out, &[&format!("--teacher-age-z={bad}")]);
        assert!(!o.status.success(), "{bad}");
        assert!(
            stderr(&o).contains("--teacher-age-z"),
            "{bad}: {}",
            stderr(&o)
        );
        assert!(!out.exists());
    }
}
