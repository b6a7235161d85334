//! End-to-end tests of the catalogue readers on small files written here.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use popcosmos_catalog::*;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn spec(path: &Path, units: FluxUnit, upper_limits: UpperLimitConvention) -> CatalogueSpec {
    CatalogueSpec {
        path: path.to_path_buf(),
        format: None,
        id_column: "id".into(),
        units,
        bands: None,
        flux_pattern: Some("flux_{band}".into()),
        error_pattern: Some("fluxerr_{band}".into()),
        upper_limits,
        missing_values: default_missing_values(),
        truth_columns: vec![],
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

fn open_err(spec: &CatalogueSpec, bands: &[&str]) -> String {
    match CatalogueReader::open(spec, &names(bands)).and_then(|mut r| r.read_all()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1e-30)
}

#[test]
fn csv_units_missing_and_truth() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "cat.csv",
        "# a comment line\nid,zspec,flux_g,fluxerr_g,flux_r,fluxerr_r\n\
         a,0.5,3.631,0.3631,,\n\
         b,-99,-99,-99,7.262,0.7262\n\
         c,NaN,-1.0,0.5,nan,0.1\n",
    );
    let mut s = spec(&path, FluxUnit::Ujy, UpperLimitConvention::None);
    s.truth_columns = vec!["zspec".into()];
    let mut r = CatalogueReader::open(&s, &names(&["g", "r"])).unwrap();
    let c = r.read_all().unwrap();
    assert_eq!(c.ids, names(&["a", "b", "c"]));
    assert_eq!(c.n_bands, 2);
    assert_eq!(c.mask, vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    let expect_flux = [1.0, 0.0, 0.0, 2.0, -1.0 / 3.631, 0.0];
    let expect_err = [0.1, 1.0, 1.0, 0.2, 0.5 / 3.631, 1.0];
    for i in 0..6 {
        assert!(
            close(c.flux_nmgy[i] as f64, expect_flux[i])
                || expect_flux[i] == 0.0 && c.flux_nmgy[i] == 0.0
        );
        assert!(close(c.flux_err_nmgy[i] as f64, expect_err[i]), "{i}");
    }
    let z = &c.truth["zspec"];
    assert_eq!(z[0], 0.5);
    assert!(z[1].is_nan() && z[2].is_nan());
}

#[test]
fn unit_conversions() {
    let k = |u: FluxUnit| u.to_nmgy(1.0, 1.0).0;
    assert_eq!(k(FluxUnit::Nanomaggies), 1.0);
    assert!(close(k(FluxUnit::Maggies), 1e9));
    assert!(close(k(FluxUnit::Ujy), 1.0 / 3.631));
    assert!(close(k(FluxUnit::Mjy), 1000.0 / 3.631));
    assert!(close(k(FluxUnit::Jy), 1.0 / 3.631e-6));
    assert!(close(k(FluxUnit::ErgSCm2Hz), 1e23 / 3.631e-6));
    let (f, e) = FluxUnit::AbMag.to_nmgy(20.0, 0.1);
    assert!(close(f, 10.0));
    assert!(close(e, 10.0 * 0.4 * std::f64::consts::LN_10 * 0.1));
}

