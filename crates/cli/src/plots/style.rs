//! What every plot shares: the embedded font, the colours, PNG output, tick formatting and
//! range helpers, the title bar and legend placement.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, ensure};
use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

pub(super) const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../../../assets/fonts/DejaVuSans.ttf");

pub(super) const C_BLUE: RGBColor = RGBColor(31, 119, 180);
pub(super) const C_DARK_BLUE: RGBColor = RGBColor(8, 48, 107);
pub(super) const C_ORANGE: RGBColor = RGBColor(230, 110, 0);
pub(super) const C_RED: RGBColor = RGBColor(214, 39, 40);
pub(super) const C_GREY: RGBColor = RGBColor(120, 120, 120);
pub(super) const C_GRID_LIGHT: RGBColor = RGBColor(242, 242, 242);
pub(super) const C_GRID_BOLD: RGBColor = RGBColor(222, 222, 222);

/// Registers the embedded font as `"sans-serif"` (once per process).
pub(super) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    ensure!(
        ok,
        "embedded font assets/fonts/DejaVuSans.ttf could not be parsed"
    );
    Ok(())
}

/// Creates the bitmap backend for `path`, runs `draw` and writes the file.
pub(super) fn render_png<F>(path: &Path, size: (u32, u32), draw: F) -> Result<()>
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
pub(super) fn fmt_tick(v: f64) -> String {
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
pub(super) fn fmt_with_scale(v: f64, scale: f64) -> String {
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

pub(super) fn finite_min_max<I: IntoIterator<Item = f64>>(it: I) -> Option<(f64, f64)> {
    it.into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Pads `[lo, hi]` by `frac` of its span; degenerate ranges get a fixed width.
pub(super) fn pad_range(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    let span = hi - lo;
    if span > 1e-12 * (lo.abs() + hi.abs()).max(1e-300) {
        (lo - frac * span, hi + frac * span)
    } else {
        let d = if lo.abs() > 0.0 { 0.1 * lo.abs() } else { 0.5 };
        (lo - d, hi + d)
    }
}

pub(super) fn sorted_finite(v: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

/// Draws the title (if any) and returns the area below it.
pub(super) fn titled<DB: DrawingBackend>(
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

/// The axes of a full-size plot: described, labelled with [`fmt_tick`], on a light grid.
pub(super) fn draw_axes<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    x_desc: &str,
    y_desc: &str,
) -> Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style((FONT, 19))
        .label_style((FONT, 15))
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| fmt_tick(*v))
        .max_light_lines(3)
        .light_line_style(C_GRID_LIGHT)
        .bold_line_style(C_GRID_BOLD)
        .draw()?;
    Ok(())
}

/// Picks the plot corner (normalised coordinates in [0, 1]², y up) with the
/// fewest data points, for placing a legend.
pub(super) fn emptiest_corner(points: &[(f64, f64)]) -> SeriesLabelPosition {
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
