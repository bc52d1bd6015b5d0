#!/usr/bin/env bash
# One call on the GPU machine, from the repository root, after tools/publish-gpu-bundle.sh built the bundle here and
# bundle/hft-linux-x64.tar.xz was carried over (it is unpacked when bundle/hft/hft is missing), in this order:
#   the card's name; the self-test cases of the PTX GEMMs (wgmma, TMA, warp-specialized, mma; each alone); hft bench
#   --device cuda (our GEMMs in fp32 and bf16 against cuBLAS, copy and AdamW bandwidth, attention, FFT vs HFT
#   training steps of the 134M model in fp32 and bf16; bench.json); the PyTorch baseline of the same steps (tools/pytorch_baseline.py; pytorch.json;
#   skipped, and not counted as a failure, where python3 has no torch or transformers); hft bench --from bench.json
#   --compare pytorch.json (ours beside PyTorch); hft selftest --device cuda (every kernel against the CPU back-end,
#   plus the 134M training shapes with timings); hft verify --device cuda in fp32, in bf16, and in bf16 with
#   HFT_BF16_GEMM=auto on each reference case
#   (a folder with golden.json) in tests/fixtures, or the bundle's copies when there is no checkout. The figures come
#   before the full correctness checks so that a short call still gets them.
# Every step has its own timeout, and the steps together stay within GPU_CHECK_BUDGET seconds (default 570) of this
# script's start, so one hang cannot eat a 10-minute call: a step that would start with too little time left is
# skipped and counts as a failure. Logs go to $OUT when it is set. Exit status 0 only if everything passed.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x bundle/hft/hft ] || [ ! -f bundle/hft-linux-x64.tar.xz ] || tar -xJf bundle/hft-linux-x64.tar.xz -C bundle
HFT=${HFT:-bundle/hft/hft}
if [ ! -x "$HFT" ]; then echo "gpu-check: $HFT not found; build it with tools/publish-gpu-bundle.sh" >&2; exit 2; fi
LOG=${OUT:-}
[ -z "$LOG" ] || mkdir -p "$LOG"
BUDGET=${GPU_CHECK_BUDGET:-570}

run() { # run NAME COMMAND...: prints and, with $OUT, logs the command's output; returns its status
  local name=$1; shift
  echo "== $name: $*"
  if [ -n "$LOG" ]; then "$@" 2>&1 | tee "$LOG/$name.log"; return "${PIPESTATUS[0]}"; fi
  "$@" 2>&1
}

limit() { # limit WANT: prints WANT seconds, or fewer when the budget has less left (0: too little to start)
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 20 ]; then echo 0; elif [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}

