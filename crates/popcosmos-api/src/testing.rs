//! Test support shared by the workspace's tests (like `candle_core::test_utils`); every
//! helper panics instead of returning an error.

use candle_core::{DType, Tensor};

/// Largest |a − b| over all elements, computed in f64. Panics if the shapes differ.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let to_f64 = |t: &Tensor| t.to_dtype(DType::F64).expect("f64 tensor");
    (to_f64(a) - to_f64(b))
        .and_then(|d| d.abs()?.max_all()?.to_scalar::<f64>())
        .expect("tensors of the same shape")
}

/// Largest |a − b| over two slices of the same length (0 when empty). Panics if the lengths
/// differ.
pub fn max_abs_diff_slices(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "slices of different lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}
