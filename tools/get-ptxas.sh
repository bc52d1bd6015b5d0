#!/usr/bin/env bash
# Fetches NVIDIA's ptxas (CUDA 11.8, from Debian bookworm's non-free nvidia-cuda-toolkit package) into .tools/cuda
# and prints its path; prints nothing and exits 1 where apt cannot get it. The tests use it (HFT_PTXAS) to check that
# every kernel assembles for sm_90 without a stack frame; without it that test is inconclusive. Needs apt (root).
set -uo pipefail
cd "$(dirname "$0")/.."
dest=.tools/cuda
if [ -x "$dest/usr/bin/ptxas" ]; then echo "$PWD/$dest/usr/bin/ptxas"; exit 0; fi
command -v apt-get >/dev/null || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
cat > "$work/sources.list" <<'LIST'
deb http://deb.debian.org/debian bookworm non-free
LIST
opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=-" -o "Dir::State::Lists=$work/lists"
      -o "Dir::Cache::Archives=$work/archives" -o "APT::Sandbox::User=root" -qq)
timeout 120 apt-get "${opts[@]}" update >/dev/null 2>&1 || exit 1
( cd "$work" && timeout 300 apt-get "${opts[@]}" download nvidia-cuda-toolkit >/dev/null 2>&1 ) || exit 1
mkdir -p "$dest"
dpkg-deb -x "$work"/nvidia-cuda-toolkit_*.deb "$work/x" || exit 1
mkdir -p "$dest/usr/bin" && cp "$work/x/usr/bin/ptxas" "$dest/usr/bin/ptxas" || exit 1
"$dest/usr/bin/ptxas" --version >/dev/null 2>&1 || exit 1
echo "$PWD/$dest/usr/bin/ptxas"
