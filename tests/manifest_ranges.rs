//! Every numeric manifest value has a documented range
//! (docs/reliability.md, "Manifest value ranges"), checked by `validate` and by `run`.
//! A value outside its range is an error naming its key; a value of the wrong type (NaN or
//! a fraction for an integer, a negative count) is a YAML error pointing at its line and
//! column; nothing panics.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

/// Values every key is tried with.
const VALUES: [&str; 7] = [".nan", ".inf", "-.inf", "-1", "0", "1e300", "1000000000000"];

/// `(key, template)`: the manifest gets `section: {field: template}` with `V` replaced by the
/// value, where `section.field` begins the key (`field` alone: top level; see [`section_field`]).
const KEYS: &[(&str, &str)] = &[
    ("seed", "V"),
    ("galaxies_per_batch", "V"),
    ("sps.max_rows", "V"),
    ("sps.igm_scatter", "V"),
    ("sampler.walkers", "V"),
    ("sampler.steps", "V"),
    ("sampler.burn_in", "V"),
    ("sampler.thin", "V"),
    ("sampler.temperatures", "V"),
    ("sampler.max_temperature", "V"),
    ("sampler.leapfrog_steps", "V"),
    ("sampler.target_accept", "V"),
    ("sampler.prune_deficit", "V"),
    ("sampler.particles", "V"),
    ("sampler.ess_target", "V"),
    ("sampler.min_sweeps", "V"),
    ("sampler.max_sweeps", "V"),
    ("sampler.max_correlation", "V"),
    ("sampler.max_stages", "V"),
    ("sampler.final_sweeps", "V"),
    ("sampler.islands", "V"),
    ("sampler.importance_draws", "V"),
    ("sampler.importance_components", "V"),
    ("sampler.importance_scale", "V"),
    ("sampler.importance_min_ess", "V"),
    ("sampler.moves[0].a", "[{kind: stretch, a: V}]"),
    ("sampler.moves[0].weight", "[{kind: stretch, weight: V}]"),
    (
        "sampler.moves[0].gamma",
        "[{kind: differential-evolution, gamma: V}]",
    ),
    ("sampler.moves[0].nu", "[{kind: global, nu: V}]"),
    ("sampler.moves[0].scale", "[{kind: global, scale: V}]"),
    (
        "sampler.moves[0].components",
        "[{kind: clustered, components: V}]",
    ),
    ("sampler.moves[0].degree", "[{kind: ridge, degree: V}]"),
    ("init.library_size", "V"),
    ("init.top_k", "V"),
    ("init.jitter", "V"),
    ("init.adam_steps", "V"),
    ("init.adam_learning_rate", "V"),
    ("init.proposal_fraction", "V"),
    ("diagnostics.max_rhat", "V"),
    ("diagnostics.min_ess_bulk", "V"),
    ("diagnostics.min_acceptance", "V"),
    ("diagnostics.max_z_spread", "V"),
    ("likelihood.nu", "V"),
    ("output.chain_thin", "V"),
    ("output.pz_step", "V"),
    ("prior.fast_sampler.steps", "{steps: V}"),
    ("catalogue.upper_limits.snr_below", "{snr_below: V}"),
    ("catalogue.upper_limits.flag_value", "{flag_value: V}"),
    ("catalogue.missing_values", "[V]"),
    ("survey.zero_points[0]", "ZP"),
    ("survey.error_floors[0]", "EF"),
];

/// `(section, field)` of a key: its first two parts (`("", key)` for a top-level key).
fn section_field(key: &str) -> (&str, &str) {
    let mut parts = key.split(['.', '[']);
    let first = parts.next().unwrap_or_default();
    match parts.next() {
        Some(field) => (first, field),
        None => ("", first),
    }
}

