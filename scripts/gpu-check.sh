#!/usr/bin/env bash
# The device check of issue #8/#9, as one command on a GPU machine (docs/benchmarks.md "GPU").
#
# Here (no GPU):  scripts/build-cuda.sh && mkdir -p target-cuda/carry &&
#                 xz -T2 -9e -c target-cuda/release/popcosmos-cli > target-cuda/carry/popcosmos-cli.xz
# There:          scripts/gpu-check.sh [OUT_DIR]   (carrying target-cuda/carry; 28 MB)
#
# 1. `bench gpu` (correctness vs CPU, step breakdown, emulator tables, device-s per galaxy per
#    prior); 2. the production setting: `run` of the demo manifest on cuda:0 over the demo
#    galaxies tiled to 2000 rows in batches of 1000 (galaxies per GPU-hour for the planner).
# Time limits: BENCH_S (default 330 s) and RUN_S (150 s).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-${OUT:-/tmp/gpu-check}}; mkdir -p "$OUT"
# The binary finds the demo manifest through its compile-time repository path.
[ "$ROOT" = /work/main ] || { mkdir -p /work && ln -sfn "$ROOT" /work/main; }
BIN=/tmp/popcosmos-cli-cuda
if [ -x "$ROOT/target-cuda/release/popcosmos-cli" ]; then
  cp "$ROOT/target-cuda/release/popcosmos-cli" "$BIN"
else
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" \
    "$ROOT/target-cuda/carry/popcosmos-cli.xz" "$BIN" || exit 1
fi
chmod +x "$BIN"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
L=""
for lib in libcublas.so.13 libnvrtc.so.13 libcurand.so.10 libcudart.so.13; do
  f=$(find /opt /usr/local /usr/lib -name "$lib" 2>/dev/null | head -1)
  if [ -n "$f" ]; then L="$L:$(dirname "$f")"; else echo "gpu-check: $lib not found" >&2; fi
done
export LD_LIBRARY_PATH="${L#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/mem.csv" &
MEM=$!
trap 'kill $MEM 2>/dev/null' EXIT

timeout "${BENCH_S:-330}" "$BIN" bench gpu --device cuda:0 --seconds 1 2>&1 | tee "$OUT/bench_gpu.txt"

W=$(mktemp -d)
python3 - "$ROOT/examples/data/cosmos2020_demo.csv" "$W/demo2000.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
head, body = rows[0], rows[1:]
i = head.index("id")
with open(sys.argv[2], "w", newline="") as f:
    out = csv.writer(f)
    out.writerow(head)
    for n in range(2000):
        r = list(body[n % len(body)])
        r[i] = f"{r[i]}_{n // len(body)}"
        out.writerow(r)
PY
sed -e "s|path: data/cosmos2020_demo.csv|path: $W/demo2000.csv|" -e "s|dir: ../out/cosmos-demo|dir: $W/out|" \
  -e 's|^device: cpu|device: cuda:0|' -e 's|^galaxies_per_batch: .*|galaxies_per_batch: 1000|' \
  -e 's|chains: true|chains: false|' "$ROOT/examples/cosmos-demo.yaml" > "$W/gpu-run.yaml"
timeout "${RUN_S:-150}" "$BIN" run "$W/gpu-run.yaml" 2>&1 | tee "$OUT/run.txt"
cp "$W/out/run.json" "$OUT/" 2>/dev/null
echo "peak GPU memory (MiB): $(cut -d, -f2 "$OUT/mem.csv" | sort -n | tail -1)" | tee -a "$OUT/run.txt"
