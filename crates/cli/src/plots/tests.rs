use super::corner::*;
use super::photoz::*;
use super::sed::*;
use super::style::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Result;

use plotters::coord::Shift;
use plotters::prelude::*;

/// Deterministic standard-normal generator (xorshift + Box–Muller).
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

pub(super) struct PhotoZData {
    pub zs: Vec<f64>,
    pub zp: Vec<f64>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

pub(super) fn photoz_data(n: usize) -> PhotoZData {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut zs, mut zp, mut lo, mut hi) = (vec![], vec![], vec![], vec![]);
    for k in 0..n {
        let s = 0.05 + 5.5 * r.uniform();
        let mut p = s + 0.04 * (1.0 + s) * r.normal();
        if k % 17 == 0 {
            p = (5.5 * r.uniform()).max(0.01);
        }
        let p = p.max(0.0);
        let sig = 0.05 * (1.0 + p);
        zs.push(s);
        zp.push(p);
        lo.push((p - sig).max(0.0));
        hi.push(p + sig * 1.3);
    }
    PhotoZData { zs, zp, lo, hi }
}

pub(super) fn corner_data(np: usize, n: usize) -> (Vec<String>, Vec<Vec<f64>>, Vec<f64>) {
    let all = [
        "z",
        "log M* [M☉]",
        "log SFR [M☉/yr]",
        "τ_V",
        "log Z/Z☉",
        "n_dust",
        "p7",
    ];
    let mut r = Rng(12345);
    let names: Vec<String> = (0..np).map(|p| all[p % all.len()].to_string()).collect();
    let mut s = vec![Vec::with_capacity(n); np];
    for _ in 0..n {
        let base = r.normal();
        for (p, col) in s.iter_mut().enumerate() {
            let v = 0.6 * base + 0.8 * r.normal();
            col.push(p as f64 * 2.0 + (0.2 + 0.3 * p as f64) * v);
        }
    }
    let truths = (0..np).map(|p| p as f64 * 2.0 + 0.1).collect();
    (names, s, truths)
}

pub(super) struct Sed {
    pub labels: Vec<String>,
    pub wl: Vec<f64>,
    pub f: Vec<f64>,
    pub e: Vec<f64>,
    pub used: Vec<bool>,
    pub med: Vec<f64>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

pub(super) fn sed_data(with_negative: bool) -> Sed {
    let bands = [
        ("u", 0.38),
        ("g", 0.48),
        ("r", 0.62),
        ("i", 0.77),
        ("z", 0.89),
        ("y", 0.98),
        ("IB427", 0.427),
        ("IB505", 0.505),
        ("IB574", 0.574),
        ("IB709", 0.709),
        ("IB827", 0.827),
        ("NB711", 0.711),
        ("Y", 1.02),
        ("J", 1.25),
        ("H", 1.65),
        ("Ks", 2.15),
        ("irac_ch1", 3.6),
        ("irac_ch2", 4.5),
    ];
    let mut r = Rng(777);
    let mut s = Sed {
        labels: vec![],
        wl: vec![],
        f: vec![],
        e: vec![],
        used: vec![],
        med: vec![],
        lo: vec![],
        hi: vec![],
    };
    for (k, (name, w)) in bands.iter().enumerate() {
        let model = if *w < 0.45 {
            0.05
        } else {
            2.0 * (w / 0.5_f64).powf(1.2)
        };
        let err = 0.08 + 0.05 * model;
        let mut flux = model + err * r.normal();
        if !with_negative {
            flux = flux.abs().max(0.02);
        }
        s.labels.push(name.to_string());
        s.wl.push(*w);
        s.f.push(flux);
        s.e.push(err);
        s.used.push(k % 6 != 5);
        s.med.push(model);
        s.lo.push(model * 0.85);
        s.hi.push(model * 1.18);
    }
    s
}

fn sed_view(s: &Sed) -> SedData<'_> {
    SedData {
        band_labels: &s.labels,
        wavelength_um: &s.wl,
        observed_flux: &s.f,
        observed_err: &s.e,
        used: &s.used,
        model_median: &s.med,
        model_lo: &s.lo,
        model_hi: &s.hi,
    }
}

/// Renders into an in-memory RGB buffer.
fn render<F>(size: (u32, u32), f: F) -> Vec<u8>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
{
    let mut buf = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        f(&root).unwrap();
        root.present().unwrap();
    }
    buf
}

