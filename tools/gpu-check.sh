#!/usr/bin/env bash
# One call on the GPU machine, from the repository root, after tools/publish-gpu-bundle.sh built the bundle here and
# bundle/hft-linux-x64.tar.xz was carried over (it is unpacked when bundle/hft/hft is missing), by default in this
# order (GPU_CHECK_STEPS below): the card's name; the self-test cases of the PTX GEMMs (wgmma, TMA, warp-specialized,
#   mma; each alone); the self-test's attention cases; the attention timed with and without the occupancy bound; hft
#   bench --device cuda (our GEMMs in fp32 and bf16 against cuBLAS, copy and AdamW bandwidth, attention, FFT vs HFT
#   training steps of the 134M model in fp32 and bf16; bench.json); the PyTorch baseline of the same steps (tools/pytorch_baseline.py; pytorch.json;
#   skipped, and not counted as a failure, where python3 has no torch or transformers); hft bench --from bench.json
#   --compare pytorch.json (ours beside PyTorch); hft verify --device cuda in fp32, in bf16, and in bf16 with
#   HFT_BF16_GEMM=simple on each reference case
#   (a folder with golden.json) in tests/fixtures, or the bundle's copies when there is no checkout; hft demo --quick
#   on the card. The figures come
#   before the full correctness checks so that a short call still gets them. The whole self-test (every kernel
#   against the CPU back-end) is the step "selftest"; the demo at the GPU scale, the step "demo".
# Every step has its own timeout, and the steps together stay within GPU_CHECK_BUDGET seconds (default 570) of this
# script's start, so one hang cannot eat a 10-minute call: a step that would start with too little time left is
# skipped and counts as a failure. Logs and JSON are packed into $OUT/gpu-check.tar.gz when $OUT is set. Exit status 0
# only if everything passed.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x bundle/hft/hft ] || [ ! -f bundle/hft-linux-x64.tar.xz ] || tar -xJf bundle/hft-linux-x64.tar.xz -C bundle
HFT=${HFT:-bundle/hft/hft}
if [ ! -x "$HFT" ]; then echo "gpu-check: $HFT not found; build it with tools/publish-gpu-bundle.sh" >&2; exit 2; fi
# Logs and JSON go to a folder that is packed into $OUT/gpu-check.tar.gz after every step (the device tool brings
# back at most 8 files); without $OUT, nothing is logged.
LOG=${OUT:+/tmp/gpu-check-logs}
[ -z "$LOG" ] || { rm -rf "$LOG"; mkdir -p "$LOG"; }
pack() { [ -z "$LOG" ] || tar -czf "$OUT/gpu-check.tar.gz" -C "$LOG" . ; }
BUDGET=${GPU_CHECK_BUDGET:-570}
# .NET needs ICU for culture data; a machine without it runs hft in invariant mode (hft formats with the invariant culture).
ldconfig -p 2>/dev/null | grep -q libicuuc || export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1

