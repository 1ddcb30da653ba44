#!/bin/bash
# Issue 11 on the GPU machine, after `cuda-h200.sh setup` on the same warm machine (it leaves
# /tmp/node and dist): writes the exports with our CLI there, then checks them with transformers.
# Carry .fkrt (fixtures staged by: cp -r ../shared/fixtures/{layouts2,gpt2-bytes,mistral-bytes,heldout.txt} .fkrt/fixtures/).
set -u
cd "$(dirname "$0")/../.."
[ -x /tmp/node ] && [ -f dist/cli.js ] || { echo "error: /tmp/node or dist missing: run cuda-h200.sh setup first on this machine"; exit 3; }
mkdir -p /tmp/nodebin && ln -sfn /tmp/node /tmp/nodebin/node && export PATH=/tmp/nodebin:$PATH
ln -sfn /tmp/ort130/node_modules node_modules
export ORT_DISABLE_TELEMETRY=1 FACTORED_KEYS_CACHE_DIR=/tmp/fkcache-rt PYTHONUNBUFFERED=1
t=$(date +%s)
FIXTURES=.fkrt/fixtures bash scripts/reference/runtime_exports.sh /tmp/fkx > $OUT/exports.log 2>&1
echo "exports: rc $? in $(( $(date +%s) - t )) s" | tee -a $OUT/exports.log
python3 scripts/reference/check_runtime.py --work /tmp/fkx --fixtures .fkrt/fixtures --out $OUT/runtime_reference.json 2>&1 | tee $OUT/check.log | tail -40
