//! PNG diagnostic plots: photo-z vs spec-z, corner plots of posterior draws and
//! observed-vs-model SEDs.
//!
//! Every public `*_plot` function writes a PNG (the format follows the file
//! extension, use `.png`).  The drawing itself lives in backend-generic
//! `draw_*` functions so that tests can render into an in-memory bitmap.
//!
//! Text is rendered with plotters' `ab_glyph` feature from DejaVu Sans, which is
//! embedded in the binary (`assets/fonts/DejaVuSans.ttf`, see NOTICE) and
//! registered once as the `"sans-serif"` family.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail, ensure};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use popcosmos_api::stats::quantile_sorted;

/// Pixel size of [`photoz_plot`] images.
pub const PHOTOZ_SIZE: (u32, u32) = (900, 700);
/// Pixel size of [`sed_plot`] images.
pub const SED_SIZE: (u32, u32) = (900, 700);
/// Pixel size of [`corner_plot`] images (square, so that panels are square).
pub const CORNER_SIZE: (u32, u32) = (900, 900);

/// Outlier threshold on |z_phot − z_spec| / (1 + z_spec).
pub const OUTLIER_THRESHOLD: f64 = 0.15;

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

const C_BLUE: RGBColor = RGBColor(31, 119, 180);
const C_DARK_BLUE: RGBColor = RGBColor(8, 48, 107);
const C_ORANGE: RGBColor = RGBColor(230, 110, 0);
const C_RED: RGBColor = RGBColor(214, 39, 40);
const C_GREY: RGBColor = RGBColor(120, 120, 120);
const C_GRID_LIGHT: RGBColor = RGBColor(242, 242, 242);
const C_GRID_BOLD: RGBColor = RGBColor(222, 222, 222);

/// Registers the embedded font as `"sans-serif"` (once per process).
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    ensure!(
        ok,
        "embedded font assets/fonts/DejaVuSans.ttf could not be parsed"
    );
    Ok(())
}

