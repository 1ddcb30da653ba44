#!/bin/bash
# The short form of spectrum-h200.sh (same preparation and carry): ours first, then PyTorch's
# paths once each in the same run, with the accuracy check of our `auto` output. (Run C of
# docs/BENCHMARKS.md used this script as of commit 467b658, when the half Gram was the default and
# FK_SPECTRUM_WORKER_GRAPH=matmul selected the batched MatMul that is the default now.)
set -u
cd "$(dirname "$0")/../.."
xz -dc .gpu/pack/node.xz > /tmp/node && chmod +x /tmp/node
tar xJf .gpu/pack/ort.tar.xz
R=$OUT/results.txt
J=$OUT/runs.jsonl
M=/tmp/m7
{ date -u; nproc; nvidia-smi --query-gpu=name --format=csv,noheader; uptime; } > $R 2>&1
/tmp/node .gpu/cal/generate.js mistral-7b $M --qk-only >> $R 2>&1
cat $M/*.safetensors > /dev/null
/tmp/node .gpu/cal/read-qk.js $M >> $R 2>&1
export FACTORED_KEYS_CACHE_DIR=/tmp/fkcache
run() { python3 bench/gpu/runs.py /tmp/node $M $J "$@" >> $R 2>&1; }
KEEP_JSON=$OUT/analyze-auto.json run 'auto (nothing measured yet)' 3 -- --backend auto
run 'cpu' 1 -- --backend cpu
run 'cpu, three-Gemm half Gram in the workers' 1 FK_SPECTRUM_WORKER_GRAPH=half -- --backend cpu
run 'cpu, Gram on the main thread (before this work)' 1 FK_SPECTRUM_GRAM=main -- --backend cpu
python3 scripts/reference/spectra_torch_gram.py $M --repeats 1 --paths gram-tuned-cpu-eig,gram --check $OUT/analyze-auto.json --json $OUT/torch.json >> $R 2>&1
uptime >> $R
