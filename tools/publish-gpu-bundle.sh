#!/usr/bin/env bash
# Builds the self-contained hft bundle for a linux-x64 GPU machine that has the NVIDIA driver but no .NET SDK:
#   bundle/hft/                  the published command line (runtime included; run bundle/hft/hft)
#   bundle/hft-linux-x64.tar.xz  the same folder packed, to carry to the GPU machine
# Idempotent: every run starts from an empty bundle/hft. Usage: tools/publish-gpu-bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."

rm -rf bundle/hft bundle/hft-linux-x64.tar.xz
mkdir -p bundle
dotnet publish tools/Hft -c Release -r linux-x64 --self-contained -o bundle/hft -nologo -v quiet
tar -cJf bundle/hft-linux-x64.tar.xz -C bundle hft
echo "bundle/hft-linux-x64.tar.xz: $(du -h bundle/hft-linux-x64.tar.xz | cut -f1) ($(du -sh bundle/hft | cut -f1) unpacked)"
