//! ODE solvers over batched states `[n, S]` with **per-row** time and step size.
//!
//! torchdiffeq's dopri5 shares one step size across the batch (its error norm is an RMS over
//! every element), so a walker's log-density in the reference depends on its batch mates.
//! Here each row has its own time, step size and accept/reject decision: a row's result is
//! the same whatever else is in the batch. Times and step sizes are kept in f64 on the host;
//! states stay on the device in the model's dtype. Rows that have reached the end time drop
//! out of the batch (`index_select`), so stragglers cost only their own evaluations.

use candle_core::{DType, Device, Tensor};
use popcosmos_api::{Error, Result};
use serde::{Deserialize, Serialize};

/// dy/dt of a batched ODE.
pub trait VectorField {
    /// dy/dt `[m, S]` at per-row times `t` (length m) for the state `y` `[m, S]`; `rows`
    /// `[m]` (u32) are the rows' indices in the full batch (for per-row constants such as
    /// conditioning inputs), `None` meaning all rows in order.
    fn eval(&self, t: &[f64], y: &Tensor, rows: Option<&Tensor>) -> Result<Tensor>;

    /// Column groups `(start, len)` of the state whose RMS errors are compared separately
    /// (torchdiffeq takes the max over state tensors); default one group.
    fn error_groups(&self, width: usize) -> Vec<(usize, usize)> {
        vec![(0, width)]
    }
}

/// Solver choice (manifest / CLI: `{method: dopri5, atol: 1e-5, rtol: 1e-5}`, `{method: rk4, steps: 100}`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OdeSolver {
    /// Adaptive Dormand–Prince 5(4) with per-row error control.
    Dopri5 {
        /// Absolute error tolerance.
        atol: f64,
        /// Relative error tolerance.
        rtol: f64,
        /// Steps of at most this size are always accepted (torchdiffeq `min_step`).
        #[serde(default)]
        min_step: f64,
        /// Give up (error) after this many steps of any row.
        #[serde(default = "default_max_steps")]
        max_steps: usize,
    },
    /// Classic fixed-step RK4 in torchdiffeq's 3/8-rule form (`rk4`).
    Rk4 {
        /// Number of equal steps over the time interval.
        steps: usize,
    },
    /// Fixed-step Heun (explicit trapezoid, 2nd order).
    Heun {
        /// Number of equal steps over the time interval.
        steps: usize,
    },
    /// Fixed-step Euler (1st order).
    Euler {
        /// Number of equal steps over the time interval.
        steps: usize,
    },
}

fn default_max_steps() -> usize {
    100_000
}

impl Default for OdeSolver {
    /// The reference's choice: dopri5, atol = rtol = 1e−5, min_step 1e−6.
    fn default() -> Self {
        OdeSolver::Dopri5 {
            atol: 1e-5,
            rtol: 1e-5,
            min_step: 1e-6,
            max_steps: default_max_steps(),
        }
    }
}

impl OdeSolver {
    /// dopri5 with atol = rtol = 1e−8 and no minimum step: a converged reference solve (of an
    /// f64 model) for checking the cheaper solvers.
    pub fn tight() -> Self {
        OdeSolver::Dopri5 {
            atol: 1e-8,
            rtol: 1e-8,
            min_step: 0.0,
            max_steps: default_max_steps(),
        }
    }

    /// Check the settings (dopri5: atol > 0, rtol ≥ 0; fixed-step: steps ≥ 1).
    pub fn validate(&self) -> std::result::Result<(), String> {
        match *self {
            OdeSolver::Dopri5 { atol, rtol, .. } if !(atol > 0.0 && rtol >= 0.0) => Err(format!(
                "dopri5 needs atol > 0 and rtol >= 0 (got {atol}, {rtol})"
            )),
            OdeSolver::Rk4 { steps } | OdeSolver::Heun { steps } | OdeSolver::Euler { steps }
                if steps == 0 =>
            {
                Err("fixed-step solvers need steps >= 1".into())
            }
            _ => Ok(()),
        }
    }
}

