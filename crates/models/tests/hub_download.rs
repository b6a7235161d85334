//! The `hf://` download path end to end against a mock hub on 127.0.0.1 (no internet):
//! fresh download, cached re-use with the server gone, offline mode with and without a cache
//! hit, corrupted cache files and corrupted transfers.

use std::path::Path;

use popcosmos_models::mock_hub::{MockFile, MockHub};
use popcosmos_models::{HubConfig, Location, ModelError, WeightRef, builtin, hub, load};

const REPO: &str = "popcosmos-test/emulators";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const FILE: &str = "cosmos/stellar_mass_emulator.safetensors";
const CARD: &str = "cosmos/stellar_mass_emulator.card.yaml";

fn weights() -> &'static [u8] {
    builtin("stellar_mass_emulator").unwrap().bytes
}

fn serve() -> MockHub {
    let m = builtin("stellar_mass_emulator").unwrap();
    let file = |path: &str, bytes: &[u8]| MockFile::on_main(REPO, COMMIT, path, bytes);
    MockHub::start(vec![
        file(FILE, m.bytes),
        file(CARD, m.card_text.as_bytes()),
        file(
            "other/stellar_mass_emulator.card.yaml",
            m.card_text.as_bytes(),
        ),
        file("other/renamed.safetensors", m.bytes),
        file("other/renamed.card.yaml", m.card_text.as_bytes()),
    ])
    .unwrap()
}

fn config(cache: &Path, hub: &MockHub, offline: bool) -> HubConfig {
    HubConfig {
        endpoint: hub.endpoint(),
        offline,
        ..HubConfig::new(cache.join("hub"))
    }
}

fn reference(rev: &str, file: &str) -> WeightRef {
    format!("hf://{REPO}@{rev}/{file}").parse().unwrap()
}

fn repo_dir(cache: &Path) -> std::path::PathBuf {
    cache.join("hub/models--popcosmos-test--emulators")
}

