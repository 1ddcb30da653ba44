#!/usr/bin/env bash
# Writes the exports that scripts/reference/check_runtime.py loads with transformers, and our own
# eval of each, into OUT (default .fkx/, ignored by git; carry it to the GPU machine).
#   bash scripts/reference/runtime_exports.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-.fkx}
F=${FIXTURES:-../shared/fixtures}
mkdir -p "$OUT/exports" "$OUT/eval"
head -c 16385 "$F/heldout.txt" > "$OUT/heldout16385.txt"
head -c 2049 "$F/heldout.txt" > "$OUT/heldout2049.txt"
one() { # name source text method rank-flag...
  local name=$1 src=$2 text=$3 method=$4; shift 4
  [ -s "$OUT/eval/$name.eval.json" ] && return 0
  node dist/cli.js export "$src" "$OUT/exports/$name" --method "$method" "$@" --force --json > "$OUT/eval/$name.export.json"
  # models with fewer than 256 positions (a variant has 128) are evaluated in windows of 128
  node dist/cli.js eval "$OUT/exports/$name" --text "$text" --tokenizer bytes --seq 256 --threads 2 --json > "$OUT/eval/$name.eval.json" 2>/dev/null ||
    node dist/cli.js eval "$OUT/exports/$name" --text "$text" --tokenizer bytes --seq 128 --threads 2 --json > "$OUT/eval/$name.eval.json"
  echo "$name $(cut -c1-60 "$OUT/eval/$name.eval.json")"
}
for m in gpt2-bytes mistral-bytes; do
  for method in key-svd qk-svd; do
    one "$m.$method.r16" "$F/$m" "$OUT/heldout2049.txt" $method --rank 16
    one "$m.$method.full" "$F/$m" "$OUT/heldout2049.txt" $method --fraction 1
  done
done
for d in "$F"/layouts2/*/ test/fixtures/variants/*/; do
  fam=$(basename "$d"); [ "$fam" = deepseek_v3 ] && continue
  kind=$(basename "$(dirname "$d")")
  one "$kind.$fam.r8" "$d" "$OUT/heldout2049.txt" key-svd --rank 8
  [ "$kind" = layouts2 ] && one "$kind.$fam.full" "$d" "$OUT/heldout2049.txt" key-svd --fraction 1
done
node dist/cli.js savings "$F/mistral-bytes" --key-rank 16 --context 1024 --batch 8 --cache-dtype bf16 --json > "$OUT/eval/savings.mistral-bytes.r16.json"
node dist/cli.js savings "$F/gpt2-bytes" --key-rank 16 --context 256 --batch 8 --cache-dtype f32 --json > "$OUT/eval/savings.gpt2-bytes.r16.json"
