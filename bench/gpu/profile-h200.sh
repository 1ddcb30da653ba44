#!/bin/bash
# Where a CUDA evaluation's session creation goes (issue 14), after `tune-h200.sh base` on the same
# warm machine (carry .gpucuda only: with the tracked files it is just under the 64 MiB; .gpu/cal, .gpu/data and dist stay from the base call): the 1.1B model evaluated in
# fresh processes under onnxruntime's profiler and per optimisation level.
set -u
cd "$(dirname "$0")/../.."
[ -x /tmp/node ] || { echo "error: run tune-h200.sh base first"; exit 3; }
tar xJf .gpu/dist.tar.xz
. bench/gpu/cuda-env.sh && use_ort_cuda
export ORT_DISABLE_TELEMETRY=1
M=/tmp/w/llama-1.1b-synthetic H=.gpu/data/heldout.txt
/tmp/node .gpu/cal/generate.js llama-1.1b $M > /dev/null
one() { /tmp/node .gpu/cal/eval-model.js $M $H cuda:auto:255:${B:-16} | cut -c1-600 | sed "s/^/$1 /" >> $OUT/profile.jsonl; }
one warmup
mkdir -p /tmp/prof && FK_ORT_PROFILE=/tmp/prof/p one profiled
for l in all extended basic disabled; do FK_ORT_OPTIMIZATION=$l one "opt-$l"; done
for l in all basic; do FK_ORT_OPTIMIZATION=$l one "opt-$l-again"; done
for f in /tmp/prof/p*.json; do python3 bench/gpu/profile_ops.py "$f" --top 12; done > $OUT/profile-summary.txt
cat $OUT/profile-summary.txt
