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

mod corner;
mod photoz;
mod population;
mod sed;
mod style;

pub use corner::corner_plot;
pub use photoz::photoz_plot;
pub use population::{PopulationPlotData, population_plots};
pub use sed::sed_plot;

#[cfg(test)]
mod tests;
