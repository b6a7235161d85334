use std::time::Instant;
use candle_core::{Device, Tensor};
fn cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
fn time<F: FnMut()>(name: &str, reps: usize, mut f: F) {
    f();
    let (c0, t0) = (cpu(), Instant::now());
    for _ in 0..reps { f(); }
    let (c, t) = (cpu() - c0, t0.elapsed().as_secs_f64());
    println!("{name:40} wall {:9.1} µs  cpu {:9.1} µs", t / reps as f64 * 1e6, c / reps as f64 * 1e6);
}
fn main() {
    let dev = Device::Cpu;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        let n = 1024;
        let h = Tensor::randn(0f32, 1.0, (26, n, 128), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.1, (26, 128, 128), &dev).unwrap();
        let a = Tensor::randn(0f32, 1.0, (26, 128), &dev).unwrap();
        let b = Tensor::rand(0f32, 1.0, (26, 128), &dev).unwrap();
        let flop = 2.0 * 26.0 * n as f64 * 128.0 * 128.0;
        time("batched matmul 26x1024x128x128", 20, || { h.matmul(&w).unwrap(); });
        println!("  -> {:.1} GFLOP/s (wall)", flop / 1e9 / {let t=Instant::now(); for _ in 0..10 { h.matmul(&w).unwrap(); } t.elapsed().as_secs_f64()/10.0});
        let h2 = h.reshape((26 * n, 128)).unwrap();
        let w2 = w.get(0).unwrap();
        time("single matmul 26624x128x128", 20, || { h2.matmul(&w2).unwrap(); });
        time("fused act 26x1024x128 (+bias)", 20, || { popcosmos_sps::activation::speculator_activation(&h, &a, &b, Some(&a)).unwrap(); });
        time("composed act", 5, || { popcosmos_sps::activation::composed(&h, &a, &b, Some(&a)).unwrap(); });
        let mut phot = popcosmos_sps::Photulator::builtin(&dev).unwrap();
        for n in [1usize, 64, 1024, 4096] {
            let x = popcosmos_sps::bench::uniform_inputs(n, &dev).unwrap();
            time(&format!("fused photulator n={n}"), (4096 / n).clamp(3, 300), || { phot.absolute_magnitudes(&x).unwrap(); });
        }
        phot.set_fused_kernel(false);
        for n in [1usize, 64, 1024, 4096] {
            let x = popcosmos_sps::bench::uniform_inputs(n, &dev).unwrap();
            time(&format!("photulator n={n}"), (4096 / n).clamp(3, 300), || { phot.absolute_magnitudes(&x).unwrap(); });
        }
        let x1 = Tensor::randn(0f32, 1.0, (26, 1, 128), &dev).unwrap();
        time("batched matmul m=1", 300, || { x1.matmul(&w).unwrap(); });
        time("fused act m=1", 300, || { popcosmos_sps::activation::speculator_activation(&x1, &a, &b, Some(&a)).unwrap(); });
    });
}
