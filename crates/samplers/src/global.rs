//! Global independence move: proposals from a multivariate Student-t fitted to the
//! complementary half of the ensemble.
//!
//! Why: stretch and differential-evolution moves only interpolate between walkers, so an
//! ensemble spread over a broad (low-S/N) photo-z posterior random-walks across it with an
//! integrated autocorrelation time of ~100 steps. An independence proposal drawn from the
//! complementary half's mean and covariance jumps across the whole posterior in one step
//! whenever the posterior is roughly elliptical, and costs one target evaluation like the
//! other moves. It is emcee's `GaussianMove`/`KDEMove` idea with one heavy-tailed component.
//!
//! Validity: the proposal density depends only on the complementary half, which is frozen
//! while the active half moves (the red/blue scheme of Foreman-Mackey+13), so the Metropolis
//! test with q(x)/q(y) keeps the target invariant. Mean, covariance, Cholesky factor and
//! Mahalanobis distances are batched over galaxies in f64 tensors; the covariance gets a small
//! ridge so a collapsed complement (all walkers equal) still gives a proper proposal.

use popcosmos_api::{DType, Error, RandomSource, Result, Tensor};

use crate::ensemble::{Move, Proposal};

/// Independence proposal y ~ t_ν(μ, s² Σ) per galaxy. By default μ and Σ are the mean and
/// covariance of the complementary half at each step; [`GlobalMove::fitted`] freezes them
/// from a larger set of draws (e.g. the second half of burn-in), which gives a far better
/// covariance estimate than 32 walkers in 16 dimensions.
#[derive(Debug, Clone)]
pub struct GlobalMove {
    /// Degrees of freedom of the proposal; 0 means Gaussian.
    pub nu: u32,
    /// Scale s of the proposal's covariance relative to the fitted one.
    pub scale: f64,
    /// Frozen proposal, or `None` to fit the complementary half at every step.
    pub fit: Option<FittedProposal>,
}

/// A frozen proposal: per-galaxy mean `[g, d]`, Cholesky factor and its inverse `[g, d, d]`
/// (f64).
#[derive(Debug, Clone)]
pub struct FittedProposal {
    mean: Tensor,
    chol: Tensor,
    chol_inv: Tensor,
}

impl FittedProposal {
    /// Fit the mean and covariance of `draws` `[n, galaxies, dim]` (n ≥ 2).
    pub fn from_draws(draws: &Tensor) -> Result<Self> {
        let n = draws.dim(0)?;
        if n < 2 {
            return Err(Error::Invalid(
                "a global-move proposal needs at least 2 draws per galaxy".into(),
            ));
        }
        let x = draws.to_dtype(DType::F64)?;
        let mean = x.mean_keepdim(0)?; // [1, g, d]
        let centred = x.broadcast_sub(&mean)?.permute((1, 0, 2))?.contiguous()?; // [g, n, d]
        let cov = (centred.t()?.matmul(&centred)? / (n as f64 - 1.0))?; // [g, d, d]
        let chol = cholesky(&cov)?;
        let chol_inv = lower_inverse(&chol)?;
        Ok(Self {
            mean: mean.squeeze(0)?,
            chol,
            chol_inv,
        })
    }

    /// Number of galaxies the proposal was fitted for.
    pub fn galaxies(&self) -> usize {
        self.mean.dim(0).unwrap_or(0)
    }
}

impl Default for GlobalMove {
    fn default() -> Self {
        Self {
            nu: 5,
            scale: 1.0,
            fit: None,
        }
    }
}

impl GlobalMove {
    /// The same move with its proposal frozen at `fit`.
    pub fn fitted(&self, fit: FittedProposal) -> Self {
        Self {
            fit: Some(fit),
            ..self.clone()
        }
    }
}

/// Relative ridge added to the covariance diagonal (and an absolute floor), so the
/// Cholesky factor exists even when the complement has collapsed.
const RIDGE: f64 = 1e-6;

impl Move for GlobalMove {
    fn name(&self) -> &str {
        "global"
    }

    fn propose(
        &self,
        rng: &mut dyn RandomSource,
        active: &Tensor,
        complement: &Tensor,
    ) -> Result<Proposal> {
        let (n, g, d) = active.dims3()?;
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::Invalid(format!(
                "global move scale must be finite and > 0, got {}",
                self.scale
            )));
        }
        let dtype = active.dtype();
        let device = active.device();
        let x = active.to_dtype(DType::F64)?;
        let fit = match &self.fit {
            Some(fit) => {
                if fit.galaxies() != g {
                    return Err(Error::Invalid(format!(
                        "global move fitted for {} galaxies, used on {g}",
                        fit.galaxies()
                    )));
                }
                fit.clone()
            }
            None => FittedProposal::from_draws(complement)?,
        };
        let (mean, chol, chol_inv) = (fit.mean.unsqueeze(0)?, fit.chol, fit.chol_inv);

        // y = μ + s L ε / √(w/ν), w ~ χ²_ν.
        let eps = rng
            .normal(&(g, d, n).into(), device)?
            .to_dtype(DType::F64)?;
        let mut step = chol.matmul(&eps)?.permute((2, 0, 1))?; // [n, g, d]
        if self.nu > 0 {
            let w = rng
                .normal(&(self.nu as usize, n, g).into(), device)?
                .to_dtype(DType::F64)?
                .sqr()?
                .sum(0)?; // [n, g]
            let inv_sqrt = (w / self.nu as f64)?.sqrt()?.recip()?;
            step = step.broadcast_mul(&inv_sqrt.unsqueeze(2)?)?;
        }
        let y = (step * self.scale)?.broadcast_add(&mean)?;

        let log_q = |p: &Tensor| -> Result<Tensor> {
            // Mahalanobis distance ‖L⁻¹(p − μ)‖² / s², [n, g].
            let r = p.broadcast_sub(&mean)?.permute((1, 0, 2))?.contiguous()?; // [g, n, d]
            let u = r.matmul(&chol_inv.t()?)?;
            let maha = (u.sqr()?.sum(2)?.t()? / (self.scale * self.scale))?;
            // log-density up to terms shared by x and y (they cancel in q(x)/q(y)).
            log_kernel(maha, self.nu, d)
        };
        let log_factor = (log_q(&x)? - log_q(&y)?)?;
        Ok(Proposal {
            position: y.to_dtype(dtype)?,
            log_factor: log_factor.to_dtype(dtype)?,
        })
    }
}

