//! The importers against the converted reference files, bit for bit.

mod common;

use candle_core::DType;
use common::*;
use popcosmos_api::testing::max_abs_diff;
use popcosmos_torch_import::{
    AttrValue, DIFFUSION_FORMAT, ImportError, ImportedFile, ModelKind, PHOTULATOR_FORMAT,
    detect_kind, import_diffusion, import_photulators, read_torch_module,
    read_torch_module_from_bytes,
};
use safetensors::SafeTensors;
use serde_json::{Value, json};

/// Every tensor of `reference` is in `ours` with the same dtype, shape and bytes; returns the
/// names `ours` has beyond the reference.
fn assert_contains_reference(ours: &ImportedFile, reference: &[u8]) -> Vec<String> {
    let bytes = ours.to_bytes().unwrap();
    let ours = SafeTensors::deserialize(&bytes).unwrap();
    let reference = SafeTensors::deserialize(reference).unwrap();
    let mut checked = 0;
    for (name, r) in reference.tensors() {
        let o = ours
            .tensor(&name)
            .unwrap_or_else(|_| panic!("`{name}` missing from the import"));
        assert_eq!(o.dtype(), r.dtype(), "{name}: dtype");
        assert_eq!(o.shape(), r.shape(), "{name}: shape");
        assert!(o.data() == r.data(), "{name}: values differ");
        checked += 1;
    }
    assert!(checked > 0);
    let mut extra: Vec<String> = ours
        .names()
        .into_iter()
        .filter(|n| reference.tensor(n).is_err())
        .map(|n| n.to_string())
        .collect();
    extra.sort();
    extra
}

#[test]
fn noise_model_reproduces_the_converted_file_bitwise() {
    let imported = import_diffusion(data("noiseModel.pt")).unwrap();
    let reference = std::fs::read(data("noise_model.safetensors")).unwrap();
    let extra = assert_contains_reference(&imported, &reference);
    assert!(extra.is_empty(), "tensors beyond the reference: {extra:?}");
    assert_eq!(imported.tensors.len(), 28);
    for (name, t) in &imported.tensors {
        assert_eq!(t.dtype(), DType::F32, "{name}");
    }
}

#[test]
fn noise_model_config_metadata() {
    let imported = import_diffusion(data("noiseModel.pt")).unwrap();
    assert_eq!(imported.format(), Some(DIFFUSION_FORMAT));
    let config: Value = serde_json::from_str(&imported.metadata["config"]).unwrap();
    assert_eq!(
        config,
        json!({
            "dim": 26,
            "conditional_dim": 26,
            "embedding_dim": 8,
            "hidden": [256, 256, 256, 256, 256],
            "activation": "tanh",
            "no_sigma": true,
            "sde": {
                "kind": "vp",
                "beta_min": 0.1,           // Python float attribute
                "beta_max": 20.0,          // 0-d f32 tensor attribute
                "t_max": 1.0,              // Python float attribute
                "epsilon": 1e-3f32 as f64, // f32 buffer, widened exactly
            },
        })
    );
    assert_eq!(
        imported.metadata["source_class"],
        "pop_cosmos.catalogue.NoiseModel"
    );
    let solver: Value = serde_json::from_str(&imported.metadata["solver"]).unwrap();
    assert_eq!(
        solver,
        json!({"method": "dopri5", "options": {"min_step": 1e-6}})
    );
    // Shapes of the layout.
    let dims = |n: &str| imported.tensor(n).unwrap().dims().to_vec();
    assert_eq!(dims("score_net.time_embedding.W"), [4]);
    assert_eq!(dims("score_net.layer.0.weight"), [256, 60]);
    assert_eq!(dims("score_net.layer.5.weight"), [26, 256]);
    assert_eq!(dims("score_net.layer.5.bias"), [26]);
    assert_eq!(dims("x_shift"), [26]);
    assert_eq!(dims("conditional_scale"), [26]);
    assert_eq!(dims("sde.beta_min"), [1]);
    let beta_min = imported
        .tensor("sde.beta_min")
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(beta_min[0].to_bits(), 0.1f32.to_bits());
}

