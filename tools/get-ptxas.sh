#!/usr/bin/env bash
# Fetches NVIDIA's ptxas (and nvdisasm, beside it) into .tools/cuda and prints ptxas's path: CUDA 12.4's (Debian trixie's non-free
# nvidia-cuda-toolkit package), which assembles sm_90a (the wgmma GEMM), else CUDA 11.8's (bookworm's), which
# assembles sm_90 only; prints nothing and exits 1 where apt cannot get either. The tests use it (HFT_PTXAS) to check
# that every kernel assembles without a stack frame; without it those tests are inconclusive. Needs apt (root).
set -uo pipefail
cd "$(dirname "$0")/.."
dest=.tools/cuda
if [ -x "$dest/usr/bin/ptxas" ]; then echo "$PWD/$dest/usr/bin/ptxas"; exit 0; fi
command -v apt-get >/dev/null || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch() { # $1: Debian release
    rm -rf "$work/lists" "$work/archives" "$work/x"
    mkdir -p "$work/lists/partial" "$work/archives/partial"
    echo "deb http://deb.debian.org/debian $1 non-free" > "$work/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=-" -o "Dir::State::Lists=$work/lists"
        -o "Dir::Cache::Archives=$work/archives" -o "APT::Sandbox::User=root" -qq)
    timeout 120 apt-get "${opts[@]}" update >/dev/null 2>&1 || return 1
    ( cd "$work" && rm -f ./*.deb && timeout 300 apt-get "${opts[@]}" download nvidia-cuda-toolkit >/dev/null 2>&1 ) || return 1
    dpkg-deb -x "$work"/nvidia-cuda-toolkit_*.deb "$work/x" || return 1
    mkdir -p "$dest/usr/bin" && cp "$work/x/usr/bin/ptxas" "$dest/usr/bin/ptxas" || return 1
    # nvdisasm too where the package has it: the test that the attention kernels' loads overlap their products reads the SASS.
    [ -x "$work/x/usr/bin/nvdisasm" ] && cp "$work/x/usr/bin/nvdisasm" "$dest/usr/bin/nvdisasm"
    "$dest/usr/bin/ptxas" --version >/dev/null 2>&1
}
fetch trixie || fetch bookworm || exit 1
echo "$PWD/$dest/usr/bin/ptxas"