run() { # run NAME COMMAND...: prints and, with $OUT, logs the command's output, then its exit status and seconds; returns its status
  local name=$1 start=$SECONDS rc; shift
  echo "== $name: $*"
  if [ -n "$LOG" ]; then
    "$@" 2>&1 | tee "$LOG/$name.log"; rc=${PIPESTATUS[0]}
  else
    "$@" 2>&1; rc=$?
  fi
  echo "== $name: exit $rc after $((SECONDS - start)) s"
  [ -z "$LOG" ] || pack
  return "$rc"
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

# The steps, in order (GPU_CHECK_STEPS, space-separated, picks some of them, in its order):
#   gpu       the card's name, memory and driver
#   probes    the GEMMs written as PTX (wgmma with cp.async or TMA loads, or warp-specialized, for sm_90a; mma.sync
#             for sm_80+), each alone in its own process, so that a fault there cannot take the other steps with it;
#             when one fails, HFT_WGMMA=off, HFT_WGMMA_TMA=off, HFT_WGMMA_WS=off or HFT_MMA=off keeps it out of every
#             later step (for the warp-specialized kernel, only the part that failed: ws_triage below)
#   attention the self-test's attention cases alone (a quick check after a change to the attention kernels)
#   occupancy hft bench --only attention twice: as built (the tensor-core forward and dQ kernels compiled for three
#             groups per SM) and with HFT_OCCUPANCY=off (unbounded registers, two groups); attention.json and
#             attention-unbounded.json
#   bench     hft bench --device cuda (GPU_CHECK_BENCH_ARGS adds arguments, e.g. --only step)
#   pytorch   tools/pytorch_baseline.py (GPU_CHECK_TORCH_STEPS timed steps per configuration, default 10)
#   compare   hft bench --from bench.json --compare pytorch.json
#   selftest  every other kernel against the CPU back-end (the PTX GEMMs' cases ran alone in probes)
#   kernels   the self-test without its matrix product and attention cases (the element-wise kernels, norms,
#             reductions, AdamW, cross-entropy: a quick check after a change to those)
#   verify    the reference cases in fp32, bf16, and bf16 with HFT_BF16_GEMM=simple
#   demo-quick hft demo --quick --device cuda: the README's main job end to end on the card, with a tiny model (in
#             bf16, the demo's default on CUDA; the reference cases in fp32 and bf16)
#   demo      hft demo --device cuda at the GPU scale, --seeds 3 unless GPU_CHECK_DEMO_ARGS says otherwise (not a default
#             step; 72 s with one seed on an H200)
#             Both keep report.md, report.json and demo.png (not the models) in the logs.
# The default: what a first call on a card after kernel changes needs, figures before the slower checks (selftest
# and kernels by name only).
STEPS=${GPU_CHECK_STEPS:-gpu probes attention occupancy bench pytorch compare verify demo-quick}
status=0

step_gpu() {
  run gpu nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || status=1
}

# A probe process spends most of its time compiling and checking, not multiplying: on an H200 (2026-11-27) the
# wgmma-ws probe's 12 cases took 50-60 s, and the other three probes, at 40 s then, were stopped after 7 to 9 cases,
# every one of which had passed. The default kernel's probe therefore comes first with 90 s; the fallback kernels'
# probes (used only where wgmma-ws refuses a product) leave out the vocabulary-sized products and the fused cases
# that only wgmma-ws launches as one, and take 60 s each.
probe() { # probe NAME PATTERN SWITCH: the self-test cases of one fallback PTX GEMM; SWITCH=off for later steps when they fail
  timed "$1" 60 "$HFT" selftest --device cuda --only "$2" --skip 32000 --skip " sum" --skip " swiglu" --skip " rotated" \
    || { status=1; off "$3"; }
}

step_probes() {
  timed wgmma-ws 90 "$HFT" selftest --device cuda --only "bf16 wgmma-ws" || { status=1; ws_triage; }
  probe wgmma-tma "bf16 wgmma-tma" HFT_WGMMA_TMA
  probe wgmma "bf16 wgmma " HFT_WGMMA
  probe mma "bf16 mma" HFT_MMA
}

# When the warp-specialized GEMM's probe fails, a probe per part finds what to turn off, so that one faulty refinement
# does not cost the whole kernel (each has its own switch): the plain products a block per tile (failing: the 128 × 192
# module alone, HFT_WGMMA_WS192=off, or else the kernel, HFT_WGMMA_WS=off), then the persistent launch
# (HFT_GEMM_PERSISTENT=off), the summed, SwiGLU and RoPE launches (HFT_GEMM_SUM, HFT_GEMM_SWIGLU, HFT_GEMM_ROPE).
ws_triage() {
  local plain=(selftest --device cuda --only "bf16 wgmma-ws" --skip " sum" --skip " swiglu" --skip " rotated") part
  if ! timed wgmma-ws-tiles 40 env HFT_GEMM_PERSISTENT=off "$HFT" "${plain[@]}"; then
    if timed wgmma-ws-tiles-256 40 env HFT_GEMM_PERSISTENT=off HFT_WGMMA_WS192=off "$HFT" "${plain[@]}"; then
      off HFT_WGMMA_WS192
    else
      off HFT_WGMMA_WS; return
    fi
  fi
  timed wgmma-ws-persistent 40 "$HFT" "${plain[@]}" || off HFT_GEMM_PERSISTENT
  for part in "sum HFT_GEMM_SUM" "swiglu HFT_GEMM_SWIGLU" "rotated HFT_GEMM_ROPE"; do
    set -- $part
    timed "wgmma-ws-$1" 40 "$HFT" selftest --device cuda --only "bf16 wgmma-ws $1" || off "$2"
  done
}

off() { export "$1"=off; echo "== $1=off from here"; }

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
bench_json=${LOG:-/tmp}/bench.json
torch_json=${LOG:-/tmp}/pytorch.json

step_bench() { # bench.json is rewritten after each part of the bench, so a timeout still leaves what was measured
  rm -f "$bench_json"
  # shellcheck disable=SC2086
  timed bench 220 "$HFT" bench --device cuda --json "$bench_json" ${GPU_CHECK_BENCH_ARGS:-} || status=1
}

# The PyTorch baseline: the same model, batch and AdamW steps (fft and hft; fp32, bf16 autocast, pure bf16), HFT's
# frozen tensors from hft policy. pytorch.json is rewritten after each configuration; --time-budget keeps the script
# itself inside its timeout, which leaves GPU_CHECK_RESERVE seconds (default 115) for the steps after it.
step_pytorch() {
  rm -f "$torch_json"
  if [ ! -f tools/pytorch_baseline.py ]; then
    echo "== pytorch: skipped: no tools/pytorch_baseline.py (no checkout)"; return
  fi
  if ! "${torch_env[@]}" python3 -c 'import torch, transformers' 2>/dev/null; then
    echo "== pytorch: skipped: python3 cannot import torch and transformers ($("${torch_env[@]}" python3 -c 'import torch, transformers' 2>&1 | tail -n 1))"
    return
  fi
  local t=$((BUDGET - SECONDS - ${GPU_CHECK_RESERVE:-115}))
  [ "$t" -le 150 ] || t=150
  if [ "$t" -le 45 ]; then echo "== pytorch: skipped, ${SECONDS} s of the ${BUDGET} s budget used"; status=1; return; fi
  timed pytorch "$t" "${torch_env[@]}" python3 tools/pytorch_baseline.py "$torch_json" --hft "$HFT" --model base \
    --warmup 3 --steps "${GPU_CHECK_TORCH_STEPS:-10}" --time-budget $((t - 35)) || status=1
}

step_compare() {
  if [ -f "$bench_json" ] && [ -f "$torch_json" ]; then
    timed compare 20 "$HFT" bench --from "$bench_json" --compare "$torch_json" || status=1
  fi
}

step_attention() {
  timed attention 60 "$HFT" selftest --device cuda --only attention || status=1
}

step_occupancy() {
  timed occupancy 60 "$HFT" bench --device cuda --only attention --json "${LOG:-/tmp}/attention.json" || status=1
  timed occupancy-off 60 env HFT_OCCUPANCY=off "$HFT" bench --device cuda --only attention --json "${LOG:-/tmp}/attention-unbounded.json" || status=1
}

step_selftest() {
  timed selftest 90 "$HFT" selftest --device cuda --skip "matmul bf16 wgmma" --skip "matmul bf16 mma" || status=1
}

step_kernels() {
  timed kernels 60 "$HFT" selftest --device cuda --skip matmul --skip attention || status=1
}

step_verify() { # every reference case in one process per precision (the kernels compile once)
  local cases=() c p
  for c in tests/fixtures/*/; do [ -f "$c/golden.json" ] && cases+=("${c%/}"); done
  if [ ${#cases[@]} -eq 0 ]; then
    for c in "$(dirname "$HFT")"/reference-cases/*/; do [ -f "$c/golden.json" ] && cases+=("${c%/}"); done
  fi
  for p in fp32 bf16; do
    timed "verify-$p" 40 "$HFT" verify --device cuda --precision "$p" --golden "${cases[@]}" || status=1
  done
  # bf16 once more with the simple GEMM kernel (the default is the card's fastest PTX GEMM: wgmma-ws on sm_90).
  timed verify-bf16-simple 40 env HFT_BF16_GEMM=simple "$HFT" verify --device cuda --precision bf16 --golden "${cases[@]}" || status=1
}

demo() { # demo NAME WANT [ARGS...]: hft demo --device cuda into a fresh folder; its reports (not its models) into the logs
  local name=$1 want=$2; shift 2
  local dir=/tmp/hft-$name
  rm -rf "$dir"
  timed "$name" "$want" "$HFT" demo --device cuda --out "$dir" "$@" || status=1
  if [ -n "$LOG" ] && [ -d "$dir" ]; then
    mkdir -p "$LOG/$name"
    for f in report.md report.json demo.png; do [ ! -f "$dir/$f" ] || cp "$dir/$f" "$LOG/$name/"; done
    pack
  fi
}

step_demo_quick() { demo demo-quick 120 --quick; }
# The GPU scale with three seeds by default (GPU_CHECK_DEMO_ARGS): on an H200 one seed took 72 s in all, most of it
# the pretraining, which the seeds share.
step_demo() { # shellcheck disable=SC2086
  demo demo 560 ${GPU_CHECK_DEMO_ARGS---seeds 3}; }

for s in $STEPS; do
  case $s in
    gpu|probes|attention|occupancy|bench|pytorch|compare|selftest|kernels|verify|demo-quick|demo) "step_${s//-/_}" ;;
    *) echo "gpu-check: unknown step '$s'" >&2; exit 2 ;;
  esac
done
echo "== gpu-check: $([ $status -eq 0 ] && echo PASS || echo FAIL) in ${SECONDS} s"
exit $status
