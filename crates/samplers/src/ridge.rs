//! Differential evolution along a curved ridge: DE proposals in coordinates straightened by
//! a polynomial fitted to the complementary half.
//!
//! Why: a galaxy's posterior in 16 dimensions is a thin, curved ridge along redshift (as z
//! moves, the SFH, dust and normalisation that keep the colours move with it, non-linearly).
//! Stretch and DE moves are affine-invariant, so they follow a straight ridge at any
//! orientation, but a chord across a curved one leaves it: DE accepts ~10 % and z
//! decorrelates over hundreds of sweeps. Here every other coordinate is written as
//! u_i = x_i − f_i(x_a), with f_i a polynomial in the axis coordinate x_a (degree ≥ 2; a
//! linear f would change nothing for an affine-invariant move) fitted by least squares to
//! the complementary half, and the DE step y = x + γ (x_j − x_k) is taken in u. Mapped back,
//! a jump in x_a carries the rest along the fitted curve.
//!
//! Validity: x ↦ u keeps x_a and shifts the others by a function of x_a alone, so it is a
//! bijection with unit Jacobian whatever f is. f depends only on the complementary half,
//! frozen while the active half moves (red/blue, Foreman-Mackey+13), and DE is symmetric in
//! u, so the plain Metropolis ratio P(y)/P(x) keeps the target invariant. The axis argument
//! of f is clamped to the complement's range, so f stays flat (and bounded) beyond it.

use popcosmos_api::{DType, Error, RandomSource, Result, Tensor};

use crate::ensemble::{DifferentialEvolutionMove, Move, Proposal};
use crate::global::{cholesky, lower_inverse};

/// DE in coordinates straightened along `axis` by a degree-`degree` polynomial.
#[derive(Debug, Clone, Copy)]
pub struct RidgeMove {
    /// Coordinate the ridge is parametrised by (redshift for galaxies).
    pub axis: usize,
    /// Degree of the fitted curve, 2 to [`RidgeMove::MAX_DEGREE`].
    pub degree: usize,
    /// The DE step taken in the straightened coordinates.
    pub de: DifferentialEvolutionMove,
}

/// A polynomial per galaxy and coordinate in the standardised, clamped axis coordinate.
struct Curve {
    axis: usize,
    degree: usize,
    /// Centre and scale of the axis coordinate, `[1, g]` each.
    centre: Tensor,
    scale: Tensor,
    /// Clamp range of the standardised axis coordinate, `[1, g]` each.
    lo: Tensor,
    hi: Tensor,
    /// Coefficients `[g, degree + 1, d]` (zero in the axis column).
    coef: Tensor,
}

impl RidgeMove {
    /// Highest polynomial degree accepted.
    pub const MAX_DEGREE: usize = 5;

    /// A ridge move along `axis` with the default DE step.
    pub fn new(axis: usize, degree: usize) -> Result<Self> {
        if !(2..=Self::MAX_DEGREE).contains(&degree) {
            return Err(Error::Invalid(format!(
                "ridge move: degree must be 2 to {}, got {degree}",
                Self::MAX_DEGREE
            )));
        }
        Ok(Self {
            axis,
            degree,
            de: DifferentialEvolutionMove::default(),
        })
    }
}

