//! Helpers shared by the workspace integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_popcosmos-cli"));
    c.env("RAYON_NUM_THREADS", "2");
    c
}

pub fn run(args: &[&str]) -> Output {
    cli().args(args).output().expect("spawn popcosmos-cli")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("popcosmos-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small, fast manifest over `catalogue` writing to `out`.
pub fn tiny_manifest(catalogue: &Path, out: &Path, extra: &str) -> String {
    format!(
        r#"survey: {{name: cosmos}}
catalogue:
  path: {cat}
  id_column: id
  units: mjy
  flux_pattern: "flux_{{band}}"
  error_pattern: "fluxerr_{{band}}"
  upper_limits: negative_error
prior: {{kind: prospector-alpha}}
sampler: {{walkers: 32, steps: 16, burn_in: 8}}
init: {{library_size: 1500, top_k: 4}}
output: {{dir: {out}, format: parquet}}
seed: 7
galaxies_per_batch: 2
{extra}"#,
        cat = catalogue.display(),
        out = out.display()
    )
}

/// Assert two results tables hold the same galaxies in the same order with bit-identical
/// values (NaN equals NaN) in every f64 and string column; extra int columns (e.g. `shard`)
/// are ignored.
pub fn assert_identical(a: &popcosmos_catalog::ResultTable, b: &popcosmos_catalog::ResultTable) {
    assert_eq!(a.ids, b.ids, "same galaxies in the same order");
    assert_eq!(
        a.columns.keys().collect::<Vec<_>>(),
        b.columns.keys().collect::<Vec<_>>()
    );
    for (name, col) in &a.columns {
        for (i, (x, y)) in col.iter().zip(&b.columns[name]).enumerate() {
            assert!(
                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                "{} {name}: {x} vs {y}",
                a.ids[i]
            );
        }
    }
    assert_eq!(a.strings, b.strings, "flags");
}