/// Creates the bitmap backend for `path`, runs `draw` and writes the file.
fn render_png<F>(path: &Path, size: (u32, u32), draw: F) -> Result<()>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
{
    ensure_font()?;
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating directory {}", parent.display()))?;
    }
    let root = BitMapBackend::new(path, size).into_drawing_area();
    draw(&root).with_context(|| format!("drawing plot {}", path.display()))?;
    root.present()
        .with_context(|| format!("writing plot {}", path.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// small numeric helpers
// ---------------------------------------------------------------------------

/// Tick label: trims trailing zeros, scientific notation for very large/small values.
fn fmt_tick(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let a = v.abs();
    if a < 1e-12 {
        return "0".into();
    }
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.0e}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Formats `v` with a number of decimals suited to the uncertainty `scale`.
fn fmt_with_scale(v: f64, scale: f64) -> String {
    let decimals = if scale.is_finite() && scale > 0.0 {
        (1.0 - scale.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

fn finite_min_max<I: IntoIterator<Item = f64>>(it: I) -> Option<(f64, f64)> {
    it.into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Pads `[lo, hi]` by `frac` of its span; degenerate ranges get a fixed width.
fn pad_range(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    let span = hi - lo;
    if span > 1e-12 * (lo.abs() + hi.abs()).max(1e-300) {
        (lo - frac * span, hi + frac * span)
    } else {
        let d = if lo.abs() > 0.0 { 0.1 * lo.abs() } else { 0.5 };
        (lo - d, hi + d)
    }
}

fn sorted_finite(v: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

/// Draws the title (if any) and returns the area below it.
fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    if title.trim().is_empty() {
        return Ok(root.margin(10, 0, 0, 0));
    }
    Ok(root.titled(title, (FONT, 24).into_font().color(&BLACK))?)
}

/// Picks the plot corner (normalised coordinates in [0, 1]², y up) with the
/// fewest data points, for placing a legend.
fn emptiest_corner(points: &[(f64, f64)]) -> SeriesLabelPosition {
    let (w, h) = (0.38, 0.3);
    let corners = [
        (SeriesLabelPosition::UpperLeft, 0.0, 1.0 - h),
        (SeriesLabelPosition::UpperRight, 1.0 - w, 1.0 - h),
        (SeriesLabelPosition::LowerLeft, 0.0, 0.0),
        (SeriesLabelPosition::LowerRight, 1.0 - w, 0.0),
    ];
    let mut best = (usize::MAX, SeriesLabelPosition::UpperLeft);
    for (pos, x0, y0) in corners {
        let n = points
            .iter()
            .filter(|(x, y)| *x >= x0 && *x <= x0 + w && *y >= y0 && *y <= y0 + h)
            .count();
        if n < best.0 {
            best = (n, pos);
        }
    }
    best.1
}

// ---------------------------------------------------------------------------
// photo-z vs spec-z
// ---------------------------------------------------------------------------

/// Scatter of photometric (posterior median) vs spectroscopic redshift with
/// 16–84 % error bars, the 1:1 line and the ±0.15·(1+z) outlier boundaries.
///
/// All slices must have the same length; non-finite entries are skipped.
pub fn photoz_plot(
    path: &Path,
    z_spec: &[f64],
    z_phot: &[f64],
    z_lo: &[f64],
    z_hi: &[f64],
    title: &str,
) -> Result<()> {
    check_photoz_lengths(z_spec, z_phot, z_lo, z_hi)?;
    render_png(path, PHOTOZ_SIZE, |root| {
        draw_photoz(root, z_spec, z_phot, z_lo, z_hi, title)
    })
}

fn check_photoz_lengths(z_spec: &[f64], z_phot: &[f64], z_lo: &[f64], z_hi: &[f64]) -> Result<()> {
    let n = z_spec.len();
    ensure!(
        z_phot.len() == n && z_lo.len() == n && z_hi.len() == n,
        "photoz_plot: length mismatch (z_spec {}, z_phot {}, z_lo {}, z_hi {})",
        n,
        z_phot.len(),
        z_lo.len(),
        z_hi.len()
    );
    Ok(())
}

/// Summary statistics of Δz/(1+z_spec): (N, bias = median, σ_NMAD, outlier fraction).
fn photoz_stats(z_spec: &[f64], z_phot: &[f64]) -> (usize, f64, f64, f64) {
    let dz: Vec<f64> = z_spec
        .iter()
        .zip(z_phot)
        .filter(|(s, p)| s.is_finite() && p.is_finite())
        .map(|(s, p)| (p - s) / (1.0 + s))
        .collect();
    let n = dz.len();
    if n == 0 {
        return (0, f64::NAN, f64::NAN, f64::NAN);
    }
    let sorted = sorted_finite(&dz);
    let med = quantile_sorted(&sorted, 0.5);
    let dev = sorted_finite(&dz.iter().map(|d| (d - med).abs()).collect::<Vec<_>>());
    let nmad = 1.4826 * quantile_sorted(&dev, 0.5);
    let eta = dz.iter().filter(|d| d.abs() > OUTLIER_THRESHOLD).count() as f64 / n as f64;
    (n, med, nmad, eta)
}

/// Renders the photo-z plot onto any drawing area.
pub fn draw_photoz<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    z_spec: &[f64],
    z_phot: &[f64],
    z_lo: &[f64],
    z_hi: &[f64],
    title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    ensure_font()?;
    check_photoz_lengths(z_spec, z_phot, z_lo, z_hi)?;
    let area = titled(root, title)?;

    let good: Vec<usize> = (0..z_spec.len())
        .filter(|&i| z_spec[i].is_finite() && z_phot[i].is_finite())
        .collect();
    let zmax_data = good
        .iter()
        .map(|&i| z_spec[i].max(z_phot[i]))
        .fold(0.0_f64, f64::max);
    let zmax = if zmax_data > 0.0 {
        zmax_data * 1.05
    } else {
        1.0
    };

    let mut chart = ChartBuilder::on(&area)
        .margin(15)
        .margin_right(30)
        .x_label_area_size(60)
        .y_label_area_size(75)
        .build_cartesian_2d(0.0..zmax, 0.0..zmax)?;
    chart
        .configure_mesh()
        .x_desc("spectroscopic redshift  z_spec")
        .y_desc("photometric redshift  z_phot  (posterior median, 16–84 %)")
        .axis_desc_style((FONT, 19))
        .label_style((FONT, 15))
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| fmt_tick(*v))
        .max_light_lines(3)
        .light_line_style(C_GRID_LIGHT)
        .bold_line_style(C_GRID_BOLD)
        .draw()?;

    // Reference lines.
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (zmax, zmax)],
            BLACK.stroke_width(2),
        ))?
        .label("1:1")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    let t = OUTLIER_THRESHOLD;
    // upper: z_p = (1+z_s)(1+t) − 1, from z_s = 0 until it leaves the box
    let up_end = ((1.0 + zmax) / (1.0 + t) - 1.0).min(zmax);
    let upper = [(0.0, t), (up_end, (1.0 + up_end) * (1.0 + t) - 1.0)];
    // lower: z_p = (1+z_s)(1−t) − 1, from where it is ≥ 0 until z_s = zmax
    let lo_start = 1.0 / (1.0 - t) - 1.0;
    let dashed = C_GREY.stroke_width(2);
    if up_end > 0.0 {
        chart
            .draw_series(DashedLineSeries::new(upper, 10, 6, dashed))?
            .label(format!("|Δz|/(1+z_spec) = {t}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], dashed));
    }
    if lo_start < zmax {
        let lower = [(lo_start, 0.0), (zmax, (1.0 + zmax) * (1.0 - t) - 1.0)];
        chart.draw_series(DashedLineSeries::new(lower, 10, 6, dashed))?;
    }

    // Error bars, then points (outliers in red).
    let is_outlier =
        |i: usize| ((z_phot[i] - z_spec[i]) / (1.0 + z_spec[i])).abs() > OUTLIER_THRESHOLD;
    let colour = |i: usize| if is_outlier(i) { C_RED } else { C_BLUE };
    let cap = if good.len() <= 150 { zmax * 0.004 } else { 0.0 };
    let clamp = |v: f64| v.clamp(0.0, zmax);
    let mut bars = Vec::new();
    for &i in &good {
        let (lo, hi) = (z_lo[i], z_hi[i]);
        if !(lo.is_finite() && hi.is_finite()) {
            continue;
        }
        let (x, y0, y1) = (
            z_spec[i],
            clamp(lo.min(z_phot[i])),
            clamp(hi.max(z_phot[i])),
        );
        let style = colour(i).mix(0.45).stroke_width(1);
        bars.push(PathElement::new(vec![(x, y0), (x, y1)], style));
        if cap > 0.0 {
            for y in [y0, y1] {
                bars.push(PathElement::new(
                    vec![(clamp(x - cap), y), (clamp(x + cap), y)],
                    style,
                ));
            }
        }
    }
    chart.draw_series(bars)?;
    let radius = if good.len() > 2000 { 2 } else { 3 };
    chart
        .draw_series(
            good.iter()
                .filter(|&&i| !is_outlier(i))
                .map(|&i| Circle::new((z_spec[i], z_phot[i]), radius, C_BLUE.filled())),
        )?
        .label("galaxies")
        .legend(|(x, y)| Circle::new((x + 10, y), 4, C_BLUE.filled()));
    let n_out = good.iter().filter(|&&i| is_outlier(i)).count();
    let anno = chart.draw_series(
        good.iter()
            .filter(|&&i| is_outlier(i))
            .map(|&i| Circle::new((z_spec[i], z_phot[i]), radius, C_RED.filled())),
    )?;
    if n_out > 0 {
        anno.label("outliers")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, C_RED.filled()));
    }

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .margin(12)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(C_GREY)
        .draw()?;

    // Statistics box, lower right of the plotting area.
    let (n, bias, nmad, eta) = photoz_stats(z_spec, z_phot);
    let lines = [
        format!("N = {n}"),
        format!("bias = {bias:+.4}"),
        format!("σ_NMAD = {nmad:.4}"),
        format!("outliers η = {:.1} %", 100.0 * eta),
    ];
    let plot = chart.plotting_area().strip_coord_spec();
    let (w, h) = plot.dim_in_pixel();
    let (bw, bh) = (210_i32, 24 * lines.len() as i32 + 14);
    let (x0, y0) = (w as i32 - bw - 12, h as i32 - bh - 12);
    plot.draw(&Rectangle::new(
        [(x0, y0), (x0 + bw, y0 + bh)],
        WHITE.mix(0.7).filled(),
    ))?;
    plot.draw(&Rectangle::new(
        [(x0, y0), (x0 + bw, y0 + bh)],
        C_GREY.stroke_width(1),
    ))?;
    for (k, line) in lines.iter().enumerate() {
        plot.draw(&Text::new(
            line.clone(),
            (x0 + 12, y0 + 10 + 24 * k as i32),
            (FONT, 16).into_font(),
        ))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// corner plot
// ---------------------------------------------------------------------------

/// Corner plot of posterior draws: `samples[p]` holds all draws of parameter
/// `names[p]`.  1-D histograms (with 16/50/84 % quantiles) on the diagonal, 2-D
/// histogram shading below it, and truth lines if `truths` is given.
/// Meant for up to ~6 parameters (more work but get cramped).
pub fn corner_plot(
    path: &Path,
    names: &[String],
    samples: &[Vec<f64>],
    truths: Option<&[f64]>,
    title: &str,
) -> Result<()> {
    check_corner_inputs(names, samples, truths)?;
    render_png(path, CORNER_SIZE, |root| {
        draw_corner(root, names, samples, truths, title)
    })
}

fn check_corner_inputs(
    names: &[String],
    samples: &[Vec<f64>],
    truths: Option<&[f64]>,
) -> Result<()> {
    let p = names.len();
    ensure!(p > 0, "corner_plot: no parameters");
    ensure!(
        samples.len() == p,
        "corner_plot: {} names but {} sample columns",
        p,
        samples.len()
    );
    let n = samples[0].len();
    if let Some(k) = samples.iter().position(|s| s.len() != n) {
        bail!(
            "corner_plot: parameter {} has {} draws, parameter {} has {}",
            names[0],
            n,
            names[k],
            samples[k].len()
        );
    }
    if let Some(t) = truths {
        ensure!(
            t.len() == p,
            "corner_plot: {} truths for {} parameters",
            t.len(),
            p
        );
    }
    Ok(())
}

/// Renders the corner plot onto any drawing area.
pub fn draw_corner<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    names: &[String],
    samples: &[Vec<f64>],
    truths: Option<&[f64]>,
    title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    ensure_font()?;
    check_corner_inputs(names, samples, truths)?;
    let np = names.len();
    let n = samples[0].len();
    let truth = |p: usize| truths.map(|t| t[p]).filter(|v| v.is_finite());

    let ranges: Vec<(f64, f64)> = (0..np)
        .map(|p| {
            let (lo, hi) =
                finite_min_max(samples[p].iter().copied().chain(truth(p))).unwrap_or((0.0, 1.0));
            pad_range(lo, hi, 0.04)
        })
        .collect();

    let area = titled(root, title)?.margin(0, 0, 8, 0);
    let (fs_tick, fs_desc, fs_head) = match np {
        1..=2 => (15, 18, 16),
        3 => (14, 17, 15),
        4 => (13, 16, 14),
        _ => (12, 15, 13),
    };
    // Layout in pixels: y labels left of column 0, x labels below the last row,
    // a header line above each diagonal panel (it overlaps the empty upper
    // triangle, except above the first row, where `head_h` is reserved).
    let x_area = fs_tick + fs_desc + 22;
    let y_area = 3 * fs_tick + fs_desc + 14;
    let head_h = fs_head + 10;
    let gap = 8_u32;
    let (aw, ah) = area.dim_in_pixel();
    let right = 25_u32;
    let side_w = aw.saturating_sub(y_area + right + gap * (np as u32 - 1)) / np as u32;
    let side_h = ah.saturating_sub(x_area + head_h + 5 + gap * (np as u32 - 1)) / np as u32;
    let side = side_w.min(side_h).max(20);
    let x_of = |j: usize| y_area + j as u32 * (side + gap);
    let y_of = |i: usize| head_h + i as u32 * (side + gap);

    let nbins_1d = ((n as f64).sqrt().round() as usize).clamp(10, 40);
    let nbins_2d = (((n as f64).sqrt() / 1.5).round() as usize).clamp(8, 30);
    let frame = BLACK.stroke_width(1);

    if np >= 2 {
        // top-right corner (upper triangle is empty); may reach into the
        // neighbouring empty cell when there are >= 3 parameters
        let shift = if np >= 3 { side / 2 } else { 0 };
        let info = area.clone().shrink(
            ((x_of(np - 1) - shift) as i32, y_of(0) as i32),
            (side + shift + right, side),
        );
        draw_corner_info(&info, n, truths.is_some(), fs_head)?;
    }

    for i in 0..np {
        for j in 0..=i {
            let bottom = i == np - 1;
            let left = j == 0;
            let (xlo, xhi) = ranges[j];
            let x_fmt = |v: &f64| fmt_tick(*v);
            let (lx, bx) = (
                if left { y_area } else { 0 },
                if bottom { x_area } else { 0 },
            );
            let cell = area.clone().shrink(
                (x_of(j) as i32 - lx as i32, y_of(i) as i32),
                (side + lx, side + bx),
            );

            if i == j {
                // --- 1-D histogram on the diagonal
                let vals = sorted_finite(&samples[i]);
                let counts = histogram(&vals, xlo, xhi, nbins_1d);
                let cmax = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
                let ytop = cmax * 1.08;
                let mut chart = ChartBuilder::on(&cell)
                    .x_label_area_size(bx)
                    .y_label_area_size(lx)
                    .build_cartesian_2d(xlo..xhi, 0.0..ytop)?;
                if bottom || left {
                    let mut mesh = chart.configure_mesh();
                    mesh.disable_mesh()
                        .x_labels(if bottom { 4 } else { 0 })
                        .y_labels(0)
                        .label_style((FONT, fs_tick))
                        .axis_desc_style((FONT, fs_desc))
                        .x_label_formatter(&x_fmt);
                    if bottom {
                        mesh.x_desc(names[i].as_str());
                    }
                    mesh.draw()?;
                }
                let bw = (xhi - xlo) / nbins_1d as f64;
                chart.draw_series(counts.iter().enumerate().filter(|(_, c)| **c > 0).map(
                    |(k, &c)| {
                        let x0 = xlo + k as f64 * bw;
                        Rectangle::new([(x0, 0.0), (x0 + bw, c as f64)], C_BLUE.mix(0.35).filled())
                    },
                ))?;
                let mut step = vec![(xlo, 0.0)];
                for (k, &c) in counts.iter().enumerate() {
                    let x0 = xlo + k as f64 * bw;
                    step.push((x0, c as f64));
                    step.push((x0 + bw, c as f64));
                }
                step.push((xhi, 0.0));
                chart.draw_series(LineSeries::new(step, C_DARK_BLUE.stroke_width(1)))?;
                if !vals.is_empty() {
                    let q: Vec<f64> = [0.16, 0.5, 0.84]
                        .iter()
                        .map(|&q| quantile_sorted(&vals, q))
                        .collect();
                    for &x in &q {
                        chart.draw_series(DashedLineSeries::new(
                            [(x, 0.0), (x, ytop)],
                            6,
                            4,
                            BLACK.stroke_width(1),
                        ))?;
                    }
                    // header "name = median +err −err", placed above the panel
                    let (lo_err, hi_err) = (q[1] - q[0], q[2] - q[1]);
                    let scale = lo_err.min(hi_err).max(1e-12);
                    let nums = format!(
                        "{} +{} −{}",
                        fmt_with_scale(q[1], scale),
                        fmt_with_scale(hi_err, scale),
                        fmt_with_scale(lo_err, scale)
                    );
                    let full = format!("{} = {nums}", names[i]);
                    let style = TextStyle::from((FONT, fs_head).into_font());
                    let x0 = x_of(i);
                    let avail = aw.saturating_sub(x0 + 2);
                    for text in [full, nums] {
                        let (tw, th) = area.estimate_text_size(&text, &style)?;
                        if tw <= avail {
                            // centred on the panel, but never left of it
                            let x = (x0 as i32 + (side as i32 - tw as i32) / 2)
                                .max(x0 as i32)
                                .min((aw - tw) as i32);
                            let y = y_of(i) as i32 - th as i32 - 5;
                            area.draw(&Text::new(text, (x, y), style.clone()))?;
                            break;
                        }
                    }
                }
                if let Some(t) = truth(i) {
                    chart.draw_series(LineSeries::new(
                        [(t, 0.0), (t, ytop)],
                        C_RED.stroke_width(2),
                    ))?;
                }
                chart
                    .plotting_area()
                    .draw(&Rectangle::new([(xlo, 0.0), (xhi, ytop)], frame))?;
            } else {
                // --- 2-D histogram below the diagonal: x = param j, y = param i
                let (ylo, yhi) = ranges[i];
                let y_fmt = |v: &f64| fmt_tick(*v);
                let mut chart = ChartBuilder::on(&cell)
                    .x_label_area_size(bx)
                    .y_label_area_size(lx)
                    .build_cartesian_2d(xlo..xhi, ylo..yhi)?;
                if bottom || left {
                    let mut mesh = chart.configure_mesh();
                    mesh.disable_mesh()
                        .x_labels(if bottom { 4 } else { 0 })
                        .y_labels(if left { 4 } else { 0 })
                        .label_style((FONT, fs_tick))
                        .axis_desc_style((FONT, fs_desc))
                        .x_label_formatter(&x_fmt)
                        .y_label_formatter(&y_fmt);
                    if bottom {
                        mesh.x_desc(names[j].as_str());
                    }
                    if left {
                        mesh.y_desc(names[i].as_str());
                    }
                    mesh.draw()?;
                }

                let nb = nbins_2d;
                let (dx, dy) = ((xhi - xlo) / nb as f64, (yhi - ylo) / nb as f64);
                let mut grid = vec![0usize; nb * nb];
                for (&x, &y) in samples[j].iter().zip(&samples[i]) {
                    if !(x.is_finite() && y.is_finite()) {
                        continue;
                    }
                    let bx = (((x - xlo) / dx).floor() as isize).clamp(0, nb as isize - 1) as usize;
                    let by = (((y - ylo) / dy).floor() as isize).clamp(0, nb as isize - 1) as usize;
                    grid[by * nb + bx] += 1;
                }
                let gmax = grid.iter().copied().max().unwrap_or(0).max(1) as f64;
                chart.draw_series(grid.iter().enumerate().filter(|(_, c)| **c > 0).map(
                    |(k, &c)| {
                        let (bx, by) = ((k % nb) as f64, (k / nb) as f64);
                        let t = (c as f64 / gmax).sqrt();
                        let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * t) as u8;
                        let col = RGBColor(
                            lerp(225, C_DARK_BLUE.0),
                            lerp(235, C_DARK_BLUE.1),
                            lerp(250, C_DARK_BLUE.2),
                        );
                        let x0 = xlo + bx * dx;
                        let y0 = ylo + by * dy;
                        Rectangle::new([(x0, y0), (x0 + dx, y0 + dy)], col.filled())
                    },
                ))?;
                if n <= 300 {
                    chart.draw_series(
                        samples[j]
                            .iter()
                            .zip(&samples[i])
                            .filter(|(x, y)| x.is_finite() && y.is_finite())
                            .map(|(&x, &y)| Circle::new((x, y), 2, BLACK.mix(0.6).filled())),
                    )?;
                }
                let (tx, ty) = (truth(j), truth(i));
                let tstyle = C_RED.mix(0.85).stroke_width(2);
                if let Some(t) = tx {
                    chart.draw_series(LineSeries::new([(t, ylo), (t, yhi)], tstyle))?;
                }
                if let Some(t) = ty {
                    chart.draw_series(LineSeries::new([(xlo, t), (xhi, t)], tstyle))?;
                }
                if let (Some(x), Some(y)) = (tx, ty) {
                    chart.draw_series(std::iter::once(Circle::new((x, y), 4, C_RED.filled())))?;
                }
                chart
                    .plotting_area()
                    .draw(&Rectangle::new([(xlo, ylo), (xhi, yhi)], frame))?;
            }
        }
    }
    Ok(())
}

fn histogram(sorted_vals: &[f64], lo: f64, hi: f64, nbins: usize) -> Vec<usize> {
    let mut counts = vec![0usize; nbins];
    let w = (hi - lo) / nbins as f64;
    for &v in sorted_vals {
        let b = (((v - lo) / w).floor() as isize).clamp(0, nbins as isize - 1) as usize;
        counts[b] += 1;
    }
    counts
}

fn draw_corner_info<DB: DrawingBackend>(
    cell: &DrawingArea<DB, Shift>,
    n: usize,
    has_truth: bool,
    fs: u32,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (w, _) = cell.dim_in_pixel();
    let style = TextStyle::from((FONT, fs).into_font());
    let x = 10_i32;
    let mut y = 16_i32;
    let step = fs as i32 + 8;
    let mut lines: Vec<(String, RGBColor)> = vec![
        (format!("{n} posterior draws"), BLACK),
        ("dashed: 16 / 50 / 84 %".into(), BLACK),
    ];
    if has_truth {
        lines.push(("red: true value".into(), C_RED));
    }
    for (text, colour) in lines {
        let (tw, _) = cell.estimate_text_size(&text, &style)?;
        if tw + x as u32 <= w {
            cell.draw(&Text::new(text, (x, y), style.clone().color(&colour)))?;
        }
        y += step;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// SED
// ---------------------------------------------------------------------------

/// Observed photometry and model fluxes (µJy) vs observed-frame wavelength
/// (µm, log axis).  Observed bands used in the fit are filled black circles,
/// unused bands open grey circles; the model is shown as orange squares with
/// its 16–84 % band.  The flux axis is logarithmic when all fluxes are
/// positive, linear otherwise.  Error bars with non-finite or non-positive
/// `observed_err` are omitted; non-finite fluxes are skipped.
#[allow(clippy::too_many_arguments)]
pub fn sed_plot(
    path: &Path,
    band_labels: &[String],
    wavelength_um: &[f64],
    observed_flux: &[f64],
    observed_err: &[f64],
    used: &[bool],
    model_median: &[f64],
    model_lo: &[f64],
    model_hi: &[f64],
    title: &str,
) -> Result<()> {
    let data = SedData {
        band_labels,
        wavelength_um,
        observed_flux,
        observed_err,
        used,
        model_median,
        model_lo,
        model_hi,
    };
    data.check()?;
    render_png(path, SED_SIZE, |root| draw_sed(root, &data, title))
}

/// Inputs of [`sed_plot`], one entry per band.
pub struct SedData<'a> {
    pub band_labels: &'a [String],
    pub wavelength_um: &'a [f64],
    pub observed_flux: &'a [f64],
    pub observed_err: &'a [f64],
    pub used: &'a [bool],
    pub model_median: &'a [f64],
    pub model_lo: &'a [f64],
    pub model_hi: &'a [f64],
}

impl SedData<'_> {
    fn check(&self) -> Result<()> {
        let n = self.wavelength_um.len();
        let lens = [
            ("band_labels", self.band_labels.len()),
            ("observed_flux", self.observed_flux.len()),
            ("observed_err", self.observed_err.len()),
            ("used", self.used.len()),
            ("model_median", self.model_median.len()),
            ("model_lo", self.model_lo.len()),
            ("model_hi", self.model_hi.len()),
        ];
        for (name, len) in lens {
            ensure!(
                len == n,
                "sed_plot: {name} has {len} entries, wavelength_um has {n}"
            );
        }
        if let Some(k) = self
            .wavelength_um
            .iter()
            .position(|w| !(w.is_finite() && *w > 0.0))
        {
            bail!(
                "sed_plot: wavelength of band {} is {} (must be finite and > 0)",
                self.band_labels[k],
                self.wavelength_um[k]
            );
        }
        Ok(())
    }

    fn err(&self, i: usize) -> Option<f64> {
        let e = self.observed_err[i];
        (e.is_finite() && e > 0.0).then_some(e)
    }
}

/// Renders the SED plot onto any drawing area.
pub fn draw_sed<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    d: &SedData<'_>,
    title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    ensure_font()?;
    d.check()?;
    let area = titled(root, title)?;
    let nb = d.wavelength_um.len();

    let (wmin, wmax) = finite_min_max(d.wavelength_um.iter().copied()).unwrap_or((0.3, 10.0));
    let (xlo, xhi) = (wmin / 1.25, wmax * 1.25);

    let fin = |v: &f64| v.is_finite();
    let all_positive = d
        .observed_flux
        .iter()
        .chain(d.model_median)
        .chain(d.model_lo)
        .chain(d.model_hi)
        .filter(|v| fin(v))
        .all(|v| *v > 0.0);
    let lows = (0..nb).flat_map(|i| {
        let f = d.observed_flux[i];
        [
            f,
            f - d.err(i).unwrap_or(0.0),
            d.model_lo[i],
            d.model_median[i],
        ]
    });
    let highs = (0..nb).flat_map(|i| {
        let f = d.observed_flux[i];
        [
            f,
            f + d.err(i).unwrap_or(0.0),
            d.model_hi[i],
            d.model_median[i],
        ]
    });

    if all_positive {
        let lo = lows
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let hi = highs
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() && hi.is_finite() {
            (lo, hi)
        } else {
            (0.1, 10.0)
        };
        let (llo, lhi) = pad_range(lo.log10(), hi.log10(), 0.08);
        let (ylo, yhi) = (10f64.powf(llo), 10f64.powf(lhi));
        sed_chart(&area, d, (ylo..yhi).log_scale(), ylo, yhi, true, (xlo, xhi))
    } else {
        let lo = lows.filter(|v| v.is_finite()).fold(0.0, f64::min);
        let hi = highs.filter(|v| v.is_finite()).fold(0.0, f64::max);
        let (ylo, yhi) = pad_range(lo, hi, 0.08);
        sed_chart(&area, d, ylo..yhi, ylo, yhi, false, (xlo, xhi))
    }
}

