//! `hf://` references: the Hugging Face cache layout, offline mode and verified downloads.
//!
//! hf-hub 0.5 does the HTTP side (metadata request, redirects to the CDN, ranged download into
//! its own `.part` file) and knows the cache layout. It reads neither `HF_HUB_OFFLINE` nor
//! `HF_HUB_CACHE` and never checks content, so this module adds: [`HubConfig`] from the
//! environment, offline resolution, and a *staging* download: hf-hub fetches into a private
//! cache under the real cache root, the file is checked against its card, and only then is
//! the blob renamed into the real cache and linked into the snapshot. An interrupted or
//! corrupted download therefore never appears in the cache.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::card::ModelCard;
use crate::error::{ModelError, Result};
use crate::reference::{HubRef, is_commit_hash};
use crate::verify::verify_bytes;

/// Where and how to reach the hub. Build it with [`HubConfig::from_env`] in binaries and
/// explicitly in tests (the process environment is shared between parallel tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Base URL, e.g. `https://huggingface.co` (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The `hub` cache folder holding `models--ORG--REPO/` (`HF_HUB_CACHE`, `HF_HOME/hub`, …).
    pub cache_dir: PathBuf,
    /// Never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Bearer token for private repos (`HF_TOKEN`).
    pub token: Option<String>,
    /// Draw a progress bar while downloading.
    pub progress: bool,
}

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

impl HubConfig {
    /// Online, public hub, the given cache folder, no progress bar.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            cache_dir: cache_dir.into(),
            offline: false,
            token: None,
            progress: false,
        }
    }

    /// From the process environment (see [`HubConfig::from_vars`]).
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// From a variable lookup, with the precedence of Python's `huggingface_hub`:
    /// cache = `HF_HUB_CACHE`, else `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`,
    /// else `HOME/.cache/huggingface/hub`; `HF_HUB_OFFLINE` is true for 1/true/yes/on.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let cache_dir = if let Some(c) = get("HF_HUB_CACHE") {
            PathBuf::from(c)
        } else if let Some(h) = get("HF_HOME") {
            PathBuf::from(h).join("hub")
        } else if let Some(x) = get("XDG_CACHE_HOME") {
            PathBuf::from(x).join("huggingface").join("hub")
        } else {
            let home = get("HOME").unwrap_or_else(|| ".".into());
            PathBuf::from(home)
                .join(".cache")
                .join("huggingface")
                .join("hub")
        };
        let offline = get("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self {
            endpoint: get("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            cache_dir,
            offline,
            token: get("HF_TOKEN"),
            progress: false,
        }
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.cache_dir
            .join(Repo::new(repo.to_string(), RepoType::Model).folder_name())
    }
}

/// A hub file and its card in the local cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    /// The 40-hex commit of the snapshot the files belong to.
    pub commit: String,
    /// The card's path in the snapshot.
    pub card: PathBuf,
    /// The weights file's path in the snapshot.
    pub weights: PathBuf,
}

/// Look `r` up in the cache without any network access; `None` when the revision, the card
/// or the file is missing.
pub fn find_cached(r: &HubRef, cfg: &HubConfig) -> Option<CachedFile> {
    let repo_dir = cfg.repo_dir(&r.repo);
    let commit = if r.is_pinned() {
        r.revision.clone()
    } else {
        // Python writes refs without a newline; tolerate one (hf-hub 0.5 does not).
        let text = std::fs::read_to_string(repo_dir.join("refs").join(&r.revision)).ok()?;
        let c = text.trim().to_string();
        is_commit_hash(&c).then_some(c)?
    };
    let snapshot = Cache::new(cfg.cache_dir.clone())
        .repo(Repo::new(r.repo.clone(), RepoType::Model))
        .pointer_path(&commit);
    let (weights, card) = (snapshot.join(&r.file), snapshot.join(r.card_file()));
    (weights.exists() && card.exists()).then_some(CachedFile {
        commit,
        card,
        weights,
    })
}

/// The cached copy of `r`, downloading it first when it is missing (or when `refresh`) and
/// the configuration is online. The returned files are *not* re-verified here; loading does
/// that on every use.
pub fn resolve(r: &HubRef, cfg: &HubConfig, refresh: bool) -> Result<CachedFile> {
    if !refresh && let Some(hit) = find_cached(r, cfg) {
        return Ok(hit);
    }
    if cfg.offline {
        return Err(ModelError::OfflineCacheMiss {
            reference: r.to_string(),
            cache_dir: cfg.cache_dir.clone(),
        });
    }
    download(r, cfg)
}

