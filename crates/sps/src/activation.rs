//! The speculator activation (Alsing+20 eq. 8) as one fused op.
//!
//! `act(y) = (β + (1 − β) σ(α y)) y` with per-unit α, β, optionally applied to `y = x + bias`
//! so the bias add of a dense layer rides along for free.
//!
//! Why fused: composed from candle ops the activation is 5 kernels and 5 full-size temporaries,
//! and candle's sigmoid is a serial libm loop; on CPU that costs more than the matmuls
//! (measured in docs/benchmarks.md). The CPU path here is one pass over contiguous f32 with a
//! vectorisable polynomial exp (Cody–Waite range reduction + the Cephes `expf` polynomial,
//! ≈1e-7 relative), compiled for AVX2 when the CPU has it, and rayon-parallel on the current
//! rayon pool above [`PAR_MIN_ELEMS`] elements. On CUDA (cargo feature `cuda`) it is one
//! grid-stride kernel compiled with NVRTC on first use (the private `cuda` module): composed, the five kernels
//! stream ~10 full-size tensors through memory per layer, fused two. Other devices use the
//! composed candle ops. Gradients (w.r.t. x only; α, β and the bias are frozen
//! weights) are provided through composed ops.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::fastmath::fast_exp;

use popcosmos_api::Result;

/// Below this many elements the CPU kernel stays on the calling thread.
pub const PAR_MIN_ELEMS: usize = 1 << 16;

/// Fused `(β + (1 − β) σ(α (x + bias))) (x + bias)`.
///
/// Arguments of the op: `x` `[G, N, U]` (or `[N, U]`), `α` and `β` `[G, U]` (or `[U]`); the
/// optional bias has the shape of α. `G` indexes independent networks (the 26 photulator bands).
#[derive(Debug, Clone)]
pub struct SpeculatorActivation {
    bias: Option<Tensor>,
}

impl SpeculatorActivation {
    /// The op, with `bias` (shape of α) added to `x` first if given.
    pub fn new(bias: Option<Tensor>) -> Self {
        Self { bias }
    }
}

/// Apply the speculator activation (with an optional bias added first) on any device.
///
/// `x` is `[G, N, U]` with `alpha`/`beta`/`bias` `[G, U]`, or `x` `[N, U]` with `[U]` parameters.
pub fn speculator_activation(
    x: &Tensor,
    alpha: &Tensor,
    beta: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let fused = x.dtype() == DType::F32
        && (x.device().is_cpu() || (x.device().is_cuda() && device_kernel_enabled()));
    if fused {
        let x = x.contiguous()?;
        let op = SpeculatorActivation::new(bias.cloned());
        Ok(x.apply_op3(&alpha.contiguous()?, &beta.contiguous()?, op)?)
    } else {
        Ok(composed(x, alpha, beta, bias)?)
    }
}

static DEVICE_KERNEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Use the fused CUDA kernels (this activation; the emission-line bandpass contraction) on
/// CUDA devices (default on; builds with the `cuda` feature). Turned off, CUDA runs the
/// composed candle ops: for A/B benchmarks (`bench gpu`).
pub fn set_device_kernel(enabled: bool) {
    DEVICE_KERNEL.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the fused CUDA kernels are on ([`set_device_kernel`]).
pub fn device_kernel_enabled() -> bool {
    DEVICE_KERNEL.load(std::sync::atomic::Ordering::Relaxed)
}

/// Reshape per-unit parameters `[G, U]` to `[G, 1, U]` so they broadcast over the rows of a
/// rank-3 `x`.
fn per_unit(p: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    if x.rank() == 3 && p.rank() == 2 {
        let (g, u) = p.dims2()?;
        p.reshape((g, 1, u))
    } else {
        Ok(p.clone())
    }
}

/// Reference implementation from candle ops (device-agnostic; used off-CPU and in tests).
pub fn composed(
    x: &Tensor,
    alpha: &Tensor,
    beta: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let y = match bias {
        Some(b) => x.broadcast_add(&per_unit(b, x)?)?,
        None => x.clone(),
    };
    let alpha = per_unit(alpha, x)?;
    let beta = per_unit(beta, x)?;
    let s = candle_nn::ops::sigmoid(&y.broadcast_mul(&alpha)?)?;
    let one_minus_beta = beta.affine(-1.0, 1.0)?;
    s.broadcast_mul(&one_minus_beta)?
        .broadcast_add(&beta)?
        .mul(&y)
}

fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("speculator activation: {what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("speculator activation: {what} must be contiguous"),
    }
}