#[test]
fn written_file_round_trips_and_leaves_no_temporary() {
    let imported = import_diffusion(data("noiseModel.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("noise.safetensors");
    imported.write(&out).unwrap();
    // Overwriting an existing file works too.
    imported.write(&out).unwrap();
    let listing: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listing, ["noise.safetensors"]);
    let written = std::fs::read(&out).unwrap();
    assert_eq!(written, imported.to_bytes().unwrap());
    let st = SafeTensors::deserialize(&written).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&written).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["format"], DIFFUSION_FORMAT);
    assert_eq!(meta["config"], imported.metadata["config"]);
    assert_eq!(st.len(), 28);
    let reference = std::fs::read(data("noise_model.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&reference).unwrap();
    for (name, r) in reference.tensors() {
        assert!(st.tensor(&name).unwrap().data() == r.data(), "{name}");
    }
}

#[test]
fn noise_model_module_tensors_and_attributes() {
    let m = read_torch_module(data("noiseModel.pt")).unwrap();
    assert_eq!(m.class_name, "pop_cosmos.catalogue.NoiseModel");
    assert!(m.skipped.is_empty(), "{:?}", m.skipped);
    let a = |k: &str| {
        m.attr(k)
            .unwrap_or_else(|| panic!("no attribute {k}"))
            .clone()
    };
    assert_eq!(
        a("model"),
        AttrValue::Object("flowfusion.diffusion.PopulationModelDiffusionConditional".into())
    );
    assert_eq!(
        a("model.model.activation"),
        AttrValue::Object("torch.nn.modules.activation.Tanh".into())
    );
    assert_eq!(
        a("model.sde"),
        AttrValue::Object("flowfusion.diffusion.VPSDE".into())
    );
    assert_eq!(a("model.sde.beta_min"), AttrValue::Float(0.1));
    assert_eq!(a("model.sde.T"), AttrValue::Float(1.0));
    assert_eq!(a("model.score_model.no_sigma"), AttrValue::Bool(true));
    assert_eq!(a("model.score_model.hutch"), AttrValue::Bool(false));
    assert_eq!(a("model.score_model.conditional"), AttrValue::None);
    assert_eq!(a("model.method"), AttrValue::Str("dopri5".into()));
    assert_eq!(
        a("model.options"),
        AttrValue::Dict(vec![("min_step".into(), AttrValue::Float(1e-6))])
    );
    assert_eq!(a("n_bands"), AttrValue::Int(26));
    assert_eq!(a("training"), AttrValue::Bool(true));
    assert_eq!(
        a("model.model.architecture").to_json(),
        json!([60, 256, 256, 256, 256, 256, 26])
    );
    assert_eq!(
        a("model.model.NN"),
        AttrValue::Object("torch.nn.modules.container.ModuleList".into())
    );
    assert_eq!(a("model.model.NN.0.in_features"), AttrValue::Int(60));
    assert_eq!(
        m.class_of("model.model.NN.5"),
        Some("torch.nn.modules.linear.Linear")
    );

    let t = |k: &str| m.tensor(k).unwrap_or_else(|| panic!("no tensor {k}"));
    assert_eq!(t("model.model.NN.0.weight").dims(), [256, 60]);
    assert_eq!(t("model.model.NN.0.weight").dtype(), DType::F32);
    assert_eq!(t("model.model.W").dims(), [4]);
    assert_eq!(t("model.sde.beta_max").dims(), [] as [usize; 0]);
    assert_eq!(t("model.sde.epsilon").dims(), [] as [usize; 0]);
    let nine_log_ten = t("nine_log_ten");
    assert_eq!(nine_log_ten.dtype(), DType::F64);
    let v = nine_log_ten.to_scalar::<f64>().unwrap();
    assert!((v - 9.0 * std::f64::consts::LN_10).abs() < 1e-12, "{v}");
    let w = t("model.model.W").to_vec1::<f32>().unwrap();
    assert_eq!(w, [-23.723259, 17.043917, 6.8711114, 4.5322638]);
    // state-dict order: the wrapper's buffers first, in registration order.
    let names: Vec<&str> = m.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[..3],
        ["magnitude_min", "magnitude_max", "log_error_min"]
    );
}

