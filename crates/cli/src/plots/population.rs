//! Diagnostics of a population fit: observed vs forward-modelled magnitude counts per band,
//! colour–colour and colour–magnitude densities, and the fitted n(z) and log M against the
//! starting population.

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::*;

/// Rows of asinh magnitudes `[galaxies][bands]`, NaN where a band is missing.
pub type MagRows = [Vec<f64>];

/// What [`population_plots`] draws.
pub struct PopulationPlotData<'a> {
    pub labels: &'a [String],
    pub observed: &'a MagRows,
    pub simulated: &'a MagRows,
    /// (z, log10 M_formed) of draws from the fitted and the starting population.
    pub fitted: &'a [(f64, f64)],
    pub initial: &'a [(f64, f64)],
}

/// Write `counts.png`, `colours.png` and `population.png` into `dir`.
pub fn population_plots(dir: &Path, d: &PopulationPlotData) -> Result<()> {
    let nb = d.labels.len();
    let cols = (nb as f64).sqrt().ceil() as usize;
    let rows = nb.div_ceil(cols);
    render_png(
        &dir.join("counts.png"),
        (320 * cols as u32, 260 * rows as u32),
        |root| {
            let root = titled(
                root,
                "magnitude counts: observed (blue) vs forward-modelled (orange)",
            )?;
            for (b, area) in root.split_evenly((rows, cols)).iter().enumerate().take(nb) {
                let o: Vec<f64> = d.observed.iter().map(|r| r[b]).collect();
                let s: Vec<f64> = d.simulated.iter().map(|r| r[b]).collect();
                histograms(
                    area,
                    &format!("{} [asinh mag]", d.labels[b]),
                    &[(&o, C_BLUE), (&s, C_ORANGE)],
                )?;
            }
            Ok(())
        },
    )?;
    // Two colour–colour planes and one colour–magnitude plane from bands spread over the
    // wavelength range.
    let q = |f: f64| ((nb - 1) as f64 * f).round() as usize;
    let (b0, b1, b2, b3) = (q(0.0), q(0.33), q(0.66), q(1.0));
    let colour = |r: &Vec<f64>, i: usize, j: usize| r[i] - r[j];
    let planes: [(String, String, Box<dyn Fn(&Vec<f64>) -> (f64, f64)>); 3] = [
        (
            format!("{}-{}", d.labels[b0], d.labels[b1]),
            format!("{}-{}", d.labels[b1], d.labels[b2]),
            Box::new(move |r| (colour(r, b0, b1), colour(r, b1, b2))),
        ),
        (
            format!("{}-{}", d.labels[b1], d.labels[b2]),
            format!("{}-{}", d.labels[b2], d.labels[b3]),
            Box::new(move |r| (colour(r, b1, b2), colour(r, b2, b3))),
        ),
        (
            d.labels[b2].clone(),
            format!("{}-{}", d.labels[b1], d.labels[b2]),
            Box::new(move |r| (r[b2], colour(r, b1, b2))),
        ),
    ];
    render_png(&dir.join("colours.png"), (760, 1050), |root| {
        let root = titled(root, "density: observed (left) vs forward-modelled (right)")?;
        let areas = root.split_evenly((3, 2));
        for (p, (xl, yl, f)) in planes.iter().enumerate() {
            let o: Vec<(f64, f64)> = d.observed.iter().map(f).collect();
            let s: Vec<(f64, f64)> = d.simulated.iter().map(f).collect();
            let range = |k: usize| {
                let mut v: Vec<f64> = o
                    .iter()
                    .map(|p| if k == 0 { p.0 } else { p.1 })
                    .filter(|x| x.is_finite())
                    .collect();
                v.sort_by(f64::total_cmp);
                let lo = popcosmos_api::stats::quantile_sorted(&v, 0.01);
                let hi = popcosmos_api::stats::quantile_sorted(&v, 0.99);
                pad_range(lo, hi, 0.05)
            };
            let (xr, yr) = (range(0), range(1));
            density(&areas[2 * p], xl, yl, &o, xr, yr)?;
            density(&areas[2 * p + 1], xl, yl, &s, xr, yr)?;
        }
        Ok(())
    })?;
    render_png(&dir.join("population.png"), (900, 380), |root| {
        let root = titled(root, "population: fitted (orange) vs start (grey)")?;
        let areas = root.split_evenly((1, 2));
        let get = |v: &[(f64, f64)], k: usize| -> Vec<f64> {
            v.iter().map(|p| if k == 0 { p.0 } else { p.1 }).collect()
        };
        histograms(
            &areas[0],
            "redshift n(z)",
            &[(&get(d.initial, 0), C_GREY), (&get(d.fitted, 0), C_ORANGE)],
        )?;
        histograms(
            &areas[1],
            "log10 M_formed",
            &[(&get(d.initial, 1), C_GREY), (&get(d.fitted, 1), C_ORANGE)],
        )?;
        Ok(())
    })
}

