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
python3 - <<'PY' > $OUT/profile-summary.txt
import json, glob, collections
for f in sorted(glob.glob('/tmp/prof/p*.json')):
    ev = json.load(open(f))
    sess = collections.Counter(); ops = collections.Counter()
    for e in ev:
        if e.get('cat') == 'Session': sess[e['name']] += e.get('dur', 0)
        elif e.get('cat') == 'Node': ops[e.get('args', {}).get('op_name', '?')] += e.get('dur', 0)
    print(f, 'session phases (ms):', {k: round(v / 1000, 1) for k, v in sess.most_common(12)})
    print('  node time by op (ms):', {k: round(v / 1000, 1) for k, v in ops.most_common(12)})
PY
cat $OUT/profile-summary.txt
