#!/bin/bash
# Prepares, in ignored folders, what `cuda-h200.sh setup` carries to the GPU machine: Node (xz),
# onnxruntime-node 1.30 for linux-x64, the bundles of the bench scripts, dist without source
# maps, and the fixtures and texts the runs read. The Vulkan loader debs (.gl/) come from
# ../shared/gpu/README.md; the CUDA runtime from prepare-cuda.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
F=${FIXTURES:-../shared/fixtures}
for d in /.gpu/ /.gpucuda/ /.gl/; do grep -qx "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
mkdir -p .gpu/pack .gpu/cal .gpu/data
[ -s .gpu/pack/node.xz ] || xz -T0 -9 -c "$(command -v node)" > .gpu/pack/node.xz
[ -s .gpu/pack/ort.tar.xz ] || tar cJf .gpu/pack/ort.tar.xz --exclude='onnxruntime-node/bin/napi-v6/darwin' \
  --exclude='onnxruntime-node/bin/napi-v6/win32' --exclude='onnxruntime-node/bin/napi-v6/linux/arm64' \
  node_modules/onnxruntime-node node_modules/onnxruntime-common
npm run build > /dev/null
for f in bench/gpu/eval-gpu.ts bench/gpu/eval-model.ts bench/gpu/generate.ts; do
  npx esbuild "$f" --bundle --platform=node --external:onnxruntime-node --log-level=warning --outfile=".gpu/cal/$(basename "$f" .ts).js"
done
tar cJf .gpu/dist.tar.xz --exclude='*.map' dist
rm -rf .gpu/data/mistral-bytes && cp -r "$F/mistral-bytes" "$F/heldout.txt" .gpu/data/
du -sh .gpu/pack .gpu/cal .gpu/data .gpu/dist.tar.xz