/// Documented acceptance (docs/reliability.md): these values of these keys are valid.
const ACCEPTED: &[(&str, &[&str])] = &[
    ("seed", &["0", "1000000000000"]),
    ("sampler.burn_in", &["0"]),
    ("sampler.prune_deficit", &["1e300", "1000000000000"]),
    ("sampler.moves[0].weight", &["1e300", "1000000000000"]),
    ("sampler.moves[0].nu", &["0"]),
    ("sampler.importance_draws", &["0"]),
    (
        "sampler.importance_min_ess",
        &["0", "1e300", "1000000000000"],
    ),
    ("init.adam_steps", &["0"]),
    ("diagnostics.min_ess_bulk", &["0"]),
    ("diagnostics.min_acceptance", &["0"]),
    ("output.chain_thin", &["1000000000000"]),
    ("output.pz_step", &["0"]),
    ("catalogue.upper_limits.snr_below", &["-1", "0"]),
    (
        "catalogue.upper_limits.flag_value",
        &["-1", "0", "1e300", "1000000000000"],
    ),
    ("catalogue.missing_values", &VALUES),
    ("survey.error_floors[0]", &["0"]),
    ("sps.igm_scatter", &["0"]),
];

fn manifest(catalogue: &Path, out: &Path, (key, template): (&str, &str), value: &str) -> String {
    let mut sections: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
    let mut set = |s: &'static str, f: &'static str, v: String| {
        sections.entry(s).or_default().insert(f, v);
    };
    set("survey", "name", "cosmos".into());
    set("catalogue", "path", catalogue.display().to_string());
    set("catalogue", "units", "mjy".into());
    set("catalogue", "flux_pattern", "\"flux_{band}\"".into());
    set("catalogue", "error_pattern", "\"fluxerr_{band}\"".into());
    set("catalogue", "upper_limits", "negative_error".into());
    set("prior", "kind", "prospector-alpha".into());
    set("sampler", "walkers", "32".into());
    set("sampler", "steps", "16".into());
    set("sampler", "burn_in", "8".into());
    set("init", "library_size", "1500".into());
    set("init", "top_k", "4".into());
    set("output", "dir", out.display().to_string());
    set("likelihood", "kind", "student-t".into());
    let (section, field) = section_field(key);
    match section {
        "prior" => set("prior", "kind", "diffusion".into()),
        "sps" => set("sps", "kind", "photulator".into()),
        _ => {}
    }
    let list = |v: &str, fill: &str| {
        std::iter::once(v)
            .chain(std::iter::repeat_n(fill, 25))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = match template {
        "ZP" => format!("[{}]", list(value, "1.0")),
        "EF" => format!("[{}]", list(value, "0.0")),
        t => t.replace('V', value),
    };
    let mut yaml = String::new();
    if section.is_empty() {
        yaml.push_str(&format!("{field}: {text}\n"));
    } else {
        sections.entry(section).or_default().insert(field, text);
    }
    for (s, fields) in &sections {
        let inner: Vec<String> = fields.iter().map(|(f, v)| format!("{f}: {v}")).collect();
        yaml.push_str(&format!("{s}: {{{}}}\n", inner.join(", ")));
    }
    yaml
}

fn check(o: &Output, what: &str) -> String {
    let err = stderr(o);
    assert!(
        !err.contains("panicked") && matches!(o.status.code(), Some(0 | 1)),
        "{what}: must not panic or abort (status {:?}): {err}",
        o.status
    );
    err
}

#[test]
fn every_numeric_key_is_range_checked_by_validate() {
    let dir = tempdir("ranges");
    let cat = repo().join("tests/data/cosmos_tiny.csv");
    let mut failures = Vec::new();
    for &key in KEYS {
        let (name, _) = key;
        let (_, field) = section_field(name);
        for value in VALUES {
            let m = dir.join("m.yaml");
            std::fs::write(&m, manifest(&cat, &dir.join("out"), key, value)).unwrap();
            let what = format!("{name} = {value}");
            let o = run(&["validate", m.to_str().unwrap()]);
            let err = check(&o, &what);
            let accepted = ACCEPTED
                .iter()
                .any(|(k, vs)| *k == name && vs.contains(&value));
            let ok = if accepted && name.starts_with("catalogue.upper_limits") {
                // Accepted, but without `negative_error` the tiny catalogue's negative
                // uncertainties (its upper limits) are then refused by row and column.
                o.status.success() || (err.contains("row ") && !err.contains(name))
            } else if accepted {
                o.status.success()
            } else {
                // A range error names the key; a type error points at the value's line,
                // which the message quotes (so the field name appears in it).
                !o.status.success()
                    && (err.contains(&format!("{name}:"))
                        || (err.contains("line") && err.contains(field) && err.contains(value)))
            };
            if !ok {
                failures.push(format!(
                    "{what}: expected {}, got status {:?}: {}",
                    if accepted {
                        "acceptance"
                    } else {
                        "an error naming the key"
                    },
                    o.status.code(),
                    err.lines().next().unwrap_or("")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn write_manifest(dir: &Path, extra_sampler: &str, extra: &str, out: &Path) -> std::path::PathBuf {
    let cat = repo().join("tests/data/cosmos_tiny.csv");
    let text = tiny_manifest(&cat, out, extra).replace(
        "sampler: {walkers: 32, steps: 16, burn_in: 8}",
        &format!("sampler: {{walkers: 32, steps: 16, burn_in: 8{extra_sampler}}}"),
    );
    let m = dir.join("m.yaml");
    std::fs::write(&m, text).unwrap();
    m
}

/// Item 5: `thin` above `steps − burn_in` used to pass `validate` and panic after sampling.
/// Item 6: `galaxies_per_batch: 1000000000` used to pass `validate` and abort allocating
/// 104 GB; the largest accepted batch over a small catalogue allocates only what is read.
#[test]
fn thin_and_galaxies_per_batch_are_checked_before_sampling() {
    let dir = tempdir("thin-batch");
    let out = dir.join("out");
    let m = write_manifest(&dir, ", thin: 9", "", &out);
    for cmd in ["validate", "run"] {
        let o = run(&[cmd, m.to_str().unwrap(), "--quiet"][..if cmd == "run" { 3 } else { 2 }]);
        let err = check(&o, cmd);
        assert!(!o.status.success(), "{cmd}");
        assert!(
            err.contains("sampler.thin") && err.contains("16 − 8 = 8") && err.contains('9'),
            "{cmd}: {err}"
        );
    }
    assert!(!out.exists(), "run refused before writing");
    let huge = write_manifest(&dir, "", "", &out);
    let text = std::fs::read_to_string(&huge)
        .unwrap()
        .replace("galaxies_per_batch: 2", "galaxies_per_batch: 1000000000");
    std::fs::write(&huge, text).unwrap();
    for cmd in ["validate", "run"] {
        let o = run(&[cmd, huge.to_str().unwrap()]);
        let err = check(&o, cmd);
        assert!(
            !o.status.success() && err.contains("galaxies_per_batch") && err.contains("1000000"),
            "{cmd}: {err}"
        );
    }
    // The boundary values run: thin = steps − burn_in keeps one draw per walker, and the
    // largest batch holds the whole 6-galaxy catalogue.
    let edge = write_manifest(&dir, ", thin: 8", "", &out);
    let text = std::fs::read_to_string(&edge)
        .unwrap()
        .replace("galaxies_per_batch: 2", "galaxies_per_batch: 1000000");
    std::fs::write(&edge, text).unwrap();
    let o = run(&["run", edge.to_str().unwrap(), "--quiet"]);
    let err = check(&o, "edge run");
    assert!(o.status.success(), "{err}");
    let table = popcosmos_catalog::read_results(&out).unwrap();
    assert_eq!(table.ids.len(), 6);
}

/// Item 13: a missing catalogue and an unwritable output folder are named by their keys,
/// and `validate` refuses the unwritable folder.
#[test]
fn missing_catalogue_and_unwritable_output_name_their_keys() {
    let dir = tempdir("paths");
    let cat = repo().join("tests/data/cosmos_tiny.csv");
    let m = dir.join("m.yaml");
    std::fs::write(
        &m,
        tiny_manifest(&dir.join("nope.csv"), &dir.join("out"), ""),
    )
    .unwrap();
    let o = run(&["validate", m.to_str().unwrap()]);
    let err = check(&o, "missing catalogue");
    assert!(
        !o.status.success() && err.contains("catalogue.path") && err.contains("nope.csv"),
        "{err}"
    );
    // Under a regular file no folder can be made (whoever runs the test, root included).
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    for out in [file.join("out"), file.clone()] {
        std::fs::write(&m, tiny_manifest(&cat, &out, "")).unwrap();
        for cmd in ["validate", "run"] {
            let o = run(&[cmd, m.to_str().unwrap()]);
            let err = check(&o, cmd);
            assert!(
                !o.status.success()
                    && err.contains("output.dir")
                    && err.contains(&file.display().to_string()),
                "{cmd} {}: {err}",
                out.display()
            );
        }
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}