/// Work done by one solve.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OdeStats {
    /// Row-evaluations of the vector field (sum over rows of each row's evaluation count).
    pub row_evaluations: usize,
    /// Batched calls of the vector field.
    pub calls: usize,
    /// Accepted steps, summed over rows.
    pub accepted: usize,
    /// Rejected steps, summed over rows (0 for fixed-step solvers).
    pub rejected: usize,
}

/// Integrate `y0` `[n, S]` from `t0` to `t1` (either direction).
pub fn integrate(
    field: &dyn VectorField,
    y0: &Tensor,
    t0: f64,
    t1: f64,
    solver: &OdeSolver,
) -> Result<(Tensor, OdeStats)> {
    solver.validate().map_err(Error::Invalid)?;
    match *solver {
        OdeSolver::Dopri5 {
            atol,
            rtol,
            min_step,
            max_steps,
        } => dopri5(field, y0, t0, t1, atol, rtol, min_step, max_steps),
        OdeSolver::Rk4 { steps } | OdeSolver::Heun { steps } | OdeSolver::Euler { steps } => {
            let grid: Vec<f64> = (0..=steps)
                .map(|k| t0 + (t1 - t0) * k as f64 / steps as f64)
                .collect();
            integrate_grid(field, y0, &grid, solver)
        }
    }
}

/// Fixed-step integration over an explicit time grid (e.g. torchdiffeq's float32 grid).
pub fn integrate_grid(
    field: &dyn VectorField,
    y0: &Tensor,
    grid: &[f64],
    solver: &OdeSolver,
) -> Result<(Tensor, OdeStats)> {
    let n = y0.dim(0)?;
    let mut y = y0.clone();
    let mut stats = OdeStats::default();
    let eval = |t: f64, y: &Tensor, stats: &mut OdeStats| {
        stats.calls += 1;
        stats.row_evaluations += n;
        field.eval(&vec![t; n], y, None)
    };
    for w in grid.windows(2) {
        let (t0, t1) = (w[0], w[1]);
        let dt = t1 - t0;
        let incr = match solver {
            OdeSolver::Euler { .. } => (eval(t0, &y, &mut stats)? * dt)?,
            OdeSolver::Heun { .. } => {
                let k1 = eval(t0, &y, &mut stats)?;
                let k2 = eval(t1, &(&y + (&k1 * dt)?)?, &mut stats)?;
                ((k1 + k2)? * (0.5 * dt))?
            }
            OdeSolver::Rk4 { .. } | OdeSolver::Dopri5 { .. } => {
                // torchdiffeq `rk4_alt_step_func` (3/8 rule).
                let k1 = eval(t0, &y, &mut stats)?;
                let k2 = eval(t0 + dt / 3.0, &(&y + (&k1 * (dt / 3.0))?)?, &mut stats)?;
                let k3 = eval(
                    t0 + dt * 2.0 / 3.0,
                    &(&y + ((&k2 - (&k1 / 3.0)?)? * dt)?)?,
                    &mut stats,
                )?;
                let k4 = eval(t1, &(&y + (((&k1 - &k2)? + &k3)? * dt)?)?, &mut stats)?;
                ((k1 + ((k2 + k3)? * 3.0)?)? + k4)?.affine(dt * 0.125, 0.0)?
            }
        };
        y = (y + incr)?;
        stats.accepted += n;
    }
    Ok((y, stats))
}

