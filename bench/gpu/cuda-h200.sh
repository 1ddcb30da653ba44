#!/bin/bash
# Evaluation and analysis on the GPU machine with onnxruntime's CUDA EP (issues 14 and 16), in
# phases that share one warm machine (../shared/gpu/README.md has the recipe):
#   setup    unpack Node, onnxruntime-node 1.30 (WebGPU + CPU) and dist; generate the 1.1B and
#            7B synthetic checkpoints; PyTorch's and our WebGPU throughput (carry .gpu/pack
#            .gpu/cal .gpu/data .gpu/dist.tar.xz .gl)
#   cuda     unpack onnxruntime-node 1.29 with the CUDA EP (carry .gpucuda, see prepare-cuda.sh);
#            eval and analyze on every backend, PyTorch's spectrum paths, 7B eval GPU memory
# Prepare everything here with `bash bench/gpu/prepare.sh` (and prepare-cuda.sh once). The
# calibration's GPU time is bench/gpu/calibrate-7b.sh's. Results land in $OUT.
set -u
cd "$(dirname "$0")/../.."
phase=$1
for f in .gl/*.deb; do dpkg -x $f / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FACTORED_KEYS_CACHE_DIR=/tmp/fkcache-$phase ORT_DISABLE_TELEMETRY=1
H=.gpu/data/heldout.txt
gpumem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$1" & echo $!; }
if [ "$phase" = setup ]; then
  R=$OUT/setup.txt
  xz -dc .gpu/pack/node.xz > /tmp/node && chmod +x /tmp/node
  mkdir -p /tmp/ort130 && tar xJf .gpu/pack/ort.tar.xz -C /tmp/ort130 && tar xJf .gpu/dist.tar.xz
  ln -sfn /tmp/ort130/node_modules node_modules
  { date -u; nproc; free -g; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c 'import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__)'
    python3 -c 'import nvidia, os; print(nvidia.__path__)'; } > $R 2>&1
  t=$(date +%s); /tmp/node .gpu/cal/generate.js mistral-7b /tmp/m7 >> $R 2>&1; echo "7b generated in $(( $(date +%s) - t )) s" >> $R
  /tmp/node .gpu/cal/eval-gpu.js $H .gpu/data/mistral-bytes /tmp/w webgpu:float16:255:16 > $OUT/eval-webgpu.jsonl 2>> $R
  python3 scripts/reference/eval_speed.py /tmp/w/llama-1.1b-synthetic $H --batch 16 --dtypes bfloat16,float16,float32 > $OUT/torch-eval.jsonl 2>> $R
  du -sh /tmp/m7 /tmp/w/* >> $R; df -h /tmp >> $R
elif [ "$phase" = cuda ]; then
  R=$OUT/cuda.txt
  . bench/gpu/cuda-env.sh && use_ort_cuda
  { date -u; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; ldd node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so | grep -i "not found\|cu"; } > $R 2>&1
  /tmp/node -e "const o=require('onnxruntime-node');console.log(JSON.stringify(o.listSupportedBackends()))" >> $R 2>&1
  /tmp/node dist/cli.js analyze .gpu/data/mistral-bytes --backend cuda --json > /tmp/probe.json 2>> $R; head -c 300 /tmp/probe.json >> $R; echo >> $R
  P=$(gpumem $OUT/gpumem-1b.txt)
  /tmp/node .gpu/cal/eval-gpu.js $H .gpu/data/mistral-bytes /tmp/w ${EVAL_CONFIGS:-cuda:float16:255:16,cuda:float16:255:32,cuda:float32:255:16,webgpu:float16:64:16} > $OUT/eval-cuda.jsonl 2>> $R
  kill $P
  cat /tmp/m7/*.safetensors > /dev/null
  J=$OUT/analyze.jsonl
  run() { python3 bench/gpu/runs.py /tmp/node /tmp/m7 $J "$@" >> $R 2>&1; }
  KEEP_JSON=/tmp/analyze-auto.json run 'auto (nothing measured yet)' 3 -- --backend auto
  run 'cuda' 2 -- --backend cuda
  run 'cpu' 2 -- --backend cpu
  run 'webgpu' 1 -- --backend webgpu
  run 'auto' 2 -- --backend auto
  python3 scripts/reference/spectra_torch_gram.py /tmp/m7 --repeats 2 --paths gram-tuned-cpu-eig,gram-tuned,gram --check /tmp/analyze-auto.json --json $OUT/torch-gram.json >> $R 2>&1
  P=$(gpumem $OUT/gpumem-7b.txt)
  /tmp/node .gpu/cal/eval-model.js /tmp/m7 $H cuda:float16 > $OUT/eval-7b.jsonl 2>> $R
  kill $P
fi