fn non_white(buf: &[u8]) -> usize {
    buf.chunks_exact(3)
        .filter(|p| p != &[255, 255, 255])
        .count()
}

fn distinct_colours(buf: &[u8]) -> usize {
    buf.chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect::<HashSet<_>>()
        .len()
}

/// Non-white pixels in rows `y0..y1` (to check that e.g. the title was rendered).
fn non_white_rows(buf: &[u8], width: u32, y0: u32, y1: u32) -> usize {
    let row = (width * 3) as usize;
    non_white(&buf[y0 as usize * row..y1 as usize * row])
}

fn assert_rich(buf: &[u8], size: (u32, u32)) {
    let total = (size.0 * size.1) as usize;
    let nw = non_white(buf);
    assert!(nw > total / 50, "only {nw} non-white pixels of {total}");
    assert!(
        nw < total * 9 / 10,
        "image is almost entirely filled ({nw} of {total})"
    );
    let dc = distinct_colours(buf);
    assert!(dc > 20, "only {dc} distinct colours");
    // title text (anti-aliased glyphs) in the top strip
    assert!(
        non_white_rows(buf, size.0, 0, 35) > 200,
        "title not rendered"
    );
}

fn temp_png(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "popcosmos_plots_{}_{}_{name}.png",
        std::process::id(),
        nanos
    ))
}

/// Checks the PNG signature and the IHDR width/height, then removes the file.
fn check_png_file(path: &Path, size: (u32, u32)) {
    let bytes = std::fs::read(path).expect("plot file written");
    let _ = std::fs::remove_file(path);
    assert!(
        bytes.len() > 5_000,
        "PNG suspiciously small ({} bytes)",
        bytes.len()
    );
    assert_eq!(
        &bytes[..8],
        &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((w, h), size);
}

#[test]
fn plots_font_registers_once() {
    ensure_font().unwrap();
    ensure_font().unwrap();
}

#[test]
fn plots_fmt_tick() {
    assert_eq!(fmt_tick(0.0), "0");
    assert_eq!(fmt_tick(0.30000000000000004), "0.3");
    assert_eq!(fmt_tick(2.0), "2");
    assert_eq!(fmt_tick(-1.25), "-1.25");
    assert_eq!(fmt_tick(1e6), "1e6");
    assert_eq!(fmt_with_scale(10.523, 0.12), "10.52");
    assert_eq!(fmt_with_scale(-0.001, 0.2), "0.00");
}

#[test]
fn plots_photoz_stats() {
    let (n, bias, nmad, eta) = photoz_stats(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 2.0]);
    assert_eq!(n, 4);
    assert_eq!(bias, 0.0);
    assert_eq!(nmad, 0.0);
    assert_eq!(eta, 0.25);
}

#[test]
fn plots_photoz_in_memory() {
    let d = photoz_data(300);
    let buf = render(PHOTOZ_SIZE, |a| {
        draw_photoz(a, &d.zs, &d.zp, &d.lo, &d.hi, "photo-z test")
    });
    assert_rich(&buf, PHOTOZ_SIZE);
    // both point colours present
    let px: HashSet<[u8; 3]> = buf.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
    assert!(px.contains(&[C_BLUE.0, C_BLUE.1, C_BLUE.2]));
    assert!(px.contains(&[C_RED.0, C_RED.1, C_RED.2]));
}

#[test]
fn plots_photoz_file_and_edge_cases() {
    let d = photoz_data(120);
    let path = temp_png("photoz");
    photoz_plot(&path, &d.zs, &d.zp, &d.lo, &d.hi, "photo-z").unwrap();
    check_png_file(&path, PHOTOZ_SIZE);
    // empty input and NaNs still render; mismatched lengths are errors
    render(PHOTOZ_SIZE, |a| draw_photoz(a, &[], &[], &[], &[], "empty"));
    render(PHOTOZ_SIZE, |a| {
        draw_photoz(
            a,
            &[0.5, f64::NAN, 2.0],
            &[0.6, 1.0, f64::NAN],
            &[0.4, 0.5, f64::NAN],
            &[f64::NAN, 1.5, 2.0],
            "",
        )
    });
    assert!(photoz_plot(&temp_png("bad"), &[1.0], &[1.0, 2.0], &[1.0], &[1.0], "x").is_err());
}

