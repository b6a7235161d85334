//! `cargo bench -p popcosmos-sps`: photulator stack throughput (see `popcosmos_sps::bench_emulator`).
//!
//! Run with `RAYON_NUM_THREADS` exported (candle otherwise re-reads /proc/cpuinfo on every
//! matmul). Set `BENCH_SECONDS` to change the time per configuration and
//! `BENCH_TENSOR_PATH=1` to time the batched candle path instead of the fused CPU kernel.

use std::time::Duration;

fn main() -> popcosmos_api::Result<()> {
    popcosmos_api::configure_cpu_threads();
    let all = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let secs: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let device = candle_core::Device::Cpu;
    let mut phot = popcosmos_sps::Photulator::builtin(&device)?;
    // BENCH_TENSOR_PATH=1 times the batched candle path instead of the fused CPU kernel.
    let tensor_path = std::env::var_os("BENCH_TENSOR_PATH").is_some();
    phot.set_fused_kernel(!tensor_path);
    let mut threads = vec![1];
    if all > 1 {
        threads.push(all);
    }
    let table = popcosmos_sps::bench_emulator(
        &phot,
        &[1, 64, 4096, 65536],
        &threads,
        Duration::from_secs_f64(secs),
    )?;
    println!(
        "RAYON_NUM_THREADS={:?}, path: {}",
        std::env::var("RAYON_NUM_THREADS").ok(),
        if tensor_path || !phot.has_fused_kernel() {
            "batched candle tensors"
        } else {
            "fused CPU kernel"
        }
    );
    println!("{table}");
    Ok(())
}
