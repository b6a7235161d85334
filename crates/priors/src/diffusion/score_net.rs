//! The flowfusion score network: Fourier time embedding + MLP, with a forward-mode
//! tangent pass giving the exact trace of the d×d input Jacobian in one batched sweep.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use popcosmos_api::Result;

use super::config::{Activation, DiffusionConfig};

/// `MLP(t, x, c)` of flowfusion: input `[sin(2πtW), cos(2πtW), x, c]`, activation after every
/// layer but the last.
#[derive(Debug, Clone)]
pub struct ScoreNet {
    /// Fourier frequencies W `[E/2]` (fixed, not trained).
    freqs: Tensor,
    layers: Vec<Linear>,
    activation: Activation,
    dim: usize,
    embedding_dim: usize,
}

impl ScoreNet {
    /// Load `time_embedding.W` and `layer.{i}.{weight,bias}` (weights `[out, in]`) from `vb`.
    pub fn new(cfg: &DiffusionConfig, vb: VarBuilder) -> Result<Self> {
        let freqs = vb.get(cfg.embedding_dim / 2, "time_embedding.W")?;
        Self::with_frequencies(cfg, freqs, vb)
    }

    /// Layers from `vb` (e.g. trainable variables of a `VarMap`), Fourier frequencies given
    /// (they are fixed, not trained).
    pub fn with_frequencies(cfg: &DiffusionConfig, freqs: Tensor, vb: VarBuilder) -> Result<Self> {
        let mut widths = vec![cfg.embedding_dim + cfg.dim + cfg.conditional_dim];
        widths.extend(&cfg.hidden);
        widths.push(cfg.dim);
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("layer.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            freqs,
            layers,
            activation: cfg.activation,
            dim: cfg.dim,
            embedding_dim: cfg.embedding_dim,
        })
    }

    /// The same network with its weights cast to `dtype` (e.g. f64 for reference solves).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let b = l.bias().map(|b| b.to_dtype(dtype)).transpose()?;
                Ok(Linear::new(l.weight().to_dtype(dtype)?, b))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            freqs: self.freqs.to_dtype(dtype)?,
            layers,
            activation: self.activation,
            dim: self.dim,
            embedding_dim: self.embedding_dim,
        })
    }

    /// The Fourier frequencies W `[E/2]`.
    pub fn frequencies(&self) -> &Tensor {
        &self.freqs
    }

    /// `(weight [out, in], bias [out])` of every layer.
    pub fn layers(&self) -> impl Iterator<Item = (&Tensor, Option<&Tensor>)> {
        self.layers.iter().map(|l| (l.weight(), l.bias()))
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.freqs.device()
    }

    /// The weights' dtype (f32, or f64 for reference solves).
    pub fn dtype(&self) -> DType {
        self.freqs.dtype()
    }

    /// Fourier features `[n, E]` of times `t` `[n]`: sines first, then cosines.
    fn embed(&self, t: &Tensor) -> Result<Tensor> {
        // 2π rounded to the working precision first, as the reference's float32 `2*pi`.
        let two_pi = match self.dtype() {
            DType::F64 => std::f64::consts::TAU,
            _ => std::f32::consts::TAU as f64,
        };
        let arg = (t.unsqueeze(1)? * two_pi)?.broadcast_mul(&self.freqs.unsqueeze(0)?)?;
        Ok(Tensor::cat(&[arg.sin()?, arg.cos()?], 1)?)
    }

    fn input(&self, t: &Tensor, x: &Tensor, c: Option<&Tensor>) -> Result<Tensor> {
        let mut parts = vec![self.embed(t)?, x.clone()];
        if let Some(c) = c {
            parts.push(c.clone());
        }
        Ok(Tensor::cat(&parts, 1)?)
    }

    /// Activation and its derivative at the pre-activation `pre`.
    fn act(&self, pre: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok(match self.activation {
            Activation::Tanh => {
                let y = pre.tanh()?;
                let dy = (1.0 - y.sqr()?)?;
                (y, dy)
            }
            Activation::Silu => {
                let s = candle_nn::ops::sigmoid(pre)?;
                let y = (pre * &s)?;
                // d/dx x σ(x) = σ (1 + x (1 − σ))
                let dy = (&s * (pre * (1.0 - &s)?)?.affine(1.0, 1.0)?)?;
                (y, dy)
            }
        })
    }

    fn act_only(&self, pre: &Tensor) -> Result<Tensor> {
        Ok(match self.activation {
            Activation::Tanh => pre.tanh()?,
            Activation::Silu => pre.silu()?,
        })
    }

    /// Raw network output `[n, D]` at times `t` `[n]`, inputs `x` `[n, D]`, conditions `c` `[n, C]`.
    pub fn forward(&self, t: &Tensor, x: &Tensor, c: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.input(t, x, c)?;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i < last {
                h = self.act_only(&h)?;
            }
        }
        Ok(h)
    }

    /// Output `[n, D]` and the trace of ∂output/∂x `[n]`, exactly: the D tangent directions
    /// e_1..e_D travel through the MLP together as a `[n, D, width]` tensor (forward-mode
    /// Jacobian), one batched matmul per layer instead of D backward passes.
    pub fn forward_with_trace(
        &self,
        t: &Tensor,
        x: &Tensor,
        c: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let n = x.dim(0)?;
        let d = self.dim;
        let mut h = self.input(t, x, c)?;
        // Tangent of the first pre-activation w.r.t. x: the x-columns of W₀, the same for
        // every row: [D, width].
        let w0x = self.layers[0]
            .weight()
            .narrow(1, self.embedding_dim, d)?
            .t()?;
        let mut tangent: Option<Tensor> = None;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let pre = layer.forward(&h)?;
            let tan_pre = match &tangent {
                None => w0x.unsqueeze(0)?.broadcast_as((n, d, w0x.dim(1)?))?,
                Some(tan) => {
                    let width = tan.dim(2)?;
                    let w = layer.weight();
                    tan.reshape((n * d, width))?
                        .matmul(&w.t()?)?
                        .reshape((n, d, w.dim(0)?))?
                }
            };
            if i < last {
                let (y, dy) = self.act(&pre)?;
                tangent = Some(tan_pre.broadcast_mul(&dy.unsqueeze(1)?)?);
                h = y;
            } else {
                // tan_pre[b, j, k] = ∂out_k/∂x_j; the trace is the sum of its diagonal.
                let eye = Tensor::eye(d, tan_pre.dtype(), tan_pre.device())?;
                let trace = tan_pre.broadcast_mul(&eye.unsqueeze(0)?)?.sum((1, 2))?;
                return Ok((pre, trace));
            }
        }
        unreachable!("the network has at least one layer")
    }

    /// Output `[n, D]` and the Jacobian–vector product (∂output/∂x) v `[n, D]` (one tangent),
    /// for the Hutchinson estimator vᵀJv.
    pub fn forward_with_jvp(
        &self,
        t: &Tensor,
        x: &Tensor,
        c: Option<&Tensor>,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let mut h = self.input(t, x, c)?;
        let zeros_e = Tensor::zeros((x.dim(0)?, self.embedding_dim), x.dtype(), x.device())?;
        let mut parts = vec![zeros_e, v.clone()];
        if let Some(c) = c {
            parts.push(c.zeros_like()?);
        }
        let mut tan = Tensor::cat(&parts, 1)?;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let pre = layer.forward(&h)?;
            let tan_pre = tan.matmul(&layer.weight().t()?)?;
            if i < last {
                let (y, dy) = self.act(&pre)?;
                tan = (tan_pre * dy)?;
                h = y;
            } else {
                return Ok((pre, tan_pre));
            }
        }
        unreachable!("the network has at least one layer")
    }

    /// Sum over the last axis, helper for Hutchinson: vᵀ(Jv) `[n]`.
    pub fn dot_rows(a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok((a * b)?.sum(D::Minus1)?)
    }
}
