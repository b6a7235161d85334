//! Local-covariance random walk: a Gaussian step shaped by the covariance of the nearest
//! particles of the complementary half.
//!
//! Why: stretch and differential-evolution steps scale with the whole complement, and the
//! global and clustered moves with the complement or one k-means cluster of it. Where the
//! posterior's scale changes along it (the neck of Neal's funnel, a thin curved ridge) those
//! steps are far too long in the narrow part, so particles there are rejected and the
//! narrow part is under-filled. The covariance of a particle's k nearest neighbours follows
//! the local shape: short steps in the neck, steps along the ridge's local tangent.
//!
//! Validity: the neighbours come from the complement, frozen while the active half moves, so
//! q(y | x) = 𝒩(y; x, s² Σ_k(x)) is a fixed proposal kernel. It is not symmetric: the
//! Metropolis–Hastings factor is q(x | y) / q(y | x), with Σ_k(y) from y's own neighbours.
//! Σ_k is shrunk towards the whole complement's covariance so that a neighbourhood of
//! resampled copies of one particle (zero spread) still gives a proper step.

use popcosmos_api::{DType, Error, RandomSource, Result, Tensor};

use crate::ensemble::{Move, Proposal};
use crate::global::{cholesky, lower_inverse};

/// Gaussian random walk with the covariance of the `neighbours` nearest complement particles.
#[derive(Debug, Clone, Copy)]
pub struct LocalMove {
    /// Nearest neighbours whose covariance shapes the step (0: 2 × dim + 1; capped at the
    /// complement's size).
    pub neighbours: usize,
    /// Step length in units of the optimal random-walk scale 2.38/√d (Roberts, Gelman &
    /// Gilks 1997).
    pub scale: f64,
    /// Weight of the whole complement's covariance mixed into the neighbours', in [0, 1).
    pub shrinkage: f64,
}

impl Default for LocalMove {
    fn default() -> Self {
        Self {
            neighbours: 0,
            scale: 1.0,
            shrinkage: 0.05,
        }
    }
}

/// Per point: Cholesky factor L of its local covariance and L⁻¹ `[g·n, d, d]`, and ln|L|
/// `[g, n]`, all f64.
struct LocalFactors {
    chol: Tensor,
    chol_inv: Tensor,
    log_det: Tensor,
}

impl LocalMove {
    /// Check the settings.
    pub fn check(&self) -> Result<()> {
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            return Err(Error::Invalid(format!(
                "local move: scale must be finite and > 0, got {}",
                self.scale
            )));
        }
        if !(0.0..1.0).contains(&self.shrinkage) {
            return Err(Error::Invalid(format!(
                "local move: shrinkage must lie in [0, 1), got {}",
                self.shrinkage
            )));
        }
        if self.neighbours == 1 {
            return Err(Error::Invalid(
                "local move: a covariance needs at least 2 neighbours".into(),
            ));
        }
        Ok(())
    }

    fn neighbours_for(&self, d: usize, m: usize) -> usize {
        let k = if self.neighbours == 0 {
            2 * d + 1
        } else {
            self.neighbours
        };
        k.min(m)
    }

    /// Local covariance factors of `points` `[g, n, d]` among `comp` `[g, m, d]`, whose
    /// whole covariance `global` `[g, d, d]` is mixed in with weight `shrinkage`.
    fn factors(
        &self,
        points: &Tensor,
        comp: &Tensor,
        comp_sq: &Tensor,
        global: &Tensor,
        k: usize,
    ) -> Result<LocalFactors> {
        let (g, n, d) = points.dims3()?;
        // ‖p − c‖² = ‖p‖² + ‖c‖² − 2 p·c, [g, n, m].
        let cross = points.matmul(&comp.t()?.contiguous()?)?;
        let dist = points
            .sqr()?
            .sum_keepdim(2)?
            .broadcast_add(comp_sq)?
            .sub(&cross.affine(2.0, 0.0)?)?;
        let nearest = dist
            .arg_sort_last_dim(true)?
            .narrow(2, 0, k)?
            .contiguous()?
            .reshape((g, n * k, 1))?
            .broadcast_as((g, n * k, d))?
            .contiguous()?;
        let nb = comp.gather(&nearest, 1)?.reshape((g * n, k, d))?;
        let centred = nb.broadcast_sub(&nb.mean_keepdim(1)?)?;
        let local = (centred.t()?.contiguous()?.matmul(&centred)? / (k as f64 - 1.0))?;
        let global = global
            .unsqueeze(1)?
            .broadcast_as((g, n, d, d))?
            .reshape((g * n, d, d))?;
        let cov = ((local * (1.0 - self.shrinkage))? + (global * self.shrinkage)?)?;
        let chol = cholesky(&cov)?;
        let chol_inv = lower_inverse(&chol)?;
        let log_det = chol
            .broadcast_mul(&Tensor::eye(d, DType::F64, points.device())?.unsqueeze(0)?)?
            .sum(2)?
            .log()?
            .sum(1)?
            .reshape((g, n))?;
        Ok(LocalFactors {
            chol,
            chol_inv,
            log_det,
        })
    }
}

