//! Wrong or damaged weight files must fail at load time, naming the file and the tensor.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use popcosmos_api::Error;
use popcosmos_sps::{EmLineEmulator, Photulator, StellarMassEmulator, photulator};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// Rewrite the bundled photulator file through `edit` (name → (dtype, shape, bytes)).
fn write_modified(
    src: &[u8],
    path: &Path,
    edit: impl FnOnce(&mut BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>),
) {
    let st = SafeTensors::deserialize(src).unwrap();
    let mut map: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, TensorView<'_>)> = map
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phot_missing.safetensors");
    write_modified(photulator::BUILTIN_WEIGHTS, &path, |m| {
        m.remove("band.3.layer.2.alpha");
    });
    match Photulator::load(&path, &Device::Cpu) {
        Err(Error::MissingTensor { file, tensor }) => {
            assert!(file.ends_with("phot_missing.safetensors"), "{file}");
            assert_eq!(tensor, "band.3.layer.2.alpha");
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
}

#[test]
fn wrong_shape_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phot_shape.safetensors");
    write_modified(photulator::BUILTIN_WEIGHTS, &path, |m| {
        let w = m.get_mut("band.7.layer.1.weight").unwrap();
        w.1 = vec![128, 127];
        w.2.truncate(128 * 127 * 4);
    });
    let err = Photulator::load(&path, &Device::Cpu).unwrap_err();
    match &err {
        Error::TensorShape {
            file,
            tensor,
            expected,
            found,
        } => {
            assert!(file.ends_with("phot_shape.safetensors"));
            assert_eq!(tensor, "band.7.layer.1.weight");
            assert_eq!(expected, &vec![128, 128]);
            assert_eq!(found, &vec![128, 127]);
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }
    assert!(err.to_string().contains("band.7.layer.1.weight"));
}

#[test]
fn wrong_band_count_is_reported() {
    // A 25-band file (last band dropped, stacked vectors shortened) against the 26-band card.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phot_25.safetensors");
    write_modified(photulator::BUILTIN_WEIGHTS, &path, |m| {
        m.retain(|k, _| !k.starts_with("band.25."));
        for k in ["output_shift", "output_scale", "f_b"] {
            let t = m.get_mut(k).unwrap();
            t.1 = vec![25];
            t.2.truncate(25 * 4);
        }
    });
    match Photulator::load(&path, &Device::Cpu) {
        Err(Error::TensorShape {
            file,
            tensor,
            expected,
            found,
        }) => {
            assert!(file.ends_with("phot_25.safetensors"));
            assert_eq!(tensor, "output_shift");
            assert_eq!((expected, found), (vec![26], vec![25]));
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }
    // Keeping the stacked vectors at 26 still catches the missing band.
    let path = dir.path().join("phot_25b.safetensors");
    write_modified(photulator::BUILTIN_WEIGHTS, &path, |m| {
        m.retain(|k, _| !k.starts_with("band.25."))
    });
    match Photulator::load(&path, &Device::Cpu) {
        Err(Error::MissingTensor { tensor, .. }) => {
            assert!(tensor.starts_with("band.25."), "{tensor}")
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
}

#[test]
fn truncated_file_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phot_trunc.safetensors");
    let bytes = photulator::BUILTIN_WEIGHTS;
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    match Photulator::load(&path, &Device::Cpu) {
        Err(Error::Format { file, .. }) => assert!(file.ends_with("phot_trunc.safetensors")),
        other => panic!("expected Format, got {other:?}"),
    }
}

#[test]
fn other_emulators_validate_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("em.safetensors");
    write_modified(popcosmos_sps::emlines::BUILTIN_WEIGHTS, &path, |m| {
        m.remove("pca_transform_matrix");
    });
    match EmLineEmulator::load(&path, &Device::Cpu) {
        Err(Error::MissingTensor { tensor, .. }) => assert_eq!(tensor, "pca_transform_matrix"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    let path = dir.path().join("sm.safetensors");
    write_modified(popcosmos_sps::stellar_mass::BUILTIN_WEIGHTS, &path, |m| {
        let t = m.get_mut("input_shift").unwrap();
        t.1 = vec![15];
        t.2.truncate(15 * 4);
    });
    match StellarMassEmulator::load(&path, &Device::Cpu) {
        Err(Error::TensorShape { tensor, .. }) => assert_eq!(tensor, "input_shift"),
        other => panic!("expected TensorShape, got {other:?}"),
    }
}
