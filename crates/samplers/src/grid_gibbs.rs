//! Griddy Gibbs along one coordinate of a chart (Ritter & Tanner 1992), made exact by a
//! Metropolis–Hastings test.
//!
//! Why: photometric redshift posteriors are multimodal in z, and the modes sit on thin
//! curved ridges of the other coordinates that local ensemble moves cross only after
//! hundreds of sweeps. For fixed values of everything else, though, the conditional p(z | ·)
//! is one-dimensional and cheap to tabulate: EAZY and BPZ evaluate every template on a z
//! grid for this reason. This kernel does the same per particle:
//! 1. map the position x to a chart χ (for galaxies: the latent φ, where moving z at fixed
//!    normalisation N keeps the apparent brightness);
//! 2. evaluate the tempered chart density ℓ_k = ln p(χ_k) + β ln L(χ_k) with the axis
//!    coordinate set to each grid value g_k, the others held;
//! 3. propose the axis value from the piecewise-exponential density q that interpolates ℓ
//!    linearly between grid points (sampled exactly by inverting its CDF);
//! 4. accept with the independence-sampler ratio π(χ′) q(χ) / (π(χ) q(χ′)), so the kernel
//!    leaves the chart target, hence the target itself, exactly invariant however coarse the
//!    grid. A current value outside the grid has q = 0 and is never left by this move.
//!
//! The cost is K + 1 target passes per update for a K-point grid, in chunks of
//! [`GridChart::grid_chunk`] grid points to bound memory.

use popcosmos_api::{DType, Device, Result, Tensor};
use rayon::prelude::*;

/// A chart of the target's coordinates with one axis to update on a grid.
pub trait GridChart: Sync {
    /// Chart positions χ of target positions x `[n, a, d]`, and ln|∂χ/∂x| `[n, a]`, so that
    /// ln p_x = ln p_χ + ln|∂χ/∂x|.
    fn to_chart(&self, x: &Tensor) -> Result<(Tensor, Tensor)>;
    /// Target positions of chart positions `[n, a, d]`.
    fn from_chart(&self, chi: &Tensor) -> Result<Tensor>;
    /// (ln p, ln L) with ln p a density in χ, for columns `galaxies` (as
    /// [`crate::TemperedTarget::log_prior_and_like`]).
    fn log_prior_and_like(&self, chi: &Tensor, galaxies: &Tensor) -> Result<(Tensor, Tensor)>;
    /// The chart coordinate the kernel updates.
    fn axis(&self) -> usize;
    /// Increasing grid of axis values (at least 2).
    fn grid(&self) -> &[f64];
    /// Grid points evaluated in one batched call.
    fn grid_chunk(&self) -> usize {
        4
    }
}

/// The density ∝ exp(ℓ̃(x)) on [g_0, g_{K−1}], ℓ̃ linear between grid points; segments with a
/// non-finite end carry no mass.
#[derive(Debug, Clone)]
pub struct PiecewiseExponential {
    grid: Vec<f64>,
    values: Vec<f64>,
    /// Cumulative normalised segment masses, `K − 1` entries ending at 1.
    cumulative: Vec<f64>,
    /// ln of the normaliser ∫ exp(ℓ̃).
    log_norm: f64,
}

/// ∫_0^1 e^{s t} dt, stable near s = 0.
fn mean_exp(s: f64) -> f64 {
    if s.abs() < 1e-8 {
        1.0 + 0.5 * s
    } else {
        s.exp_m1() / s
    }
}

