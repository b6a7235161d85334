//! Malformed input gives a typed error naming the file, never a panic.

mod common;

use common::*;
use popcosmos_torch_import::{
    ImportError, import_diffusion, import_photulators, read_torch_module,
    read_torch_module_from_bytes,
};

fn noise_bytes() -> Vec<u8> {
    std::fs::read(data("noiseModel.pt")).unwrap()
}

/// Writes `bytes` to a temporary file called `name` and reads it as a module.
fn read_as_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, Result<(), ImportError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let r = read_torch_module(&path).map(|_| ());
    if let Err(e) = &r {
        assert_eq!(e.path(), Some(path.as_path()));
        assert!(
            e.to_string().contains(name),
            "message does not name the file: {e}"
        );
    }
    (dir, r)
}

#[test]
fn missing_file_is_an_io_error() {
    let e = read_torch_module("/nonexistent/dir/model.pt").unwrap_err();
    assert!(matches!(e, ImportError::Io { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/dir/model.pt"), "{e}");
}

#[test]
fn non_zip_file_is_an_archive_error() {
    let (_d, r) = read_as_file("notes.pt", b"this is not a zip archive at all");
    assert!(matches!(r, Err(ImportError::Archive { .. })), "{r:?}");
    // A legacy (pre-1.6) torch pickle starts with the pickle magic, not a zip header.
    let (_d, r) = read_as_file(
        "legacy.pt",
        &[0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46],
    );
    assert!(matches!(r, Err(ImportError::Archive { .. })), "{r:?}");
    let (_d, r) = read_as_file("empty.pt", b"");
    assert!(matches!(r, Err(ImportError::Archive { .. })), "{r:?}");
}

#[test]
fn truncated_files_are_errors() {
    let full = noise_bytes();
    for len in [
        1,
        100,
        4096,
        full.len() / 2,
        full.len() - 1000,
        full.len() - 1,
    ] {
        let (_d, r) = read_as_file("noiseModel_truncated.pt", &full[..len]);
        assert!(
            matches!(r, Err(ImportError::Archive { .. })),
            "{len} bytes: {r:?}"
        );
    }
}

#[test]
fn zip_without_data_pkl() {
    let z = zip_of(&[
        ("model/version".to_string(), b"3\n".to_vec()),
        ("model/data/0".to_string(), vec![0; 16]),
    ]);
    let (_d, r) = read_as_file("nopickle.pt", &z);
    assert!(matches!(r, Err(ImportError::MissingPickle { .. })), "{r:?}");
    // Dropping data.pkl from a real checkpoint.
    let z = rezip(&noise_bytes(), |n, b| {
        (!n.ends_with("data.pkl")).then(|| (n.to_string(), b))
    });
    let (_d, r) = read_as_file("nopickle2.pt", &z);
    assert!(matches!(r, Err(ImportError::MissingPickle { .. })), "{r:?}");
}

#[test]
fn unsupported_top_objects() {
    for (pickle, found) in [
        (&b"\x80\x02K\x05."[..], "int 5"),
        (b"\x80\x02]q\x00(K\x01K\x02e.", "list"),
        (b"\x80\x02X\x03\x00\x00\x00abc.", "str"),
        (b"\x80\x02ctorch\nfloat32\nq\x00.", "global torch.float32"),
    ] {
        let z = zip_of(&[("archive/data.pkl".to_string(), pickle.to_vec())]);
        let (_d, r) = read_as_file("weird.pt", &z);
        match r {
            Err(ImportError::UnsupportedTopObject { found: f, .. }) => assert_eq!(f, found),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn corrupt_pickles_are_pickle_errors() {
    let base = noise_bytes();
    // Truncated stream.
    let z = rezip(&base, |n, mut b| {
        if n.ends_with("data.pkl") {
            b.truncate(b.len() / 2);
        }
        Some((n.to_string(), b))
    });
    let (_d, r) = read_as_file("cut_pickle.pt", &z);
    assert!(matches!(r, Err(ImportError::Pickle { .. })), "{r:?}");
    // Protocol 4 framing, an over-long integer, a missing memo entry.
    for pickle in [
        &b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x05."[..],
        b"\x80\x02\x8a\x20\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x20.",
        b"\x80\x02h\x07.",
        b"\x80\x02}(X\x01\x00\x00\x00aK\x01u",
    ] {
        let z = zip_of(&[("archive/data.pkl".to_string(), pickle.to_vec())]);
        let (_d, r) = read_as_file("bad_pickle.pt", &z);
        assert!(matches!(r, Err(ImportError::Pickle { .. })), "{r:?}");
    }
}

#[test]
fn missing_or_short_storages_name_the_tensor() {
    let base = noise_bytes();
    let z = rezip(&base, |n, b| {
        (!n.ends_with("/data/0")).then(|| (n.to_string(), b))
    });
    let (_d, r) = read_as_file("nostorage.pt", &z);
    match r {
        Err(ImportError::Tensor { tensor, reason, .. }) => {
            assert_eq!(tensor, "magnitude_min");
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let z = rezip(&base, |n, mut b| {
        if n.ends_with("/data/14") {
            b.truncate(1000);
        }
        Some((n.to_string(), b))
    });
    let (_d, r) = read_as_file("shortstorage.pt", &z);
    match r {
        Err(ImportError::Tensor { tensor, .. }) => assert_eq!(tensor, "model.model.NN.0.weight"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn big_endian_archives_are_refused() {
    let z = rezip(&noise_bytes(), |n, b| {
        let b = if n.ends_with("/byteorder") {
            b"big".to_vec()
        } else {
            b
        };
        Some((n.to_string(), b))
    });
    let (_d, r) = read_as_file("bigendian.pt", &z);
    assert!(matches!(r, Err(ImportError::Archive { .. })), "{r:?}");
}

/// Every byte of a real pickle overwritten, one at a time, with a few values: the reader
/// returns Ok or a typed error, and no panic is ever caught inside it.
#[test]
fn mutated_pickles_never_panic() {
    let base = std::fs::read(photulator_file("hsc_g")).unwrap();
    let entries = entries(&base);
    let pkl = entries
        .iter()
        .position(|(n, _)| n.ends_with("data.pkl"))
        .unwrap();
    let original = entries[pkl].1.clone();
    let (mut ok, mut err) = (0, 0);
    for i in (0..original.len()).step_by(3) {
        for v in [original[i] ^ 0xff, original[i].wrapping_add(1), b'(', 0x8a] {
            let mut e = entries.clone();
            e[pkl].1[i] = v;
            match read_torch_module_from_bytes("mutant.pt", &zip_of(&e)) {
                Ok(_) => ok += 1,
                Err(ImportError::Internal { reason, .. }) => {
                    panic!("byte {i} = {v:#04x}: caught a panic: {reason}")
                }
                Err(e) => {
                    assert!(e.to_string().contains("mutant.pt"), "{e}");
                    err += 1
                }
            }
        }
    }
    assert!(ok > 0 && err > 0, "{ok} ok, {err} errors");
}

#[test]
fn importers_refuse_the_wrong_kind() {
    let e = import_diffusion(photulator_file("hsc_g")).unwrap_err();
    assert!(matches!(e, ImportError::WrongKind { .. }), "{e}");
    assert!(e.to_string().contains("hsc_g"), "{e}");
    let e = import_photulators(&[photulator_file("hsc_g"), data("noiseModel.pt")]).unwrap_err();
    assert!(matches!(e, ImportError::WrongKind { .. }), "{e}");
    assert!(e.to_string().contains("noiseModel.pt"), "{e}");
    let none: [std::path::PathBuf; 0] = [];
    assert!(matches!(
        import_photulators(&none),
        Err(ImportError::NoInputs)
    ));
    let e = import_photulators(&[photulator_file("hsc_g"), photulator_file("hsc_g")]).unwrap_err();
    assert!(
        matches!(&e, ImportError::Invalid { key, .. } if key == "filters"),
        "{e}"
    );
}

#[test]
fn write_failure_names_the_output_and_leaves_nothing() {
    let imported = import_photulators(&[photulator_file("hsc_i")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("missing-subdir").join("out.safetensors");
    let e = imported.write(&target).unwrap_err();
    assert!(matches!(e, ImportError::Write { .. }), "{e}");
    assert!(e.to_string().contains("out.safetensors"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