fn staging_dirs(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("hub"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".popcosmos-staging")
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn fresh_download_then_reuse_without_network() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve();
    let cfg = config(tmp.path(), &server, false);
    let r = reference("main", FILE);

    let model = load(&r, &cfg).unwrap();
    assert_eq!(&*model.bytes, weights());
    assert_eq!(model.card.name, "stellar_mass_emulator");
    assert!(
        server.requests() >= 4,
        "card + weights, metadata + body each"
    );

    // Standard layout: refs/main → commit; snapshot entries are symlinks into blobs/.
    let repo = repo_dir(tmp.path());
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    let snap = repo.join("snapshots").join(COMMIT).join(FILE);
    assert!(
        std::fs::symlink_metadata(&snap)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let blob = std::fs::canonicalize(&snap).unwrap();
    assert_eq!(
        blob.parent().unwrap(),
        std::fs::canonicalize(repo.join("blobs")).unwrap()
    );
    assert_eq!(
        blob.file_name().unwrap().to_str().unwrap(),
        popcosmos_models::sha256_hex(weights())
    );
    assert_eq!(
        model.location,
        Location::Files {
            card: repo.join("snapshots").join(COMMIT).join(CARD),
            weights: snap.clone()
        }
    );
    assert_eq!(staging_dirs(tmp.path()), 0, "staging folder removed");

    // A cache hit makes no request, online or offline.
    let before = server.requests();
    load(&r, &cfg).unwrap();
    load(&r, &config(tmp.path(), &server, true)).unwrap();
    assert_eq!(server.requests(), before);

    // And it works with the server gone.
    let endpoint = server.endpoint();
    server.stop();
    assert!(std::net::TcpStream::connect(endpoint.trim_start_matches("http://")).is_err());
    let again = load(
        &r,
        &HubConfig {
            endpoint,
            ..HubConfig::new(tmp.path().join("hub"))
        },
    )
    .unwrap();
    assert_eq!(&*again.bytes, weights());
}

#[test]
fn offline_without_cache_hit_fails_without_a_request() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve();
    let r = reference("main", FILE);
    let e = load(&r, &config(tmp.path(), &server, true)).unwrap_err();
    assert!(matches!(e, ModelError::OfflineCacheMiss { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("HF_HUB_OFFLINE") && msg.contains("models fetch"),
        "{msg}"
    );
    assert!(
        msg.contains(&tmp.path().join("hub").display().to_string()),
        "{msg}"
    );
    assert_eq!(server.requests(), 0);
    assert!(!repo_dir(tmp.path()).exists());
}

#[test]
fn pinned_commit_resolves_offline_without_refs() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve();
    let pinned = reference(COMMIT, FILE);
    load(&pinned, &config(tmp.path(), &server, false)).unwrap();
    assert!(
        !repo_dir(tmp.path()).join("refs").exists(),
        "a commit needs no ref"
    );
    let n = server.requests();
    load(&pinned, &config(tmp.path(), &server, true)).unwrap();
    assert_eq!(server.requests(), n);
    // The branch name was never fetched, so offline it is a miss.
    let e = load(&reference("main", FILE), &config(tmp.path(), &server, true)).unwrap_err();
    assert!(matches!(e, ModelError::OfflineCacheMiss { .. }), "{e}");
}

#[test]
fn corrupted_cache_file_is_detected_and_refetch_repairs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve();
    let cfg = config(tmp.path(), &server, false);
    let r = reference("main", FILE);
    load(&r, &cfg).unwrap();
    let snap = repo_dir(tmp.path())
        .join("snapshots")
        .join(COMMIT)
        .join(FILE);
    let blob = std::fs::canonicalize(&snap).unwrap();

    let mut bytes = weights().to_vec();
    bytes[5000] ^= 0x10;
    std::fs::write(&blob, &bytes).unwrap();
    let e = load(&r, &cfg).unwrap_err();
    assert!(matches!(e, ModelError::ChecksumMismatch { .. }), "{e}");
    assert!(
        e.to_string().starts_with(&snap.display().to_string()),
        "{e}"
    );

    std::fs::write(&blob, &weights()[..1000]).unwrap();
    let e = load(&r, &config(tmp.path(), &server, true)).unwrap_err();
    assert!(
        matches!(e, ModelError::SizeMismatch { found: 1000, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("truncated"), "{e}");

    let WeightRef::Hub(h) = &r else {
        unreachable!()
    };
    hub::resolve(h, &cfg, true).unwrap();
    assert_eq!(&*load(&r, &cfg).unwrap().bytes, weights());
}

#[test]
fn corrupted_transfer_never_reaches_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve();
    let cfg = config(tmp.path(), &server, false);
    let r = reference("main", FILE);
    server.corrupt_lfs_transfers(true);
    let e = load(&r, &cfg).unwrap_err();
    assert!(matches!(e, ModelError::ChecksumMismatch { .. }), "{e}");
    assert!(e.to_string().contains("(downloaded)"), "{e}");
    let repo = repo_dir(tmp.path());
    assert!(!repo.join("refs").exists() && !repo.join("snapshots").exists());
    assert_eq!(staging_dirs(tmp.path()), 0);
    // Offline, the failed download is a plain miss.
    let e = load(&r, &config(tmp.path(), &server, true)).unwrap_err();
    assert!(matches!(e, ModelError::OfflineCacheMiss { .. }), "{e}");

    server.corrupt_lfs_transfers(false);
    assert_eq!(&*load(&r, &cfg).unwrap().bytes, weights());
}

#[test]
fn hub_errors_name_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve();
    let cfg = config(tmp.path(), &server, false);

    let missing = reference("main", "nope/x.safetensors");
    let e = load(&missing, &cfg).unwrap_err();
    assert!(matches!(e, ModelError::Download { .. }), "{e}");
    assert!(e.to_string().contains("nope/x.safetensors"), "{e}");

    // The card next to `renamed.safetensors` describes stellar_mass_emulator.safetensors.
    let e = load(&reference("main", "other/renamed.safetensors"), &cfg).unwrap_err();
    assert!(
        e.to_string()
            .contains("describes 'stellar_mass_emulator.safetensors'"),
        "{e}"
    );

    // Server gone and nothing cached: a download error, not a hang.
    let endpoint = server.endpoint();
    drop(server);
    let cfg = HubConfig {
        endpoint,
        ..HubConfig::new(tmp.path().join("hub2"))
    };
    let e = load(&reference("main", FILE), &cfg).unwrap_err();
    assert!(matches!(e, ModelError::Download { .. }), "{e}");
}

#[test]
fn cached_models_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve();
    let cfg = config(tmp.path(), &server, false);
    assert!(hub::list_cached(&cfg).is_empty());
    load(&reference("main", FILE), &cfg).unwrap();
    let listed = hub::list_cached(&cfg);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].0.to_string(), format!("hf://{REPO}@main/{FILE}"));
}
