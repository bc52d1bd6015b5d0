#!/usr/bin/env bash
# One call on the GPU machine, from the repository root, after tools/publish-gpu-bundle.sh built the bundle here and
# bundle/hft-linux-x64.tar.xz was carried over (it is unpacked when bundle/hft/hft is missing):
#   the card's name, hft selftest --device cuda (every kernel against the CPU back-end, plus the 134M training shapes
#   with timings) and hft verify --device cuda on each reference case (a folder with golden.json) in tests/fixtures, or the
#   bundle's copies when there is no checkout.
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
echo "== gpu-check: $([ $status -eq 0 ] && echo PASS || echo FAIL)"
exit $status
