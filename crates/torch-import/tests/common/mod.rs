//! Shared helpers: test data paths and in-memory rewriting of `.pt` zips.
#![allow(dead_code)]

use std::io::{Cursor, Read, Write};
use std::path::PathBuf;

/// `crates/torch-import/tests/data/NAME` (copies of the public pop-cosmos files, see README there).
pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A file of the repository (`assets/models/...`).
pub fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

pub fn photulator_file(band: &str) -> PathBuf {
    data(&format!("model_4x128_alsing20_{band}_cpu.pt"))
}

/// All entries of a zip, in order.
pub fn entries(zip_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(Cursor::new(zip_bytes)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            (f.name().unwrap().to_string(), b)
        })
        .collect()
}

/// A stored (uncompressed) zip of `entries`, as torch writes.
pub fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Rewrites a zip: `f` maps (name, bytes) to a new entry or drops it (`None`).
pub fn rezip(
    zip_bytes: &[u8],
    mut f: impl FnMut(&str, Vec<u8>) -> Option<(String, Vec<u8>)>,
) -> Vec<u8> {
    let out: Vec<_> = entries(zip_bytes)
        .into_iter()
        .filter_map(|(n, b)| f(&n, b))
        .collect();
    zip_of(&out)
}

/// Replaces every occurrence of `from` by `to` in `bytes`; returns how many there were.
pub fn replace_all(bytes: &mut Vec<u8>, from: &[u8], to: &[u8]) -> usize {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut n = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
            n += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    *bytes = out;
    n
}

/// The `data.pkl` of a checkpoint patched with `patch` (archive otherwise unchanged).
pub fn patch_pickle(zip_bytes: &[u8], patch: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    rezip(zip_bytes, |name, mut b| {
        if name.ends_with("/data.pkl") {
            patch(&mut b);
        }
        Some((name.to_string(), b))
    })
}
