//! Whole-network fused CPU kernel for the photulator stack (x86-64 AVX2 + FMA).
//!
//! Why: candle's CPU path runs each layer as 26 separate `gemm` calls over `[rows, 128]`
//! activations that round-trip through memory between layers. Here one task evaluates *all*
//! layers of one band for a block of [`ROW_BLOCK`] rows, so activations live in L1/L2 and the
//! band's ~200 kB of weights stay in L2; the matmuls use a 6×16 register-tiled FMA
//! micro-kernel over weights pre-packed into 16-column panels at load time, with the fused
//! bias + activation of [`crate::activation`] applied per block. Same maths as the batched
//! tensor path (differences are f32 rounding, FMA contraction included); tasks run on the
//! current rayon pool.
//!
//! Only used for forward passes on the CPU without autograd tracking; everything else goes
//! through the candle tensor path.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

/// Rows per task (a multiple of the micro-kernel height 6).
pub const ROW_BLOCK: usize = 48;
const MR: usize = 6;
const NR: usize = 16;

/// One hidden layer of every band, packed for the micro-kernel.
#[derive(Debug, Clone)]
struct PackedLayer {
    k: usize,
    u: usize,
    /// `[bands][u / 16][k][16]`.
    panels: Vec<f32>,
    bias: Vec<f32>,
    alpha: Vec<f32>,
    beta: Vec<f32>,
}

/// The photulator weights in the kernel's layout.
#[derive(Debug, Clone)]
pub struct PackedPhotulator {
    bands: usize,
    n_in: usize,
    input_shift: Vec<f32>,
    input_scale: Vec<f32>,
    hidden: Vec<PackedLayer>,
    /// Output layer (1 unit): weights `[bands][k]`, bias/alpha/beta `[bands]`.
    out_w: Vec<f32>,
    out_b: Vec<f32>,
    out_alpha: Vec<f32>,
    out_beta: Vec<f32>,
    output_shift: Vec<f32>,
    output_scale: Vec<f32>,
}

/// Host copies of one layer: weight `[bands][in][out]`, bias/alpha/beta `[bands][out]`.
pub struct HostLayer {
    /// Input width.
    pub n_in: usize,
    /// Output width.
    pub n_out: usize,
    /// Weights `[bands][in][out]`, row-major.
    pub weight: Vec<f32>,
    /// Biases `[bands][out]`.
    pub bias: Vec<f32>,
    /// Speculator-activation α `[bands][out]`.
    pub alpha: Vec<f32>,
    /// Speculator-activation β `[bands][out]`.
    pub beta: Vec<f32>,
}

impl PackedPhotulator {
    /// Pack the layers, or `None` if this CPU or architecture cannot use the kernel.
    pub fn new(
        bands: usize,
        input_shift: Vec<f32>,
        input_scale: Vec<f32>,
        layers: &[HostLayer],
        output_shift: Vec<f32>,
        output_scale: Vec<f32>,
    ) -> Option<Self> {
        if !cpu_supported() || layers.len() < 2 {
            return None;
        }
        let (last, hidden) = layers.split_last()?;
        if last.n_out != 1 || hidden.iter().any(|l| l.n_out % NR != 0) {
            return None;
        }
        let hidden = hidden
            .iter()
            .map(|l| {
                let (k, u) = (l.n_in, l.n_out);
                let mut panels = Vec::with_capacity(bands * k * u);
                for g in 0..bands {
                    let w = &l.weight[g * k * u..(g + 1) * k * u];
                    for p in 0..u / NR {
                        for kk in 0..k {
                            panels.extend_from_slice(&w[kk * u + p * NR..kk * u + (p + 1) * NR]);
                        }
                    }
                }
                PackedLayer {
                    k,
                    u,
                    panels,
                    bias: l.bias.clone(),
                    alpha: l.alpha.clone(),
                    beta: l.beta.clone(),
                }
            })
            .collect::<Vec<_>>();
        Some(Self {
            bands,
            n_in: layers[0].n_in,
            input_shift,
            input_scale,
            hidden,
            out_w: last.weight.clone(),
            out_b: last.bias.clone(),
            out_alpha: last.alpha.clone(),
            out_beta: last.beta.clone(),
            output_shift,
            output_scale,
        })
    }

