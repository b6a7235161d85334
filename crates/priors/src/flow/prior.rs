//! [`FlowPrior`]: a 16-D normalizing flow over the latent φ used as a [`Prior`].

use candle_core::{DType, Device, Tensor};
use popcosmos_api::{Error, N_PARAMS, Prior, RandomSource, Result, Shape};

use super::model::FlowModel;

/// ln p(φ) of a normalizing flow trained on φ (e.g. distilled from the diffusion prior).
///
/// The density is that of the physical φ (the −Σ ln x_scale of the standardisation is
/// included), exact, and computed in one batched pass through all layers for any leading
/// shape. Unlike [`crate::diffusion::DiffusionPrior`] the input is not detached: the
/// log-density is differentiable, so gradient-based kernels see the prior's gradient.
/// Rows with a non-finite coordinate get −∞ (and a zero gradient).
pub struct FlowPrior {
    model: FlowModel,
    name: String,
}

impl FlowPrior {
    /// Wrap `model`, which must model D = 16 columns (the latent φ).
    pub fn new(model: FlowModel, source: &str) -> Result<Self> {
        if model.dim() != N_PARAMS {
            return Err(Error::Invalid(format!(
                "{source}: a population prior must model the {N_PARAMS} latent parameters \
                 (this flow has dim {})",
                model.dim()
            )));
        }
        Ok(Self {
            model,
            name: format!("flow ({source})"),
        })
    }

    /// The flow behind the prior.
    pub fn model(&self) -> &FlowModel {
        &self.model
    }
}

impl Prior for FlowPrior {
    fn name(&self) -> &str {
        &self.name
    }

    fn log_prob(&self, phi: &Tensor) -> Result<Tensor> {
        let dims = phi.dims().to_vec();
        if dims.last() != Some(&N_PARAMS) {
            let what = format!("{}: φ", self.name);
            return Err(Error::shape(what, format!("[..., {N_PARAMS}]"), dims));
        }
        // Rows with a non-finite coordinate are evaluated at 0 and masked to −∞.
        let (device, dtype) = (self.model.device(), self.model.dtype());
        crate::common::log_prob_by_rows(phi, device, dtype, |safe| self.model.log_prob(safe))
    }

    fn sample(&self, n: usize, rng: &mut dyn RandomSource, device: &Device) -> Result<Tensor> {
        if n == 0 {
            return Ok(Tensor::zeros((0, N_PARAMS), DType::F32, device)?);
        }
        let z = rng.normal(&Shape::from((n, N_PARAMS)), self.model.device())?;
        let x = self.model.sample_from_base(&z)?.to_dtype(DType::F32)?;
        let all_finite = x
            .abs()?
            .lt(f64::INFINITY)?
            .to_dtype(DType::F32)?
            .min_all()?
            .to_scalar::<f32>()?;
        if all_finite < 1.0 {
            return Err(Error::Invalid(format!(
                "{}: the flow produced non-finite draws",
                self.name
            )));
        }
        Ok(x.to_device(device)?)
    }
}
