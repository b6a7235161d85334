//! `popcosmos-cli bench gpu --device cpu`: the device benchmark's code path runs end to end on
//! a CPU (CI has no GPU), comparing the CPU with itself exactly and printing every table.

use std::process::Command;

#[test]
fn device_benchmark_runs_on_the_cpu() {
    let o = Command::new(env!("CARGO_BIN_EXE_popcosmos-cli"))
        .env("RAYON_NUM_THREADS", "2")
        .args([
            "bench",
            "gpu",
            "--device",
            "cpu",
            "--galaxies",
            "2",
            "--walkers",
            "8",
            "--steps",
            "2",
            "--batches",
            "64",
            "--seconds",
            "0.01",
            "--priors",
            "prospector-alpha",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The same device on both sides: the comparison must be exact.
    assert!(out.contains("| model flux, relative | 0.00e0 |"), "{out}");
    assert!(
        out.contains("| log posterior (128 walkers × 16 galaxies), absolute | 0.00e0 |"),
        "{out}"
    );
    for row in [
        "| photulator stack (26 bands) |",
        "| one stretch step (two half-steps, 2 × the posterior) |",
        "| 64 | ",
        "| Prospector-α, no kept chain | 2 | 8 × 2 |",
        "| prospector-alpha | 2 | 8 × 2 |",
    ] {
        assert!(out.contains(row), "missing {row:?}:\n{out}");
    }
}