    /// θ₁₅ rows (row-major `[n, n_in]`) → absolute magnitudes `[n, bands]`.
    pub fn absolute_magnitudes(&self, x: &[f32]) -> Vec<f32> {
        let n = x.len() / self.n_in;
        // Standardise once for all bands.
        let xs: Vec<f32> = x
            .chunks_exact(self.n_in)
            .flat_map(|row| {
                row.iter()
                    .zip(&self.input_shift)
                    .zip(&self.input_scale)
                    .map(|((v, s), c)| (v - s) / c)
            })
            .collect();
        let mut by_band = vec![0f32; self.bands * n];
        let width = self.hidden.iter().map(|l| l.u).max().unwrap_or(0);
        let max_k = self.hidden.iter().map(|l| l.k).max().unwrap_or(0);
        let scratch = || Scratch {
            packed_a: vec![0f32; ROW_BLOCK * max_k],
            h: [vec![0f32; ROW_BLOCK * width], vec![0f32; ROW_BLOCK * width]],
        };
        if n * self.bands >= 16 * 26 {
            by_band
                .par_chunks_mut(n)
                .enumerate()
                .for_each(|(g, band_out)| {
                    band_out
                        .par_chunks_mut(ROW_BLOCK)
                        .enumerate()
                        .for_each_init(scratch, |buf, (b, out)| {
                            self.block(g, &xs[b * ROW_BLOCK * self.n_in..], out, buf)
                        });
                });
        } else {
            let mut buf = scratch();
            for (g, band_out) in by_band.chunks_mut(n).enumerate() {
                for (b, out) in band_out.chunks_mut(ROW_BLOCK).enumerate() {
                    self.block(g, &xs[b * ROW_BLOCK * self.n_in..], out, &mut buf);
                }
            }
        }
        // [bands, n] → [n, bands] with the output de-standardisation.
        let mut out = vec![0f32; n * self.bands];
        for (r, row) in out.chunks_exact_mut(self.bands).enumerate() {
            for (g, o) in row.iter_mut().enumerate() {
                *o = by_band[g * n + r] * self.output_scale[g] + self.output_shift[g];
            }
        }
        out
    }

    /// All layers of band `g` for `out.len()` rows starting at `xs`.
    fn block(&self, g: usize, xs: &[f32], out: &mut [f32], buf: &mut Scratch) {
        let rows = out.len();
        let mut lda = self.n_in;
        for (i, l) in self.hidden.iter().enumerate() {
            let (k, u) = (l.k, l.u);
            let panels = &l.panels[g * k * u..(g + 1) * k * u];
            let (h0, h1) = buf.h.split_at_mut(1);
            let (src, dst) = if i % 2 == 0 {
                (&h1[0], &mut h0[0])
            } else {
                (&h0[0], &mut h1[0])
            };
            let input: &[f32] = if i == 0 { xs } else { src };
            let p = g * u..(g + 1) * u;
            let act = Epilogue {
                bias: &l.bias[p.clone()],
                alpha: &l.alpha[p.clone()],
                beta: &l.beta[p],
            };
            // SAFETY: `new` only builds this struct when AVX2 and FMA are available; the slices
            // hold `rows` rows of `lda` (input) and `u` (output) floats.
            unsafe {
                let a = &input[..(rows - 1) * lda + k];
                gemm_block(
                    a,
                    lda,
                    rows,
                    k,
                    u,
                    panels,
                    &act,
                    &mut dst[..rows * u],
                    &mut buf.packed_a[..rows * k],
                )
            };
            lda = u;
        }
        let input = &buf.h[(self.hidden.len() - 1) % 2];
        let k = lda;
        let w = &self.out_w[g * k..(g + 1) * k];
        let (b, a, be) = (self.out_b[g], self.out_alpha[g], self.out_beta[g]);
        for (r, o) in out.iter_mut().enumerate() {
            // SAFETY: as above.
            let y = unsafe { dot_avx2(&input[r * k..(r + 1) * k], w) } + b;
            let s = 1.0 / (1.0 + crate::fastmath::fast_exp(-(a * y)));
            *o = (be + (1.0 - be) * s) * y;
        }
    }
}

/// Per-thread buffers of one row block: the packed layer input and two ping-pong activations.
struct Scratch {
    /// Row block of the layer input repacked into micro-panels.
    packed_a: Vec<f32>,
    h: [Vec<f32>; 2],
}

