//! `survey: {plugin: …}`: a survey plugin through `SurveySpec` (the manifest section), with
//! the calibration options applied on top of the plugin's own calibration. Builds the
//! example survey plugin (std + popcosmos-plugin-abi only, a few seconds).

use std::path::{Path, PathBuf};

use popcosmos_api::Survey;
use popcosmos_surveys::{CalibrationChoice, SurveySpec};

fn example_survey() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-test");
    let o = std::process::Command::new(env!("CARGO"))
        .args(["build", "--offline", "--quiet", "--manifest-path"])
        .arg(root.join("plugins/example-survey/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    target.join("debug").join(format!(
        "{}example_survey{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

fn spec(plugin: &Path) -> SurveySpec {
    let mut s = SurveySpec::named("");
    s.plugin = Some(plugin.to_path_buf());
    s
}

#[test]
fn plugin_survey_through_the_manifest_spec() {
    let lib = example_survey();
    let s = spec(&lib).build_defined().unwrap();
    assert_eq!(s.name, "sdss");
    assert_eq!(
        s.band_names(),
        ["sdss_u", "sdss_g", "sdss_r", "sdss_i", "sdss_z"]
    );
    assert!(s.filters.is_empty() && s.columns.is_none());
    assert!((s.calibration.zero_points[0] - 10f64.powf(-0.016)).abs() < 1e-15);

    // From YAML, as in a manifest, with the plugin's configuration string.
    let yaml = format!(
        "{{plugin: '{}', plugin_config: 'calibration=uncalibrated'}}",
        lib.display()
    );
    let from_yaml: SurveySpec = serde_saphyr::from_str(&yaml).unwrap();
    let raw = from_yaml.build().unwrap();
    assert_eq!(raw.calibration().zero_points, [1.0; 5]);
    assert_eq!(raw.calibration().error_floors, [0.0; 5]);

    // Manifest calibration options apply on top of the plugin's calibration.
    let mut with = spec(&lib);
    with.calibration = Some(CalibrationChoice::Uncalibrated);
    assert_eq!(with.build().unwrap().calibration().zero_points, [1.0; 5]);
    with.calibration = None;
    with.error_floors = Some(vec![0.03; 5]);
    let c = with.build().unwrap().calibration().clone();
    assert_eq!(c.error_floors, [0.03; 5]);
    assert!((c.zero_points[4] - 10f64.powf(0.008)).abs() < 1e-15);
    with.zero_points = Some(vec![1.0; 26]);
    let e = with.build().err().unwrap().to_string();
    assert!(
        e.contains("survey.zero_points") && e.contains("expected 5"),
        "{e}"
    );
}

#[test]
fn plugin_survey_errors_name_the_key() {
    let lib = example_survey();
    let mut s = spec(&lib);
    s.name = "kids".into();
    let e = s.build().err().unwrap().to_string();
    assert!(
        e.contains("survey.name: 'kids' does not match the name 'sdss'"),
        "{e}"
    );

    let mut s = spec(&lib);
    s.file = Some("hsc.yaml".into());
    let e = s.build().err().unwrap().to_string();
    assert!(
        e.contains("survey.plugin: give either `file:` or `plugin:`"),
        "{e}"
    );

    let mut s = spec(&lib);
    s.plugin_config = Some("calibration=hsc".into());
    let e = s.build().err().unwrap().to_string();
    assert!(
        e.starts_with("survey.plugin: ") && e.contains("'hsc'"),
        "{e}"
    );

    let e = spec(Path::new("/nonexistent/libnothing.so"))
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("survey.plugin: /nonexistent/libnothing.so"),
        "{e}"
    );
}
