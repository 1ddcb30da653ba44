/**
 * `savings [<checkpoint>] [--layers L --kv-heads H --head-dim D] (--key-rank R | --key-fraction F | --plan plan.json)
 *   --context N [--batch B] [--bytes-per-value 2 | --bits-per-value 4] [--value-bits-per-value 16] [--json]`:
 * KV-cache bytes before and after factoring keys (K + V totals at context x batch).
 */
import { promises as fsp } from 'node:fs';
import { buildLayout } from '../core/arch';
import { openCheckpoint } from '../core/checkpoint/checkpoint';
import type { ModelConfig } from '../core/checkpoint/checkpoint';
import { describeCacheDtype } from '../core/savings/cacheDtype';
import { cacheChoiceFromArgs } from './cache';
import { FactoredKeysError } from '../core/errors';
import { planModelOf } from '../core/export/export';
import { validatePlan } from '../core/plan/plan';
import type { PlanModel } from '../core/plan/types';
import { computeSavings, savingsJson, type CacheGeometry, type CacheSavings } from '../core/savings';
import { numberFlag, parseArgs } from './args';
import type { CliIo } from './io';
import { commandSpec, commandUsageLine } from './options';

const SPEC = commandSpec('savings');
const USAGE = `usage: ${commandUsageLine(SPEC)}; see factored-keys savings --help`;

/** Human-readable byte count with the exact integer. */
function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${n.toLocaleString('en-US')} B${u > 0 ? ` (${v.toFixed(2)} ${units[u]})` : ''}`;
}

/** Text report of a savings computation. */
export function formatSavings(s: CacheSavings): string {
  return (
    [
      `key bytes per token:   ${s.keyBytesPerToken.before} -> ${s.keyBytesPerToken.after}`,
      `value bytes per token: ${s.valueBytesPerToken.before}`,
      `KV cache before: ${bytes(s.baselineBytes)}`,
      `KV cache after:  ${bytes(s.factoredBytes)}`,
      `saved:           ${bytes(s.savedBytes)} (${(100 * s.kvSavedFraction).toFixed(1)} % of the KV cache, ${(100 * s.keySavedFraction).toFixed(1)} % of keys)`,
      `capacity:        x${Number(s.capacityMultiplier.toFixed(6))} sequences in the same KV memory`,
    ].join('\n') + '\n'
  );
}

/** `savings` command. */
export async function runSavings(argv: string[], io: CliIo): Promise<number> {
  const args = parseArgs(argv, SPEC, 'savings');
  if (args.positionals.length > 1) throw new FactoredKeysError(`savings: expected at most one checkpoint path (${USAGE})`);
  const int = (name: string) => numberFlag(args, name, 'savings', { integer: true, min: 1 });
  let geometry: CacheGeometry;
  let config: ModelConfig | undefined;
  let model: PlanModel | undefined;
  if (args.positionals.length === 1) {
    for (const f of ['layers', 'kv-heads', 'head-dim']) if (args.values.has(f)) throw new FactoredKeysError(`savings: --${f} comes from the checkpoint; do not give both`);
    const ckpt = await openCheckpoint(args.positionals[0]);
    try {
      const layout = buildLayout(ckpt);
      geometry = { layers: layout.layers.length, kvHeads: layout.kvHeads, headDim: layout.headDim };
      config = ckpt.config;
      model = planModelOf(layout, ckpt.tensors);
    } finally {
      await ckpt.close();
    }
  } else {
    const layers = int('layers');
    const kvHeads = int('kv-heads');
    const headDim = int('head-dim');
    if (layers === undefined || kvHeads === undefined || headDim === undefined) throw new FactoredKeysError(`savings: give a checkpoint or all of --layers, --kv-heads, --head-dim (${USAGE})`);
    geometry = { layers, kvHeads, headDim };
  }
  const sources = ['key-rank', 'key-fraction', 'plan'].filter((f) => args.values.has(f));
  if (sources.length !== 1) throw new FactoredKeysError(`savings: give exactly one of --key-rank, --key-fraction, --plan (${USAGE})`);
  let keyRanks: number | number[][];
  if (args.values.has('key-rank')) {
    keyRanks = int('key-rank')!;
  } else if (args.values.has('key-fraction')) {
    const f = numberFlag(args, 'key-fraction', 'savings', { above: 0, max: 1 })!;
    keyRanks = Math.min(geometry.headDim, Math.max(1, Math.round(f * geometry.headDim)));
  } else {
    const file = args.values.get('plan')!;
    let raw: unknown;
    try {
      raw = JSON.parse(await fsp.readFile(file, 'utf8'));
    } catch (e) {
      throw new FactoredKeysError(`${file}: cannot read the plan (${(e as Error).message.split('\n')[0]})`);
    }
    keyRanks = validatePlan(raw, file, model ?? { architecture: '', layers: geometry.layers, kv_heads: geometry.kvHeads, head_dim: geometry.headDim, key_bytes_per_value: 2 }).ranks;
  }
  const context = int('context');
  if (context === undefined) throw new FactoredKeysError(`savings: --context is required (${USAGE})`);
  const batch = int('batch') ?? 1;
  if (args.values.has('bytes-per-value') && args.values.has('bits-per-value')) throw new FactoredKeysError('savings: give --bytes-per-value or --bits-per-value, not both');
  const bitsGiven = args.values.has('bits-per-value');
  if (bitsGiven && args.values.has('cache-dtype')) throw new FactoredKeysError('savings: give --cache-dtype or --bits-per-value, not both');
  const cache = bitsGiven ? undefined : cacheChoiceFromArgs(args, 'savings', config, '--bits-per-value');
  const bits = bitsGiven ? int('bits-per-value')! : 8 * cache!.bytesPerValue;
  const valueBits = int('value-bits-per-value');
  const s = computeSavings({ ...geometry, keyRanks, keyBitsPerValue: bits, valueBitsPerValue: valueBits, context, batch });
  if (args.booleans.has('json')) {
    const out = {
      ...savingsJson(s),
      inputs: {
        layers: geometry.layers,
        kv_heads: geometry.kvHeads,
        head_dim: geometry.headDim,
        key_ranks: keyRanks,
        context,
        batch,
        ...(cache?.dtype ? { cache_dtype: cache.dtype } : {}),
        key_bits_per_value: bits,
        value_bits_per_value: valueBits ?? bits,
      },
      per_token: {
        key_bytes: { ...s.keyBytesPerToken },
        value_bytes: { ...s.valueBytesPerToken },
        kv_bytes: { ...s.kvBytesPerToken },
      },
    };
    io.stdout(JSON.stringify(out) + '\n');
  } else {
    io.stdout(formatSavings(s) + `cache:           ${cache ? describeCacheDtype(cache) : `${bits} bits per key value (--bits-per-value)`}\n`);
  }
  return 0;
}