/// Normalised step histograms of several samples on a common range (1–99 % of the first).
fn histograms<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    xlabel: &str,
    samples: &[(&Vec<f64>, RGBColor)],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let first = sorted_finite(samples[0].0);
    if first.len() < 2 {
        return Ok(());
    }
    let lo = popcosmos_api::stats::quantile_sorted(&first, 0.005);
    let hi = popcosmos_api::stats::quantile_sorted(&first, 0.995);
    let (lo, hi) = pad_range(lo, hi, 0.05);
    let nbins = 40;
    let w = (hi - lo) / nbins as f64;
    let hists: Vec<Vec<f64>> = samples
        .iter()
        .map(|(v, _)| {
            let mut h = vec![0.0; nbins];
            let fin: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
            for x in &fin {
                let k = ((x - lo) / w).floor();
                if k >= 0.0 && (k as usize) < nbins {
                    h[k as usize] += 1.0 / (fin.len() as f64 * w);
                }
            }
            h
        })
        .collect();
    let ymax = hists
        .iter()
        .flatten()
        .cloned()
        .fold(0.0, f64::max)
        .max(1e-12)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(40)
        .build_cartesian_2d(lo..hi, 0.0..ymax)?;
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| fmt_tick(*v))
        .label_style((FONT, 12))
        .light_line_style(C_GRID_LIGHT)
        .bold_line_style(C_GRID_BOLD)
        .draw()?;
    for (h, (_, c)) in hists.iter().zip(samples) {
        let pts: Vec<(f64, f64)> = h
            .iter()
            .enumerate()
            .flat_map(|(i, y)| [(lo + i as f64 * w, *y), (lo + (i + 1) as f64 * w, *y)])
            .collect();
        chart.draw_series(LineSeries::new(pts, c.stroke_width(2)))?;
    }
    Ok(())
}

/// A 2-D histogram as shaded cells (darker = denser, normalised to the densest cell).
fn density<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    xlabel: &str,
    ylabel: &str,
    points: &[(f64, f64)],
    xr: (f64, f64),
    yr: (f64, f64),
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let n = 40;
    let (dx, dy) = ((xr.1 - xr.0) / n as f64, (yr.1 - yr.0) / n as f64);
    let mut h = vec![0.0f64; n * n];
    for (x, y) in points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()) {
        let (i, j) = (((x - xr.0) / dx).floor(), ((y - yr.0) / dy).floor());
        if i >= 0.0 && j >= 0.0 && (i as usize) < n && (j as usize) < n {
            h[j as usize * n + i as usize] += 1.0;
        }
    }
    let max = h.iter().cloned().fold(0.0, f64::max).max(1.0);
    let mut chart = ChartBuilder::on(area)
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(40)
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)?;
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc(ylabel)
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| fmt_tick(*v))
        .label_style((FONT, 12))
        .disable_mesh()
        .draw()?;
    chart.draw_series((0..n * n).filter(|k| h[*k] > 0.0).map(|k| {
        let (i, j) = (k % n, k / n);
        let t = (h[k] / max).sqrt();
        let shade = (255.0 * (1.0 - t)) as u8;
        let x0 = xr.0 + i as f64 * dx;
        let y0 = yr.0 + j as f64 * dy;
        Rectangle::new(
            [(x0, y0), (x0 + dx, y0 + dy)],
            RGBColor(shade, shade, 255u8.saturating_sub((80.0 * t) as u8)).filled(),
        )
    }))?;
    Ok(())
}
