//! Clustered global move: independence proposals from a mixture of Student-t components
//! fitted by k-means to the complementary half of the ensemble.
//!
//! Why: in a multimodal posterior the single t of [`crate::global`] spans all modes, so its
//! draws land between them, and stretch / differential-evolution moves only work when both
//! partners sit in the same mode. A particle in a minority mode then barely moves, lags the
//! tempering schedule of [`crate::smc`], and its mode loses weight (measured on 16-D mixtures
//! with 10 % different widths). One t per cluster, chosen by the cluster's share, proposes
//! moves inside every mode with that mode's covariance and jumps between modes in proportion
//! to their mass.
//!
//! Validity: as for the global move, the mixture depends only on the complementary half,
//! which is frozen while the active half moves, so the Metropolis–Hastings test with
//! q(x)/q(y) (the full mixture density) keeps the target invariant. Clustering is
//! deterministic given the complement (farthest-point seeding, fixed Lloyd iterations).

use popcosmos_api::{DType, Error, RandomSource, Result, Tensor};

use crate::ensemble::{Move, Proposal};
use crate::global::{cholesky, log_kernel, lower_inverse};

/// Mixture-of-t independence proposal, one component per k-means cluster of the complement.
#[derive(Debug, Clone, Copy)]
pub struct ClusteredGlobalMove {
    /// Most components (fewer when the complement has fewer than (dim + 1) per component).
    pub components: usize,
    /// Degrees of freedom of each component; 0 means Gaussian.
    pub nu: u32,
    /// Scale of each component's covariance relative to its cluster's.
    pub scale: f64,
}

impl Default for ClusteredGlobalMove {
    fn default() -> Self {
        Self {
            components: 4,
            nu: 5,
            scale: 1.0,
        }
    }
}

/// Lloyd iterations of the k-means fit.
const LLOYD_STEPS: usize = 10;

/// A fitted mixture per galaxy: log weights `[g, k]`, means `[g, k, d]`, Cholesky factors and
/// inverses `[g·k, d, d]`, log-determinants ln|L| `[g, k]` (all f64).
pub(crate) struct Mixture {
    log_weight: Tensor,
    mean: Tensor,
    chol: Tensor,
    chol_inv: Tensor,
    log_det: Tensor,
}

impl ClusteredGlobalMove {
    /// Fit one component per k-means cluster of `complement` `[m, g, d]`, per galaxy, each
    /// covariance shrunk towards the whole complement's (a proper MH proposal from small
    /// clusters).
    pub(crate) fn fit(&self, complement: &Tensor) -> Result<Mixture> {
        self.fit_shrunk(complement, false)
    }

