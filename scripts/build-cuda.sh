#!/usr/bin/env bash
# Build popcosmos-cli with the CUDA backend on a machine WITHOUT a GPU (recipe of
# docs/benchmarks.md "GPU"; CUDA 13.0 toolkit from PyPI, a libcuda link stub, sm_90 = H100/H200).
# Output: target-cuda/release/popcosmos-cli (stripped) and a run script next to it that finds
# the CUDA libraries on the GPU machine. Takes ~20 min on 2 cores the first time.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
S=${CUDA_SCRATCH:-$ROOT/target-cuda/toolkit}
CAP=${CUDA_COMPUTE_CAP:-90}
mkdir -p "$S"
if [ ! -x "$S/cuda-venv/bin/python" ]; then
  python3 -m venv "$S/cuda-venv"
  "$S/cuda-venv/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 \
    nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 \
    nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85
fi
C=$(echo "$S"/cuda-venv/lib/python3*/site-packages/nvidia/cu13)
mkdir -p "$S/cuda-root/lib"
for l in cudart.so.13 nvrtc.so.13 cublas.so.13 cublasLt.so.13 curand.so.10; do
  ln -sf "$C/lib/lib$l" "$S/cuda-root/lib/lib${l%%.so*}.so"
done
cd "$ROOT"
cargo fetch
# Link-time stub of the driver API (the real libcuda.so.1 comes with the GPU machine's driver).
CUDARC=$(ls -d ~/.cargo/registry/src/*/cudarc-0.19.* | tail -1)
grep -ohE "pub unsafe fn cu[A-Za-z0-9_]+" "$CUDARC/src/driver/sys/mod.rs" \
  | awk '{print "int " $4 "(void){return 100;}"}' | sort -u > "$S/libcuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$S/cuda-root/lib/libcuda.so" "$S/libcuda_stub.c"
# (With LD_LIBRARY_PATH=$C/lib:$S/cuda-root/lib the binary also starts here: every driver call
# answers CUDA_ERROR_NO_DEVICE, which checks the error path of `device: cuda:0`.)
ln -sf libcuda.so "$S/cuda-root/lib/libcuda.so.1"
export PATH="$C/bin:$PATH" CUDA_ROOT="$S/cuda-root" CUDA_COMPUTE_CAP="$CAP" \
  NVCC_APPEND_FLAGS="--compress-mode=size" CARGO_TARGET_DIR="$ROOT/target-cuda"
cargo build --release -p popcosmos-cli --features cuda
strip target-cuda/release/popcosmos-cli
cat > target-cuda/release/run-cuda.sh <<'RUN'
#!/usr/bin/env bash
# Run the CUDA build on a GPU machine: find libcublas/libnvrtc/libcurand 13.x (a CUDA 13
# toolkit or PyTorch's nvidia/cu13 wheels) and put them on LD_LIBRARY_PATH.
HERE=$(cd "$(dirname "$0")" && pwd)
dirs=""
for lib in libcublas.so.13 libnvrtc.so.13 libcurand.so.10 libcudart.so.13; do
  d=$(find / -name "$lib" -not -path '*/proc/*' 2>/dev/null | head -1 | xargs -r dirname)
  [ -n "$d" ] && dirs="$dirs:$d"
  [ -z "$d" ] && echo "run-cuda.sh: $lib not found (install a CUDA 13 runtime)" >&2
done
export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$HERE/popcosmos-cli" "$@"
RUN
chmod +x target-cuda/release/run-cuda.sh
echo "built target-cuda/release/popcosmos-cli; on the GPU machine run:"
echo "  target-cuda/release/run-cuda.sh bench gpu --device cuda:0"