impl PiecewiseExponential {
    /// `None` when no segment has finite ends.
    pub fn new(grid: &[f64], values: &[f64]) -> Option<Self> {
        let max = crate::finite_max(values)?;
        let mut cumulative = Vec::with_capacity(grid.len() - 1);
        let mut total = 0.0;
        for j in 0..grid.len() - 1 {
            let (a, b) = (values[j], values[j + 1]);
            if a.is_finite() && b.is_finite() {
                total += (grid[j + 1] - grid[j]) * (a - max).exp() * mean_exp(b - a);
            }
            cumulative.push(total);
        }
        if total <= 0.0 {
            return None;
        }
        cumulative.iter_mut().for_each(|c| *c /= total);
        Some(Self {
            grid: grid.to_vec(),
            values: values.to_vec(),
            cumulative,
            log_norm: max + total.ln(),
        })
    }

    /// ln q(x) (−∞ outside the grid or in a massless segment).
    pub fn log_density(&self, x: f64) -> f64 {
        let g = &self.grid;
        if !(x >= g[0] && x <= g[g.len() - 1]) {
            return f64::NEG_INFINITY;
        }
        let j = g.partition_point(|&v| v <= x).clamp(1, g.len() - 1) - 1;
        let (a, b) = (self.values[j], self.values[j + 1]);
        if !(a.is_finite() && b.is_finite()) {
            return f64::NEG_INFINITY;
        }
        let t = (x - g[j]) / (g[j + 1] - g[j]);
        a + (b - a) * t - self.log_norm
    }

    /// An exact draw from two uniforms in [0, 1).
    pub fn sample(&self, u_segment: f64, u_within: f64) -> f64 {
        let j = self
            .cumulative
            .partition_point(|&c| c <= u_segment)
            .min(self.cumulative.len() - 1);
        let s = self.values[j + 1] - self.values[j];
        // Inverse CDF of e^{s t} on [0, 1].
        let t = if s.abs() < 1e-8 {
            u_within
        } else {
            (u_within * s.exp_m1()).ln_1p() / s
        };
        let (lo, hi) = (self.grid[j], self.grid[j + 1]);
        (lo + t.clamp(0.0, 1.0) * (hi - lo)).clamp(lo, hi)
    }
}

/// Positions `[n, a, d]` with their cached log-prior and log-likelihood `[n, a]` (log-prior
/// in the target's coordinates x).
pub struct GridState {
    /// Positions `[n, a, d]`.
    pub position: Tensor,
    /// ln p of each position in the target's coordinates `[n, a]`.
    pub log_prior: Tensor,
    /// ln L of each position `[n, a]`.
    pub log_like: Tensor,
}