    /// [`ClusteredGlobalMove::fit`], with `own_diagonal` shrinking each cluster's covariance
    /// towards its own diagonal instead (clusters with ≥ d + 1 members): for importance
    /// sampling, where the whole cloud's covariance would smear a narrow mode's component
    /// across the others and starve it of draws.
    pub(crate) fn fit_shrunk(&self, complement: &Tensor, own_diagonal: bool) -> Result<Mixture> {
        let (m, g, d) = complement.dims3()?;
        let k = self.components.min(m / (d + 1)).max(1);
        let device = complement.device();
        let x = complement
            .to_dtype(DType::F64)?
            .permute((1, 0, 2))?
            .contiguous()?; // [g, m, d]
        let sq = x.sqr()?.sum_keepdim(2)?; // [g, m, 1]
        let dist_to = |centre: &Tensor| -> Result<Tensor> {
            // ‖x − c‖² for centres [g, k, d] → [g, m, k]
            let cross = x.matmul(&centre.t()?.contiguous()?)?;
            let cc = centre.sqr()?.sum(2)?.unsqueeze(1)?;
            Ok(sq.broadcast_sub(&(cross * 2.0)?)?.broadcast_add(&cc)?)
        };
        let gather = |idx: &Tensor| -> Result<Tensor> {
            // idx [g] u32 → rows x[g, idx[g]] as [g, 1, d]
            let flat = (Tensor::arange(0u32, g as u32, device)?.affine(m as f64, 0.0)? + idx)?;
            Ok(x.reshape((g * m, d))?
                .index_select(&flat, 0)?
                .unsqueeze(1)?)
        };
        // Farthest-point seeding from the mean.
        let mut centres = x.mean_keepdim(1)?;
        let first = dist_to(&centres)?.squeeze(2)?.argmax(1)?;
        centres = gather(&first)?;
        for _ in 1..k {
            let nearest = dist_to(&centres)?.min(2)?; // [g, m]
            let far = nearest.argmax(1)?;
            centres = Tensor::cat(&[&centres, &gather(&far)?], 1)?;
        }
        let mut one_hot = Tensor::zeros((g, m, k), DType::F64, device)?;
        for _ in 0..LLOYD_STEPS {
            let assign = dist_to(&centres)?.argmin_keepdim(2)?; // [g, m, 1]
            let ks = Tensor::arange(0u32, k as u32, device)?.reshape((1, 1, k))?;
            one_hot = assign.broadcast_eq(&ks)?.to_dtype(DType::F64)?;
            let counts = one_hot.sum(1)?; // [g, k]
            let sums = one_hot.t()?.contiguous()?.matmul(&x)?; // [g, k, d]
            let safe = counts.clamp(1.0, f64::INFINITY)?.unsqueeze(2)?;
            let means = sums.broadcast_div(&safe)?;
            // An empty cluster keeps its centre.
            let empty = counts.eq(0.0)?.unsqueeze(2)?.broadcast_as(means.shape())?;
            centres = empty.where_cond(&centres, &means)?;
        }
        let counts = one_hot.sum(1)?; // [g, k]
        // Covariances, shrunk towards the whole complement's with the weight of d draws so
        // small clusters still give proper proposals.
        let global_mean = x.mean_keepdim(1)?;
        let xc = x.broadcast_sub(&global_mean)?;
        let global_cov = (xc.t()?.matmul(&xc)? / (m as f64 - 1.0).max(1.0))?; // [g, d, d]
        let prior_n = d as f64;
        let mut covs = Vec::with_capacity(k);
        for c in 0..k {
            let w = one_hot.narrow(2, c, 1)?; // [g, m, 1]
            let r = x
                .broadcast_sub(&centres.narrow(1, c, 1)?)?
                .broadcast_mul(&w)?;
            let scatter = r.t()?.matmul(&r)?; // [g, d, d]
            let n_c = counts.narrow(1, c, 1)?.unsqueeze(2)?; // [g, 1, 1]
            let towards_global = (&scatter
                + global_cov.broadcast_mul(&(n_c.ones_like()? * prior_n)?)?)?
            .broadcast_div(&(&n_c + prior_n)?)?;
            let cov = if own_diagonal {
                let eye = Tensor::eye(d, DType::F64, device)?.unsqueeze(0)?;
                let own = scatter
                    .broadcast_mul(&eye)?
                    .broadcast_div(&n_c.clamp(1.0, f64::INFINITY)?)?;
                let towards_own =
                    (&scatter + (own * prior_n)?)?.broadcast_div(&(&n_c + prior_n)?)?;
                let big = n_c.ge(prior_n + 1.0)?.broadcast_as(towards_own.shape())?;
                big.where_cond(&towards_own, &towards_global)?
            } else {
                towards_global
            };
            covs.push(cov);
        }
        let cov = (Tensor::stack(&covs, 1)? * (self.scale * self.scale))?.reshape((g * k, d, d))?;
        let chol = cholesky(&cov)?;
        let chol_inv = lower_inverse(&chol)?;
        let eye = Tensor::eye(d, DType::F64, device)?;
        let log_det = chol
            .broadcast_mul(&eye)?
            .sum(2)?
            .log()?
            .sum(1)?
            .reshape((g, k))?;
        let log_weight = ((counts + 1.0)? / (m + k) as f64)?.log()?;
        Ok(Mixture {
            log_weight,
            mean: centres,
            chol,
            chol_inv,
            log_det,
        })
    }

    /// ln q(p) normalised, for p `[n, g, d]` f64 → `[n, g]`.
    pub(crate) fn log_density_normalised(&self, mix: &Mixture, p: &Tensor) -> Result<Tensor> {
        Ok((self.log_density(mix, p)? + log_norm(self.nu, p.dim(2)?))?)
    }

