#!/usr/bin/env bash
# Fuzz the catalogue readers (CSV, FITS, Parquet), the manifest parser and the safetensors /
# PyTorch readers with cargo-fuzz (libFuzzer), each for a bounded time. Not run in CI.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET…]
#
# Needs `cargo install cargo-fuzz`. cargo-fuzz passes nightly-only flags (-Z sanitizer,
# -C passes=sancov-module); on a stable toolchain RUSTC_BOOTSTRAP=1 lets them through.
# Targets are built without a sanitizer (`-s none`: the code under test is safe Rust, so
# what we look for are panics, aborts, hangs and huge allocations). Per target it prints
# libFuzzer's final `#N DONE` line (executions) and lists crash files under
# fuzz/artifacts/TARGET/; a crash is reproduced with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-…`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(catalog_csv catalog_fits catalog_parquet manifest safetensors_weights torch_module)
fi
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    echo "== $t (${secs} s)"
    nice -n 19 cargo fuzz run -s none --jobs 1 "$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -malloc_limit_mb=4096 -timeout=10 \
        -print_final_stats=1 2>"artifacts/$t.log" || echo "$t: libFuzzer stopped with a finding (see artifacts/$t.log)"
    grep -E "^(#[0-9]+ +DONE|Done [0-9]+ runs)|stat::number_of_executed_units" "artifacts/$t.log" | tail -2 || true
    ls "artifacts/$t" | sed 's/^/  finding: /' || true
done