/// Rows of staggered band labels above the SED plot.
const LEVELS: usize = 2;

fn short_label(label: &str) -> String {
    label.chars().take(12).collect()
}

/// 1-2-3-5 (or 1-2-5 / 1 for wide ranges) ticks for a log axis.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = (hi / lo).log10();
    let mantissas: &[f64] = if decades <= 1.6 {
        &[1.0, 1.5, 2.0, 3.0, 5.0, 7.0]
    } else if decades <= 3.0 {
        &[1.0, 2.0, 3.0, 5.0]
    } else if decades <= 6.0 {
        &[1.0, 3.0]
    } else {
        &[1.0]
    };
    let mut ticks = Vec::new();
    for e in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
        for m in mantissas {
            let v = m * 10f64.powi(e);
            if v >= lo && v <= hi {
                ticks.push(v);
            }
        }
    }
    ticks
}

fn sed_chart<DB, Y>(
    area: &DrawingArea<DB, Shift>,
    d: &SedData<'_>,
    y_spec: Y,
    ylo: f64,
    yhi: f64,
    ylog: bool,
    (xlo, xhi): (f64, f64),
) -> Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let nb = d.wavelength_um.len();
    let label_style = TextStyle::from((FONT, 12).into_font()).color(&C_GREY);
    let label_w = d
        .band_labels
        .iter()
        .map(|l| {
            area.estimate_text_size(&short_label(l), &label_style)
                .map(|s| s.0)
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    // Wavelength order, and how many label rows are needed (see below).
    let mut order: Vec<usize> = (0..nb).collect();
    order.sort_by(|&a, &b| d.wavelength_um[a].total_cmp(&d.wavelength_um[b]));
    // Rows of labels needed, from the approximate pixel positions.
    let levels = {
        let (aw, _) = area.dim_in_pixel();
        let plot_w = aw.saturating_sub(85 + 15 + 30).max(100) as f64;
        let mut last = [f64::NEG_INFINITY; LEVELS];
        let mut used = 1;
        for &i in &order {
            let (_, th) = area.estimate_text_size(&short_label(&d.band_labels[i]), &label_style)?;
            let px = (d.wavelength_um[i] / xlo).ln() / (xhi / xlo).ln() * plot_w;
            let l = (0..LEVELS)
                .find(|&l| px - last[l] > th as f64)
                .unwrap_or(LEVELS - 1);
            last[l] = px;
            used = used.max(l + 1);
        }
        used
    };
    let top = if nb > 0 {
        levels as u32 * (label_w + 6) + 12
    } else {
        10
    };
    let mut chart = ChartBuilder::on(area)
        .margin(15)
        .margin_right(30)
        .margin_top(top)
        .x_label_area_size(60)
        .y_label_area_size(85)
        .build_cartesian_2d(
            (xlo..xhi).log_scale().with_key_points(log_ticks(xlo, xhi)),
            y_spec,
        )?;
    chart
        .configure_mesh()
        .x_desc("observed-frame wavelength  λ [µm]")
        .y_desc(if ylog {
            "flux density  F_ν [µJy]  (log scale)"
        } else {
            "flux density  F_ν [µJy]"
        })
        .axis_desc_style((FONT, 19))
        .label_style((FONT, 15))
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| fmt_tick(*v))
        .max_light_lines(3)
        .light_line_style(C_GRID_LIGHT)
        .bold_line_style(C_GRID_BOLD)
        .draw()?;

    let clamp = |v: f64| v.clamp(ylo, yhi);
    if !ylog {
        chart.draw_series(DashedLineSeries::new(
            [(xlo, 0.0), (xhi, 0.0)],
            5,
            5,
            C_GREY.stroke_width(1),
        ))?;
    }

    // Model 16–84 % band (wavelength-sorted polygon) and median.
    let band_idx: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| d.model_lo[i].is_finite() && d.model_hi[i].is_finite())
        .collect();
    let band_style = C_ORANGE.mix(0.22).filled();
    let anno = chart.draw_series(std::iter::once(Polygon::new(
        band_idx
            .iter()
            .map(|&i| (d.wavelength_um[i], clamp(d.model_hi[i])))
            .chain(
                band_idx
                    .iter()
                    .rev()
                    .map(|&i| (d.wavelength_um[i], clamp(d.model_lo[i]))),
            )
            .collect::<Vec<_>>(),
        band_style,
    )))?;
    if !band_idx.is_empty() {
        anno.label("model 16–84 %")
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], band_style));
    }
    let med_pts: Vec<(f64, f64)> = order
        .iter()
        .filter(|&&i| d.model_median[i].is_finite())
        .map(|&i| (d.wavelength_um[i], clamp(d.model_median[i])))
        .collect();
    chart.draw_series(LineSeries::new(
        med_pts.clone(),
        C_ORANGE.mix(0.5).stroke_width(1),
    ))?;
    let sq = |(x, y): (f64, f64)| {
        EmptyElement::at((x, y)) + Rectangle::new([(-5, -5), (5, 5)], C_ORANGE.filled())
    };
    let anno = chart.draw_series(med_pts.iter().copied().map(sq))?;
    if !med_pts.is_empty() {
        anno.label("model median")
            .legend(|(x, y)| Rectangle::new([(x + 5, y - 5), (x + 15, y + 5)], C_ORANGE.filled()));
    }

    // Observed photometry.
    let obs: Vec<usize> = (0..nb)
        .filter(|&i| d.observed_flux[i].is_finite())
        .collect();
    let mut bars = Vec::new();
    for &i in &obs {
        if let Some(e) = d.err(i) {
            let (x, f) = (d.wavelength_um[i], d.observed_flux[i]);
            let col = if d.used[i] { BLACK } else { C_GREY };
            let style = col.stroke_width(if d.used[i] { 2 } else { 1 });
            bars.push(PathElement::new(
                vec![(x, clamp(f - e)), (x, clamp(f + e))],
                style,
            ));
        }
    }
    chart.draw_series(bars)?;
    let pt = |i: usize| (d.wavelength_um[i], clamp(d.observed_flux[i]));
    let used_idx: Vec<usize> = obs.iter().copied().filter(|&i| d.used[i]).collect();
    let unused_idx: Vec<usize> = obs.iter().copied().filter(|&i| !d.used[i]).collect();
    let anno = chart.draw_series(
        used_idx
            .iter()
            .map(|&i| Circle::new(pt(i), 5, BLACK.filled())),
    )?;
    if !used_idx.is_empty() {
        anno.label("observed (used in fit)")
            .legend(|(x, y)| Circle::new((x + 10, y), 5, BLACK.filled()));
    }
    let open = C_GREY.stroke_width(2);
    let anno = chart.draw_series(
        unused_idx
            .iter()
            .map(|&i| Circle::new(pt(i), 6, WHITE.filled()))
            .chain(unused_idx.iter().map(|&i| Circle::new(pt(i), 6, open))),
    )?;
    if !unused_idx.is_empty() {
        anno.label("observed (not used in fit)")
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, open));
    }

    // Band names above the plotting area, rotated; labels that would overlap
    // are stacked above each other (up to `levels` rows).
    let (bx, by) = area.get_base_pixel();
    let rot = label_style.clone().transform(FontTransform::Rotate270);
    let mut last_px = [i32::MIN / 2; LEVELS];
    for &i in &order {
        let label = short_label(&d.band_labels[i]);
        let (px, py) = chart.backend_coord(&(d.wavelength_um[i], yhi));
        let (px, py) = (px - bx, py - by);
        let (_, th) = area.estimate_text_size(&label, &label_style)?;
        let th = th as i32;
        let level = (0..levels)
            .find(|&l| px - last_px[l] > th)
            .unwrap_or(levels - 1);
        last_px[level] = px;
        let lift = level as i32 * (label_w as i32 + 6);
        area.draw(&Text::new(label, (px - th / 2, py - 6 - lift), rot.clone()))?;
    }

    // Legend in the corner with the fewest points.
    let (lylo, lyhi) = if ylog {
        (ylo.log10(), yhi.log10())
    } else {
        (ylo, yhi)
    };
    let norm = |(x, y): (f64, f64)| {
        let ny = if ylog { y.max(ylo).log10() } else { y };
        (
            (x / xlo).ln() / (xhi / xlo).ln(),
            (ny - lylo) / (lyhi - lylo),
        )
    };
    let pts: Vec<(f64, f64)> = obs
        .iter()
        .map(|&i| norm(pt(i)))
        .chain(med_pts.iter().map(|&p| norm(p)))
        .collect();
    chart
        .configure_series_labels()
        .position(emptiest_corner(&pts))
        .margin(12)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(C_GREY)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::PathBuf;

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
}
