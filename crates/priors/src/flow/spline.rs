//! Monotonic rational-quadratic splines (Durkan et al. 2019, "Neural Spline Flows") with
//! linear (identity) tails, as batched candle ops that autograd can differentiate.
//!
//! On [−B, B] the map is a monotonic rational-quadratic spline through K + 1 knots
//! (x⁽ᵏ⁾, y⁽ᵏ⁾) with positive derivatives δ⁽ᵏ⁾ at the knots; the end knots are (±B, ±B) with
//! derivative 1, so outside [−B, B] the map continues as the identity (a linear tail with
//! slope 1, log|det| = 0) and the whole map is C¹ on ℝ.
//!
//! Unconstrained parameters per transformed scalar (3K − 1, in this order):
//! `[K bin widths | K bin heights | K − 1 interior derivatives]`. Widths and heights go
//! through a softmax, are floored at `min_bin_width` / `min_bin_height` and scaled to 2B;
//! derivatives are `min_derivative + softplus(u + c₀)` with c₀ chosen so that u = 0 gives
//! derivative 1. All-zero parameters are therefore exactly the identity map.

use candle_core::{D, DType, Tensor};
use popcosmos_api::{Error, Result};
use serde::{Deserialize, Serialize};

/// Shape of the splines of a flow (stored in the flow's config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplineConfig {
    /// Number K of bins.
    pub bins: usize,
    /// Half-width B of the spline interval [−B, B] (identity outside).
    pub tail_bound: f64,
    /// Smallest bin width, as a fraction of the interval 2B (default 1e−3).
    #[serde(default = "default_min")]
    pub min_bin_width: f64,
    /// Smallest bin height, as a fraction of the interval 2B (default 1e−3).
    #[serde(default = "default_min")]
    pub min_bin_height: f64,
    /// Smallest knot derivative (default 1e−3).
    #[serde(default = "default_min")]
    pub min_derivative: f64,
}

fn default_min() -> f64 {
    1e-3
}

impl Default for SplineConfig {
    fn default() -> Self {
        Self {
            bins: 8,
            tail_bound: 5.0,
            min_bin_width: default_min(),
            min_bin_height: default_min(),
            min_derivative: default_min(),
        }
    }
}

impl SplineConfig {
    /// Number of unconstrained parameters per transformed scalar (3K − 1).
    pub fn n_params(&self) -> usize {
        3 * self.bins - 1
    }

    /// Check the settings (names the offending key).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let k = self.bins as f64;
        if !(2..=255).contains(&self.bins) {
            return Err(format!(
                "spline.bins must be in 2..=255 (got {})",
                self.bins
            ));
        }
        if !(self.tail_bound.is_finite() && self.tail_bound > 0.0) {
            return Err(format!(
                "spline.tail_bound must be > 0 (got {})",
                self.tail_bound
            ));
        }
        for (key, v) in [
            ("min_bin_width", self.min_bin_width),
            ("min_bin_height", self.min_bin_height),
        ] {
            if !(v >= 0.0 && v * k < 1.0) {
                return Err(format!("spline.{key} must be in [0, 1/bins) (got {v})"));
            }
        }
        if !(self.min_derivative >= 0.0 && self.min_derivative < 1.0) {
            return Err(format!(
                "spline.min_derivative must be in [0, 1) (got {})",
                self.min_derivative
            ));
        }
        Ok(())
    }

    /// c₀ = softplus⁻¹(1 − min_derivative): zero parameters give derivative 1.
    fn derivative_offset(&self) -> f64 {
        (1.0 - self.min_derivative).exp_m1().ln()
    }
}

/// softplus(x) = max(x, 0) + ln(1 + e^{−|x|}) (stable, differentiable).
fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

/// Knot positions `[n, m, K + 1]` (first −B, last exactly B) and bin sizes `[n, m, K]` from
/// unnormalised sizes `[n, m, K]`.
fn knots(u: &Tensor, min_size: f64, bound: f64) -> Result<(Tensor, Tensor)> {
    let (n, m, k) = u.dims3()?;
    let p = candle_nn::ops::softmax(u, D::Minus1)?;
    let p = p.affine(1.0 - min_size * k as f64, min_size)?;
    let cum = p.cumsum(D::Minus1)?.affine(2.0 * bound, -bound)?;
    let lo = Tensor::full(-bound, (n, m, 1), u.device())?.to_dtype(u.dtype())?;
    let hi = Tensor::full(bound, (n, m, 1), u.device())?.to_dtype(u.dtype())?;
    let pos = Tensor::cat(&[lo, cum.narrow(2, 0, k - 1)?, hi], 2)?;
    let size = (pos.narrow(2, 1, k)? - pos.narrow(2, 0, k)?)?;
    Ok((pos, size))
}