#[test]
fn ab_magnitudes_with_sentinels() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "mags.csv",
        "id,u,eu,b,eb\n1,22.5,0.1,99.0,99.0\n2,-99.9,-99.9,25.0,0.2\n3,99.99,0.5,17.5,0.01\n",
    );
    let mut s = spec(&path, FluxUnit::AbMag, UpperLimitConvention::None);
    s.flux_pattern = None;
    s.error_pattern = None;
    s.bands = Some(vec![
        BandColumns {
            band: "u".into(),
            flux: "u".into(),
            error: "eu".into(),
        },
        BandColumns {
            band: "b".into(),
            flux: "b".into(),
            error: "eb".into(),
        },
    ]);
    let c = CatalogueReader::open(&s, &names(&["u", "b"]))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(c.mask, vec![1.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
    assert!(close(c.flux_nmgy[0] as f64, 1.0));
    assert!(close(
        c.flux_err_nmgy[0] as f64,
        0.4 * std::f64::consts::LN_10 * 0.1
    ));
    assert!(close(c.flux_nmgy[3] as f64, 0.1));
    assert!(close(c.flux_nmgy[5] as f64, 100.0));
}

#[test]
fn yaml_manifest_section() {
    let yaml = "path: cat.fits\nunits: nanomaggies\nid_column: ID\n\
                flux_pattern: 'FLUX_{band}'\nerror_pattern: 'ERR_{band}'\n\
                upper_limits:\n  snr_below: 2.0\nmissing_values: [-99]\n";
    let s: CatalogueSpec = serde_saphyr::from_str(yaml).unwrap();
    assert_eq!(s.upper_limits, UpperLimitConvention::SnrBelow(2.0));
    assert_eq!(s.resolved_format().unwrap(), CatalogueFormat::Fits);
    let cols = s.band_columns(&names(&["g"])).unwrap();
    assert_eq!(cols[0].flux, "FLUX_g");
    let s: CatalogueSpec =
        serde_saphyr::from_str("path: c.csv\nunits: ab_mag\nupper_limits: negative_error\nbands:\n  - {band: u, flux: mu, error: emu}\n")
            .unwrap();
    assert_eq!(s.upper_limits, UpperLimitConvention::NegativeError);
    assert_eq!(s.missing_values, default_missing_values());
    assert!(
        s.band_columns(&names(&["u", "g"]))
            .unwrap_err()
            .to_string()
            .contains("'g'")
    );
    let bad = serde_saphyr::from_str::<CatalogueSpec>("path: c.csv\nunits: mjy\nbogus: 1\n");
    assert!(bad.is_err());
}

/// The real COSMOS2020 layout: mJy, negative error = upper limit, empty = missing.
fn cosmos_bands() -> Vec<String> {
    names(&[
        "u_megaprime_sagem",
        "hsc_g",
        "hsc_r",
        "hsc_i",
        "hsc_z",
        "hsc_y",
        "uvista_y_cosmos",
        "uvista_j_cosmos",
        "uvista_h_cosmos",
        "uvista_ks_cosmos",
        "ia427_cosmos",
        "ia464_cosmos",
        "ia484_cosmos",
        "ia505_cosmos",
        "ia527_cosmos",
        "ia574_cosmos",
        "ia624_cosmos",
        "ia679_cosmos",
        "ia709_cosmos",
        "ia738_cosmos",
        "ia767_cosmos",
        "ia827_cosmos",
        "NB711.SuprimeCam",
        "NB816.SuprimeCam",
        "irac1_cosmos",
        "irac2_cosmos",
    ])
}

const COSMOS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/cosmos2020_specz_zgt2p5_head20.csv"
);

#[test]
fn cosmos2020_real_layout() {
    let mut s = spec(
        Path::new(COSMOS),
        FluxUnit::Mjy,
        UpperLimitConvention::NegativeError,
    );
    s.truth_columns = vec!["zspec".into()];
    let bands = cosmos_bands();
    let c = CatalogueReader::open(&s, &bands)
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(c.len(), 20);
    assert_eq!(c.ids[0], "4759");
    assert_eq!(c.truth["zspec"][0], 2.87685);
    // row 1, hsc_g: 0.0009101806 mJy ± 1.207493e-05
    assert!(close(c.flux_nmgy[1] as f64, 0.0009101806 * 1000.0 / 3.631));
    assert!(close(
        c.flux_err_nmgy[1] as f64,
        1.207493e-05 * 1000.0 / 3.631
    ));
    let nb816 = bands.iter().position(|b| b == "NB816.SuprimeCam").unwrap();
    // row 2: NB816 has a negative error → upper limit → masked
    assert_eq!(c.mask[26 + nb816], 0.0);
    assert_eq!(c.flux_nmgy[26 + nb816], 0.0);
    assert_eq!(c.flux_err_nmgy[26 + nb816], 1.0);
    // masked entries are exactly the empty or negative-error cells
    let text = fs::read_to_string(COSMOS).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for (row, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        for (b, band) in bands.iter().enumerate() {
            let fi = header
                .iter()
                .position(|h| *h == format!("flux_{band}"))
                .unwrap();
            let ei = header
                .iter()
                .position(|h| *h == format!("fluxerr_{band}"))
                .unwrap();
            let used = !cells[fi].is_empty() && cells[ei].parse::<f64>().unwrap() > 0.0;
            assert_eq!(
                c.mask[row * 26 + b],
                if used { 1.0 } else { 0.0 },
                "row {row} band {band}"
            );
        }
    }
    // Without the CIGALE convention the negative error is an error naming row and column.
    let s2 = spec(Path::new(COSMOS), FluxUnit::Mjy, UpperLimitConvention::None);
    let bands_ref: Vec<&str> = bands.iter().map(String::as_str).collect();
    let msg = open_err(&s2, &bands_ref);
    assert!(msg.contains("cosmos2020_specz_zgt2p5_head20.csv: row 2, column 'fluxerr_NB816.SuprimeCam': negative uncertainty"), "{msg}");
    // Truth helpers.
    let z = read_column_f64(COSMOS, "zspec").unwrap();
    let ids = read_ids(COSMOS, "id").unwrap();
    assert_eq!((z.len(), ids.len()), (20, 20));
    assert_eq!(ids[19], "193753");
    assert_eq!(z[19], 2.90846);
}

