//! Weight references: where a model file comes from.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{ModelError, Result};

/// A model file named in a manifest or on the command line.
///
/// | text | meaning |
/// |---|---|
/// | `builtin:NAME` | a model bundled in the binary ([`crate::builtin`]) |
/// | `hf://ORG/REPO[@REVISION]/FILE` | `FILE` of a Hugging Face model repo, at a branch, tag or commit (default `main`) |
/// | anything else | a local path |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightRef {
    /// A local file.
    Path(PathBuf),
    /// `builtin:NAME`: the bundled model `NAME`.
    Builtin(String),
    /// `hf://ORG/REPO[@REVISION]/FILE`.
    Hub(HubRef),
}

/// `hf://ORG/REPO[@REVISION]/FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    /// `ORG/REPO`.
    pub repo: String,
    /// Branch, tag or 40-hex commit; `main` when the reference names none.
    pub revision: String,
    /// Path of the file inside the repo (may contain `/`).
    pub file: String,
}

/// Prefix of hub references.
pub const HUB_PREFIX: &str = "hf://";
/// Prefix of bundled-model references.
pub const BUILTIN_PREFIX: &str = "builtin:";

impl HubRef {
    /// The card's path inside the repo: `dir/x.safetensors` → `dir/x.card.yaml`.
    pub fn card_file(&self) -> String {
        card_name_for(&self.file)
    }

    /// Whether the revision already pins a commit (then the cache needs no `refs/` lookup).
    pub fn is_pinned(&self) -> bool {
        is_commit_hash(&self.revision)
    }
}

/// `x.safetensors` → `x.card.yaml` (the name also used for local sidecars).
pub(crate) fn card_name_for(file: &str) -> String {
    let (dir, base) = match file.rfind('/') {
        Some(i) => (&file[..=i], &file[i + 1..]),
        None => ("", file),
    };
    let stem = base.strip_suffix(".safetensors").unwrap_or(base);
    format!("{dir}{stem}.card.yaml")
}

/// A 40-character lowercase hex git commit id.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Names the hub allows for orgs, repos and revisions (a conservative subset).
fn is_hub_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl FromStr for WeightRef {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| ModelError::BadReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some(name) = s.strip_prefix(BUILTIN_PREFIX) {
            if !is_hub_name(name) {
                return Err(bad(
                    "expected builtin:NAME, e.g. builtin:photulator_cosmos26",
                ));
            }
            return Ok(WeightRef::Builtin(name.to_string()));
        }
        if let Some(rest) = s.strip_prefix(HUB_PREFIX) {
            const SHAPE: &str = "expected hf://ORG/REPO[@REVISION]/FILE";
            let mut parts = rest.splitn(3, '/');
            let (Some(org), Some(repo_rev), Some(file)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(SHAPE));
            };
            let (repo, revision) = match repo_rev.split_once('@') {
                Some((r, rev)) => (r, rev),
                None => (repo_rev, "main"),
            };
            if !is_hub_name(org) || !is_hub_name(repo) {
                return Err(bad(&format!(
                    "{SHAPE}; ORG and REPO may use A-Z a-z 0-9 - _ ."
                )));
            }
            if !is_hub_name(revision) {
                return Err(bad(
                    "the revision may use A-Z a-z 0-9 - _ . (a branch, tag or commit)",
                ));
            }
            // The file becomes a path inside the cache, so it must stay inside the snapshot.
            if file.is_empty()
                || file.contains('\\')
                || file
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(bad("FILE must be a relative path inside the repo"));
            }
            return Ok(WeightRef::Hub(HubRef {
                repo: format!("{org}/{repo}"),
                revision: revision.to_string(),
                file: file.to_string(),
            }));
        }
        if s.starts_with("hf:") || s.starts_with("builtin") {
            return Err(bad("use builtin:NAME or hf://ORG/REPO[@REVISION]/FILE"));
        }
        if s.is_empty() {
            return Err(bad("empty"));
        }
        Ok(WeightRef::Path(PathBuf::from(s)))
    }
}

impl fmt::Display for WeightRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightRef::Path(p) => write!(f, "{}", p.display()),
            WeightRef::Builtin(n) => write!(f, "{BUILTIN_PREFIX}{n}"),
            WeightRef::Hub(h) => write!(f, "{h}"),
        }
    }
}

impl fmt::Display for HubRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{HUB_PREFIX}{}@{}/{}",
            self.repo, self.revision, self.file
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds() {
        assert_eq!(
            "builtin:photulator_cosmos26".parse::<WeightRef>().unwrap(),
            WeightRef::Builtin("photulator_cosmos26".into())
        );
        let h: WeightRef = "hf://cosmo-pop/photulators@v1.0/hsc/model.safetensors"
            .parse()
            .unwrap();
        assert_eq!(
            h,
            WeightRef::Hub(HubRef {
                repo: "cosmo-pop/photulators".into(),
                revision: "v1.0".into(),
                file: "hsc/model.safetensors".into()
            })
        );
        let WeightRef::Hub(h) = "hf://a/b/m.safetensors".parse().unwrap() else {
            panic!()
        };
        assert_eq!(h.revision, "main");
        assert_eq!(h.card_file(), "m.card.yaml");
        assert_eq!(
            "weights/x.safetensors".parse::<WeightRef>().unwrap(),
            WeightRef::Path("weights/x.safetensors".into())
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "builtin:emline_emulator",
            "hf://o/r@0123456789abcdef0123456789abcdef01234567/d/f.safetensors",
            "/tmp/w.safetensors",
        ] {
            let r: WeightRef = s.parse().unwrap();
            assert_eq!(r.to_string().parse::<WeightRef>().unwrap(), r);
        }
    }

    #[test]
    fn rejects_malformed_references() {
        for s in [
            "",
            "builtin:",
            "builtin",
            "hf:/o/r/f",
            "hf://o/r",
            "hf://o//f",
            "hf://o/r@/f",
            "hf://o/r/../../etc/passwd",
            "hf://o/r/a//b",
            "hf://o r/x/f",
        ] {
            let e = s.parse::<WeightRef>().unwrap_err();
            assert!(e.to_string().contains("bad weight reference"), "{s}: {e}");
        }
    }

    #[test]
    fn card_names() {
        assert_eq!(card_name_for("a/b/x.safetensors"), "a/b/x.card.yaml");
        assert_eq!(card_name_for("weights.bin"), "weights.bin.card.yaml");
    }
}
