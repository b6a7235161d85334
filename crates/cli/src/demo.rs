//! `popcosmos-cli demo --output DIR`: the output folder is reused only when it is new, empty
//! or a previous popcosmos output, and then only the files popcosmos writes are removed.
//!
//! The demo manifest and its catalogue are built into the binary ([`DemoInput`]), so `demo`
//! and `bench` run from an installed binary with no source checkout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use popcosmos_catalog::list_parts;
use popcosmos_catalog::{CHAINS_DIR, COMMIT_DIR, OutputLock, read_commits};
use popcosmos_inference::Manifest;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Output folder: new, empty, or a previous popcosmos output (only its popcosmos files
    /// are replaced; any other non-empty folder is refused).
    #[arg(long, default_value = "out/cosmos-demo")]
    output: PathBuf,
    /// Run the first N of the 100 demo galaxies (SMC takes a few seconds per galaxy on 2
    /// cores; `--galaxies 100` runs them all).
    #[arg(long, default_value_t = DEFAULT_GALAXIES, value_parser = clap::value_parser!(u64).range(1..=100))]
    galaxies: u64,
}

/// Galaxies the demo runs by default: about a minute on 2 cores with SMC.
pub const DEFAULT_GALAXIES: u64 = 20;

/// `run` + `evaluate` of the built-in demo manifest, inside `args.output`.
pub fn run(args: &DemoArgs) -> Result<()> {
    let output = args.output.as_path();
    // Never delete what popcosmos did not write.
    prepare_output(output)?;
    // The built-in manifest and catalogue, written inside the output folder.
    let input = DemoInput::write(&output.join(INPUT_DIR))?;
    input.keep_first(args.galaxies as usize)?;
    let mut m = input.manifest()?;
    m.output.dir = output.to_path_buf();
    let catalogue = m.catalogue.path.clone();
    eprintln!(
        "popcosmos demo: {} galaxies of {} (COSMOS2020, 2.5 ≤ z_spec < 8.3; --galaxies 100 for all)",
        count_lines(&catalogue)?,
        catalogue.display()
    );
    let out = crate::run::run_manifest(m, &Default::default(), false)?;
    crate::evaluate::evaluate(&crate::evaluate::EvaluateArgs {
        results: out.clone(),
        truth: format!("{}:zspec", catalogue.display()),
        id_column: "id".into(),
        json: Some(out.join("metrics.json")),
        plots: Some(out.join("plots")),
        manifest: None,
        galaxy: None,
    })?;
    beside_eazy(&out, &catalogue)
}

/// EAZY's photo-z of the demo galaxies (Brammer et al. 2008; run on the same COSMOS2020
/// photometry, see NOTICE), bundled so the demo can put a template code beside its numbers.
pub const EAZY_CSV: &str = include_str!("../../../examples/data/cosmos2020_demo_eazy.csv");

/// Our and EAZY's metrics on the demo galaxies that EAZY has a redshift for.
fn beside_eazy(out: &Path, catalogue: &Path) -> Result<()> {
    let results = popcosmos_catalog::read_results(out)?;
    let ours = results.column("z_p50").context("results have no z_p50")?;
    let mut zspec = std::collections::HashMap::new();
    let mut reader = csv::Reader::from_path(catalogue).context("demo catalogue")?;
    let headers = reader.headers()?.clone();
    let (i_id, i_z) = (
        headers
            .iter()
            .position(|h| h == "id")
            .context("id column")?,
        headers
            .iter()
            .position(|h| h == "zspec")
            .context("zspec column")?,
    );
    for row in reader.records() {
        let row = row?;
        zspec.insert(
            row[i_id].to_string(),
            row[i_z].parse::<f64>().unwrap_or(f64::NAN),
        );
    }
    let eazy: std::collections::HashMap<&str, f64> = EAZY_CSV
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .filter_map(|(id, z)| Some((id, z.parse().ok()?)))
        .collect();
    let (mut zs, mut zo, mut ze) = (vec![], vec![], vec![]);
    for (g, id) in results.ids.iter().enumerate() {
        if let (Some(e), Some(s)) = (eazy.get(id.as_str()), zspec.get(id)) {
            zs.push(*s);
            zo.push(ours[g]);
            ze.push(*e);
        }
    }
    let (o, e) = (
        popcosmos_catalog::photoz_metrics(&zo, &zs),
        popcosmos_catalog::photoz_metrics(&ze, &zs),
    );
    println!(
        "\nBeside a template code on the same {} galaxies (EAZY: Brammer et al. 2008):\n\
         | code | bias | σ_NMAD | outliers |\n|---|---|---|---|\n\
         | popcosmos (this run) | {:+.4} | {:.4} | {:.1}% |\n\
         | EAZY | {:+.4} | {:.4} | {:.1}% |",
        zs.len(),
        o.bias,
        o.sigma_nmad,
        100.0 * o.outlier_fraction,
        e.bias,
        e.sigma_nmad,
        100.0 * e.outlier_fraction
    );
    Ok(())
}

