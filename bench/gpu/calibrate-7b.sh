#!/bin/bash
# `calibrated`'s statistics pass on the Mistral-7B-shaped synthetic checkpoint, 16,384 tokens of
# calibration.txt (issue 12), on the GPU machine (recipe: ../shared/gpu/README.md). Prepare here:
#   mkdir -p .gpu/cal7b && cp ../shared/fixtures/calibration.txt .gpu/cal7b/
#   npx esbuild bench/gpu/generate.ts --bundle --platform=node --outfile=.gpu/cal7b/gen.js
#   npx esbuild bench/calibration.ts --bundle --platform=node --external:onnxruntime-node --outfile=.gpu/cal7b/calibration.js
#   node --import tsx bench/byte-tokenizer.ts .gpu/cal7b/tokenizer.json
# plus .gpu/pack/node.xz and .gpu/pack/ort.tar.xz (onnxruntime-node 1.30: cpu, webgpu) and the
# Vulkan debs in .gl/ (for webgpu); for cuda also .gpucuda/ort129-cuda.tar.xz (prepare-cuda.sh).
# Carry .gpu/pack .gpu/cal7b .gl (and .gpucuda) and run `bash bench/gpu/calibrate-7b.sh [backend...]`
# (default: webgpu cpu; cuda webgpu cpu when .gpucuda is carried). Each backend is one run of
# bench/calibration.ts under /usr/bin/time -v, with the same token ids as the CLI run on the dev
# machine; the runs share what is left of BUDGET seconds (default 560, under a call's 600) after
# the set-up, so a slow backend is cut off (its progress lines still show its pace). Writes
# $OUT/calibrate.txt.
set -u
start=$(date +%s)
cd "$(dirname "$0")/../.."
R=$OUT/calibrate.txt
C=.gpu/cal7b
backends=("$@")
[ ${#backends[@]} -gt 0 ] || { backends=(webgpu cpu); [ -f .gpucuda/ort129-cuda.tar.xz ] && backends=(cuda webgpu cpu); }
for f in .gl/*.deb; do dpkg -x $f / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ORT_DISABLE_TELEMETRY=1
xz -dc .gpu/pack/node.xz > /tmp/node && chmod +x /tmp/node
mkdir -p /tmp/ort130 && tar xJf .gpu/pack/ort.tar.xz -C /tmp/ort130
if [ -f .gpucuda/ort129-cuda.tar.xz ]; then
  . bench/gpu/cuda-env.sh && unpack_ort_cuda
  NV=$(torch_cuda_libs 2>/dev/null)
fi
{ date -u; git log -1 --format='commit %h %s' 2>/dev/null; nproc; free -g | head -2; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; echo "backends: ${backends[*]}"; } > $R 2>&1
t=$(date +%s); /tmp/node $C/gen.js mistral-7b /tmp/m7 >> $R 2>&1; echo "7b generated in $(( $(date +%s) - t )) s" >> $R
cat /tmp/m7/*.safetensors > /dev/null
TIME=; [ -x /usr/bin/time ] && TIME="/usr/bin/time -v"
left=${#backends[@]}
for b in "${backends[@]}"; do
  limit=$(( (${BUDGET:-560} - ($(date +%s) - start)) / left )); left=$((left - 1))
  if [ "$b" = cuda ]; then
    [ -d /tmp/ort129/node_modules ] || { echo "cuda: .gpucuda/ort129-cuda.tar.xz not carried" >> $R; continue; }
    ln -sfn /tmp/ort129/node_modules node_modules; export LD_LIBRARY_PATH=${NV:-}:${LD_LIBRARY_PATH:-}
  else
    ln -sfn /tmp/ort130/node_modules node_modules
  fi
  echo "== $b (limit ${limit} s)" >> $R
  timeout $limit $TIME /tmp/node $C/calibration.js /tmp/m7 $C/calibration.txt 16384 $b --tokenizer $C/tokenizer.json > /tmp/cal-$b.json 2> /tmp/cal-$b.err
  echo "exit $?" >> $R
  cat /tmp/cal-$b.json >> $R
  grep -E "^(calibrating|generated)|Error|error|Elapsed|Maximum resident" /tmp/cal-$b.err | tail -20 >> $R
done
cat $R
