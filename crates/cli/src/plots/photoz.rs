//! Photometric vs spectroscopic redshift: the scatter with error bars, the outlier
//! boundaries and the bias / σ_NMAD / outlier-fraction box.

use std::path::Path;

use anyhow::{Result, ensure};
use plotters::coord::Shift;
use plotters::prelude::*;
use popcosmos_api::stats::quantile_sorted;

use super::style::*;

/// Pixel size of [`photoz_plot`] images.
pub const PHOTOZ_SIZE: (u32, u32) = (900, 700);

/// Outlier threshold on |z_phot − z_spec| / (1 + z_spec).
pub const OUTLIER_THRESHOLD: f64 = 0.15;

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
pub(super) fn photoz_stats(z_spec: &[f64], z_phot: &[f64]) -> (usize, f64, f64, f64) {
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
    draw_axes(
        &mut chart,
        "spectroscopic redshift  z_spec",
        "photometric redshift  z_phot  (posterior median, 16–84 %)",
    )?;

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