/// ln of the multivariate-t kernel with ν = `nu` (ν = 0: the Gaussian kernel) at the squared
/// Mahalanobis distances `maha`, in `d` dimensions, up to the normalisation.
pub(crate) fn log_kernel(maha: Tensor, nu: u32, d: usize) -> Result<Tensor> {
    Ok(if nu > 0 {
        let nu = nu as f64;
        ((maha / nu)? + 1.0)?
            .log()?
            .affine(-(nu + d as f64) / 2.0, 0.0)?
    } else {
        maha.affine(-0.5, 0.0)?
    })
}

/// Lower Cholesky factors of a batch of symmetric matrices `[g, d, d]` (after a small ridge),
/// column by column with tensor ops over the batch.
pub(crate) fn cholesky(a: &Tensor) -> Result<Tensor> {
    let (g, d, _) = a.dims3()?;
    let device = a.device();
    let diag_mean = (a
        .broadcast_mul(&Tensor::eye(d, a.dtype(), device)?)?
        .sum((1, 2))?
        / d as f64)?; // [g]
    let ridge = (diag_mean.abs()? * RIDGE)?.affine(1.0, 1e-12)?;
    let a = a.broadcast_add(
        &Tensor::eye(d, a.dtype(), device)?
            .unsqueeze(0)?
            .broadcast_mul(&ridge.reshape((g, 1, 1))?)?,
    )?;
    let rows = Tensor::arange(0u32, d as u32, device)?;
    let mut cols: Vec<Tensor> = Vec::with_capacity(d); // column j of L: [g, d]
    for j in 0..d {
        let mut v = a.narrow(2, j, 1)?.squeeze(2)?; // [g, d]
        for col in &cols {
            v = (v - col.broadcast_mul(&col.narrow(1, j, 1)?)?)?;
        }
        // Clamp so round-off on a near-singular complement cannot give NaN.
        let pivot = v.narrow(1, j, 1)?.clamp(1e-300, f64::INFINITY)?.sqrt()?; // [g, 1]
        let below = rows.ge(j as u32)?.to_dtype(a.dtype())?.unsqueeze(0)?; // [1, d]
        cols.push(v.broadcast_div(&pivot)?.broadcast_mul(&below)?);
    }
    Ok(Tensor::stack(&cols, 2)?)
}

/// Inverse of a batch of lower-triangular matrices `[g, d, d]` by forward substitution,
/// row by row: row i of L⁻¹ is (eᵢ − Σ_{k<i} L[i,k] · row k) / L[i,i].
pub(crate) fn lower_inverse(l: &Tensor) -> Result<Tensor> {
    let (_, d, _) = l.dims3()?;
    let eye = Tensor::eye(d, l.dtype(), l.device())?;
    let mut rows: Vec<Tensor> = Vec::with_capacity(d);
    for i in 0..d {
        let li = l.narrow(1, i, 1)?.squeeze(1)?; // row i of L: [g, d]
        let mut acc = eye
            .narrow(0, i, 1)?
            .broadcast_as(li.shape())?
            .contiguous()?;
        for (k, row) in rows.iter().enumerate() {
            acc = (acc - row.broadcast_mul(&li.narrow(1, k, 1)?)?)?;
        }
        rows.push(acc.broadcast_div(&li.narrow(1, i, 1)?)?);
    }
    Ok(Tensor::stack(&rows, 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use popcosmos_api::{Device, HostRng};

    fn max_abs(t: &Tensor) -> f64 {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// L Lᵀ reproduces the matrix and L⁻¹ L = I, on random SPD matrices.
    #[test]
    fn batched_cholesky_and_inverse_are_exact() {
        let mut rng = HostRng::seed_from_u64(5);
        let dev = Device::Cpu;
        let b = rng
            .normal(&(3, 6, 6).into(), &dev)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let eye = Tensor::eye(6, DType::F64, &dev).unwrap();
        let a = b
            .matmul(&b.t().unwrap())
            .unwrap()
            .broadcast_add(&eye)
            .unwrap();
        let l = cholesky(&a).unwrap();
        let err = max_abs(&(l.matmul(&l.t().unwrap()).unwrap() - &a).unwrap());
        assert!(err < 1e-4, "L Lᵀ error {err}"); // ridge is 1e-6 relative
        let strictly_upper = (Tensor::triu2(6, DType::F64, &dev).unwrap() - &eye).unwrap();
        let upper = max_abs(&l.broadcast_mul(&strictly_upper).unwrap());
        assert_eq!(upper, 0.0, "L must be lower triangular");
        let inv = lower_inverse(&l).unwrap();
        let err = max_abs(&inv.matmul(&l).unwrap().broadcast_sub(&eye).unwrap());
        assert!(err < 1e-10, "L⁻¹ L error {err}");
    }
}
