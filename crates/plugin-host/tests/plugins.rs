//! Builds the example plugins (`plugins/example-survey`, `plugins/example-prior`) and the
//! deliberately broken ones (`tests/test-plugins/*`) with the same cargo, loads them and
//! checks them against exact values; every broken plugin must give an error naming the
//! file, never a crash. The plugins depend only on std and `popcosmos-plugin-abi`, so the
//! builds need no downloads (a few seconds, once per test binary).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use popcosmos_api::{HostRng, Prior, RandomSource, Survey};
use popcosmos_plugin_host::{PluginKind, load, load_prior, load_survey};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cargo_build(manifest: &Path, target_dir: &Path) {
    let out = Command::new(env!("CARGO"))
        .args(["build", "--offline", "--quiet", "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building {} failed:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Path of a built plugin library by package name.
fn lib(name: &str) -> PathBuf {
    static TARGET: OnceLock<PathBuf> = OnceLock::new();
    let target = TARGET.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-test");
        let root = repo_root();
        cargo_build(&root.join("plugins/example-survey/Cargo.toml"), &target);
        cargo_build(&root.join("plugins/example-prior/Cargo.toml"), &target);
        cargo_build(
            &root.join("crates/plugin-host/tests/test-plugins/Cargo.toml"),
            &target,
        );
        target.join("debug")
    });
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let p = target.join(file);
    assert!(p.is_file(), "{} was not built", p.display());
    p
}

fn err_of<T>(r: popcosmos_api::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn example_survey_has_the_sdss_bands_and_calibration() {
    let path = lib("example-survey");
    let s = load_survey(&path, "").unwrap();
    assert_eq!(s.info().abi_version, 1);
    assert_eq!(s.info().kind, PluginKind::Survey);
    assert_eq!(s.info().plugin_name, "example-survey");
    assert_eq!(s.name(), "sdss");
    assert_eq!(
        s.band_names(),
        ["sdss_u", "sdss_g", "sdss_r", "sdss_i", "sdss_z"]
    );
    let labels: Vec<&str> = s.bands().iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["u", "g", "r", "i", "z"]);
    // SDSS asinh softening b = (1.4, 0.9, 1.2, 1.8, 7.4)e-10 maggies.
    let b: Vec<f64> = s.bands().iter().map(|b| b.flux_softening_nmgy).collect();
    assert_eq!(b, [0.14, 0.09, 0.12, 0.18, 0.74]);
    // u_AB = u_SDSS − 0.04, z_AB = z_SDSS + 0.02.
    let c = s.calibration();
    let expect = [10f64.powf(-0.016), 1.0, 1.0, 1.0, 10f64.powf(0.008)];
    for (z, e) in c.zero_points.iter().zip(expect) {
        assert!((z - e).abs() < 1e-15, "{z} vs {e}");
    }
    assert!((c.zero_points[0] - 0.963829).abs() < 1e-6);
    assert_eq!(c.error_floors, [0.02, 0.01, 0.01, 0.01, 0.01]);
    assert!(s.emission_lines().is_empty());
    assert!(s.filters().is_empty(), "no SDSS curves are bundled");

    let raw = load_survey(&path, "calibration=uncalibrated").unwrap();
    assert_eq!(raw.calibration().zero_points, [1.0; 5]);
    assert_eq!(raw.calibration().error_floors, [0.0; 5]);

    let e = err_of(load_survey(&path, "calibration=hsc"));
    assert!(
        e.contains(&path.display().to_string())
            && e.contains("create failed")
            && e.contains("'hsc'"),
        "{e}"
    );
}

/// Exact ln p of the example prior (see plugins/example-prior/src/lib.rs).
fn example_log_prob(row: &[f32], n_mean: f64, n_sigma: f64) -> f64 {
    let u = (row[0] as f64 - n_mean) / n_sigma;
    let ss: f64 = row[1..].iter().map(|&x| (x as f64).powi(2)).sum();
    -0.5 * (u * u + ss) - n_sigma.ln() - 8.0 * (2.0 * std::f64::consts::PI).ln()
}

#[test]
fn example_prior_log_prob_is_exact_on_a_batched_tensor() {
    let path = lib("example-prior");
    let p = load_prior(&path, "n_mean=17.5; n_sigma=2").unwrap();
    assert_eq!(p.name(), "gaussian-n(n_mean=17.5, n_sigma=2)");
    assert_eq!(p.info().kind, PluginKind::Prior);
    // A [walkers, galaxies, 16] batch: the leading shape must survive the round trip.
    let mut rng = HostRng::seed_from_u64(3);
    let phi = (rng.normal(&(4, 3, 16).into(), &Device::Cpu).unwrap() * 1.5)
        .unwrap()
        .broadcast_add(
            &Tensor::from_vec([vec![18.0f32], vec![0.0; 15]].concat(), 16, &Device::Cpu).unwrap(),
        )
        .unwrap();
    let lp = p.log_prob(&phi).unwrap();
    assert_eq!(lp.dims(), [4, 3]);
    let lp = lp.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let rows = phi.flatten_to(1).unwrap().to_vec2::<f32>().unwrap();
    for (row, got) in rows.iter().zip(&lp) {
        let want = example_log_prob(row, 17.5, 2.0);
        assert!(
            (*got as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
    // Bad configuration: the plugin's message, naming the file.
    let e = err_of(load_prior(&path, "n_sigma=-1"));
    assert!(
        e.contains("n_sigma") && e.contains(&path.display().to_string()),
        "{e}"
    );
    // Wrong trailing dimension is refused before the call.
    let bad = Tensor::zeros((2, 15), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(err_of(p.log_prob(&bad)).contains("[..., 16]"));
}

#[test]
fn example_prior_samples_are_reproducible_with_the_right_moments() {
    let p = load_prior(&lib("example-prior"), "n_mean=17.5; n_sigma=2").unwrap();
    let n = 20_000;
    let draw = |seed| {
        p.sample(n, &mut HostRng::seed_from_u64(seed), &Device::Cpu)
            .unwrap()
    };
    let a = draw(11);
    assert_eq!(a.dims(), [n, 16]);
    let a = a.to_vec2::<f32>().unwrap();
    assert_eq!(
        a,
        draw(11).to_vec2::<f32>().unwrap(),
        "same seed, same draws"
    );
    assert_ne!(a, draw(12).to_vec2::<f32>().unwrap(), "new seed, new draws");
    for k in 0..16 {
        let (mu, sigma) = if k == 0 { (17.5, 2.0) } else { (0.0, 1.0) };
        let m = a.iter().map(|r| r[k] as f64).sum::<f64>() / n as f64;
        let v = a.iter().map(|r| (r[k] as f64 - m).powi(2)).sum::<f64>() / (n - 1) as f64;
        // 5σ bounds: SE(mean) = σ/√n, SE(var) ≈ σ²√(2/n).
        let nf = n as f64;
        assert!((m - mu).abs() < 5.0 * sigma / nf.sqrt(), "φ{k}: mean {m}");
        assert!(
            (v / (sigma * sigma) - 1.0).abs() < 5.0 * (2.0 / nf).sqrt(),
            "φ{k}: variance {v}"
        );
    }
}

#[test]
fn wrong_kind_and_generic_load() {
    let survey = lib("example-survey");
    let e = err_of(load_prior(&survey, ""));
    assert!(
        e.contains("is a survey plugin") && e.contains("not a prior plugin"),
        "{e}"
    );
    let e = err_of(load_survey(&lib("example-prior"), ""));
    assert!(e.contains("is a prior plugin"), "{e}");
    match load(&survey, "").unwrap() {
        popcosmos_plugin_host::Plugin::Survey(s) => assert_eq!(s.bands().len(), 5),
        _ => panic!("example-survey loaded as a prior"),
    }
    let info = popcosmos_plugin_host::inspect(&lib("example-prior")).unwrap();
    assert_eq!((info.abi_version, info.kind), (1, PluginKind::Prior));
    assert_eq!(info.plugin_version, "0.1.0");
}

#[test]
fn wrong_abi_version_is_refused() {
    let path = lib("bad-version");
    let e = err_of(load_prior(&path, ""));
    assert!(
        e.contains(&path.display().to_string())
            && e.contains("plugin ABI version 2")
            && e.contains("supports ABI version 1"),
        "{e}"
    );
    assert!(err_of(popcosmos_plugin_host::inspect(&path)).contains("ABI version 2"));
}

#[test]
fn missing_symbol_missing_file_and_non_library_are_refused() {
    let path = lib("no-entry");
    let e = err_of(load_survey(&path, ""));
    assert!(
        e.contains(&path.display().to_string())
            && e.contains("does not export `popcosmos_plugin_entry`"),
        "{e}"
    );

    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-plugin.so");
    let e = err_of(load_prior(&missing, ""));
    assert!(
        e.contains("no-such-plugin.so") && e.contains("No such file"),
        "{e}"
    );

    let text = Path::new(env!("CARGO_TARGET_TMPDIR")).join("not-a-library.so");
    std::fs::write(&text, "survey: cosmos\n").unwrap();
    let e = err_of(load_survey(&text, ""));
    assert!(
        e.contains("not-a-library.so") && e.contains("not a loadable shared library"),
        "{e}"
    );

    let e = err_of(load_survey(Path::new(env!("CARGO_TARGET_TMPDIR")), ""));
    assert!(e.contains("not a file"), "{e}");
}

#[test]
fn misbehaving_prior_gives_errors_not_crashes() {
    let path = lib("misbehaving-prior");
    let file = path.display().to_string();
    let phi = Tensor::zeros((5, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    let lp_err = |mode: &str| err_of(load_prior(&path, mode).unwrap().log_prob(&phi));
    let sample_err = |mode: &str| {
        err_of(load_prior(&path, mode).unwrap().sample(
            3,
            &mut HostRng::seed_from_u64(0),
            &Device::Cpu,
        ))
    };

    // A well-behaved configuration works (the checks below are not always-fail).
    let ok = load_prior(&path, "").unwrap();
    assert_eq!(
        ok.log_prob(&phi).unwrap().to_vec1::<f32>().unwrap(),
        [0.0; 5]
    );
    assert_eq!(
        ok.sample(3, &mut HostRng::seed_from_u64(0), &Device::Cpu)
            .unwrap()
            .dims(),
        [3, 16]
    );

    let e = lp_err("wrong-length");
    assert!(
        e.contains(&file) && e.contains("log_prob returned 4 values for a batch of 5 rows"),
        "{e}"
    );
    let e = lp_err("panic");
    assert!(
        e.contains(&file) && e.contains("plugin panicked: log_prob panics on purpose (batch of 5)"),
        "{e}"
    );
    let e = lp_err("nan");
    assert!(e.contains("NaN for row 4"), "{e}");
    let e = lp_err("plus-infinity");
    assert!(
        e.contains("inf for row 0") && e.contains("finite or −∞"),
        "{e}"
    );
    let e = sample_err("sample-short");
    assert!(e.contains("sample returned 47 values for 3 draws"), "{e}");
    let e = sample_err("sample-nan");
    assert!(e.contains("NaN for parameter 5 of draw 0"), "{e}");

    let e = err_of(load_prior(&path, "dim3"));
    assert!(
        e.contains("over 3 parameters") && e.contains("needs 16"),
        "{e}"
    );
    let e = err_of(load_prior(&path, "fail-create"));
    assert!(
        e.contains("create failed: this configuration is rejected on purpose"),
        "{e}"
    );
    let e = err_of(load_prior(&path, "panic-create"));
    assert!(
        e.contains("plugin panicked: panic in create on purpose"),
        "{e}"
    );

    // No gradient through a plugin: refused rather than silently zero.
    let var = candle_core::Var::from_tensor(&phi).unwrap();
    let e = err_of(ok.log_prob(var.as_tensor()));
    assert!(e.contains("no gradient"), "{e}");
}

#[test]
fn misbehaving_survey_gives_errors_not_crashes() {
    let path = lib("misbehaving-survey");
    let ok = load_survey(&path, "").unwrap();
    assert_eq!(ok.calibration().zero_points, [1.0, 1.1]);
    let lines = ok.emission_lines();
    assert_eq!(
        (lines.len(), lines[0].offset, lines[0].ln_scatter),
        (1, 0.5, -2.0)
    );
    let f = ok.filters();
    assert_eq!(f.len(), 2);
    assert_eq!((f[0].name.as_str(), f[1].name.as_str()), ("a", "b"));
    assert_eq!(f[0].wavelength_aa, [3000.0, 4000.0, 5000.0]);
    assert_eq!(f[0].transmission, [0.0, 1.0, 0.5]);
    assert_eq!(f[1].wavelength_aa, [6000.0, 7000.0]);
    // Longer than the host's first buffer: fetched again at full length.
    let long = load_survey(&path, "long-filter").unwrap();
    assert_eq!(long.filters()[0].wavelength_aa.len(), 5000);
    assert_eq!(long.filters()[0].wavelength_aa[4999], 7999.0);
    assert_eq!(long.filters()[0].transmission[4999], 9.0);
    for (mode, expect) in [
        (
            "negative-zero-point",
            "band 1 ('b'): zero point must be positive and finite, got -1",
        ),
        ("duplicate-band", "band 1 repeats the name 'a' of band 0"),
        ("no-bands", "implausible number of bands: 0"),
        (
            "nan-line",
            "emission line 0: offset and ln scatter must be finite",
        ),
        ("panic-bands", "plugin panicked: bands() panics on purpose"),
        (
            "decreasing-filter",
            "band 1 ('b'): filter curve: wavelengths must increase (6000 Å after 7000 Å",
        ),
        (
            "partial-filters",
            "filter curves for 1 of 2 bands (band 1 'b' has none)",
        ),
    ] {
        let e = err_of(load_survey(&path, mode));
        assert!(
            e.contains(&path.display().to_string()) && e.contains(expect),
            "{mode}: {e}"
        );
    }
}

/// The ABI is plain C: a prior written in C (`tests/c-plugin/normal_prior.c`, using the
/// declarations of docs/plugins.md) loads and behaves. Skipped, with a note, where no C
/// compiler (`$CC` or `cc`) exists.
#[test]
fn c_plugin_implements_the_same_abi() {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-test/c");
    std::fs::create_dir_all(&out_dir).unwrap();
    let lib = out_dir.join(format!(
        "{}c_normal_prior{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c-plugin/normal_prior.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-O2", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-lm")
        .status();
    match status {
        Err(e) => {
            eprintln!("skipped: no C compiler '{cc}' ({e})");
            return;
        }
        Ok(s) => assert!(s.success(), "{cc} failed on {}", src.display()),
    }
    let p = load_prior(&lib, "").unwrap();
    assert_eq!(p.name(), "c-normal");
    assert_eq!(
        (p.info().plugin_name.as_str(), p.info().kind),
        ("c-normal-prior", PluginKind::Prior)
    );
    let draws = p
        .sample(500, &mut HostRng::seed_from_u64(5), &Device::Cpu)
        .unwrap();
    let again = p
        .sample(500, &mut HostRng::seed_from_u64(5), &Device::Cpu)
        .unwrap();
    let rows = draws.to_vec2::<f32>().unwrap();
    assert_eq!(rows, again.to_vec2::<f32>().unwrap());
    let lp = p.log_prob(&draws).unwrap().to_vec1::<f32>().unwrap();
    for (row, got) in rows.iter().zip(&lp) {
        let ss: f64 = row.iter().map(|&x| (x as f64).powi(2)).sum();
        let want = -0.5 * ss - 8.0 * (2.0 * std::f64::consts::PI).ln();
        assert!((*got as f64 - want).abs() < 1e-4, "{got} vs {want}");
    }
    // Sample variance of 8000 standard normals: 1 ± 5·√(2/8000).
    let all: Vec<f64> = rows.iter().flatten().map(|&x| x as f64).collect();
    let var = all.iter().map(|x| x * x).sum::<f64>() / all.len() as f64;
    assert!(
        (var - 1.0).abs() < 5.0 * (2.0 / all.len() as f64).sqrt(),
        "{var}"
    );
    let e = err_of(load_prior(&lib, "fail"));
    assert!(
        e.contains("create failed: C plugin: configuration 'fail' refused"),
        "{e}"
    );
}

#[test]
fn a_plugin_whose_dependency_is_missing_names_that_library() {
    // A library linked against libpopcosmos_gone.so, which is then deleted: the error must
    // carry the loader's message (dlerror) naming it, not just "dlopen failed".
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-test/missing-dep");
    std::fs::create_dir_all(&dir).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    std::fs::write(
        dir.join("gone.c"),
        "int popcosmos_gone(void) { return 1; }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("plug.c"),
        "int popcosmos_gone(void);\nint popcosmos_use(void) { return popcosmos_gone(); }\n",
    )
    .unwrap();
    let build = |args: &[&str]| Command::new(&cc).current_dir(&dir).args(args).status();
    match build(&["-shared", "-fPIC", "-o", "libpopcosmos_gone.so", "gone.c"]) {
        Err(e) => {
            eprintln!("skipped: no C compiler '{cc}' ({e})");
            return;
        }
        Ok(s) => assert!(s.success()),
    }
    let ok = build(&[
        "-shared",
        "-fPIC",
        "-o",
        "libplug.so",
        "plug.c",
        "-L.",
        "-lpopcosmos_gone",
    ])
    .unwrap();
    assert!(ok.success());
    std::fs::remove_file(dir.join("libpopcosmos_gone.so")).unwrap();
    let e = err_of(load_survey(&dir.join("libplug.so"), ""));
    assert!(
        e.contains("libplug.so") && e.contains("libpopcosmos_gone.so"),
        "the loader's message names the missing library: {e}"
    );
}
