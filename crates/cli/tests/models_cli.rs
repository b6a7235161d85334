//! `popcosmos-cli models …` and `sps.weights: hf://…` as a user runs them: subprocesses with
//! HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE set, against a mock hub on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use popcosmos_models::builtin;
use popcosmos_models::mock_hub::{MockFile, MockHub};

const REPO: &str = "popcosmos-test/photulators";
const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";
const REF: &str = "hf://popcosmos-test/photulators/cosmos26/photulator_cosmos26.safetensors";

fn serve() -> MockHub {
    let m = builtin("photulator_cosmos26").unwrap();
    let file = |path: &str, bytes: &[u8]| MockFile::on_main(REPO, COMMIT, path, bytes);
    MockHub::start(vec![
        file("cosmos26/photulator_cosmos26.safetensors", m.bytes),
        file(
            "cosmos26/photulator_cosmos26.card.yaml",
            m.card_text.as_bytes(),
        ),
    ])
    .unwrap()
}

/// The CLI with a private HF_HOME and the given endpoint; every other HF_* variable cleared.
fn cli(home: &Path, endpoint: &str, offline: bool, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_popcosmos-cli"));
    for v in [
        "HF_HUB_CACHE",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "XDG_CACHE_HOME",
    ] {
        c.env_remove(v);
    }
    c.env("HF_HOME", home).env("HF_ENDPOINT", endpoint);
    if offline {
        c.env("HF_HUB_OFFLINE", "1");
    }
    c.args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn fetch_list_info_verify_and_offline_use() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let server = serve();
    let ep = server.endpoint();

    // Offline with an empty cache: a clear miss, no request.
    let o = cli(&home, &ep, true, &["models", "fetch", REF]);
    assert!(!o.status.success());
    assert!(text(&o).contains("HF_HUB_OFFLINE"), "{}", text(&o));
    assert_eq!(server.requests(), 0);

    let o = cli(&home, &ep, false, &["models", "fetch", REF]);
    assert!(o.status.success(), "{}", text(&o));
    let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert!(path.starts_with(home.join("hub/models--popcosmos-test--photulators/snapshots")));
    assert!(text(&o).contains("verified"), "{}", text(&o));

    // From here on the hub is gone.
    server.stop();

    let o = cli(&home, &ep, true, &["models", "list"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("builtin:photulator_cosmos26"), "{out}");
    assert!(
        out.contains(&format!(
            "hf://{REPO}@main/cosmos26/photulator_cosmos26.safetensors"
        )),
        "{out}"
    );

    let o = cli(&home, &ep, true, &["models", "info", REF]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("photulator [15, 128, 128, 128, 128, 1]") && out.contains("(verified)"),
        "{out}"
    );
    assert!(
        out.contains("hsc_g") && out.contains("license:      MIT"),
        "{out}"
    );

    let o = cli(
        &home,
        &ep,
        true,
        &["models", "info", "stellar_mass_emulator"],
    );
    assert!(
        o.status.success() && text(&o).contains("bundled"),
        "{}",
        text(&o)
    );

    let o = cli(&home, &ep, true, &["models", "verify"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert_eq!(
        out.matches("ok      ").count(),
        popcosmos_models::BUILTIN.len() + 1,
        "every bundled model + 1 cached: {out}"
    );

    // The manifest path: validate builds the pipeline from the cached hub weights, offline.
    let manifest = tmp.path().join("m.yaml");
    let yaml = std::fs::read_to_string(repo().join("examples/cosmos-demo.yaml"))
        .unwrap()
        .replace(
            "path: data/cosmos2020_demo.csv",
            &format!(
                "path: {}",
                repo().join("examples/data/cosmos2020_demo.csv").display()
            ),
        )
        .replace(
            "calibration_file: calibrations/",
            &format!(
                "calibration_file: {}/",
                repo().join("examples/calibrations").display()
            ),
        )
        .replace(
            "  emission_lines: true\n",
            &format!("  emission_lines: true\n  weights: {REF}\n"),
        );
    assert!(yaml.contains(REF));
    std::fs::write(&manifest, yaml).unwrap();
    let o = cli(&home, &ep, true, &["validate", manifest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("OK"), "{}", text(&o));

    // Corrupt the cached blob: verify and validate both refuse it, naming the file.
    let blob = std::fs::canonicalize(&path).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[123_456] ^= 0x01;
    std::fs::write(&blob, bytes).unwrap();
    let o = cli(&home, &ep, true, &["models", "verify"]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("FAILED") && out.contains(&path.display().to_string()),
        "{out}"
    );
    let n_models = popcosmos_models::BUILTIN.len() + 1;
    assert!(
        out.contains(&format!("1 of {n_models} models failed")),
        "{out}"
    );
    let o = cli(&home, &ep, true, &["validate", manifest.to_str().unwrap()]);
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("sps.weights") && out.contains("sha256"),
        "{out}"
    );
}

#[test]
fn bad_references_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let o = cli(
        tmp.path(),
        "http://127.0.0.1:9",
        true,
        &["models", "fetch", "hf://only-org"],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("bad weight reference 'hf://only-org'"),
        "{}",
        text(&o)
    );
    let o = cli(
        tmp.path(),
        "http://127.0.0.1:9",
        true,
        &["models", "fetch", "builtin:emline_emulator"],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("takes a hf://"), "{}", text(&o));
    let o = cli(
        tmp.path(),
        "http://127.0.0.1:9",
        true,
        &["models", "info", "builtin:nope"],
    );
    assert!(text(&o).contains("no bundled model 'nope'"), "{}", text(&o));
}