#[test]
fn csv_chunks_cover_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,flux_g,fluxerr_g\n");
    for i in 0..103 {
        text += &format!("gal{i},{}.5,0.25\n", i);
    }
    let path = write(dir.path(), "many.csv", &text);
    let s = spec(&path, FluxUnit::Nanomaggies, UpperLimitConvention::None);
    let mut r = CatalogueReader::open(&s, &names(&["g"])).unwrap();
    let mut seen = Vec::new();
    let mut n_chunks = 0;
    while let Some(c) = r.next_chunk(10).unwrap() {
        assert!(c.len() <= 10 && !c.is_empty());
        assert_eq!(c.row_offset, seen.len());
        assert_eq!(c.flux_nmgy.len(), c.len());
        assert_eq!(c.flux_nmgy[0], (c.row_offset as f32) + 0.5);
        seen.extend(c.ids);
        n_chunks += 1;
    }
    assert_eq!(n_chunks, 11);
    assert_eq!(
        seen,
        (0..103).map(|i| format!("gal{i}")).collect::<Vec<_>>()
    );
    assert!(r.next_chunk(10).unwrap().is_none());
    assert_eq!(r.rows_read(), 103);
}

fn write_parquet(path: &Path, n: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("objid", DataType::Int64, false),
        Field::new("flux_g", DataType::Float32, true),
        Field::new("fluxerr_g", DataType::Float64, true),
        Field::new("z", DataType::Utf8, true),
    ]));
    let ids: Vec<i64> = (0..n as i64).map(|i| 1000 + i).collect();
    let flux: Vec<Option<f32>> = (0..n)
        .map(|i| if i % 7 == 3 { None } else { Some(i as f32) })
        .collect();
    let err: Vec<Option<f64>> = (0..n)
        .map(|i| if i % 7 == 3 { None } else { Some(0.5) })
        .collect();
    let z: Vec<Option<String>> = (0..n)
        .map(|i| {
            if i == 0 {
                None
            } else {
                Some(format!("{}", i as f64 / 10.0))
            }
        })
        .collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(Float32Array::from(flux)),
        Arc::new(Float64Array::from(err)),
        Arc::new(StringArray::from(z)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let mut w = ArrowWriter::try_new(fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn parquet_streaming_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cat.parquet");
    write_parquet(&path, 5000);
    let mut s = spec(&path, FluxUnit::Nanomaggies, UpperLimitConvention::None);
    s.id_column = "objid".into();
    s.truth_columns = vec!["z".into()];
    let mut r = CatalogueReader::open(&s, &names(&["g"])).unwrap();
    let mut total = 0;
    while let Some(c) = r.next_chunk(777).unwrap() {
        assert!(c.len() <= 777);
        for (k, id) in c.ids.iter().enumerate() {
            let i = c.row_offset + k;
            assert_eq!(id, &(1000 + i).to_string());
            let masked = i % 7 == 3;
            assert_eq!(c.mask[k], if masked { 0.0 } else { 1.0 });
            if !masked {
                assert_eq!(c.flux_nmgy[k], i as f32);
            }
            if i > 0 {
                assert!(close(c.truth["z"][k], i as f64 / 10.0));
            }
        }
        total += c.len();
    }
    assert_eq!(total, 5000);
    assert_eq!(read_ids(&path, "objid").unwrap().len(), 5000);
    assert!(read_column_f64(&path, "z").unwrap()[0].is_nan());
    let msg = open_err(
        &CatalogueSpec {
            id_column: "id".into(),
            ..s
        },
        &["g"],
    );
    assert!(
        msg.contains("cat.parquet: no column 'id'") && msg.contains("'objid'"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- FITS

enum FitsCol {
    Str(usize, Vec<&'static str>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

fn card(key: &str, value: &str) -> String {
    format!("{:<8}= {:>20}", key, value)
}

fn pad_block(buf: &mut Vec<u8>, fill: u8) {
    while !buf.len().is_multiple_of(2880) {
        buf.push(fill);
    }
}

fn header(cards: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cards.iter().map(String::as_str).chain(["END"]) {
        out.extend(format!("{c:<80}").as_bytes());
    }
    pad_block(&mut out, b' ');
    out
}

/// A tiny BINTABLE writer: primary HDU with no data, then one table.
fn write_fits(path: &Path, cols: &[(&str, FitsCol)], extra_cards: &[String]) {
    let n_rows = match &cols[0].1 {
        FitsCol::Str(_, v) => v.len(),
        FitsCol::I16(v) => v.len(),
        FitsCol::I32(v) => v.len(),
        FitsCol::I64(v) => v.len(),
        FitsCol::F32(v) => v.len(),
        FitsCol::F64(v) => v.len(),
    };
    let width = |c: &FitsCol| match c {
        FitsCol::Str(w, _) => *w,
        FitsCol::I16(_) => 2,
        FitsCol::I32(_) | FitsCol::F32(_) => 4,
        FitsCol::I64(_) | FitsCol::F64(_) => 8,
    };
    let row_bytes: usize = cols.iter().map(|(_, c)| width(c)).sum();
    let mut out = header(&[
        card("SIMPLE", "T"),
        card("BITPIX", "8"),
        card("NAXIS", "0"),
        card("EXTEND", "T"),
    ]);
    let mut cards = vec![
        card("XTENSION", "'BINTABLE'"),
        card("BITPIX", "8"),
        card("NAXIS", "2"),
        card("NAXIS1", &row_bytes.to_string()),
        card("NAXIS2", &n_rows.to_string()),
        card("PCOUNT", "0"),
        card("GCOUNT", "1"),
        card("TFIELDS", &cols.len().to_string()),
    ];
    for (i, (name, c)) in cols.iter().enumerate() {
        let form = match c {
            FitsCol::Str(w, _) => format!("{w}A"),
            FitsCol::I16(_) => "I".into(),
            FitsCol::I32(_) => "J".into(),
            FitsCol::I64(_) => "K".into(),
            FitsCol::F32(_) => "E".into(),
            FitsCol::F64(_) => "D".into(),
        };
        cards.push(format!("TTYPE{:<3}= '{name}'", i + 1));
        cards.push(format!("TFORM{:<3}= '{form}'", i + 1));
    }
    cards.extend(extra_cards.iter().cloned());
    out.extend(header(&cards));
    for r in 0..n_rows {
        for (_, c) in cols {
            match c {
                FitsCol::Str(w, v) => out.extend(format!("{:<w$}", v[r], w = *w).as_bytes()),
                FitsCol::I16(v) => out.extend(v[r].to_be_bytes()),
                FitsCol::I32(v) => out.extend(v[r].to_be_bytes()),
                FitsCol::I64(v) => out.extend(v[r].to_be_bytes()),
                FitsCol::F32(v) => out.extend(v[r].to_be_bytes()),
                FitsCol::F64(v) => out.extend(v[r].to_be_bytes()),
            }
        }
    }
    pad_block(&mut out, 0);
    fs::write(path, out).unwrap();
}

#[test]
fn fits_bintable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cat.fits");
    write_fits(
        &path,
        &[
            ("NAME", FitsCol::Str(8, vec!["gal-a", "gal-b", "gal-c"])),
            ("OBJID", FitsCol::I64(vec![7, 8, 9])),
            ("flux_g", FitsCol::F32(vec![1.5, f32::NAN, -2.0])),
            ("fluxerr_g", FitsCol::F64(vec![0.5, 0.5, 0.25])),
            ("flux_r", FitsCol::I32(vec![10, 20, -99])),
            ("fluxerr_r", FitsCol::I16(vec![2, 4, 1])),
            ("zspec", FitsCol::F64(vec![0.1, 0.2, 0.3])),
        ],
        &[card("TSCAL6", "0.5")],
    );
    let mut s = spec(&path, FluxUnit::Nanomaggies, UpperLimitConvention::None);
    s.id_column = "NAME".into();
    let c = CatalogueReader::open(&s, &names(&["g", "r"]))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(c.ids, names(&["gal-a", "gal-b", "gal-c"]));
    assert_eq!(c.mask, vec![1.0, 1.0, 0.0, 1.0, 1.0, 0.0]);
    assert_eq!(c.flux_nmgy, vec![1.5, 10.0, 0.0, 20.0, -2.0, 0.0]);
    assert_eq!(c.flux_err_nmgy, vec![0.5, 1.0, 1.0, 2.0, 0.25, 1.0]);
    assert_eq!(read_ids(&path, "OBJID").unwrap(), names(&["7", "8", "9"]));
    assert_eq!(
        read_column_f64(&path, "zspec").unwrap(),
        vec![0.1, 0.2, 0.3]
    );
    let msg = read_column_f64(&path, "ZSPEC").unwrap_err().to_string();
    assert!(
        msg.contains("cat.fits: no column 'ZSPEC'") && msg.contains("'zspec'"),
        "{msg}"
    );
    // chunked
    let mut r = CatalogueReader::open(&s, &names(&["g", "r"])).unwrap();
    assert_eq!(r.next_chunk(2).unwrap().unwrap().len(), 2);
    let last = r.next_chunk(2).unwrap().unwrap();
    assert_eq!((last.row_offset, last.len()), (2, 1));
    assert!(r.next_chunk(2).unwrap().is_none());
}

// ---------------------------------------------------------------- bad input

fn bad_csv(body: &str) -> (tempfile::TempDir, CatalogueSpec) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "cat.csv", body);
    let s = spec(&path, FluxUnit::Nanomaggies, UpperLimitConvention::None);
    (dir, s)
}

const HEAD: &str = "id,flux_hsc_g,fluxerr_hsc_g\n";

#[test]
fn error_missing_column() {
    let (_d, s) = bad_csv(&format!("{HEAD}1,1.0,0.1\n"));
    let msg = open_err(&s, &["hsc_r"]);
    assert!(
        msg.contains(
            "cat.csv: no column 'flux_hsc_r' (available: 'id', 'flux_hsc_g', 'fluxerr_hsc_g')"
        ),
        "{msg}"
    );
}

#[test]
fn error_nan_uncertainty() {
    let (_d, s) = bad_csv(&format!("{HEAD}1,1.0,0.1\n2,1.0,NaN\n"));
    let msg = open_err(&s, &["hsc_g"]);
    assert!(
        msg.contains("cat.csv: row 2, column 'fluxerr_hsc_g': missing (NaN) uncertainty"),
        "{msg}"
    );
    let (_d, s) = bad_csv(&format!("{HEAD}1,1.0,\n"));
    assert!(open_err(&s, &["hsc_g"]).contains("row 1, column 'fluxerr_hsc_g'"));
}

#[test]
fn error_negative_and_zero_uncertainty() {
    let body = format!("{HEAD}1,1.0,0.1\n2,1.0,0.2\n3,0.5,-0.3\n");
    let (_d, s) = bad_csv(&body);
    let msg = open_err(&s, &["hsc_g"]);
    assert!(
        msg.contains("cat.csv: row 3, column 'fluxerr_hsc_g': negative uncertainty -0.3"),
        "{msg}"
    );
    // …unless negative errors mark upper limits
    let s2 = CatalogueSpec {
        upper_limits: UpperLimitConvention::NegativeError,
        ..s.clone()
    };
    let c = CatalogueReader::open(&s2, &names(&["hsc_g"]))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(c.mask, vec![1.0, 1.0, 0.0]);
    let (_d, s) = bad_csv(&format!("{HEAD}1,1.0,0\n"));
    assert!(open_err(&s, &["hsc_g"]).contains("row 1, column 'fluxerr_hsc_g': zero uncertainty"));
}

#[test]
fn upper_limit_flag_and_snr() {
    let body = format!("{HEAD}1,1.0,0.1\n2,0.1,0.2\n3,5.0,-1\n");
    let (_d, s) = bad_csv(&body);
    let flag = CatalogueSpec {
        upper_limits: UpperLimitConvention::FlagValue(-1.0),
        ..s.clone()
    };
    let c = CatalogueReader::open(&flag, &names(&["hsc_g"]))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(c.mask, vec![1.0, 1.0, 0.0]);
    let (_d, s) = bad_csv(&format!("{HEAD}1,1.0,0.1\n2,0.1,0.2\n"));
    let snr = CatalogueSpec {
        upper_limits: UpperLimitConvention::SnrBelow(1.0),
        ..s
    };
    let c = CatalogueReader::open(&snr, &names(&["hsc_g"]))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(c.mask, vec![1.0, 0.0]);
}

#[test]
fn error_bad_number() {
    let (_d, s) = bad_csv(&format!("{HEAD}1,1.0,0.1\n2,1.2.3,0.1\n"));
    let msg = open_err(&s, &["hsc_g"]);
    assert!(
        msg.contains("cat.csv: row 2, column 'flux_hsc_g': cannot parse '1.2.3' as a number"),
        "{msg}"
    );
    let (_d, s) = bad_csv(&format!("{HEAD}1,1.0,0.1\n2,1.0\n"));
    let msg = open_err(&s, &["hsc_g"]);
    assert!(
        msg.contains("cat.csv: row 2: has 2 fields but the header has 3"),
        "{msg}"
    );
}

#[test]
fn error_empty_catalogue() {
    let (_d, s) = bad_csv(HEAD);
    assert_eq!(
        open_err(&s, &["hsc_g"]),
        format!("{}: catalogue is empty (no data rows)", s.path.display())
    );
    let (_d, s) = bad_csv("");
    assert!(open_err(&s, &["hsc_g"]).contains("catalogue is empty"));
}

#[test]
fn error_duplicate_id() {
    let (_d, s) = bad_csv(&format!("{HEAD}x,1.0,0.1\ny,1.0,0.1\nx,2.0,0.1\n"));
    let msg = open_err(&s, &["hsc_g"]);
    assert!(
        msg.contains("cat.csv: column 'id': duplicate id 'x' (rows 1 and 3)"),
        "{msg}"
    );
    // across chunk boundaries too
    let mut r = CatalogueReader::open(&s, &names(&["hsc_g"])).unwrap();
    assert_eq!(r.next_chunk(2).unwrap().unwrap().len(), 2);
    assert!(r.next_chunk(2).is_err());
}

#[test]
fn spec_errors() {
    let (_d, mut s) = bad_csv(&format!("{HEAD}1,1.0,0.1\n"));
    s.path = s.path.with_extension("dat");
    assert!(open_err(&s, &["hsc_g"]).contains("set `format:`"));
    s.flux_pattern = Some("flux".into());
    s.format = Some(CatalogueFormat::Csv);
    assert!(open_err(&s, &["hsc_g"]).contains("{band}"));
}

#[test]
fn absurd_fluxes_are_missing_like_sentinels() {
    // KiDS writes 1e29 for "no measurement"; 1e30 nmgy or a 1e25 mJy σ are no measurement
    // either (≥ 1e20 nmgy = AB −27.5 after conversion), so the band is masked, not fitted.
    let (_d, s) = bad_csv(
        "id,flux_g,fluxerr_g,flux_r,fluxerr_r\n\
         a,1e29,1e29,2.0,0.2\n\
         b,-1e30,0.1,2.0,1e21\n\
         c,3.0,0.3,9.9e19,0.5\n",
    );
    let c = CatalogueReader::open(&s, &names(&["g", "r"]))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(c.mask, vec![0.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
    assert_eq!((c.flux_nmgy[0], c.flux_err_nmgy[0]), (0.0, 1.0));
    assert_eq!(c.flux_nmgy[1], 2.0);
    // In mJy, 1e29 is far above the threshold too.
    let mut s = s;
    s.units = FluxUnit::Mjy;
    let c = CatalogueReader::open(&s, &names(&["g", "r"]))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(c.mask[0], 0.0);
    assert_eq!(c.mask[5], 0.0, "9.9e19 mJy is 2.7e22 nmgy");
}

#[test]
fn a_huge_chunk_request_allocates_only_what_is_read() {
    // galaxies_per_batch: 1e9 used to reserve 1e9 × bands floats before reading a row.
    let (_d, s) = bad_csv(&format!("{HEAD}1,1.0,0.1\n2,1.0,0.2\n"));
    let mut r = CatalogueReader::open(&s, &names(&["hsc_g"])).unwrap();
    let c = r.next_chunk(usize::MAX / 64).unwrap().unwrap();
    assert_eq!(c.len(), 2);
    assert!(c.ids.capacity() < 1 << 20 && c.flux_nmgy.capacity() < 1 << 20);
}

#[test]
fn a_missing_catalogue_names_the_manifest_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        &dir.path().join("nope.csv"),
        FluxUnit::Nanomaggies,
        UpperLimitConvention::None,
    );
    let msg = open_err(&s, &["hsc_g"]);
    assert!(
        msg.starts_with("catalogue.path: ") && msg.contains("nope.csv"),
        "{msg}"
    );
}
