//! Optional Adam refinement of start points on −ln P(φ) (the reference refines its
//! maximum-likelihood start with 200 Adam steps at lr 1e−3).

use popcosmos_api::{LogDensity, RandomSource, Result, Shape, Tensor};

/// Refine the best walker of every galaxy with `steps` Adam steps on −ln P, then restart all
/// walkers around it with `jitter`·𝒩(0, I) (falling back to their old position where the
/// jittered point has no finite density).
pub fn refine_walkers(
    target: &dyn LogDensity,
    walkers: &Tensor,
    steps: usize,
    learning_rate: f64,
    jitter: f64,
    rng: &mut dyn RandomSource,
) -> Result<Tensor> {
    let (w, g, d) = walkers.dims3()?;
    let lp = target.log_density(walkers)?;
    let lp = lp
        .eq(&lp)?
        .where_cond(&lp, &lp.ones_like()?.affine(0.0, -1e30)?)?;
    // Best walker per galaxy → [1, g, d].
    let best = lp.argmax_keepdim(0)?; // [1, g]
    let idx = best.unsqueeze(2)?.broadcast_as((1, g, d))?.contiguous()?;
    let mut x = walkers.gather(&idx, 0)?;
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let mut m = x.zeros_like()?;
    let mut v = x.zeros_like()?;
    let mut best_x = x.clone();
    let mut best_lp = target.log_density(&x)?;
    for t in 1..=steps {
        let (lp_x, grad) = target.grad_log_density(&x)?;
        // Guard against non-finite gradients (e.g. at the support edge): no update there.
        let finite = grad.eq(&grad)?;
        let grad = finite.where_cond(&grad, &grad.zeros_like()?)?;
        m = ((m * b1)? + (&grad * (1.0 - b1))?)?;
        v = ((v * b2)? + (grad.sqr()? * (1.0 - b2))?)?;
        let mhat = (&m / (1.0 - b1.powi(t as i32)))?;
        let vhat = (&v / (1.0 - b2.powi(t as i32)))?;
        // Ascent on ln P.
        let step = (mhat / (vhat.sqrt()? + eps)?)?;
        // Keep the best point seen so far per galaxy.
        let better = lp_x.gt(&best_lp)?;
        let better3 = better.unsqueeze(2)?.broadcast_as(x.shape())?.contiguous()?;
        best_x = better3.where_cond(&x, &best_x)?;
        best_lp = better.where_cond(&lp_x, &best_lp)?;
        x = (&x + (step * learning_rate)?)?;
    }
    let lp_x = target.log_density(&x)?;
    let better = lp_x
        .gt(&best_lp)?
        .unsqueeze(2)?
        .broadcast_as(x.shape())?
        .contiguous()?;
    let best_x = better.where_cond(&x, &best_x)?;
    let centre = best_x.broadcast_as((w, g, d))?.contiguous()?;
    let noise = rng.normal(&Shape::from((w, g, d)), walkers.device())?;
    let proposal = (&centre + (noise * jitter)?)?;
    let lp_new = target.log_density(&proposal)?;
    let ok = lp_new
        .ge(&lp_new.ones_like()?.affine(0.0, -1e30)?)?
        .unsqueeze(2)?
        .broadcast_as((w, g, d))?
        .contiguous()?;
    Ok(ok.where_cond(&proposal, walkers)?)
}