fn cpu_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block(
    _: &[f32],
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: &[f32],
    _: &Epilogue,
    _: &mut [f32],
    _: &mut [f32],
) {
    unreachable!("the fused kernel is only built on x86-64")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot_avx2(_: &[f32], _: &[f32]) -> f32 {
    unreachable!("the fused kernel is only built on x86-64")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    // 8 partial sums so the loop vectorises without reassociation.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for i in 0..8 {
            acc[i] = a[c * 8 + i].mul_add(b[c * 8 + i], acc[i]);
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for i in chunks * 8..a.len() {
        s = a[i].mul_add(b[i], s);
    }
    s
}

/// Per-unit bias and activation parameters of one layer of one band, applied in registers
/// as each output tile leaves the micro-kernel (the pre-activations are never stored).
struct Epilogue<'a> {
    bias: &'a [f32],
    alpha: &'a [f32],
    beta: &'a [f32],
}

/// `c[rows, u] = act(a[rows, k] (row stride lda) @ W + bias)` with W packed as `[u/16][k][16]`.
///
/// A is first repacked into 6-row micro-panels `[tile][k][6]` so the micro-kernel's
/// broadcasts walk one contiguous stream (no per-row address arithmetic in the inner loop).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block(
    a: &[f32],
    lda: usize,
    rows: usize,
    k: usize,
    u: usize,
    panels: &[f32],
    act: &Epilogue,
    c: &mut [f32],
    ap: &mut [f32],
) {
    let mut off = 0;
    let mut r = 0;
    while r < rows {
        let m = MR.min(rows - r);
        for kk in 0..k {
            for i in 0..m {
                ap[off + kk * m + i] = a[(r + i) * lda + kk];
            }
        }
        off += m * k;
        r += m;
    }
    for p in 0..u / NR {
        let panel = panels[p * k * NR..(p + 1) * k * NR].as_ptr();
        let cols = p * NR..(p + 1) * NR;
        let e = [
            act.bias[cols.clone()].as_ptr(),
            act.alpha[cols.clone()].as_ptr(),
            act.beta[cols].as_ptr(),
        ];
        let mut r = 0;
        while r < rows {
            let m = MR.min(rows - r);
            // SAFETY: tile r's packed rows start at r·k; c has `rows` rows of `u` floats.
            unsafe {
                let (a_t, c_t) = (ap.as_ptr().add(r * k), c.as_mut_ptr().add(r * u + p * NR));
                match m {
                    6 => tile::<6>(a_t, k, panel, e, c_t, u),
                    5 => tile::<5>(a_t, k, panel, e, c_t, u),
                    4 => tile::<4>(a_t, k, panel, e, c_t, u),
                    3 => tile::<3>(a_t, k, panel, e, c_t, u),
                    2 => tile::<2>(a_t, k, panel, e, c_t, u),
                    _ => tile::<1>(a_t, k, panel, e, c_t, u),
                }
            }
            r += m;
        }
    }
}

/// The register-tiled micro-kernel: `M` rows × 16 columns, `2M` ymm accumulators; `a` is a
/// packed micro-panel `[k][M]`; `e` points at the tile's 16 bias, alpha and beta values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile<const M: usize>(
    a: *const f32,
    k: usize,
    panel: *const f32,
    e: [*const f32; 3],
    c: *mut f32,
    ldc: usize,
) {
    use std::arch::x86_64::*;
    let mut acc0 = [_mm256_setzero_ps(); M];
    let mut acc1 = [_mm256_setzero_ps(); M];
    for kk in 0..k {
        unsafe {
            let b0 = _mm256_loadu_ps(panel.add(kk * NR));
            let b1 = _mm256_loadu_ps(panel.add(kk * NR + 8));
            let ak = a.add(kk * M);
            for i in 0..M {
                let av = _mm256_broadcast_ss(&*ak.add(i));
                acc0[i] = _mm256_fmadd_ps(av, b0, acc0[i]);
                acc1[i] = _mm256_fmadd_ps(av, b1, acc1[i]);
            }
        }
    }
    unsafe {
        for (h, acc) in [acc0, acc1].iter().enumerate() {
            let bias = _mm256_loadu_ps(e[0].add(8 * h));
            let alpha = _mm256_loadu_ps(e[1].add(8 * h));
            let beta = _mm256_loadu_ps(e[2].add(8 * h));
            let one_minus_beta = _mm256_sub_ps(_mm256_set1_ps(1.0), beta);
            for (i, &v) in acc.iter().enumerate() {
                let y = _mm256_add_ps(v, bias);
                let out = speculator_act8(y, alpha, beta, one_minus_beta);
                _mm256_storeu_ps(c.add(i * ldc + 8 * h), out);
            }
        }
    }
}

