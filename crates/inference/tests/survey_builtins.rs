//! The built-in KiDS and LSST surveys run on their bundled emulator sets
//! (`builtin:photulator_kids9` / `builtin:photulator_lsst6`), with emission-line band
//! responses computed from the surveys' filter curves.

use candle_core::{Device, Tensor};
use popcosmos_api::SpsModel;
use popcosmos_inference::{Manifest, Pipeline};

fn pipeline(survey: &str, weights: &str) -> Pipeline {
    let m = Manifest::from_yaml(
        &format!(
            "survey: {{name: {survey}}}\nsps: {{weights: '{weights}'}}\n\
             catalogue: {{path: x.csv, units: nanomaggies}}\nprior: {{kind: uniform}}\n\
             output: {{dir: out}}\n"
        ),
        "m.yaml",
    )
    .unwrap();
    Pipeline::new(m).unwrap()
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
