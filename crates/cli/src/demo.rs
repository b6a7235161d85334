//! `popcosmos-cli demo --output DIR`: the output folder is reused only when it is new, empty
//! or a previous popcosmos output, and then only the files popcosmos writes are removed.

use std::path::Path;

use anyhow::{Context, Result, bail};
use popcosmos_catalog::commit::{CHAINS_DIR, COMMIT_DIR, OutputLock, read_commits};
use popcosmos_catalog::list_parts;

/// Whether `dir/run.json` is a popcosmos run record (of a run, a shard or a merge).
pub fn is_popcosmos_output(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("run.json")) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    v.get("popcosmos_version").is_some_and(|x| x.is_string())
        && v.get("manifest").is_some_and(|x| x.is_object())
}

/// Make `dir` ready for a fresh demo run. A missing or empty folder is used as it is; a
/// previous popcosmos output loses exactly the files a run and `evaluate` write there
/// (result, chain and commit parts, `run.json`, `metrics.json`, the demo plots), nothing
/// else; any other non-empty folder, or a path that is not a folder, is refused untouched.
pub fn prepare_output(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        bail!(
            "demo --output {}: exists and is not a folder; nothing was changed — choose a new folder",
            dir.display()
        );
    }
    let empty = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .next()
        .is_none();
    if empty {
        return Ok(());
    }
    if !is_popcosmos_output(dir) {
        bail!(
            "demo --output {}: the folder is not empty and is not a previous popcosmos output \
             (it has no popcosmos run.json); refusing to use it and nothing was deleted — choose \
             a new or empty folder",
            dir.display()
        );
    }
    // Keep a run that is writing there right now out of this.
    let _lock = OutputLock::acquire(dir)?;
    let mut doomed = list_parts(dir)?;
    doomed.extend(list_parts(dir.join(CHAINS_DIR))?);
    doomed.extend(read_commits(dir)?.into_iter().map(|(p, _)| p));
    for name in ["run.json", ".run.json.tmp", "metrics.json"] {
        doomed.push(dir.join(name));
    }
    let plots = dir.join("plots");
    if plots.is_dir() {
        for entry in std::fs::read_dir(&plots).with_context(|| plots.display().to_string())? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // The plots `evaluate` writes: photoz.png, corner_<id>.png, sed_<id>.png.
            if name == "photoz.png"
                || (name.ends_with(".png")
                    && (name.starts_with("corner_") || name.starts_with("sed_")))
            {
                doomed.push(path);
            }
        }
    }
    for path in doomed {
        if path.is_file() {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing old demo output {}", path.display()))?;
        }
    }
    // Folders popcosmos made, only if nothing else is left in them.
    for sub in [CHAINS_DIR, COMMIT_DIR, "plots"] {
        let _ = std::fs::remove_dir(dir.join(sub));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn demo_output_clears_only_popcosmos_files_of_a_previous_output() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("out");
        touch(
            &d.join("run.json"),
            r#"{"popcosmos_version": "0.1.0", "manifest": {}, "complete": true}"#,
        );
        for f in [
            "part-00000.parquet",
            "part-00001.parquet",
            "chains/part-00000.parquet",
            "commits/batch-0000000000.json",
            "metrics.json",
            "plots/photoz.png",
            "plots/corner_42.png",
        ] {
            touch(&d.join(f), "x");
        }
        touch(
            &d.join("commits/batch-0000000000.json"),
            r#"{"batch": 0, "galaxies": 1, "summary_part": "part-00000.parquet", "chain_part": null}"#,
        );
        let user = ["notes.txt", "plots/my_figure.png", "chains/README"];
        for f in user {
            touch(&d.join(f), "mine");
        }
        prepare_output(&d).unwrap();
        for f in user {
            assert_eq!(std::fs::read_to_string(d.join(f)).unwrap(), "mine", "{f}");
        }
        for f in [
            "run.json",
            "part-00000.parquet",
            "part-00001.parquet",
            "chains/part-00000.parquet",
            "commits/batch-0000000000.json",
            "metrics.json",
            "plots/photoz.png",
            "plots/corner_42.png",
        ] {
            assert!(!d.join(f).exists(), "{f} removed");
        }
        assert!(!d.join("commits").exists(), "empty commits/ removed");
    }

    #[test]
    fn demo_output_refuses_a_foreign_folder_or_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("mine");
        touch(&d.join("notes.txt"), "keep");
        touch(&d.join("part-00000.parquet"), "not popcosmos");
        let e = prepare_output(&d).unwrap_err().to_string();
        assert!(e.contains("not a previous popcosmos output"), "{e}");
        assert_eq!(
            std::fs::read_to_string(d.join("notes.txt")).unwrap(),
            "keep"
        );
        assert!(d.join("part-00000.parquet").exists());
        let f = tmp.path().join("file.txt");
        touch(&f, "keep");
        assert!(prepare_output(&f).is_err());
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "keep");
        // New and empty folders are fine.
        prepare_output(&tmp.path().join("new")).unwrap();
        std::fs::create_dir(tmp.path().join("empty")).unwrap();
        prepare_output(&tmp.path().join("empty")).unwrap();
    }
}