/// `(β + (1−β)·σ(α·y))·y` on 8 lanes, with the `exp` of [`crate::fastmath::fast_exp`]
/// (same polynomial) written in intrinsics so it runs on the accumulators in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn speculator_act8(
    y: std::arch::x86_64::__m256,
    alpha: std::arch::x86_64::__m256,
    beta: std::arch::x86_64::__m256,
    one_minus_beta: std::arch::x86_64::__m256,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    const ROUND_MAGIC: f32 = 12_582_912.0;
    // x = −α·y clamped so e^x stays finite and normal; beyond the clamp σ is 0 or 1 in f32.
    let x = _mm256_mul_ps(alpha, y);
    let x = _mm256_sub_ps(_mm256_setzero_ps(), x);
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
        _mm256_set1_ps(88.0),
    );
    let magic = _mm256_set1_ps(ROUND_MAGIC);
    let t = _mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), magic);
    let n = _mm256_sub_ps(t, magic);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
    let rr = _mm256_mul_ps(r, r);
    let p = _mm256_add_ps(_mm256_fmadd_ps(p, rr, r), _mm256_set1_ps(1.0));
    // 2^n from the integer sitting in the low mantissa bits of t.
    let n_int = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(magic));
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        n_int,
        _mm256_set1_epi32(127),
    )));
    let ex = _mm256_mul_ps(p, scale);
    // σ = 1 / (1 + e^x) by a true division, and the last line deliberately not an FMA: an
    // `rcp` + Newton reciprocal or a fused `β + (1−β)·σ` is as accurate against f64 but rounds
    // differently from the PyTorch reference, which doubles our error against its fixtures.
    let d = _mm256_add_ps(_mm256_set1_ps(1.0), ex);
    let s = _mm256_div_ps(_mm256_set1_ps(1.0), d);
    _mm256_mul_ps(_mm256_add_ps(beta, _mm256_mul_ps(one_minus_beta, s)), y)
}

/// candle wrapper: θ₁₅ `[n, n_in]` f32 (CPU) → absolute magnitudes `[n, bands]`.
#[derive(Debug, Clone)]
pub struct FusedPhotulatorOp<'a>(pub &'a PackedPhotulator);

impl CustomOp1 for FusedPhotulatorOp<'_> {
    fn name(&self) -> &'static str {
        "photulator-fused-cpu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("fused photulator: expected contiguous f32 input"),
        };
        let (n, d) = l.shape().dims2()?;
        if d != self.0.n_in {
            candle_core::bail!(
                "fused photulator: input has {d} columns, expected {}",
                self.0.n_in
            );
        }
        let out = self.0.absolute_magnitudes(x);
        Ok((CpuStorage::F32(out), Shape::from((n, self.0.bands))))
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The in-register activation against the f64 formula: ~f32 rounding over the range of
    /// pre-activations the photulators produce, exact limits far out.
    #[test]
    fn register_activation_is_accurate() {
        if !cpu_supported() {
            return;
        }
        use std::arch::x86_64::*;
        let (mut worst, mut worst_old) = (0f64, 0f64);
        let (alpha, beta) = (0.7f32, 0.3f32);
        let mut y = -300.0f32;
        while y < 300.0 {
            let ys: [f32; 8] = std::array::from_fn(|i| y + 0.001 * i as f32);
            let mut out = [0f32; 8];
            // SAFETY: AVX2+FMA checked above.
            unsafe {
                let v = speculator_act8(
                    _mm256_loadu_ps(ys.as_ptr()),
                    _mm256_set1_ps(alpha),
                    _mm256_set1_ps(beta),
                    _mm256_set1_ps(1.0 - beta),
                );
                _mm256_storeu_ps(out.as_mut_ptr(), v);
            }
            for (&yi, &o) in ys.iter().zip(&out) {
                let (a, b, x) = (alpha as f64, beta as f64, yi as f64);
                let exact = (b + (1.0 - b) / (1.0 + (-a * x).exp())) * x;
                let old = {
                    let s = 1.0 / (1.0 + crate::fastmath::fast_exp(-(alpha * yi)));
                    (beta + (1.0 - beta) * s) * yi
                };
                let scale = exact.abs().max(1e-30);
                worst = worst.max((o as f64 - exact).abs() / scale);
                worst_old = worst_old.max((old as f64 - exact).abs() / scale);
            }
            y += 0.0173;
        }
        eprintln!("activation: register {worst:.2e}, scalar {worst_old:.2e} relative");
        assert!(worst < 4e-7, "relative error {worst}");
    }
}