/// Fetch card and weights through a staging cache, verify, then move them into the cache.
fn download(r: &HubRef, cfg: &HubConfig) -> Result<CachedFile> {
    std::fs::create_dir_all(&cfg.cache_dir).map_err(|e| ModelError::io(&cfg.cache_dir, e))?;
    // Inside the cache root so the final renames stay on one file system (atomic); removed on
    // drop, which also discards a half-written `.part` file.
    let staging = tempfile::Builder::new()
        .prefix(".popcosmos-staging-")
        .tempdir_in(&cfg.cache_dir)
        .map_err(|e| ModelError::io(&cfg.cache_dir, e))?;
    let api = ApiBuilder::from_cache(Cache::new(staging.path().to_path_buf()))
        .with_endpoint(cfg.endpoint.clone())
        .with_token(cfg.token.clone())
        .with_progress(cfg.progress)
        .build()
        .map_err(|e| download_error(r, cfg, e))?;
    let fetch = |revision: &str, file: &str| {
        api.repo(Repo::with_revision(
            r.repo.clone(),
            RepoType::Model,
            revision.to_string(),
        ))
        .download(file)
        .map_err(|e| download_error(r, cfg, e))
    };

    let card_file = r.card_file();
    let staged_card = fetch(&r.revision, &card_file)?;
    let commit = commit_of(&staged_card, &card_file).ok_or_else(|| ModelError::Card {
        file: staged_card.display().to_string(),
        message: "the hub returned no commit for the card".into(),
    })?;
    let card_source = format!("{}/{card_file} ({r})", r.repo);
    let card_bytes = read(&staged_card)?;
    let card = ModelCard::from_bytes(&card_bytes, &card_source)?;
    let base = r.file.rsplit('/').next().unwrap_or(&r.file);
    if card.file != base {
        return Err(ModelError::Card {
            file: card_source,
            message: format!("describes '{}', not '{base}'", card.file),
        });
    }
    // Pin the weights to the card's commit so a branch moving mid-download cannot pair a card
    // with someone else's weights.
    let staged_weights = fetch(&commit, &r.file)?;
    verify_bytes(&read(&staged_weights)?, &card, &format!("{r} (downloaded)"))?;

    let repo_dir = cfg.repo_dir(&r.repo);
    let weights = install(&staged_weights, &repo_dir, &commit, &r.file)?;
    let card_path = install(&staged_card, &repo_dir, &commit, &card_file)?;
    if !r.is_pinned() {
        // Written last: until this rename the new snapshot is invisible to `find_cached`.
        let refs = repo_dir.join("refs");
        write_atomic(&refs.join(&r.revision), commit.as_bytes())?;
    }
    Ok(CachedFile {
        commit,
        card: card_path,
        weights,
    })
}

fn download_error(r: &HubRef, cfg: &HubConfig, e: hf_hub::api::sync::ApiError) -> ModelError {
    ModelError::Download {
        reference: r.to_string(),
        endpoint: cfg.endpoint.clone(),
        source: Box::new(e),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| ModelError::io(path, e))
}

/// `…/snapshots/<commit>/<file>` → `<commit>`.
fn commit_of(snapshot_path: &Path, file: &str) -> Option<String> {
    let mut p = snapshot_path;
    for _ in 0..file.split('/').count() {
        p = p.parent()?;
    }
    let c = p.file_name()?.to_str()?.to_string();
    is_commit_hash(&c).then_some(c)
}