timed() { # timed NAME WANT COMMAND...: run NAME under timeout (WANT seconds, or what the budget has left)
  local name=$1 want=$2; shift 2
  local t; t=$(limit "$want")
  if [ "$t" -eq 0 ]; then echo "== $name: skipped, ${SECONDS} s of the ${BUDGET} s budget used"; return 1; fi
  run "$name" timeout -k 10 "$t" "$@"
  local rc=$?
  [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || echo "== $name: stopped after its ${t} s timeout"
  return "$rc"
}

status=0
run gpu nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || status=1
# The GEMMs written as PTX (wgmma with cp.async or TMA loads, or warp-specialized, for sm_90a; mma.sync for sm_80+;
# never yet run on a card) alone first, each in its own process, so that a fault there cannot take the other steps
# with it; when one fails, HFT_WGMMA=off, HFT_WGMMA_TMA=off, HFT_WGMMA_WS=off or HFT_MMA=off keeps it out of every
# later step.
timed wgmma 50 "$HFT" selftest --device cuda --only "bf16 wgmma " || { status=1; export HFT_WGMMA=off; echo "== wgmma: HFT_WGMMA=off from here"; }
timed wgmma-tma 50 "$HFT" selftest --device cuda --only "bf16 wgmma-tma" || { status=1; export HFT_WGMMA_TMA=off; echo "== wgmma-tma: HFT_WGMMA_TMA=off from here"; }
timed wgmma-ws 50 "$HFT" selftest --device cuda --only "bf16 wgmma-ws" || { status=1; export HFT_WGMMA_WS=off; echo "== wgmma-ws: HFT_WGMMA_WS=off from here"; }
timed mma 50 "$HFT" selftest --device cuda --only "bf16 mma" || { status=1; export HFT_MMA=off; echo "== mma: HFT_MMA=off from here"; }
# cuBLAS for the comparison in hft bench: ILGPU.Algorithms loads libcublas.so.12; CUDA 13 ships libcublas.so.13.
# (PyTorch runs with the LD_LIBRARY_PATH this script was given: the renamed link must not stand in for its cuBLAS.)
torch_env=(env)
if [ -n "${LD_LIBRARY_PATH+set}" ]; then torch_env+=("LD_LIBRARY_PATH=$LD_LIBRARY_PATH"); else torch_env+=(-u LD_LIBRARY_PATH); fi
blas=$(ls /usr/local/cuda*/targets/x86_64-linux/lib/libcublas.so.1[0-9]* 2>/dev/null | head -n 1)
if [ -n "$blas" ]; then
  mkdir -p /tmp/hft-cublas && ln -sf "$blas" /tmp/hft-cublas/libcublas.so.12
  lt=$(ls /usr/local/cuda*/targets/x86_64-linux/lib/libcublasLt.so.1[0-9]* 2>/dev/null | head -n 1)
  [ -z "$lt" ] || ln -sf "$lt" /tmp/hft-cublas/libcublasLt.so.12
  export LD_LIBRARY_PATH=/tmp/hft-cublas:$(dirname "$blas")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
# bench.json is rewritten after each part of the bench, so a timeout still leaves what was measured for the comparison.
bench_json=${LOG:-/tmp}/bench.json
rm -f "$bench_json"
timed bench 220 "$HFT" bench --device cuda --json "$bench_json" || status=1
# The PyTorch baseline: the same model, batch and AdamW steps (fft and hft; fp32, bf16 autocast, pure bf16), HFT's
# frozen tensors from hft policy. pytorch.json is rewritten after each configuration; --time-budget keeps the script
# itself inside its timeout.
torch_json=${LOG:-/tmp}/pytorch.json
rm -f "$torch_json"
if [ ! -f tools/pytorch_baseline.py ]; then
  echo "== pytorch: skipped: no tools/pytorch_baseline.py (no checkout)"
elif ! "${torch_env[@]}" python3 -c 'import torch, transformers' 2>/dev/null; then
  echo "== pytorch: skipped: python3 cannot import torch and transformers ($("${torch_env[@]}" python3 -c 'import torch, transformers' 2>&1 | tail -n 1))"
else
  t=$((BUDGET - SECONDS - 115)) # 25 s kept for the comparison, 90 for the self-test
  [ "$t" -le 150 ] || t=150
  if [ "$t" -gt 45 ]; then
    timed pytorch "$t" "${torch_env[@]}" python3 tools/pytorch_baseline.py "$torch_json" --hft "$HFT" --model base \
      --warmup 3 --steps 10 --time-budget $((t - 35)) || status=1
  else
    echo "== pytorch: skipped, ${SECONDS} s of the ${BUDGET} s budget used"; status=1
  fi
fi
if [ -f "$bench_json" ] && [ -f "$torch_json" ]; then
  timed compare 20 "$HFT" bench --from "$bench_json" --compare "$torch_json" || status=1
fi
# Correctness after the figures: every other kernel against the CPU back-end (the PTX GEMMs' cases ran alone first),
# then the reference cases in both precisions.
timed selftest 90 "$HFT" selftest --device cuda --skip "matmul bf16 wgmma" --skip "matmul bf16 mma" || status=1
cases=()
for c in tests/fixtures/*/; do [ -f "$c/golden.json" ] && cases+=("${c%/}"); done
if [ ${#cases[@]} -eq 0 ]; then
  for c in "$(dirname "$HFT")"/reference-cases/*/; do [ -f "$c/golden.json" ] && cases+=("${c%/}"); done
fi
# Every reference case in one process per precision (the kernels compile once).
for p in fp32 bf16; do
  timed "verify-$p" 40 "$HFT" verify --device cuda --precision "$p" --golden "${cases[@]}" || status=1
done
# bf16 once more with the card's PTX GEMM (HFT_BF16_GEMM=auto: wgmma on sm_90, mma on sm_80+) in the whole model.
timed verify-bf16-auto 40 env HFT_BF16_GEMM=auto "$HFT" verify --device cuda --precision bf16 --golden "${cases[@]}" || status=1
echo "== gpu-check: $([ $status -eq 0 ] && echo PASS || echo FAIL) in ${SECONDS} s"
exit $status