impl CustomOp3 for SpeculatorActivation {
    fn name(&self) -> &'static str {
        "speculator-activation"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, "x")?;
        let alpha = cpu_f32(s2, l2, "alpha")?;
        let beta = cpu_f32(s3, l3, "beta")?;
        let dims = l1.dims();
        let units = *dims.last().unwrap_or(&1);
        let groups = if dims.len() == 3 { dims[0] } else { 1 };
        if alpha.len() != groups * units || beta.len() != groups * units {
            candle_core::bail!(
                "speculator activation: x {dims:?} needs alpha/beta with {} elements, got {}/{}",
                groups * units,
                alpha.len(),
                beta.len()
            );
        }
        let bias_guard;
        let zeros;
        let bias: &[f32] = match &self.bias {
            Some(b) => {
                bias_guard = b.storage_and_layout();
                match &*bias_guard.0 {
                    Storage::Cpu(s) => cpu_f32(s, bias_guard.1, "bias")?,
                    _ => candle_core::bail!("speculator activation: bias must live on the CPU"),
                }
            }
            None => {
                zeros = vec![0f32; groups * units];
                &zeros
            }
        };
        if bias.len() != groups * units {
            candle_core::bail!("speculator activation: bias has {} elements", bias.len());
        }
        let mut out = vec![0f32; x.len()];
        if units > 0 && groups > 0 && !x.is_empty() {
            let rows_per_group = x.len() / (groups * units);
            // Rows [row0, row0 + len/units) of the [G·N, U] view, split where the group changes.
            let run = |row0: usize, xi: &[f32], o: &mut [f32]| {
                let (mut row, mut off) = (row0, 0);
                while off < xi.len() {
                    let g = row / rows_per_group;
                    let rows = ((g + 1) * rows_per_group - row).min((xi.len() - off) / units);
                    let (p, len) = (g * units..(g + 1) * units, rows * units);
                    let span = off..off + len;
                    act_rows(
                        &xi[span.clone()],
                        &alpha[p.clone()],
                        &beta[p.clone()],
                        &bias[p],
                        &mut o[span],
                    );
                    row += rows;
                    off += len;
                }
            };
            if x.len() >= PAR_MIN_ELEMS {
                // Tasks of ~16k elements: big enough to amortise scheduling, small enough to
                // balance across the threads of the current rayon pool.
                let rows_per_task = (16_384 / units).max(1);
                out.par_chunks_mut(rows_per_task * units)
                    .zip(x.par_chunks(rows_per_task * units))
                    .enumerate()
                    .for_each(|(t, (o, xi))| run(t * rows_per_task, xi, o));
            } else {
                run(0, x, &mut out);
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::forward(self.bias.as_ref(), (s1, l1), (s2, l2), (s3, l3))
    }

    fn bwd(
        &self,
        x: &Tensor,
        alpha: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // d/dy [(β + (1−β)σ(αy)) y] = β + (1−β)σ + (1−β) α y σ (1−σ),  y = x + bias.
        let y = match &self.bias {
            Some(b) => x.broadcast_add(&per_unit(b, x)?)?,
            None => x.clone(),
        };
        let alpha = per_unit(alpha, x)?;
        let beta = per_unit(beta, x)?;
        let ay = y.broadcast_mul(&alpha)?;
        let s = candle_nn::ops::sigmoid(&ay)?;
        let one_minus_beta = beta.affine(-1.0, 1.0)?;
        let ds = (&s * s.affine(-1.0, 1.0)?)?.mul(&ay)?;
        let d = (s + ds)?
            .broadcast_mul(&one_minus_beta)?
            .broadcast_add(&beta)?;
        Ok((Some(grad_res.mul(&d)?), None, None))
    }
}