// Dormand–Prince 5(4) tableau.
const C: [f64; 6] = [1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];
const A: [&[f64]; 6] = [
    &[1.0 / 5.0],
    &[3.0 / 40.0, 9.0 / 40.0],
    &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
    &[
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
    ],
    &[
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
    ],
    &[
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
    ],
];
/// 5th-order weights minus the embedded 4th-order weights (7 stages, FSAL).
const E: [f64; 7] = [
    35.0 / 384.0 - 5179.0 / 57600.0,
    0.0,
    500.0 / 1113.0 - 7571.0 / 16695.0,
    125.0 / 192.0 - 393.0 / 640.0,
    -2187.0 / 6784.0 + 92097.0 / 339200.0,
    11.0 / 84.0 - 187.0 / 2100.0,
    -1.0 / 40.0,
];
const SAFETY: f64 = 0.9;
const IFACTOR: f64 = 10.0;
const DFACTOR: f64 = 0.2;

/// Σ_i k_i · (h ⊙ coef_i) with a per-row step `h` `[m, 1]`.
fn combine(ks: &[Tensor], coefs: &[f64], h: &Tensor) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for (k, &c) in ks.iter().zip(coefs) {
        if c == 0.0 {
            continue;
        }
        let term = (k * c)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    let acc = acc.expect("at least one non-zero coefficient");
    Ok(acc.broadcast_mul(h)?)
}

/// Per-row max over column groups of the RMS of `v` `[m, S]`, on the host.
fn group_rms(v: &Tensor, groups: &[(usize, usize)]) -> Result<Vec<f64>> {
    let mut out: Option<Vec<f64>> = None;
    for &(start, len) in groups {
        let ms = v
            .narrow(1, start, len)?
            .sqr()?
            .mean(1)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        out = Some(match out {
            None => ms.into_iter().map(f64::sqrt).collect(),
            Some(o) => o
                .into_iter()
                .zip(ms)
                .map(|(a, b)| a.max(b.sqrt()))
                .collect(),
        });
    }
    Ok(out.unwrap_or_default())
}

fn column(v: &[f64], dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(v.to_vec(), (v.len(), 1), device)?.to_dtype(dtype)?)
}