    /// ln q(p) up to a constant shared by all points, for p `[n, g, d]` f64 → `[n, g]`.
    fn log_density(&self, mix: &Mixture, p: &Tensor) -> Result<Tensor> {
        let (n, g, d) = p.dims3()?;
        let k = mix.mean.dim(1)?;
        let pg = p.permute((1, 0, 2))?.contiguous()?; // [g, n, d]
        let chol_inv = mix.chol_inv.reshape((g, k, d, d))?;
        let mut terms = Vec::with_capacity(k);
        for c in 0..k {
            let r = pg.broadcast_sub(&mix.mean.narrow(1, c, 1)?)?; // [g, n, d]
            let li = chol_inv.narrow(1, c, 1)?.squeeze(1)?; // [g, d, d]
            let maha = r.matmul(&li.t()?)?.sqr()?.sum(2)?; // [g, n]
            let kernel = log_kernel(maha, self.nu, d)?;
            let norm = (mix.log_weight.narrow(1, c, 1)? - mix.log_det.narrow(1, c, 1)?)?;
            terms.push(kernel.broadcast_add(&norm)?);
        }
        let stacked = Tensor::stack(&terms, 0)?; // [k, g, n]
        let max = stacked.max_keepdim(0)?;
        let lse = (stacked.broadcast_sub(&max)?.exp()?.sum_keepdim(0)?.log()? + max)?;
        Ok(lse.squeeze(0)?.t()?.contiguous()?.reshape((n, g))?)
    }

    /// `n` draws per galaxy from the mixture, `[n, g, d]` f64.
    pub(crate) fn sample(
        &self,
        mix: &Mixture,
        rng: &mut dyn RandomSource,
        n: usize,
    ) -> Result<Tensor> {
        let (g, k, d) = mix.mean.dims3()?;
        let device = mix.mean.device();
        // Component of each draw: the first c with u < cumulative weight.
        let cum = mix.log_weight.exp()?.cumsum(1)?; // [g, k]
        let u = rng.uniform(&(n, g).into(), device)?.to_dtype(DType::F64)?;
        let below = u
            .unsqueeze(2)?
            .broadcast_ge(&cum.unsqueeze(0)?)?
            .to_dtype(DType::F64)?
            .sum(2)?; // [n, g] number of cumulative weights ≤ u
        let comp = below.clamp(0.0, (k - 1) as f64)?.to_dtype(DType::U32)?;
        let gal = Tensor::arange(0u32, g as u32, device)?
            .affine(k as f64, 0.0)?
            .unsqueeze(0)?;
        let flat = comp.broadcast_add(&gal)?.flatten_all()?; // [n·g] into g·k
        let mean = mix.mean.reshape((g * k, d))?.index_select(&flat, 0)?; // [n·g, d]
        let chol = mix.chol.index_select(&flat, 0)?; // [n·g, d, d]
        let eps = rng
            .normal(&(n * g, d, 1).into(), device)?
            .to_dtype(DType::F64)?;
        let mut step = chol.matmul(&eps)?.squeeze(2)?; // [n·g, d]
        if self.nu > 0 {
            let w = rng
                .normal(&(self.nu as usize, n * g).into(), device)?
                .to_dtype(DType::F64)?
                .sqr()?
                .sum(0)?;
            let inv_sqrt = (w / self.nu as f64)?.sqrt()?.recip()?;
            step = step.broadcast_mul(&inv_sqrt.unsqueeze(1)?)?;
        }
        Ok((step + mean)?.reshape((n, g, d))?)
    }

    fn check(&self) -> Result<()> {
        if self.components == 0 || !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::Invalid(format!(
                "clustered global move needs components ≥ 1 and a finite scale > 0, got {} and {}",
                self.components, self.scale
            )));
        }
        Ok(())
    }
}

/// ln of the normalising constant of a d-dimensional standard t with ν degrees of freedom
/// (Gaussian for ν = 0), so that [`log_kernel`] + this − ln|L| is a normalised log-density.
fn log_norm(nu: u32, d: usize) -> f64 {
    let half_d = d as f64 / 2.0;
    if nu == 0 {
        return -half_d * (2.0 * std::f64::consts::PI).ln();
    }
    let nu_f = nu as f64;
    libm::lgamma((nu_f + d as f64) / 2.0)
        - libm::lgamma(nu_f / 2.0)
        - half_d * (nu_f * std::f64::consts::PI).ln()
}

impl Move for ClusteredGlobalMove {
    fn name(&self) -> &str {
        "clustered_global"
    }

    fn propose(
        &self,
        rng: &mut dyn RandomSource,
        active: &Tensor,
        complement: &Tensor,
    ) -> Result<Proposal> {
        let n = active.dim(0)?;
        self.check()?;
        let mix = self.fit(complement)?;
        let y = self.sample(&mix, rng, n)?;
        let x = active.to_dtype(DType::F64)?;
        let log_factor = (self.log_density(&mix, &x)? - self.log_density(&mix, &y)?)?;
        Ok(Proposal {
            position: y.to_dtype(active.dtype())?,
            log_factor: log_factor.to_dtype(active.dtype())?,
        })
    }
}
