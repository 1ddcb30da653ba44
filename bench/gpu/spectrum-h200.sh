#!/bin/bash
# Issue 16's measurement on the GPU machine, in one command (recipe: ../shared/gpu/README.md).
# Prepare here:
#   npm run build
#   for e in generate read-qk gram-variants; do npx esbuild bench/gpu/$e.ts --bundle --platform=node \
#     --external:onnxruntime-node --outfile=.gpu/cal/$e.js; done
#   .gpu/pack/node.xz (xz of the node binary), .gpu/pack/ort.tar.xz (node_modules/onnxruntime-{node,common},
#   linux-x64 only), the Vulkan loader debs in .gl/
# then run there with carry [.gpu/pack, .gpu/cal, .gl, dist]: `bash bench/gpu/spectrum-h200.sh`.
# Writes $OUT/results.txt, $OUT/runs.jsonl, $OUT/torch.json and $OUT/analyze-auto.json.
set -u
cd "$(dirname "$0")/../.."
for f in .gl/*.deb; do dpkg -x $f / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
xz -dc .gpu/pack/node.xz > /tmp/node && chmod +x /tmp/node
tar xJf .gpu/pack/ort.tar.xz
R=$OUT/results.txt
J=$OUT/runs.jsonl
M=${SPEC_DIR:-/tmp/m7}
{ date -u; nproc; lscpu | grep -E 'Model name|Thread|Core|Socket|Flags' | sed 's/Flags:.*\(avx512f\).*/Flags: ... avx512f .../'; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; free -g | head -2; uptime; } > $R 2>&1
/tmp/node .gpu/cal/generate.js ${SPEC_KIND:-mistral-7b} $M --qk-only >> $R 2>&1
cat $M/*.safetensors > /dev/null
/tmp/node .gpu/cal/read-qk.js $M >> $R 2>&1
export FACTORED_KEYS_CACHE_DIR=/tmp/fkcache
run() { python3 bench/gpu/runs.py /tmp/node $M $J "$@" >> $R 2>&1; }
# PyTorch first (its paths on the same warm cache), then ours, then PyTorch again
python3 scripts/reference/spectra_torch_gram.py $M --repeats ${TORCH_REPEATS:-2} --paths gram,gram-tuned,gram-tuned-cpu-eig --json $OUT/torch.json >> $R 2>&1
KEEP_JSON=$OUT/analyze-auto.json run 'auto (nothing measured yet)' 3 -- --backend auto
run 'cpu' 3 -- --backend cpu
run 'cpu, Gram on the main thread (previous path)' 1 FK_SPECTRUM_GRAM=main -- --backend cpu
for p in 1 2 4; do run "cpu, parts of $p heads" 1 FK_SPECTRUM_PART_HEADS=$p -- --backend cpu; done
for d in 2 6; do run "cpu, $d layers in flight" 1 FK_SPECTRUM_PREFETCH=$d -- --backend cpu; done
run 'cpu, --threads 15' 1 -- --backend cpu --threads 15
if [ -n "${WITH_WEBGPU:-}" ]; then run 'webgpu' 1 -- --backend webgpu; run 'auto --calibrate' 1 -- --backend auto --calibrate; run 'auto (remembered)' 2 -- --backend auto; fi
run 'auto' 2 -- --backend auto
python3 scripts/reference/spectra_torch_gram.py $M --repeats ${TORCH_REPEATS:-2} --paths gram,gram-tuned,gram-tuned-cpu-eig --check $OUT/analyze-auto.json --json $OUT/torch2.json >> $R 2>&1
[ -n "${WITH_VARIANTS:-}" ] && timeout 60 /tmp/node .gpu/cal/gram-variants.js >> $R 2>&1
uptime >> $R
cat $R
