//! Custom CUDA kernels (cargo feature `cuda`): CUDA C sources compiled with NVRTC on first
//! use (PTX cached per process, the module loaded once per device by candle), plus the views
//! the ops hand to them. Used by [`crate::activation`] and [`crate::emlines`].

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::cuda_backend::cudarc::driver::CudaView;
use candle_core::{CudaStorage, Layout, Storage};

static PTX: Mutex<Option<HashMap<&'static str, &'static str>>> = Mutex::new(None);

/// The PTX of `module`, compiling `source` with NVRTC the first time (kept for the process;
/// hand it to `CudaDevice::get_or_load_custom_func`, which loads it once per device).
pub(crate) fn ptx(module: &'static str, source: &str) -> candle_core::Result<&'static str> {
    let mut cache = PTX.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(p) = cache.get(module) {
        return Ok(p);
    }
    let compiled = candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(source)
        .map_err(|e| candle_core::Error::Msg(format!("NVRTC: {module}: {e:?}")))?;
    let p: &'static str = Box::leak(compiled.to_src().into_boxed_str());
    cache.insert(module, p);
    Ok(p)
}

/// The contiguous f32 elements of a storage (an error naming `what` otherwise).
pub(crate) fn view<'a>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<CudaView<'a, f32>> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(s.as_cuda_slice::<f32>()?.slice(start..end)),
        None => candle_core::bail!("{what} must be contiguous f32"),
    }
}

/// The CUDA storage of a tensor an op carries besides its arguments.
pub(crate) fn cuda_of<'a>(s: &'a Storage, what: &str) -> candle_core::Result<&'a CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        _ => candle_core::bail!("{what} must be on the CUDA device"),
    }
}