/// Bin indices `[n, m, 1]` (u32) of `v` `[n, m]` among the interior knots of `pos`
/// `[n, m, K+1]`, and the indices of the bins' right ends (index + 1).
fn bin_index(v: &Tensor, pos: &Tensor) -> Result<(Tensor, Tensor)> {
    let k = pos.dim(2)? - 1;
    let interior = pos.narrow(2, 1, k - 1)?.detach();
    let count = v
        .detach()
        .unsqueeze(2)?
        .broadcast_ge(&interior)?
        .to_dtype(DType::F32)?
        .sum_keepdim(2)?;
    Ok((
        count.to_dtype(DType::U32)?,
        (count + 1.0)?.to_dtype(DType::U32)?,
    ))
}

/// Apply the spline (or its inverse) elementwise.
///
/// `x` `[n, m]`, `params` `[n, m, 3K − 1]` (same dtype). Returns `(y, ln|dy/dx|)`, both
/// `[n, m]`; with `inverse = true` the map is the inverse spline and the log-derivative is
/// that of the inverse (minus the forward one at the result).
pub fn rq_spline(
    x: &Tensor,
    params: &Tensor,
    cfg: &SplineConfig,
    inverse: bool,
) -> Result<(Tensor, Tensor)> {
    let (n, m) = x.dims2()?;
    let (pn, pm, pk) = params.dims3()?;
    let k = cfg.bins;
    if (pn, pm, pk) != (n, m, cfg.n_params()) {
        return Err(Error::shape(
            format!("rq_spline: params for input {:?} with {k} bins", x.dims()),
            format!("[{n}, {m}, {}]", cfg.n_params()),
            params.dims(),
        ));
    }
    let bound = cfg.tail_bound;
    let dtype = x.dtype();
    let (xpos, w) = knots(&params.narrow(2, 0, k)?, cfg.min_bin_width, bound)?;
    let (ypos, h) = knots(&params.narrow(2, k, k)?, cfg.min_bin_height, bound)?;
    let ud = params.narrow(2, 2 * k, k - 1)?;
    let interior = (softplus(&(ud + cfg.derivative_offset())?)? + cfg.min_derivative)?;
    let one = Tensor::ones((n, m, 1), dtype, x.device())?;
    let deriv = Tensor::cat(&[one.clone(), interior, one], 2)?;

    let inside = x.ge(-bound)?.mul(&x.le(bound)?)?;
    let xc = x.clamp(-bound, bound)?;
    let (idx, idx1) = bin_index(&xc, if inverse { &ypos } else { &xpos })?;
    let pick = |t: &Tensor, i: &Tensor| -> Result<Tensor> { Ok(t.gather(i, 2)?.squeeze(2)?) };
    let x_k = pick(&xpos, &idx)?;
    let w_k = pick(&w, &idx)?;
    let y_k = pick(&ypos, &idx)?;
    let h_k = pick(&h, &idx)?;
    let d_k = pick(&deriv, &idx)?;
    let d_k1 = pick(&deriv, &idx1)?;
    let s = (&h_k / &w_k)?;
    // d_k + d_{k+1} − 2s appears in both directions.
    let curv = ((&d_k + &d_k1)? - (&s * 2.0)?)?;

    let (out, xi) = if inverse {
        // Solve a ξ² + b ξ + c = 0 for ξ ∈ [0, 1] with the stable root 2c / (−b − √disc).
        let dy = (&xc - &y_k)?;
        let a = ((&h_k * (&s - &d_k)?)? + (&dy * &curv)?)?;
        let b = ((&h_k * &d_k)? - (&dy * &curv)?)?;
        let c = (&s * &dy)?.neg()?;
        let disc = (b.sqr()? - (a * 4.0)?.mul(&c)?)?.relu()?;
        let xi = ((c * 2.0)? / (b.neg()? - disc.sqrt()?)?)?;
        let xi = xi.clamp(0.0, 1.0)?;
        ((&xi * &w_k)?.add(&x_k)?, xi)
    } else {
        let xi = ((&xc - &x_k)? / &w_k)?.clamp(0.0, 1.0)?;
        let xi1 = (&xi * (1.0 - &xi)?)?;
        let num = (&h_k * ((&s * xi.sqr()?)? + (&d_k * &xi1)?)?)?;
        let den = (&s + (&curv * &xi1)?)?;
        ((num / den)?.add(&y_k)?, xi)
    };
    // ln dy/dx = 2 ln s + ln(d_{k+1} ξ² + 2 s ξ(1−ξ) + d_k (1−ξ)²) − 2 ln(s + curv ξ(1−ξ)).
    let xi1 = (&xi * (1.0 - &xi)?)?;
    let omx = (1.0 - &xi)?;
    let dnum = ((&d_k1 * xi.sqr()?)? + ((&s * 2.0)? * &xi1)? + (&d_k * omx.sqr()?)?)?;
    let den = (&s + (&curv * &xi1)?)?;
    let logdet = (((s.log()? * 2.0)? + dnum.log()?)? - (den.log()? * 2.0)?)?;
    let logdet = if inverse { logdet.neg()? } else { logdet };
    let y = inside.where_cond(&out, x)?;
    let logdet = inside.where_cond(&logdet, &logdet.zeros_like()?)?;
    Ok((y, logdet))
}