impl Move for LocalMove {
    fn name(&self) -> &str {
        "local"
    }

    fn propose(
        &self,
        rng: &mut dyn RandomSource,
        active: &Tensor,
        complement: &Tensor,
    ) -> Result<Proposal> {
        self.check()?;
        let (n, g, d) = active.dims3()?;
        let m = complement.dim(0)?;
        if m < 2 {
            return Err(Error::Invalid(
                "local move needs at least 2 walkers in each half".into(),
            ));
        }
        let k = self.neighbours_for(d, m);
        let device = active.device();
        let comp = complement
            .to_dtype(DType::F64)?
            .permute((1, 0, 2))?
            .contiguous()?; // [g, m, d]
        let comp_sq = comp.sqr()?.sum(2)?.unsqueeze(1)?; // [g, 1, m]
        let centred = comp.broadcast_sub(&comp.mean_keepdim(1)?)?;
        let global = (centred.t()?.contiguous()?.matmul(&centred)? / (m as f64 - 1.0))?;
        let x = active
            .to_dtype(DType::F64)?
            .permute((1, 0, 2))?
            .contiguous()?; // [g, n, d]
        let fx = self.factors(&x, &comp, &comp_sq, &global, k)?;
        let s = self.scale * 2.38 / (d as f64).sqrt();
        let eps = rng
            .normal(&(g * n, d, 1).into(), device)?
            .to_dtype(DType::F64)?;
        let step = (fx.chol.matmul(&eps)?.reshape((g, n, d))? * s)?;
        // The target sees the proposal in the active dtype; the reverse density must use
        // the same rounded point.
        let position = (&x + step)?
            .permute((1, 0, 2))?
            .contiguous()?
            .to_dtype(active.dtype())?; // [n, g, d]
        let y = position
            .to_dtype(DType::F64)?
            .permute((1, 0, 2))?
            .contiguous()?;
        let fy = self.factors(&y, &comp, &comp_sq, &global, k)?;
        let maha = |inv: &Tensor, r: &Tensor| -> Result<Tensor> {
            let w = inv.matmul(&r.reshape((g * n, d, 1))?)?;
            Ok((w.sqr()?.sum((1, 2))?.reshape((g, n))? / (s * s))?)
        };
        let forward = maha(&fx.chol_inv, &(&y - &x)?)?;
        let backward = maha(&fy.chol_inv, &(&x - &y)?)?;
        // ln q(x | y) − ln q(y | x).
        let log_factor = ((fx.log_det - fy.log_det)? + ((forward - backward)? * 0.5)?)?
            .t()?
            .contiguous()?
            .to_dtype(active.dtype())?;
        Ok(Proposal {
            position,
            log_factor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use popcosmos_api::{Device, HostRng};

    /// The Metropolis–Hastings factor by hand for one point: with two complement points the
    /// local covariance is that of the pair, shrunk towards the complement's (the same
    /// pair), so q(y | x) = q(x | y) and the factor is 0 when k = m = 2.
    #[test]
    fn two_neighbours_give_a_symmetric_step() {
        let mut rng = HostRng::seed_from_u64(3);
        let dev = Device::Cpu;
        let active = rng.normal(&(3, 2, 2).into(), &dev).unwrap();
        let complement = rng.normal(&(2, 2, 2).into(), &dev).unwrap();
        let mv = LocalMove {
            neighbours: 2,
            ..LocalMove::default()
        };
        let p = mv.propose(&mut rng, &active, &complement).unwrap();
        let f: Vec<f32> = p.log_factor.flatten_all().unwrap().to_vec1().unwrap();
        assert!(f.iter().all(|v| v.abs() < 1e-3), "{f:?}");
        assert_eq!(p.position.dims(), &[3, 2, 2]);
    }

    #[test]
    fn bad_settings_are_refused() {
        for mv in [
            LocalMove {
                scale: 0.0,
                ..LocalMove::default()
            },
            LocalMove {
                shrinkage: 1.0,
                ..LocalMove::default()
            },
            LocalMove {
                neighbours: 1,
                ..LocalMove::default()
            },
        ] {
            assert!(mv.check().is_err());
        }
    }
}
