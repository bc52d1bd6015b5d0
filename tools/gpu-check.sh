#!/usr/bin/env bash
# One call on the GPU machine, from the repository root, after tools/publish-gpu-bundle.sh built the bundle here and
# bundle/hft-linux-x64.tar.xz was carried over (it is unpacked when bundle/hft/hft is missing):
#   the card's name, hft selftest --device cuda (every kernel against the CPU back-end, plus the 134M training shapes
#   with timings), hft verify --device cuda on each reference case (a folder with golden.json) in tests/fixtures, or the
#   bundle's copies when there is no checkout, and hft bench --device cuda (our GEMM against cuBLAS, copy and AdamW
#   bandwidth, attention, FFT vs HFT training steps of the 134M model; bench.json).
# Logs go to $OUT when it is set. Exit status 0 only if everything passed.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x bundle/hft/hft ] || [ ! -f bundle/hft-linux-x64.tar.xz ] || tar -xJf bundle/hft-linux-x64.tar.xz -C bundle
HFT=${HFT:-bundle/hft/hft}
if [ ! -x "$HFT" ]; then echo "gpu-check: $HFT not found; build it with tools/publish-gpu-bundle.sh" >&2; exit 2; fi
LOG=${OUT:-}
[ -z "$LOG" ] || mkdir -p "$LOG"

run() { # run NAME COMMAND...: prints and, with $OUT, logs the command's output; returns its status
  local name=$1; shift
  echo "== $name: $*"
  if [ -n "$LOG" ]; then "$@" 2>&1 | tee "$LOG/$name.log"; return "${PIPESTATUS[0]}"; fi
  "$@" 2>&1
}

status=0
run gpu nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || status=1
run selftest timeout 300 "$HFT" selftest --device cuda || status=1
cases=()
for c in tests/fixtures/*/; do [ -f "$c/golden.json" ] && cases+=("${c%/}"); done
if [ ${#cases[@]} -eq 0 ]; then
  for c in "$(dirname "$HFT")"/reference-cases/*/; do [ -f "$c/golden.json" ] && cases+=("${c%/}"); done
fi
for c in "${cases[@]}"; do
  run "verify-$(basename "$c")" timeout 120 "$HFT" verify --golden "$c" --device cuda || status=1
done
# cuBLAS for the comparison in hft bench: ILGPU.Algorithms loads libcublas.so.12; CUDA 13 ships libcublas.so.13.
blas=$(ls /usr/local/cuda*/targets/x86_64-linux/lib/libcublas.so.1[0-9]* 2>/dev/null | head -n 1)
if [ -n "$blas" ]; then
  mkdir -p /tmp/hft-cublas && ln -sf "$blas" /tmp/hft-cublas/libcublas.so.12
  lt=$(ls /usr/local/cuda*/targets/x86_64-linux/lib/libcublasLt.so.1[0-9]* 2>/dev/null | head -n 1)
  [ -z "$lt" ] || ln -sf "$lt" /tmp/hft-cublas/libcublasLt.so.12
  export LD_LIBRARY_PATH=/tmp/hft-cublas:$(dirname "$blas")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
bench_json=${LOG:-/tmp}/bench.json
run bench timeout 400 "$HFT" bench --device cuda --json "$bench_json" || status=1
echo "== gpu-check: $([ $status -eq 0 ] && echo PASS || echo FAIL)"
exit $status
