#!/usr/bin/env bash
# Same-run baseline for the CPU emulator target (issue #2): alternates the PyTorch
# re-implementation of the reference photulator stack (scripts/reference_photulator.py;
# reproduces tests/fixtures/photulator_fixture.safetensors `absmag` exactly) with
# `popcosmos-cli bench emulator`, ROUNDS times, at batch 4096, and prints one row per round.
#
#   scripts/bench-vs-reference.sh PYTHON THREADS [ROUNDS] [SECONDS]
#
# PYTHON must have torch and safetensors. glibc returns each of torch's 2 MB temporaries to
# the OS and page-faults it back in (8.5 ms instead of 1.2 ms per activation on the project
# EPYC), so the reference runs with a raised mmap threshold: the faster, fairer baseline.
set -euo pipefail
PY=$1; THREADS=$2; ROUNDS=${3:-4}; SECONDS_PER=${4:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLI=${CLI:-$ROOT/target/release/popcosmos-cli}
W=$ROOT/assets/models/photulator_cosmos26.safetensors
echo "| round | reference (torch) galaxy-evals/s | popcosmos galaxy-evals/s | ratio |"
echo "|---:|---:|---:|---:|"
for r in $(seq 1 "$ROUNDS"); do
  ref=$(MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=134217728 \
        "$PY" "$ROOT/scripts/reference_photulator.py" "$THREADS" 4096 "$SECONDS_PER" "$W" |
        "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["galaxies_per_s"]))')
  ours=$(RAYON_NUM_THREADS=$THREADS "$CLI" bench emulator --batches 4096 --threads "$THREADS" \
         --seconds "$SECONDS_PER" 2>/dev/null | awk -F'|' '$2+0==4096 {gsub(/ /,"",$5); print $5}')
  echo "| $r | $ref | $ours | $(awk -v a="$ours" -v b="$ref" 'BEGIN{printf "%.2f", a/b}') |"
done
