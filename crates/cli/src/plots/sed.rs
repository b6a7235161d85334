//! Observed photometry against the model SED, per band on a wavelength axis.

use std::path::Path;

use anyhow::{Result, bail, ensure};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use super::style::*;

/// Pixel size of [`sed_plot`] images.
pub const SED_SIZE: (u32, u32) = (900, 700);

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
    let y_desc = if ylog {
        "flux density  F_ν [µJy]  (log scale)"
    } else {
        "flux density  F_ν [µJy]"
    };
    draw_axes(&mut chart, "observed-frame wavelength  λ [µm]", y_desc)?;

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