/// Rows of `x` (each `alpha.len()` long) → `out`, choosing the widest SIMD available.
pub(crate) fn act_rows(x: &[f32], alpha: &[f32], beta: &[f32], bias: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { act_rows_avx2(x, alpha, beta, bias, out) };
            return;
        }
    }
    act_rows_generic(x, alpha, beta, bias, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn act_rows_avx2(x: &[f32], alpha: &[f32], beta: &[f32], bias: &[f32], out: &mut [f32]) {
    act_rows_generic(x, alpha, beta, bias, out);
}

#[inline(always)]
fn act_rows_generic(x: &[f32], alpha: &[f32], beta: &[f32], bias: &[f32], out: &mut [f32]) {
    let units = alpha.len();
    for (o, xi) in out.chunks_exact_mut(units).zip(x.chunks_exact(units)) {
        for ((((o, &x), &a), &b), &c) in o.iter_mut().zip(xi).zip(alpha).zip(beta).zip(bias) {
            let y = x + c;
            let s = 1.0 / (1.0 + fast_exp(-(a * y)));
            *o = (b + (1.0 - b) * s) * y;
        }
    }
}

/// The fused activation on CUDA: one thread per element, a 2-D grid (y = network, x = its
/// rows × units) so the per-unit parameter index needs only 32-bit arithmetic.
#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::WrapErr;
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
    use candle_core::{CudaStorage, Layout, Shape, Tensor};

    use crate::cuda::{cuda_of, ptx, view};

    const SOURCE: &str = r#"
extern "C" __global__ void speculator_activation(
    const float* x, const float* alpha, const float* beta, const float* bias, float* out,
    unsigned int per_group, unsigned int units, int has_bias)
{
    const unsigned int g = blockIdx.y;
    const size_t base = (size_t)g * per_group;
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < per_group;
         i += blockDim.x * gridDim.x) {
        const unsigned int p = g * units + i % units;
        const float y = x[base + i] + (has_bias ? bias[p] : 0.0f);
        const float s = 1.0f / (1.0f + expf(-alpha[p] * y));
        const float b = beta[p];
        out[base + i] = (b + (1.0f - b) * s) * y;
    }
}
"#;

    pub(super) fn forward(
        bias: Option<&Tensor>,
        (s1, l1): (&CudaStorage, &Layout),
        (s2, l2): (&CudaStorage, &Layout),
        (s3, l3): (&CudaStorage, &Layout),
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = s1.device().clone();
        let dims = l1.dims();
        let units = *dims.last().unwrap_or(&1);
        let groups = if dims.len() == 3 { dims[0] } else { 1 };
        let n = l1.shape().elem_count();
        let per_group = n / groups.max(1);
        let params = groups * units;
        if l2.shape().elem_count() != params || l3.shape().elem_count() != params {
            candle_core::bail!("speculator activation: x {dims:?} and alpha/beta do not match");
        }
        if per_group > u32::MAX as usize || groups > 65_535 {
            candle_core::bail!("speculator activation: x {dims:?} too large for one launch");
        }
        let what = "speculator activation input";
        let (x, alpha, beta) = (
            view(s1, l1, what)?,
            view(s2, l2, what)?,
            view(s3, l3, what)?,
        );
        let bias_guard = bias.map(Tensor::storage_and_layout);
        let bias_view = match &bias_guard {
            Some((s, l)) if l.shape().elem_count() == params => {
                Some(view(cuda_of(s, "speculator activation bias")?, l, what)?)
            }
            Some(_) => candle_core::bail!("speculator activation: bias does not match x"),
            None => None,
        };
        // SAFETY: every element is written by the kernel below.
        let out: CudaSlice<f32> = unsafe { dev.alloc::<f32>(n)? };
        if n > 0 {
            let module = "popcosmos_speculator_activation";
            let func =
                dev.get_or_load_custom_func("speculator_activation", module, ptx(module, SOURCE)?)?;
            const THREADS: u32 = 256;
            let cfg = LaunchConfig {
                grid_dim: (
                    (per_group as u32).div_ceil(THREADS).min(65_535),
                    groups as u32,
                    1,
                ),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let (per_group, units) = (per_group as u32, units as u32);
            let has_bias = i32::from(bias_view.is_some());
            let mut b = func.builder();
            b.arg(&x).arg(&alpha).arg(&beta);
            // Without a bias the kernel never reads the pointer; pass alpha as a valid one.
            b.arg(bias_view.as_ref().unwrap_or(&alpha));
            b.arg(&out).arg(&per_group).arg(&units).arg(&has_bias);
            // SAFETY: the kernel reads `groups·per_group` elements of x and writes as many of
            // `out`, and reads `groups·units` of alpha/beta/bias, all checked above.
            unsafe { b.launch(cfg) }.w()?;
        }
        Ok((CudaStorage::wrap_cuda_slice(out, dev), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_matches_composed_and_has_gradients() {
        let dev = Device::Cpu;
        let (g, n, u) = (3, 700, 40); // > PAR_MIN_ELEMS total, so the parallel path runs too
        let x = Tensor::randn(0f32, 3.0, (g, n, u), &dev).unwrap();
        let a = Tensor::randn(0f32, 1.0, (g, u), &dev).unwrap();
        let b = Tensor::rand(0f32, 1.0, (g, u), &dev).unwrap();
        let c = Tensor::randn(0f32, 1.0, (g, u), &dev).unwrap();
        for bias in [None, Some(&c)] {
            let fused = speculator_activation(&x, &a, &b, bias).unwrap();
            let comp = composed(&x, &a, &b, bias).unwrap();
            let diff = (fused - comp).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        }
        // Small (serial) rank-2 case.
        let x2 = Tensor::randn(0f32, 3.0, (5, u), &dev).unwrap();
        let a2 = a.get(0).unwrap();
        let b2 = b.get(0).unwrap();
        let fused = speculator_activation(&x2, &a2, &b2, None).unwrap();
        let comp = composed(&x2, &a2, &b2, None).unwrap();
        let diff = (fused - comp).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        // Gradient against central differences of the composed op.
        let v = candle_core::Var::from_tensor(&x2).unwrap();
        let y = speculator_activation(v.as_tensor(), &a2, &b2, None).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(v.as_tensor()).unwrap();
        let h = 1e-2;
        let up = composed(&(&x2 + h).unwrap(), &a2, &b2, None).unwrap();
        let dn = composed(&(&x2 - h).unwrap(), &a2, &b2, None).unwrap();
        let fd = ((up - dn).unwrap() / (2.0 * h)).unwrap();
        let diff = (g - fd).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 2e-2);
    }
}
