//! Branch-free f32 `exp` / `ln` that LLVM vectorises (used by the CPU kernels).
//!
//! libm's `expf`/`logf` are scalar calls, which keeps loops around them from vectorising; these
//! are the classic Cephes polynomials with Cody–Waite range reduction, ≈1e-7 relative error,
//! written with bit tricks instead of `round`/`floor` so they compile to plain SIMD on x86-64.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5·2²³: adding it rounds a float of magnitude < 2²² to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x in f32 to ≈1e-7 relative, branch-free so the loops above vectorise.
///
/// Inputs above 88 are clamped (e^88 ≈ 1.7e38, finite) and inputs below −87 give 0; beyond
/// those a sigmoid is 0 or 1 to f32 precision anyway. NaN propagates through the final
/// multiply by y in the activation.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    let underflow = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    // n = round(x / ln 2); r = x − n ln 2 in two parts (Cody–Waite) so r is exact.
    let t = x * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = x - n * 0.693_359_4;
    let r = r - n * -2.121_944_4e-4;
    // Cephes expf minimax polynomial on |r| ≤ ln2/2.
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5; // 5.0000001201e-1 rounds to 0.5 in f32
    let p = p * (r * r) + r + 1.0;
    // 2^n by writing n + 127 into the exponent field (n is in the low bits of t).
    let n_int = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let scale = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
    // Below −87 return 0 (the true value is < 1.7e-38, a denormal at best).
    if underflow { 0.0 } else { p * scale }
}

/// ln x in f32 to ≈1e-7 relative for normal positive x (Cephes `logf`). Inputs below
/// 1e-37 are treated as 1e-37 (ln = −85.2); callers only use it where that is harmless.
#[inline(always)]
pub fn fast_ln(x: f32) -> f32 {
    let x = x.max(1e-37);
    let bits = x.to_bits();
    // x = m · 2^e with m in [0.5, 1).
    let mut e = (((bits >> 23) & 0xff) as i32).wrapping_sub(126);
    let m = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000);
    // Shift m into [√½, √2) so the polynomial argument stays small.
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    e = e.wrapping_sub(small as i32);
    let m = if small { m + m - 1.0 } else { m - 1.0 };
    let e = e as f32;
    let z = m * m;
    let mut y = 7.037_683_6e-2;
    y = y * m - 1.151_461_e-1;
    y = y * m + 1.167_699_9e-1;
    y = y * m - 1.242_014_1e-1;
    y = y * m + 1.424_932_3e-1;
    y = y * m - 1.666_805_8e-1;
    y = y * m + 2.000_071_5e-1;
    y = y * m - 2.499_999_4e-1;
    y = y * m + 3.333_333e-1;
    let mut y = y * m * z;
    y += e * -2.121_944_4e-4;
    y += -0.5 * z;
    (m + y) + e * 0.693_359_4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst: f64 = 0.0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let e = (x as f64).exp();
            let rel = ((fast_exp(x) as f64 - e) / e).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(fast_exp(-1000.0), 0.0);
        assert!(fast_exp(1000.0).is_finite());
    }

    #[test]
    fn fast_ln_is_accurate() {
        let mut worst: f64 = 0.0;
        let mut x = 1e-30f64;
        while x < 1e30 {
            let rel = (fast_ln(x as f32) as f64 - (x as f32 as f64).ln()).abs()
                / (x as f32 as f64).ln().abs().max(1.0);
            worst = worst.max(rel);
            x *= 1.0137;
        }
        assert!(worst < 3e-7, "worst error {worst}");
    }
}