fn cosmos_bands() -> Vec<String> {
    let card: Value = serde_json::from_slice(
        &std::fs::read(repo("assets/models/photulator_cosmos26.json")).unwrap(),
    )
    .unwrap();
    card["bands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn photulators_reproduce_the_bundled_stack_bitwise() {
    let bands = cosmos_bands();
    assert_eq!(bands.len(), 26);
    let paths: Vec<_> = bands.iter().map(|b| photulator_file(b)).collect();
    let imported = import_photulators(&paths).unwrap();
    let reference = std::fs::read(repo("assets/models/photulator_cosmos26.safetensors")).unwrap();
    let extra = assert_contains_reference(&imported, &reference);
    assert!(extra.is_empty(), "tensors beyond the reference: {extra:?}");
    assert_eq!(imported.tensors.len(), 655);
    assert_eq!(imported.format(), Some(PHOTULATOR_FORMAT));
    let listed: Vec<String> = serde_json::from_str(&imported.metadata["bands"]).unwrap();
    assert_eq!(listed, bands);
}

#[test]
fn photulator_module_contents() {
    let m = read_torch_module(photulator_file("hsc_g")).unwrap();
    assert_eq!(m.class_name, "speculator.speculator.Photulator");
    assert_eq!(m.attr("filters").unwrap().to_json(), json!(["hsc_g"]));
    assert_eq!(m.attr("n_layers"), Some(&AttrValue::Int(5)));
    assert_eq!(
        m.attr("architecture").unwrap().to_json(),
        json!([15, 128, 128, 128, 128, 1])
    );
    assert_eq!(
        m.attr("parameter_names").unwrap().as_list().unwrap().len(),
        15
    );
    assert_eq!(
        m.class_of("W"),
        Some("torch.nn.modules.container.ParameterList")
    );
    assert_eq!(m.tensor("W.0").unwrap().dims(), [15, 128]);
    assert_eq!(m.tensor("W.4").unwrap().dims(), [128, 1]);
    assert_eq!(m.tensor("betas.4").unwrap().dims(), [1]);
    assert_eq!(
        m.tensor("magnitudes_shift").unwrap().dims(),
        [] as [usize; 0]
    );
    assert_eq!(m.tensor("ln10").unwrap().dtype(), DType::F32);
    assert_eq!(m.tensors.len(), 26);
    // Transposed into the stack.
    let stack = import_photulators(&[photulator_file("hsc_g")]).unwrap();
    let w = m.tensor("W.1").unwrap().t().unwrap().contiguous().unwrap();
    let s = stack.tensor("band.0.layer.1.weight").unwrap();
    assert_eq!(
        w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        s.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

/// The repository's `_gpu.pt` twins differ from the `_cpu.pt` files only in the archive
/// name and the storage location (`cuda:0`); none is bundled, so one is made here from the
/// hsc_g CPU file exactly that way.
fn gpu_twin(band: &str) -> Vec<u8> {
    let cpu = std::fs::read(photulator_file(band)).unwrap();
    let (cpu_root, gpu_root) = (
        format!("model_4x128_alsing20_{band}_cpu/"),
        format!("model_4x128_alsing20_{band}_gpu/"),
    );
    rezip(&cpu, |name, mut b| {
        let name = name.replacen(&cpu_root, &gpu_root, 1);
        if name.ends_with("/data.pkl") {
            let n = replace_all(&mut b, b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0");
            assert_eq!(n, 1, "one location string, memoised");
        }
        Some((name, b))
    })
}

#[test]
fn gpu_twin_gives_identical_tensors() {
    let gpu = gpu_twin("hsc_g");
    let dir = tempfile::tempdir().unwrap();
    let gpu_path = dir.path().join("model_4x128_alsing20_hsc_g_gpu.pt");
    std::fs::write(&gpu_path, &gpu).unwrap();

    let cpu_m = read_torch_module(photulator_file("hsc_g")).unwrap();
    let gpu_m = read_torch_module_from_bytes("gpu twin", &gpu).unwrap();
    assert_eq!(cpu_m.tensors.len(), gpu_m.tensors.len());
    for ((n1, t1), (n2, t2)) in cpu_m.tensors.iter().zip(&gpu_m.tensors) {
        assert_eq!(n1, n2);
        assert_eq!(t1.dims(), t2.dims());
        let a = t1.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = t2.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{n1}"
        );
    }
    let from_cpu = import_photulators(&[photulator_file("hsc_g")]).unwrap();
    let from_gpu = import_photulators(&[gpu_path]).unwrap();
    assert_eq!(from_cpu.to_bytes().unwrap(), from_gpu.to_bytes().unwrap());
}

#[test]
fn detect_kind_tells_the_importers_apart() {
    assert_eq!(
        detect_kind(data("noiseModel.pt")).unwrap(),
        ModelKind::Diffusion
    );
    assert_eq!(
        detect_kind(photulator_file("hsc_r")).unwrap(),
        ModelKind::Photulator
    );
}

fn noise_model_with(patch: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    patch_pickle(&std::fs::read(data("noiseModel.pt")).unwrap(), patch)
}

fn import_bytes(bytes: &[u8]) -> Result<ImportedFile, ImportError> {
    let m = read_torch_module_from_bytes("patched.pt", bytes)?;
    popcosmos_torch_import::import_diffusion_module(&m)
}

#[test]
fn sde_and_activation_come_from_the_pickle() {
    // sub-VP: same parameters, another class.
    let sub = noise_model_with(|b| {
        assert_eq!(
            replace_all(
                b,
                b"flowfusion.diffusion\nVPSDE\n",
                b"flowfusion.diffusion\nsubVPSDE\n"
            ),
            1
        );
    });
    let config: Value =
        serde_json::from_str(&import_bytes(&sub).unwrap().metadata["config"]).unwrap();
    assert_eq!(config["sde"]["kind"], "sub-vp");
    assert_eq!(config["sde"]["beta_min"], 0.1);

    // VE needs sigma_min/sigma_max, which a VP pickle lacks.
    let ve = noise_model_with(|b| {
        replace_all(
            b,
            b"flowfusion.diffusion\nVPSDE\n",
            b"flowfusion.diffusion\nVESDE\n",
        );
    });
    let e = import_bytes(&ve).unwrap_err();
    assert!(
        matches!(&e, ImportError::Missing { key, .. } if key == "model.sde.sigma_min"),
        "{e}"
    );

    let unknown_sde = noise_model_with(|b| {
        replace_all(
            b,
            b"flowfusion.diffusion\nVPSDE\n",
            b"flowfusion.diffusion\nEDMSDE\n",
        );
    });
    let e = import_bytes(&unknown_sde).unwrap_err();
    assert!(
        matches!(&e, ImportError::UnknownSde { class, .. } if class == "flowfusion.diffusion.EDMSDE"),
        "{e}"
    );

    let silu = noise_model_with(|b| {
        assert_eq!(
            replace_all(b, b"activation\nTanh\n", b"activation\nSiLU\n"),
            1
        );
    });
    let config: Value =
        serde_json::from_str(&import_bytes(&silu).unwrap().metadata["config"]).unwrap();
    assert_eq!(config["activation"], "silu");

    let mish = noise_model_with(|b| {
        replace_all(b, b"activation\nTanh\n", b"activation\nMish\n");
    });
    let e = import_bytes(&mish).unwrap_err();
    match &e {
        ImportError::UnknownActivation { key, class, path } => {
            assert_eq!(key, "model.model.activation");
            assert_eq!(class, "torch.nn.modules.activation.Mish");
            assert_eq!(path.to_str(), Some("patched.pt"));
        }
        other => panic!("{other}"),
    }
    assert!(
        e.to_string().contains("patched.pt") && e.to_string().contains("Mish"),
        "{e}"
    );
}

#[test]
fn top_level_diffusion_class_is_read_from_the_top_level() {
    // Rename the wrapper's class to a diffusion class: the importer must then look for the
    // score network at the top level (`model.W`), not inside the old wrapper.
    let top = noise_model_with(|b| {
        replace_all(
            b,
            b"pop_cosmos.catalogue\nNoiseModel\n",
            b"flowfusion.diffusion\nPopulationModelDiffusion\n",
        );
    });
    let m = read_torch_module_from_bytes("top.pt", &top).unwrap();
    assert_eq!(
        m.class_name,
        "flowfusion.diffusion.PopulationModelDiffusion"
    );
    // The top level has no score network of its own, so this is an error naming the key.
    let e = popcosmos_torch_import::import_diffusion_module(&m).unwrap_err();
    assert!(
        matches!(&e, ImportError::Missing { key, .. } if key == "model.W"),
        "{e}"
    );
}

/// The imported `.pt` loads as a [`popcosmos_priors::diffusion::DiffusionModel`] and reproduces
/// the reference score network and ODE drift (`tests/fixtures/noise_model_fixture.safetensors`).
#[test]
fn imported_noise_model_runs_like_the_reference() {
    let file = import_diffusion(data("noiseModel.pt")).unwrap();
    let bytes = file.to_bytes().unwrap();
    let dev = candle_core::Device::Cpu;
    let model =
        popcosmos_priors::diffusion::DiffusionModel::from_bytes(&bytes, "noiseModel.pt", &dev)
            .unwrap();
    let fx = candle_core::safetensors::load(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/noise_model_fixture.safetensors"),
        &dev,
    )
    .unwrap();
    let t: Vec<f64> = fx["score_net.t"]
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    let drift = model
        .ode_drift(&t, &fx["score_net.x_std"], Some(&fx["score_net.c_std"]))
        .unwrap();
    let err = max_abs_diff(&drift, &fx["ode_drift.out"]);
    assert!(err < 1e-4, "ODE drift max |Δ| = {err}");
}
