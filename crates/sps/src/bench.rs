//! Throughput benchmark of the photulator stack (26 bands, CPU).
//!
//! Thread control: each thread count gets a dedicated rayon `ThreadPool` and the timed loop
//! runs inside `pool.install`. That governs both the fused activation (it uses the *current*
//! rayon pool) and candle's gemm, whose `Parallelism::Rayon(n)` splits work with `par_iter`
//! on the current pool: with a 1-thread pool its `n` chunks run one
//! after another. candle's own element-wise kernels use a separate persistent "barrier pool"
//! (sized once from `CANDLE_NUM_THREADS`/`RAYON_NUM_THREADS`) above 64 k elements; the forward
//! keeps its element-wise ops below that size, and the `cpu/wall` column (process CPU time /
//! wall time over the timed loop) shows how many cores were really busy.

use std::fmt;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use crate::photulator::Photulator;
use popcosmos_api::{Error, Result};

/// One benchmark measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// Parameter vectors per call.
    pub batch: usize,
    /// Threads of the rayon pool the calls ran in.
    pub threads: usize,
    /// Median wall time of one `absolute_magnitudes` call.
    pub seconds_per_call: f64,
    /// Parameter vectors per second, each giving all bands.
    pub galaxy_evals_per_s: f64,
    /// Achieved GFLOP/s (FLOP per galaxy evaluation, bands × 2 × Σ_layers in·out, × galaxy
    /// evaluations per second).
    pub gflops: f64,
    /// Process CPU time / wall time over the timed calls (NaN where unavailable).
    pub cpu_per_wall: f64,
    /// Number of timed calls.
    pub calls: usize,
}

/// A benchmark table with a `Display` rendering in Markdown.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchTable {
    /// One row per (batch, threads) configuration.
    pub rows: Vec<BenchRow>,
    /// FLOP per galaxy evaluation used for the GFLOP/s column.
    pub flop_per_galaxy: f64,
}

impl fmt::Display for BenchTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| batch | threads | µs/call | galaxy-evals/s | GFLOP/s | cpu/wall | calls |"
        )?;
        writeln!(f, "|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in &self.rows {
            writeln!(
                f,
                "| {} | {} | {:.1} | {:.0} | {:.1} | {:.2} | {} |",
                r.batch,
                r.threads,
                r.seconds_per_call * 1e6,
                r.galaxy_evals_per_s,
                r.gflops,
                r.cpu_per_wall,
                r.calls
            )?;
        }
        write!(
            f,
            "(one galaxy-evaluation = {:.3} MFLOP)",
            self.flop_per_galaxy / 1e6
        )
    }
}

/// FLOP of one galaxy evaluation: bands × 2 × Σ_layers in·out (26 × 2 × (15·128 + 3·128² +
/// 128) for COSMOS).
pub fn flop_per_galaxy(photulator: &Photulator) -> f64 {
    let a = &photulator.config().architecture;
    let macs: usize = a.windows(2).map(|w| w[0] * w[1]).sum();
    (photulator.n_bands() * 2 * macs) as f64
}

/// Deterministic θ₁₅ uniform in the CatalogueGenerator box (√dust2 in [0, 2], z in [0, 6]).
pub fn uniform_inputs(n: usize, device: &Device) -> Result<Tensor> {
    use popcosmos_api::params::{LOWER, UPPER};
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        // xorshift64*: fixed inputs without pulling in a RNG crate.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f64 / (1u64 << 24) as f64
    };
    let mut v = Vec::with_capacity(n * 15);
    for _ in 0..n {
        for i in 1..16 {
            let (lo, hi) = if i == 8 {
                (0.0, 2.0)
            } else {
                (LOWER[i], UPPER[i])
            };
            v.push((lo + (hi - lo) * next()) as f32);
        }
    }
    Ok(Tensor::from_vec(v, (n, 15), device)?)
}

/// Process CPU time (user + system) from `/proc/self/stat`, if available.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // CLK_TCK is 100 on Linux
}

/// Time `photulator.absolute_magnitudes` for each batch size and thread count, running each
/// configuration for at least `min_time` (and at least 3 calls) after one warm-up call.
pub fn bench_emulator(
    photulator: &Photulator,
    batches: &[usize],
    threads: &[usize],
    min_time: Duration,
) -> Result<BenchTable> {
    let flop = flop_per_galaxy(photulator);
    let mut rows = Vec::new();
    for &t in threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .map_err(|e| Error::Invalid(format!("cannot build a {t}-thread pool: {e}")))?;
        for &batch in batches {
            let x = uniform_inputs(batch, photulator.device())?;
            let row = pool.install(|| -> Result<BenchRow> {
                photulator.absolute_magnitudes(&x)?; // warm-up (allocations, caches)
                let mut times = Vec::new();
                let cpu0 = process_cpu_seconds();
                let start = Instant::now();
                while times.len() < 3 || start.elapsed() < min_time {
                    let t0 = Instant::now();
                    let out = photulator.absolute_magnitudes(&x)?;
                    photulator.device().synchronize()?;
                    times.push(t0.elapsed().as_secs_f64());
                    drop(out);
                }
                let wall = start.elapsed().as_secs_f64();
                let cpu = match (cpu0, process_cpu_seconds()) {
                    (Some(a), Some(b)) => (b - a) / wall,
                    _ => f64::NAN,
                };
                times.sort_by(f64::total_cmp);
                let median = times[times.len() / 2];
                let rate = batch as f64 / median;
                Ok(BenchRow {
                    batch,
                    threads: t,
                    seconds_per_call: median,
                    galaxy_evals_per_s: rate,
                    gflops: rate * flop / 1e9,
                    cpu_per_wall: cpu,
                    calls: times.len(),
                })
            })?;
            rows.push(row);
        }
    }
    Ok(BenchTable {
        rows,
        flop_per_galaxy: flop,
    })
}