#[test]
fn plots_corner_in_memory() {
    for (np, n) in [(1, 50), (2, 5000), (4, 200), (6, 3000)] {
        let (names, s, truths) = corner_data(np, n);
        let buf = render(CORNER_SIZE, |a| {
            draw_corner(a, &names, &s, Some(&truths), "corner test")
        });
        assert_rich(&buf, CORNER_SIZE);
    }
    // constant column and NaNs, no truths
    let names = vec!["a".to_string(), "b".to_string()];
    let s = vec![
        vec![1.0; 100],
        (0..100)
            .map(|k| if k % 10 == 0 { f64::NAN } else { k as f64 })
            .collect(),
    ];
    let buf = render(CORNER_SIZE, |a| {
        draw_corner(a, &names, &s, None, "degenerate")
    });
    assert!(non_white(&buf) > 5_000);
}

#[test]
fn plots_corner_file_and_errors() {
    let (names, s, truths) = corner_data(3, 1000);
    let path = temp_png("corner");
    corner_plot(&path, &names, &s, Some(&truths), "corner").unwrap();
    check_png_file(&path, CORNER_SIZE);
    assert!(corner_plot(&temp_png("bad"), &names, &s[..2], None, "x").is_err());
    assert!(corner_plot(&temp_png("bad"), &names, &s, Some(&truths[..1]), "x").is_err());
    assert!(corner_plot(&temp_png("bad"), &[], &[], None, "x").is_err());
}

#[test]
fn plots_sed_in_memory_log_and_linear() {
    for neg in [false, true] {
        let s = sed_data(neg);
        let buf = render(SED_SIZE, |a| draw_sed(a, &sed_view(&s), "SED test"));
        assert_rich(&buf, SED_SIZE);
    }
}

#[test]
fn plots_sed_file_and_errors() {
    let s = sed_data(true);
    let path = temp_png("sed");
    sed_plot(
        &path, &s.labels, &s.wl, &s.f, &s.e, &s.used, &s.med, &s.lo, &s.hi, "SED",
    )
    .unwrap();
    check_png_file(&path, SED_SIZE);
    // non-positive wavelength and length mismatch are errors
    let mut bad = s.wl.clone();
    bad[0] = 0.0;
    let p = temp_png("bad");
    assert!(
        sed_plot(
            &p, &s.labels, &bad, &s.f, &s.e, &s.used, &s.med, &s.lo, &s.hi, ""
        )
        .is_err()
    );
    assert!(
        sed_plot(
            &p,
            &s.labels,
            &s.wl,
            &s.f[1..],
            &s.e,
            &s.used,
            &s.med,
            &s.lo,
            &s.hi,
            ""
        )
        .is_err()
    );
    // NaN model / errors still render
    let nan = vec![f64::NAN; s.wl.len()];
    render(SED_SIZE, |a| {
        draw_sed(
            a,
            &SedData {
                model_median: &nan,
                model_lo: &nan,
                model_hi: &nan,
                observed_err: &nan,
                ..sed_view(&s)
            },
            "",
        )
    });
}

/// Writes one PNG of each kind to $POPCOSMOS_PLOT_DIR for visual inspection.
#[test]
fn plots_write_examples_if_requested() {
    let Some(dir) = std::env::var_os("POPCOSMOS_PLOT_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let d = photoz_data(300);
    photoz_plot(
        &dir.join("photoz.png"),
        &d.zs,
        &d.zp,
        &d.lo,
        &d.hi,
        "Photo-z: synthetic test",
    )
    .unwrap();
    for np in [3, 6] {
        let (names, s, truths) = corner_data(np, 4000);
        corner_plot(
            &dir.join(format!("corner{np}.png")),
            &names,
            &s,
            Some(&truths),
            "Posterior: synthetic galaxy",
        )
        .unwrap();
    }
    for (neg, name) in [(false, "sed_log.png"), (true, "sed_lin.png")] {
        let s = sed_data(neg);
        sed_plot(
            &dir.join(name),
            &s.labels,
            &s.wl,
            &s.f,
            &s.e,
            &s.used,
            &s.med,
            &s.lo,
            &s.hi,
            "SED: synthetic galaxy at z = 1.2",
        )
        .unwrap();
    }
}
