//! Corner plots of posterior draws: 1-D histograms with quantiles on the diagonal, 2-D
//! histogram shading below it.

use std::path::Path;

use anyhow::{Result, bail, ensure};
use plotters::coord::Shift;
use plotters::prelude::*;
use popcosmos_api::stats::quantile_sorted;

use super::style::*;

/// Pixel size of [`corner_plot`] images (square, so that panels are square).
pub const CORNER_SIZE: (u32, u32) = (900, 900);

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
