#!/bin/bash
# Builds .gpucuda/ort129-cuda.tar.xz for `cuda-h200.sh cuda`: onnxruntime-node 1.29.0 (linux-x64)
# with onnxruntime's CUDA EP libraries of the same release, all from the npm registry:
#   - onnxruntime-node@1.29.0, onnxruntime-common@1.29.0;
#   - com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9, which redistributes onnxruntime 1.29.0's
#     libonnxruntime_providers_{cuda,shared}.so (CUDA 13; MIT licence).
# onnxruntime-node 1.30's own CUDA libraries come from NuGet, which our machines cannot reach,
# and a provider library must match its runtime's release, so the CUDA measurement uses 1.29.
# The CUDA library keeps only sm_90 (H100/H200) code, to fit the 64 MiB a device call carries.
# The GPU machine's PyTorch (CUDA 13) supplies cuBLAS, cudart and cuRAND.
set -euo pipefail
cd "$(dirname "$0")/../.."
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
(cd "$T" && npm pack --silent onnxruntime-node@1.29.0 onnxruntime-common@1.29.0 com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9 > /dev/null)
mkdir -p "$T/ortnode" "$T/common" "$T/gpu" "$T/stage/node_modules/onnxruntime-node/bin/napi-v6/linux"
tar xzf "$T"/onnxruntime-node-1.29.0.tgz -C "$T/ortnode"
tar xzf "$T"/onnxruntime-common-1.29.0.tgz -C "$T/common"
tar xzf "$T"/com.github.asus4.onnxruntime.linux-x64-gpu-0.4.9.tgz -C "$T/gpu"
N=$T/stage/node_modules/onnxruntime-node
cp -r "$T"/ortnode/package/{package.json,dist,lib} "$N/"
cp -r "$T/ortnode/package/bin/napi-v6/linux/x64" "$N/bin/napi-v6/linux/"
cp -r "$T/common/package" "$T/stage/node_modules/onnxruntime-common"
G=$T/gpu/package/Plugins/Linux/x64
cp "$G/libonnxruntime_providers_shared.so" "$N/bin/napi-v6/linux/x64/"
python3 bench/gpu/fatbin_keep_arch.py "$G/libonnxruntime_providers_cuda.so" 90 "$N/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so"
mkdir -p .gpucuda
grep -qx '/.gpucuda/' .git/info/exclude || echo '/.gpucuda/' >> .git/info/exclude
tar cf - -C "$T/stage" node_modules | xz -T0 -9 > .gpucuda/ort129-cuda.tar.xz
ls -l .gpucuda/ort129-cuda.tar.xz
