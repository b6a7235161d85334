//! Results writer: parts, crash safety, resume, read-back and merge.

use std::collections::{BTreeMap, HashSet};
use std::fs;

use popcosmos_catalog::*;

fn table(ids: &[&str], z: &[f64], flags: &[&str]) -> ResultTable {
    ResultTable {
        ids: ids.iter().map(|s| s.to_string()).collect(),
        columns: BTreeMap::from([
            ("z_med".to_string(), z.to_vec()),
            ("log_mass".to_string(), z.iter().map(|v| v + 10.0).collect()),
        ]),
        ints: BTreeMap::new(),
        strings: BTreeMap::from([(
            "flags".to_string(),
            flags.iter().map(|s| s.to_string()).collect(),
        )]),
    }
}

fn schema() -> ResultSchema {
    ResultSchema::new(vec!["z_med".into(), "log_mass".into()])
}

fn roundtrip(format: TableFormat) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let mut w = ResultsWriter::create(&out, schema(), format, false).unwrap();
    let p0 = w
        .write_chunk(&table(&["a", "b"], &[0.5, 1.0], &["", "low_ess"]))
        .unwrap()
        .unwrap();
    assert!(p0.ends_with(format!("part-00000.{}", format.extension())));
    assert!(w.write_chunk(&ResultTable::default()).unwrap().is_none());
    w.write_chunk(&table(&["c"], &[f64::NAN], &["a,b \"quoted\""]))
        .unwrap();
    assert_eq!(w.next_part(), 2);

    // A crash while writing part 2 leaves only a temp file: readers ignore it.
    let tmp = out.join(format!(".part-00002.{}.tmp", format.extension()));
    fs::write(&tmp, b"garbage").unwrap();
    let t = read_results(&out).unwrap();
    assert_eq!(t.ids, vec!["a", "b", "c"]);
    assert_eq!(t.column("z_med").unwrap()[..2], [0.5, 1.0]);
    assert!(t.column("z_med").unwrap()[2].is_nan());
    assert_eq!(t.columns["log_mass"][1], 11.0);
    assert_eq!(t.strings["flags"], vec!["", "low_ess", "a,b \"quoted\""]);
    assert_eq!(
        ResultsWriter::completed_ids(&out).unwrap(),
        HashSet::from(["a".into(), "b".into(), "c".into()])
    );
    assert_eq!(ResultsWriter::next_part_index(&out).unwrap(), 2);

    // Without resume an existing run is refused; with resume it continues and the temp file goes.
    let err = ResultsWriter::create(&out, schema(), format, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds 2 result part(s)"), "{err}");
    let mut w = ResultsWriter::create(&out, schema(), format, true).unwrap();
    assert!(!tmp.exists());
    assert_eq!(w.next_part(), 2);
    w.write_chunk(&table(&["d"], &[2.0], &[""])).unwrap();
    assert_eq!(list_parts(&out).unwrap().len(), 3);

    let merged = dir.path().join("all.parquet");
    assert_eq!(merge_parts(&out, &merged).unwrap(), 4);
    let m = read_results(&merged).unwrap();
    assert_eq!(m.ids, vec!["a", "b", "c", "d"]);
    assert_eq!(m.columns["z_med"][3], 2.0);
    assert_eq!(m.strings["flags"][1], "low_ess");
}

#[test]
fn parquet_parts() {
    roundtrip(TableFormat::Parquet);
}

#[test]
fn csv_parts() {
    roundtrip(TableFormat::Csv);
}

#[test]
fn chains_long_format() {
    let dir = tempfile::tempdir().unwrap();
    let schema = ResultSchema::chains();
    assert_eq!(schema.columns.len(), 17);
    for format in [TableFormat::Parquet, TableFormat::Csv] {
        let out = dir.path().join(format.extension()).join("chains");
        let mut w = ResultsWriter::create(&out, schema.clone(), format, false).unwrap();
        let n = 6;
        let mut t = ResultTable {
            ids: (0..n).map(|i| format!("g{}", i / 3)).collect(),
            ints: BTreeMap::from([
                (
                    "step".to_string(),
                    (0..n as i64).map(|i| i % 3 * 10).collect(),
                ),
                ("walker".to_string(), vec![0; n]),
            ]),
            ..Default::default()
        };
        for c in &schema.columns {
            t.columns.insert(c.clone(), vec![1.0; n]);
        }
        w.write_chunk(&t).unwrap();
        let back = read_results(&out).unwrap();
        assert_eq!(back.ints["step"], vec![0, 10, 20, 0, 10, 20]);
        assert_eq!(back.columns["log_prob"], vec![1.0; n]);
        assert_eq!(back, t);
    }
}

#[test]
fn chunk_must_match_schema() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ResultsWriter::create(dir.path(), schema(), TableFormat::Parquet, false).unwrap();
    let mut t = table(&["a"], &[0.5], &[""]);
    t.columns.remove("log_mass");
    let err = w.write_chunk(&t).unwrap_err().to_string();
    assert!(err.contains("column 'log_mass' is missing"), "{err}");
    let mut t = table(&["a"], &[0.5], &[""]);
    t.columns.insert("extra".into(), vec![1.0]);
    assert!(
        w.write_chunk(&t)
            .unwrap_err()
            .to_string()
            .contains("'extra' is not in the results schema")
    );
    assert!(list_parts(dir.path()).unwrap().is_empty());
}

#[test]
fn metrics_on_results() {
    let truth_ids = ["b", "a", "zz"];
    let z_spec = [1.0, 0.0, 5.0];
    let t = table(&["a", "b", "c"], &[0.1, 1.0, 3.0], &["", "", ""]);
    let pairs = match_by_id(&t.ids, &truth_ids);
    assert_eq!(pairs, vec![(0, 1), (1, 0)]);
    let zp: Vec<f64> = pairs.iter().map(|&(i, _)| t.columns["z_med"][i]).collect();
    let zs: Vec<f64> = pairs.iter().map(|&(_, j)| z_spec[j]).collect();
    let m = photoz_metrics(&zp, &zs);
    // Δz = 0.1, 0.0 → median 0.05, |dev| = 0.05, 0.05
    assert_eq!(m.n, 2);
    assert!((m.bias - 0.05).abs() < 1e-15);
    assert!((m.sigma_nmad - 1.4826 * 0.05).abs() < 1e-15);
    assert_eq!(m.outlier_fraction, 0.0);
}

#[test]
fn resume_refuses_parts_written_with_other_columns() {
    for format in [TableFormat::Parquet, TableFormat::Csv] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("results");
        let mut w = ResultsWriter::create(&out, schema(), format, false).unwrap();
        let part = w
            .write_chunk(&table(&["a"], &[0.5], &[""]))
            .unwrap()
            .unwrap();
        let before = fs::read(&part).unwrap();
        // A newer version writes one more column: resuming would mix the two layouts.
        let wider = ResultSchema::new(vec!["z_med".into(), "log_mass".into(), "z_odds".into()]);
        let err = ResultsWriter::create(&out, wider, format, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("other columns") && err.contains("missing [\"z_odds\"]"),
            "{err}"
        );
        assert!(err.contains("part-00000"), "names the part: {err}");
        let narrower = ResultSchema::new(vec!["z_med".into()]);
        let err = ResultsWriter::create(&out, narrower, format, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("extra [\"log_mass\"]"), "{err}");
        // Nothing was touched, and the same columns still resume.
        assert_eq!(fs::read(&part).unwrap(), before);
        let w = ResultsWriter::create(&out, schema(), format, true).unwrap();
        assert_eq!(w.next_part(), 1);
    }
}