/// Move the staged blob behind `staged` into `repo_dir/blobs/` and point
/// `repo_dir/snapshots/<commit>/<file>` at it (relative symlink, as Python does).
fn install(staged: &Path, repo_dir: &Path, commit: &str, file: &str) -> Result<PathBuf> {
    let blob = std::fs::canonicalize(staged).map_err(|e| ModelError::io(staged, e))?;
    let etag = blob
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let blobs = repo_dir.join("blobs");
    std::fs::create_dir_all(&blobs).map_err(|e| ModelError::io(&blobs, e))?;
    let dest = blobs.join(&etag);
    std::fs::rename(&blob, &dest).map_err(|e| ModelError::io(&dest, e))?;

    let pointer = repo_dir.join("snapshots").join(commit).join(file);
    let parent = pointer.parent().unwrap_or(repo_dir);
    std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    let tmp = parent.join(format!(".{etag}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    link_or_copy(&dest, &tmp, file)?;
    std::fs::rename(&tmp, &pointer).map_err(|e| ModelError::io(&pointer, e))?;
    Ok(pointer)
}

#[cfg(unix)]
fn link_or_copy(blob: &Path, at: &Path, file: &str) -> Result<()> {
    // snapshots/<commit>/<a/b/file> → ../../[../..]blobs/<etag>
    let ups = "../".repeat(1 + file.split('/').count());
    let target = PathBuf::from(format!("{ups}blobs")).join(blob.file_name().unwrap_or_default());
    std::os::unix::fs::symlink(&target, at).map_err(|e| ModelError::io(at, e))
}

#[cfg(not(unix))]
fn link_or_copy(blob: &Path, at: &Path, _file: &str) -> Result<()> {
    std::fs::copy(blob, at)
        .map(|_| ())
        .map_err(|e| ModelError::io(at, e))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| ModelError::io(dir, e))?;
    std::fs::write(tmp.path(), bytes).map_err(|e| ModelError::io(tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| ModelError::io(path, e.error))?;
    Ok(())
}

/// Every hub model with a card in the cache: `(reference, card path)`, sorted.
pub fn list_cached(cfg: &HubConfig) -> Vec<(HubRef, PathBuf)> {
    let mut out = Vec::new();
    let Ok(repos) = std::fs::read_dir(&cfg.cache_dir) else {
        return out;
    };
    for entry in repos.flatten() {
        let folder = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = folder.strip_prefix("models--") else {
            continue;
        };
        let repo = id.replacen("--", "/", 1);
        // commit → the first ref naming it, so listings show `@main` rather than a hash.
        let mut names = std::collections::BTreeMap::new();
        if let Ok(refs) = std::fs::read_dir(entry.path().join("refs")) {
            for r in refs.flatten() {
                if let Ok(c) = std::fs::read_to_string(r.path()) {
                    names
                        .entry(c.trim().to_string())
                        .or_insert_with(|| r.file_name().to_string_lossy().into_owned());
                }
            }
        }
        let Ok(snapshots) = std::fs::read_dir(entry.path().join("snapshots")) else {
            continue;
        };
        for s in snapshots.flatten() {
            let commit = s.file_name().to_string_lossy().into_owned();
            let revision = names.get(&commit).cloned().unwrap_or(commit);
            let mut stack = vec![s.path()];
            while let Some(dir) = stack.pop() {
                let Ok(items) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for it in items.flatten() {
                    let p = it.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if let Some(name) = p.to_str().and_then(|n| n.strip_suffix(".card.yaml"))
                    {
                        let rel = Path::new(name)
                            .strip_prefix(s.path())
                            .map(|r| r.to_string_lossy().replace('\\', "/"))
                            .unwrap_or_default();
                        out.push((
                            HubRef {
                                repo: repo.clone(),
                                revision: revision.clone(),
                                file: format!("{rel}.safetensors"),
                            },
                            p,
                        ));
                    }
                }
            }
        }
    }
    out.sort_by_key(|(r, _)| r.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn environment_precedence() {
        let c = HubConfig::from_vars(vars(&[("HOME", "/h")]));
        assert_eq!(c.cache_dir, PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert!(!c.offline);
        let c = HubConfig::from_vars(vars(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]));
        assert_eq!(c.cache_dir, PathBuf::from("/x/huggingface/hub"));
        let c = HubConfig::from_vars(vars(&[("XDG_CACHE_HOME", "/x"), ("HF_HOME", "/hf")]));
        assert_eq!(c.cache_dir, PathBuf::from("/hf/hub"));
        let c = HubConfig::from_vars(vars(&[
            ("HF_HOME", "/hf"),
            ("HF_HUB_CACHE", "/c"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_HUB_OFFLINE", "1"),
        ]));
        assert_eq!(c.cache_dir, PathBuf::from("/c"));
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert!(c.offline);
        for (v, off) in [("0", false), ("TRUE", true), ("no", false), ("yes", true)] {
            assert_eq!(
                HubConfig::from_vars(vars(&[("HF_HUB_OFFLINE", v)])).offline,
                off,
                "{v}"
            );
        }
    }

    #[test]
    fn commit_of_snapshot_paths() {
        let c = "0123456789abcdef0123456789abcdef01234567";
        let p = PathBuf::from(format!("/x/snapshots/{c}/a/b.yaml"));
        assert_eq!(commit_of(&p, "a/b.yaml").as_deref(), Some(c));
        assert_eq!(commit_of(&p, "b.yaml"), None);
    }
}