impl Curve {
    /// Least-squares fit to `points` `[m, g, d]`, in f64 and batched over galaxies.
    fn fit(points: &Tensor, axis: usize, degree: usize) -> Result<Self> {
        let (_, g, d) = points.dims3()?;
        let x = points.to_dtype(DType::F64)?;
        let a = x.narrow(2, axis, 1)?.squeeze(2)?; // [m, g]
        let centre = a.mean_keepdim(0)?;
        let spread = a.broadcast_sub(&centre)?.sqr()?.mean_keepdim(0)?.sqrt()?;
        // A collapsed axis (all equal) still gives finite features.
        let scale = spread.clamp(1e-12, f64::INFINITY)?;
        let t = a.broadcast_sub(&centre)?.broadcast_div(&scale)?;
        let lo = t.min_keepdim(0)?;
        let hi = t.max_keepdim(0)?;
        let mut curve = Self {
            axis,
            degree,
            centre,
            scale,
            lo,
            hi,
            coef: Tensor::zeros((g, degree + 1, d), DType::F64, points.device())?,
        };
        let f = curve.features(&x)?.permute((1, 0, 2))?.contiguous()?; // [g, m, p]
        let ft = f.t()?.contiguous()?; // [g, p, m]
        // Normal equations, solved batched over galaxies: B = L⁻ᵀ L⁻¹ Fᵀ X.
        let l_inv = lower_inverse(&cholesky(&ft.matmul(&f)?)?)?;
        let xty = ft.matmul(&x.permute((1, 0, 2))?.contiguous()?)?; // [g, p, d]
        let coef = l_inv.t()?.matmul(&l_inv.matmul(&xty)?)?;
        // The axis coordinate is kept as it is; a fit that failed moves nothing.
        let keep: Vec<f64> = (0..d).map(|j| if j == axis { 0.0 } else { 1.0 }).collect();
        let keep = Tensor::from_vec(keep, d, points.device())?;
        let coef = coef.broadcast_mul(&keep)?;
        let finite = coef.eq(&coef)?;
        curve.coef = finite.where_cond(&coef, &coef.zeros_like()?)?;
        Ok(curve)
    }

    /// Features 1, t, …, t^degree of the clamped standardised axis coordinate, `[n, g, p]`.
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        let a = x.narrow(2, self.axis, 1)?.squeeze(2)?;
        let t = a
            .broadcast_sub(&self.centre)?
            .broadcast_div(&self.scale)?
            .broadcast_maximum(&self.lo)?
            .broadcast_minimum(&self.hi)?;
        let mut powers = vec![t.ones_like()?];
        for k in 1..=self.degree {
            let next = (&powers[k - 1] * &t)?;
            powers.push(next);
        }
        Ok(Tensor::stack(&powers, 2)?)
    }

    /// f(x_a) `[n, g, d]` for positions `x` `[n, g, d]` (f64).
    fn shift(&self, x: &Tensor) -> Result<Tensor> {
        let f = self.features(x)?.permute((1, 0, 2))?.contiguous()?; // [g, n, p]
        Ok(f.matmul(&self.coef)?.permute((1, 0, 2))?)
    }

    fn straighten(&self, x: &Tensor) -> Result<Tensor> {
        Ok((x - self.shift(x)?)?)
    }

    fn bend(&self, u: &Tensor) -> Result<Tensor> {
        // The axis coordinate is the same in u and x, so f(x_a) can be read off u.
        Ok((u + self.shift(u)?)?)
    }
}

impl Move for RidgeMove {
    fn name(&self) -> &str {
        "ridge"
    }

    fn propose(
        &self,
        rng: &mut dyn RandomSource,
        active: &Tensor,
        complement: &Tensor,
    ) -> Result<Proposal> {
        let d = active.dim(2)?;
        if self.axis >= d {
            return Err(Error::Invalid(format!(
                "ridge move: axis {} outside a {d}-dimensional target",
                self.axis
            )));
        }
        let dtype = active.dtype();
        let curve = Curve::fit(complement, self.axis, self.degree)?;
        let u_active = curve.straighten(&active.to_dtype(DType::F64)?)?;
        let u_complement = curve.straighten(&complement.to_dtype(DType::F64)?)?;
        let step = self.de.propose(
            rng,
            &u_active.to_dtype(dtype)?,
            &u_complement.to_dtype(dtype)?,
        )?;
        let position = curve
            .bend(&step.position.to_dtype(DType::F64)?)?
            .to_dtype(dtype)?;
        Ok(Proposal {
            position,
            log_factor: step.log_factor,
        })
    }
}