fn count_lines(path: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(text.lines().count().saturating_sub(1))
}

/// The demo manifest (`examples/cosmos-demo.yaml`), built into the binary.
pub const MANIFEST_YAML: &str = include_str!("../../../examples/cosmos-demo.yaml");
/// The demo catalogue (`examples/data/cosmos2020_demo.csv`): 100 COSMOS2020 galaxies.
pub const CATALOGUE_CSV: &[u8] = include_bytes!("../../../examples/data/cosmos2020_demo.csv");
/// The demo's calibration file (`survey.calibration_file` of the manifest).
pub const CALIBRATION_YAML: &str =
    include_str!("../../../examples/calibrations/cosmos2020_zgt2p5_specz.calibration.yaml");
/// File name of the written manifest inside a [`DemoInput`] folder.
const MANIFEST_FILE: &str = "cosmos-demo.yaml";
/// The catalogue's path relative to the manifest: the manifest's `catalogue.path`.
const CATALOGUE_FILE: &str = "data/cosmos2020_demo.csv";
/// The calibration file's path relative to the manifest: its `survey.calibration_file`.
const CALIBRATION_FILE: &str = "calibrations/cosmos2020_zgt2p5_specz.calibration.yaml";
/// The folder inside the demo output that holds the written manifest, catalogue and
/// calibration file.
pub const INPUT_DIR: &str = "demo-input";

/// The built-in demo manifest, catalogue and calibration file written to a folder, so that
/// the manifest's relative paths resolve. A temporary folder is removed when this is dropped.
pub struct DemoInput {
    dir: PathBuf,
    _temporary: Option<tempfile::TempDir>,
}

impl DemoInput {
    /// Write the manifest, the catalogue and the calibration file into `dir` (created if
    /// missing; the three files are overwritten, nothing else is touched).
    pub fn write(dir: &Path) -> Result<Self> {
        write_files(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _temporary: None,
        })
    }

    /// Write them into a new temporary folder, removed when this is dropped.
    pub fn temporary() -> Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix("popcosmos-demo-")
            .tempdir()
            .context("creating a temporary folder for the demo data")?;
        write_files(tmp.path())?;
        Ok(Self {
            dir: tmp.path().to_path_buf(),
            _temporary: Some(tmp),
        })
    }

    /// The written manifest, loaded (its relative paths resolved against the folder).
    pub fn manifest(&self) -> Result<Manifest> {
        Ok(Manifest::load(&self.dir.join(MANIFEST_FILE))?)
    }

    /// The written catalogue.
    pub fn catalogue(&self) -> PathBuf {
        self.dir.join(CATALOGUE_FILE)
    }

    /// Keep only the first `n` galaxies of the written catalogue (its header and `n` rows).
    pub fn keep_first(&self, n: usize) -> Result<()> {
        let path = self.catalogue();
        let text = String::from_utf8_lossy(CATALOGUE_CSV);
        let kept: Vec<&str> = text.lines().take(n + 1).collect();
        std::fs::write(&path, kept.join("\n") + "\n")
            .with_context(|| format!("writing the demo data to {}", path.display()))
    }
}

fn write_files(dir: &Path) -> Result<()> {
    for (name, bytes) in [
        (MANIFEST_FILE, MANIFEST_YAML.as_bytes()),
        (CATALOGUE_FILE, CATALOGUE_CSV),
        (CALIBRATION_FILE, CALIBRATION_YAML.as_bytes()),
    ] {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
        }
        std::fs::write(&path, bytes)
            .with_context(|| format!("writing the demo data to {}", path.display()))?;
    }
    Ok(())
}

