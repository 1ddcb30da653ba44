#!/bin/bash
# `analyze --backend auto` against cpu and webgpu on the GPU machine (recipe: ../shared/gpu/README.md),
# before and after `--calibrate`. Prepare here:
#   npm run build && npx esbuild bench/gpu/generate.ts --bundle --platform=node --outfile=.gpu/cal/gen.js
#   plus .gpu/pack/node.xz (xz of the node binary) and .gpu/pack/ort.tar.xz (node_modules/onnxruntime-*
#   for linux-x64) and the Vulkan loader debs in .gl/; carry .gpu/pack .gpu/cal .gl dist and run
#   `bash bench/gpu/analyze-auto.sh` there. Writes $OUT/results.txt.
set -u
cd "$(dirname "$0")/../.."
for f in .gl/*.deb; do dpkg -x $f / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
xz -dc .gpu/pack/node.xz > /tmp/node && chmod +x /tmp/node
tar xJf .gpu/pack/ort.tar.xz
R=$OUT/results.txt
nproc > $R; nvidia-smi --query-gpu=name --format=csv,noheader >> $R
/tmp/node .gpu/cal/gen.js mistral-7b /tmp/m7 >> $R 2>&1
export FACTORED_KEYS_CACHE_DIR=/tmp/fkcache
t() { local s=$(date +%s.%N); /tmp/node dist/cli.js analyze /tmp/m7 --json "$@" 2>>$R | /tmp/node -e 'let d="";process.stdin.on("data",c=>d+=c).on("end",()=>{const j=JSON.parse(d);console.log("backend",j.backend,"seconds",j.seconds.toFixed(3),"heads",j.heads.length)})' >> $R; local e=$(date +%s.%N); echo "  args: $* wall $(python3 -c "print(round($e-$s,3))")" >> $R; }
cat /tmp/m7/*.safetensors > /dev/null
t --backend cpu
t --backend cpu
t --backend webgpu
t --backend auto
t --backend auto
t --backend auto --calibrate
t --backend auto
t --backend auto
t --backend cpu
cat $R