#[allow(clippy::too_many_arguments)]
fn dopri5(
    field: &dyn VectorField,
    y0: &Tensor,
    t0: f64,
    t1: f64,
    atol: f64,
    rtol: f64,
    min_step: f64,
    max_steps: usize,
) -> Result<(Tensor, OdeStats)> {
    let n = y0.dim(0)?;
    let width = y0.dim(1)?;
    let (dtype, device) = (y0.dtype(), y0.device().clone());
    let groups = field.error_groups(width);
    let dir = if t1 >= t0 { 1.0 } else { -1.0 };
    let span = (t1 - t0).abs();
    let mut stats = OdeStats::default();
    if n == 0 || span == 0.0 {
        return Ok((y0.clone(), stats));
    }
    let call = |t: &[f64], y: &Tensor, rows: &Tensor, stats: &mut OdeStats| {
        stats.calls += 1;
        stats.row_evaluations += t.len();
        field.eval(t, y, Some(rows))
    };
    let all_rows = Tensor::arange(0u32, n as u32, &device)?;

    // Initial step per row (Hairer, Nørsett & Wanner II.4; torchdiffeq `_select_initial_step`).
    let f0 = call(&vec![t0; n], y0, &all_rows, &mut stats)?;
    let scale = (y0.abs()? * rtol)?.affine(1.0, atol)?;
    let d0 = group_rms(&(y0 / &scale)?, &groups)?;
    let d1 = group_rms(&(&f0 / &scale)?, &groups)?;
    let h0: Vec<f64> = d0
        .iter()
        .zip(&d1)
        .map(|(&a, &b)| {
            if a < 1e-5 || b < 1e-5 {
                1e-6
            } else {
                0.01 * a / b
            }
        })
        .collect();
    let h0_col = column(
        &h0.iter().map(|h| h * dir).collect::<Vec<_>>(),
        dtype,
        &device,
    )?;
    let y1 = (y0 + f0.broadcast_mul(&h0_col)?)?;
    let t_probe: Vec<f64> = h0.iter().map(|h| t0 + dir * h).collect();
    let f1 = call(&t_probe, &y1, &all_rows, &mut stats)?;
    let d2 = group_rms(&((&f1 - &f0)? / &scale)?, &groups)?;
    let mut h: Vec<f64> = (0..n)
        .map(|i| {
            let d2 = d2[i] / h0[i];
            let h1 = if d1[i] <= 1e-15 && d2 <= 1e-15 {
                (1e-6f64).max(h0[i] * 1e-3)
            } else {
                (0.01 / d1[i].max(d2)).powf(1.0 / 5.0)
            };
            (100.0 * h0[i]).min(h1).max(min_step)
        })
        .collect();

    // Per-row state: time elapsed from t0 (≥ 0), FSAL derivative.
    let mut y = y0.clone();
    let mut k1_all = f0;
    let mut elapsed = vec![0.0f64; n];
    let mut steps = vec![0usize; n];
    let mut active: Vec<usize> = (0..n).collect();
    while !active.is_empty() {
        let m = active.len();
        let rows = Tensor::from_vec(
            active.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            m,
            &device,
        )?;
        let full = m == n;
        let pick = |t: &Tensor| -> Result<Tensor> {
            Ok(if full {
                t.clone()
            } else {
                t.index_select(&rows, 0)?
            })
        };
        let ya = pick(&y)?;
        let k1 = pick(&k1_all)?;
        // Clip the last step onto the end point.
        let hs: Vec<f64> = active
            .iter()
            .map(|&i| h[i].min(span - elapsed[i]))
            .collect();
        let ta: Vec<f64> = active.iter().map(|&i| t0 + dir * elapsed[i]).collect();
        let h_col = column(
            &hs.iter().map(|h| h * dir).collect::<Vec<_>>(),
            dtype,
            &device,
        )?;
        let mut ks = vec![k1];
        for stage in 0..6 {
            let ts: Vec<f64> = ta
                .iter()
                .zip(&hs)
                .map(|(&t, &hh)| t + dir * hh * C[stage])
                .collect();
            let y_stage = (&ya + combine(&ks, A[stage], &h_col)?)?;
            ks.push(call(&ts, &y_stage, &rows, &mut stats)?);
        }
        // The 5th-order solution is the 7th stage's input (FSAL): ya + h Σ b_i k_i.
        let y_new = (&ya + combine(&ks[..6], A[5], &h_col)?)?;
        let err = combine(&ks, &E, &h_col)?;
        let tol = (ya.abs()?.maximum(&y_new.abs()?)? * rtol)?.affine(1.0, atol)?;
        let ratio = group_rms(&(err / tol)?, &groups)?;

        let mut accept = vec![0u8; m];
        let mut still = Vec::with_capacity(m);
        for (j, &i) in active.iter().enumerate() {
            let r = ratio[j];
            let ok = r <= 1.0 || hs[j] <= min_step;
            steps[i] += 1;
            if !r.is_finite() && hs[j] <= min_step {
                return Err(Error::Invalid(format!(
                    "dopri5: non-finite error at t = {} (row {i}); the vector field returned NaN/inf",
                    ta[j]
                )));
            }
            if ok {
                accept[j] = 1;
                elapsed[i] += hs[j];
                stats.accepted += 1;
            } else {
                stats.rejected += 1;
            }
            // torchdiffeq `_optimal_step_size`: never shrink after an accepted step.
            let factor = if r == 0.0 {
                IFACTOR
            } else if !r.is_finite() {
                DFACTOR
            } else {
                let dfac = if r < 1.0 { 1.0 } else { DFACTOR };
                (SAFETY / r.powf(1.0 / 5.0)).max(dfac).min(IFACTOR)
            };
            h[i] = (hs[j] * factor).max(min_step);
            let done = ok && span - elapsed[i] <= span * 1e-12;
            if !done {
                if steps[i] >= max_steps {
                    return Err(Error::Invalid(format!(
                        "dopri5: row {i} took more than {max_steps} steps (t = {})",
                        ta[j]
                    )));
                }
                still.push(i);
            }
        }
        let mask = Tensor::from_vec(accept, (m, 1), &device)?.broadcast_as((m, width))?;
        let y_upd = mask.where_cond(&y_new, &ya)?;
        let k_upd = mask.where_cond(&ks[6], &ks[0])?;
        if full {
            y = y_upd;
            k1_all = k_upd;
        } else {
            // Scatter the rows back (a set, not an add, so results are bitwise those of the
            // row alone).
            let idx = rows.unsqueeze(1)?.broadcast_as((m, width))?.contiguous()?;
            y = y.scatter(&idx, &y_upd, 0)?;
            k1_all = k1_all.scatter(&idx, &k_upd, 0)?;
        }
        active = still;
    }
    Ok((y, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dy/dt = λ_i y with a different rate per row: exact solution y0 e^{λ (t1 − t0)}.
    struct Linear(Tensor);
    impl VectorField for Linear {
        fn eval(&self, _t: &[f64], y: &Tensor, rows: Option<&Tensor>) -> Result<Tensor> {
            let lam = match rows {
                Some(r) => self.0.index_select(r, 0)?,
                None => self.0.clone(),
            };
            Ok(y.broadcast_mul(&lam)?)
        }
    }

    fn check(solver: OdeSolver, tol: f64) {
        let dev = Device::Cpu;
        let lam = Tensor::new(&[[-1.0f64], [0.5], [-20.0], [3.0]], &dev).unwrap();
        let y0 = Tensor::new(&[[1.0f64, 2.0], [1.0, -1.0], [0.5, 0.5], [1.0, 1.0]], &dev).unwrap();
        let (y, _) = integrate(&Linear(lam.clone()), &y0, 1.0, 0.2, &solver).unwrap();
        let y = y.to_vec2::<f64>().unwrap();
        let y0 = y0.to_vec2::<f64>().unwrap();
        for (i, l) in [-1.0f64, 0.5, -20.0, 3.0].iter().enumerate() {
            for j in 0..2 {
                let want = y0[i][j] * (l * (0.2 - 1.0)).exp();
                assert!(
                    (y[i][j] - want).abs() <= tol * want.abs().max(1.0),
                    "{solver:?} row {i}: {} vs {want}",
                    y[i][j]
                );
            }
        }
    }

    #[test]
    fn solvers_integrate_linear_odes() {
        check(
            OdeSolver::Dopri5 {
                atol: 1e-10,
                rtol: 1e-10,
                min_step: 0.0,
                max_steps: 100_000,
            },
            1e-8,
        );
        check(OdeSolver::Rk4 { steps: 400 }, 1e-6);
        check(OdeSolver::Heun { steps: 4000 }, 1e-4);
    }

    /// A row's result must not depend on its batch mates (the reference's shared step does).
    #[test]
    fn dopri5_rows_are_independent_of_the_batch() {
        let dev = Device::Cpu;
        let solver = OdeSolver::default();
        let lam_all = Tensor::new(&[[-1.0f64], [-50.0], [4.0]], &dev).unwrap();
        let y_all = Tensor::new(&[[1.0f64], [1.0], [1.0]], &dev).unwrap();
        let (together, stats) = integrate(&Linear(lam_all), &y_all, 0.0, 1.0, &solver).unwrap();
        let lam_one = Tensor::new(&[[-1.0f64]], &dev).unwrap();
        let y_one = Tensor::new(&[[1.0f64]], &dev).unwrap();
        let (alone, stats1) = integrate(&Linear(lam_one), &y_one, 0.0, 1.0, &solver).unwrap();
        let a = together.to_vec2::<f64>().unwrap()[0][0];
        let b = alone.to_vec2::<f64>().unwrap()[0][0];
        assert_eq!(a, b, "row 0 alone vs in a batch");
        assert!(stats.row_evaluations > 3 * stats1.row_evaluations / 2);
    }
}