/// `t` `[n, a, d]` as host rows, per (particle, column), of coordinate `axis`.
fn axis_values(t: &Tensor, axis: usize) -> Result<Vec<f64>> {
    Ok(t.narrow(2, axis, 1)?
        .to_dtype(DType::F64)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

/// `chi` moved along the ridge to axis values `values` `[n, a]` (host, row-major): the axis
/// coordinate set to its value, every other coordinate j shifted by slope_j × the axis change
/// (`slopes` `[a, d]`, the axis' own entry unused).
fn sheared(
    chi_host: &[f64],
    dims: (usize, usize, usize),
    axis: usize,
    slopes: &[f64],
    values: &[f64],
) -> Vec<f32> {
    let (n, a, d) = dims;
    let mut out = Vec::with_capacity(n * a * d);
    for i in 0..n {
        for col in 0..a {
            let row = &chi_host[(i * a + col) * d..(i * a + col + 1) * d];
            let shift = values[i * a + col] - row[axis];
            let slope = &slopes[col * d..(col + 1) * d];
            for j in 0..d {
                out.push(if j == axis {
                    values[i * a + col] as f32
                } else {
                    (row[j] + slope[j] * shift) as f32
                });
            }
        }
    }
    out
}

/// Per column, the least-squares slopes of every coordinate on the axis coordinate across
/// particles `chi` `[m, a, d]` (`[a, d]`, row-major; 0 for the axis and for a column whose
/// axis does not vary). In a chart sheared by these slopes a Gaussian posterior's axis is
/// independent of the other coordinates, so its conditional is its marginal.
pub fn ridge_slopes(chi: &Tensor, axis: usize) -> Result<Vec<f64>> {
    let (m, a, d) = chi.dims3()?;
    let v = host(chi)?;
    let mut slopes = vec![0.0; a * d];
    for col in 0..a {
        let at = |i: usize, j: usize| v[(i * a + col) * d + j];
        let mean = |j: usize| (0..m).map(|i| at(i, j)).sum::<f64>() / m as f64;
        let mz = mean(axis);
        let var = (0..m).map(|i| (at(i, axis) - mz).powi(2)).sum::<f64>();
        if !(var > 0.0) {
            continue;
        }
        for j in (0..d).filter(|&j| j != axis) {
            let mj = mean(j);
            let cov = (0..m)
                .map(|i| (at(i, axis) - mz) * (at(i, j) - mj))
                .sum::<f64>();
            slopes[col * d + j] = cov / var;
        }
    }
    Ok(slopes)
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

/// One griddy-Gibbs update of every particle of every column at inverse temperatures `beta`
/// (one per column), along the ridge given by `slopes` ([`ridge_slopes`], fitted to *other*
/// particles so that each particle's kernel does not depend on itself; all zeros: plain
/// Gibbs on the axis). `target` evaluates (ln p_x, ln L) at target positions. Returns the
/// new state and the acceptance `[n, a]` (f32 0/1).
pub fn grid_gibbs_update(
    chart: &dyn GridChart,
    target: &dyn Fn(&Tensor) -> Result<(Tensor, Tensor)>,
    state: &GridState,
    galaxies: &Tensor,
    beta: &[f64],
    slopes: &[f64],
    uniforms: &mut dyn FnMut(usize) -> Vec<f64>,
) -> Result<(GridState, Tensor)> {
    let (n, a, d) = state.position.dims3()?;
    let axis = chart.axis();
    let grid = chart.grid();
    let k = grid.len();
    let (chi, log_j) = chart.to_chart(&state.position)?;
    let dev = chi.device().clone();
    let chi_host = host(&chi)?;
    let current: Vec<f64> = (0..n * a).map(|c| chi_host[c * d + axis]).collect();
    let at_values = |values: &[f64]| -> Result<Tensor> {
        Ok(Tensor::from_vec(
            sheared(&chi_host, (n, a, d), axis, slopes, values),
            (n, a, d),
            &popcosmos_api::Device::Cpu,
        )?
        .to_device(&dev)?
        .to_dtype(chi.dtype())?)
    };

    // ℓ_k for every (particle, column), grid-major on the host.
    let mut ell = vec![0.0f64; k * n * a];
    let chunk = chart.grid_chunk().max(1);
    for start in (0..k).step_by(chunk) {
        let c = chunk.min(k - start);
        let copies = (0..c)
            .map(|j| at_values(&vec![grid[start + j]; n * a]))
            .collect::<Result<Vec<_>>>()?;
        let batch = Tensor::cat(&copies, 0)?; // [c n, a, d]
        let (lp, ll) = chart.log_prior_and_like(&batch, galaxies)?;
        let (lp, ll) = (host(&lp)?, host(&ll)?);
        for (idx, out) in ell[start * n * a..(start + c) * n * a]
            .iter_mut()
            .enumerate()
        {
            let col = idx % a;
            let v = lp[idx] + beta[col] * ll[idx];
            *out = if v.is_nan() { f64::NEG_INFINITY } else { v };
        }
    }

    // Proposals on the host, one independent density per (particle, column).
    let u = uniforms(2 * n * a);
    let proposals: Vec<(Option<PiecewiseExponential>, f64)> = (0..n * a)
        .into_par_iter()
        .map(|cell| {
            let values: Vec<f64> = (0..k).map(|j| ell[j * n * a + cell]).collect();
            match PiecewiseExponential::new(grid, &values) {
                Some(q) => {
                    let x = q.sample(u[2 * cell], u[2 * cell + 1]);
                    (Some(q), x)
                }
                None => (None, current[cell]),
            }
        })
        .collect();
    let proposed_axis: Vec<f64> = proposals.iter().map(|p| p.1).collect();
    let proposed = chart.from_chart(&at_values(&proposed_axis)?)?;
    let (lp_new, ll_new) = target(&proposed)?;
    let (chi_new, log_j_new) = chart.to_chart(&proposed)?;
    // The axis value actually reached (the chart round trip rounds it).
    let reached = axis_values(&chi_new, axis)?;

    let (lp0, ll0, lj0) = (
        host(&state.log_prior)?,
        host(&state.log_like)?,
        host(&log_j)?,
    );
    let (lp1, ll1, lj1) = (host(&lp_new)?, host(&ll_new)?, host(&log_j_new)?);
    let accept_u = uniforms(n * a);
    let accept: Vec<f32> = (0..n * a)
        .into_par_iter()
        .map(|cell| {
            let Some(q) = &proposals[cell].0 else {
                return 0.0;
            };
            let b = beta[cell % a];
            let new = lp1[cell] - lj1[cell] + b * ll1[cell];
            let old = lp0[cell] - lj0[cell] + b * ll0[cell];
            let log_ratio = new - old + q.log_density(current[cell]) - q.log_density(reached[cell]);
            let ok = new.is_finite() && !log_ratio.is_nan() && accept_u[cell].ln() < log_ratio;
            if ok { 1.0 } else { 0.0 }
        })
        .collect();
    let accept = Tensor::from_vec(accept, (n, a), &Device::Cpu)?.to_device(&dev)?;
    let mask = accept.gt(0.5)?;
    let mask3 = mask.unsqueeze(2)?.broadcast_as((n, a, d))?;
    let lp_new = crate::sanitize_log_prob(&lp_new)?;
    let ll_new = crate::sanitize_log_prob(&ll_new)?;
    Ok((
        GridState {
            position: mask3.where_cond(&proposed, &state.position)?,
            log_prior: mask.where_cond(&lp_new, &state.log_prior)?,
            log_like: mask.where_cond(&ll_new, &state.log_like)?,
        },
        accept,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piecewise_exponential_normalises_and_samples_its_density() {
        let grid = [0.0, 0.5, 1.5, 2.0, 3.0];
        let values = [0.0, 2.0, -1.0, f64::NEG_INFINITY, 1.0];
        let q = PiecewiseExponential::new(&grid, &values).unwrap();
        // ∫ q = 1 by the trapezoid rule on a fine grid.
        let m = 300_000;
        let integral: f64 = (0..m)
            .map(|i| {
                let x = 3.0 * (i as f64 + 0.5) / m as f64;
                q.log_density(x).exp() * 3.0 / m as f64
            })
            .sum();
        assert!((integral - 1.0).abs() < 1e-4, "{integral}");
        // The massless segments [1.5, 3] are never drawn; the mean matches ∫ x q.
        let mean_exact: f64 = (0..m)
            .map(|i| {
                let x = 3.0 * (i as f64 + 0.5) / m as f64;
                x * q.log_density(x).exp() * 3.0 / m as f64
            })
            .sum();
        let draws = 200_000;
        let mut sum = 0.0;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..draws {
            let x = q.sample(next(), next());
            assert!(x <= 1.5);
            sum += x;
        }
        let mean = sum / draws as f64;
        // Standard error of the mean < 0.5 / √draws ≈ 0.0011.
        assert!((mean - mean_exact).abs() < 0.005, "{mean} vs {mean_exact}");
        assert_eq!(q.log_density(-0.1), f64::NEG_INFINITY);
        assert_eq!(q.log_density(2.5), f64::NEG_INFINITY);
        assert!(PiecewiseExponential::new(&grid, &[f64::NEG_INFINITY; 5]).is_none());
    }
}