/// Whether `path` is a [`DemoInput`] folder a demo wrote (holding only its three files), so a
/// demo that stopped before writing `run.json` can be run again in the same output folder.
fn is_demo_input(path: &Path) -> bool {
    let only = |dir: &Path, allowed: &[&str]| {
        std::fs::read_dir(dir).is_ok_and(|mut entries| {
            entries.all(|e| {
                e.is_ok_and(|e| e.file_name().to_str().is_some_and(|n| allowed.contains(&n)))
            })
        })
    };
    let folder_holds = |name: &str, file: &str| {
        let sub = path.join(name);
        !sub.exists() || only(&sub, &[file])
    };
    path.file_name().is_some_and(|n| n == INPUT_DIR)
        && only(path, &[MANIFEST_FILE, "data", "calibrations"])
        && folder_holds("data", "cosmos2020_demo.csv")
        && folder_holds("calibrations", "cosmos2020_zgt2p5_specz.calibration.yaml")
}

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
    let mut entries = std::fs::read_dir(dir).with_context(|| dir.display().to_string())?;
    // Empty, or holding only the demo's own input folder.
    let empty = entries.all(|e| e.is_ok_and(|e| is_demo_input(&e.path())));
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

    #[test]
    fn bundled_eazy_redshifts_are_demo_galaxies_with_finite_values() {
        let demo = std::str::from_utf8(CATALOGUE_CSV).unwrap();
        let ids: std::collections::HashSet<&str> = demo
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        let rows: Vec<(&str, f64)> = EAZY_CSV
            .lines()
            .skip(1)
            .map(|l| {
                let (id, z) = l.split_once(',').unwrap();
                (id, z.parse().unwrap())
            })
            .collect();
        assert_eq!(rows.len(), 97);
        for (id, z) in rows {
            assert!(ids.contains(id), "{id} is not a demo galaxy");
            assert!(z.is_finite() && (0.0..10.0).contains(&z), "{id}: {z}");
        }
    }

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
        let ours = [
            "part-00000.parquet",
            "part-00001.parquet",
            "chains/part-00000.parquet",
            "commits/batch-0000000000.json",
            "metrics.json",
            "plots/photoz.png",
            "plots/corner_42.png",
        ];
        for f in ours {
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
        for f in ours.into_iter().chain(["run.json"]) {
            assert!(!d.join(f).exists(), "{f} removed");
        }
        assert!(!d.join("commits").exists(), "empty commits/ removed");
    }

    #[test]
    fn built_in_manifest_names_the_built_in_catalogue() {
        let m = Manifest::from_yaml(MANIFEST_YAML, "cosmos-demo.yaml").unwrap();
        assert_eq!(m.catalogue.path, Path::new(CATALOGUE_FILE));
        let text = std::str::from_utf8(CATALOGUE_CSV).unwrap();
        assert_eq!(text.lines().count(), 101, "a header and 100 galaxies");
        let input = DemoInput::temporary().unwrap();
        let loaded = input.manifest().unwrap();
        assert_eq!(loaded.catalogue.path, input.catalogue());
        // The calibration file resolves next to the written manifest, with the shipped text.
        let cal = loaded
            .survey
            .calibration_file
            .as_ref()
            .expect("a calibration file");
        assert_eq!(std::fs::read_to_string(cal).unwrap(), CALIBRATION_YAML);
        assert_eq!(std::fs::read(input.catalogue()).unwrap(), CATALOGUE_CSV);
        // A subset is the header and the first rows, byte for byte.
        input.keep_first(3).unwrap();
        let head: Vec<&str> = text.lines().take(4).collect();
        assert_eq!(
            std::fs::read_to_string(input.catalogue()).unwrap(),
            head.join("\n") + "\n"
        );
        let dir = input.dir.clone();
        drop(input);
        assert!(!dir.exists(), "the temporary folder is removed");
    }

    #[test]
    fn demo_output_holding_only_the_demo_input_is_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("out");
        DemoInput::write(&d.join(INPUT_DIR)).unwrap();
        prepare_output(&d).unwrap();
        touch(&d.join(INPUT_DIR).join("notes.txt"), "mine");
        assert!(
            prepare_output(&d).is_err(),
            "a foreign file in it makes it foreign"
        );
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
