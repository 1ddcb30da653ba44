#!/bin/bash
# Tuning runs on the GPU machine (issues 14 and 16), two calls on one warm machine:
#   base   (carry .gpu/pack .gpu/cal .gpu/data .gpu/dist.tar.xz .gl) Node, onnxruntime-node 1.30,
#          dist, the 7B synthetic checkpoint; analyze (cpu) under the spectrum engine's knobs
#   eval   (carry .gpucuda .gpu/cal .gpu/dist.tar.xz) onnxruntime-node 1.29 with the CUDA EP;
#          1.1B eval per configuration with the phase timings (read, graph, session, runs), and
#          the 7B's with GPU memory sampled
set -u
cd "$(dirname "$0")/../.."
phase=$1
for f in .gl/*.deb; do dpkg -x $f / 2>/dev/null; done; ldconfig
export FACTORED_KEYS_CACHE_DIR=/tmp/fkcache-tune ORT_DISABLE_TELEMETRY=1
H=.gpu/data/heldout.txt
tar xJf .gpu/dist.tar.xz
if [ "$phase" = base ]; then
  xz -dc .gpu/pack/node.xz > /tmp/node && chmod +x /tmp/node
  mkdir -p /tmp/ort130 && tar xJf .gpu/pack/ort.tar.xz -C /tmp/ort130
  ln -sfn /tmp/ort130/node_modules node_modules
  [ -d /tmp/m7 ] || /tmp/node .gpu/cal/generate.js mistral-7b /tmp/m7 > /dev/null
  cat /tmp/m7/*.safetensors > /dev/null
  [ -n "${SKIP_KNOBS:-}" ] && exit 0
  J=$OUT/analyze-knobs.jsonl
  run() { python3 bench/gpu/runs.py /tmp/node /tmp/m7 $J "$@" >> $OUT/base.txt 2>&1; }
  run 'cpu' 3 -- --backend cpu
  for v in 2 4 6; do run "prefetch $v" 2 FK_SPECTRUM_PREFETCH=$v -- --backend cpu; done
  for v in 1 2 8; do run "part-heads $v" 2 FK_SPECTRUM_PART_HEADS=$v -- --backend cpu; done
  for v in 8 12 15 24; do run "threads $v" 2 -- --backend cpu --threads $v; done
  run 'cpu again' 3 -- --backend cpu
elif [ "$phase" = eval ]; then
  [ -x /tmp/node ] || { echo "error: run the base phase first"; exit 3; }
  . bench/gpu/cuda-env.sh && use_ort_cuda
  /tmp/node .gpu/cal/eval-gpu.js $H .gpu/data/mistral-bytes /tmp/w ${EVAL_CONFIGS:-cuda:auto:255:16,cuda:auto:255:64,cuda:float16:255:64,cuda:auto:255:32} > $OUT/eval-tune.jsonl 2> $OUT/eval.err
  gpumem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$1" & echo $!; }
  P=$(gpumem $OUT/gpumem-7b.txt)
  /tmp/node .gpu/cal/eval-model.js /tmp/m7 $H cuda:auto > $OUT/eval-7b.jsonl 2>> $OUT/eval.err
  kill $P
fi
