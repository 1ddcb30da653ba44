/**
 * `export <checkpoint> <outdir> --method key-svd|qk-svd (policy flags) [--force] [--json]`:
 * writes a factored-keys checkpoint (docs/FORMAT.md). Ctrl-C cancels and removes the partial
 * output.
 */
import { FactoredKeysError } from '../core/errors';
import { exportFactored } from '../core/export/export';
import { planKeyBytesPerToken } from '../core/plan/plan';
import { parseArgs } from './args';
import { calibrationFromArgs } from './calibration';
import type { CliIo } from './io';
import { commandSpec, commandUsageLine } from './options';
import { methodOf, policyFromArgs } from './plan';

const SPEC = commandSpec('export');
import { progressFromArgs } from './progress';
import { cacheChoiceFromArgs, checkCacheFlags } from './cache';
import { readConfigForDefaults } from './checkpointConfig';
import { describeCacheDtype } from '../core/savings/cacheDtype';

/** The `export --json` object (a stable contract; fields are only ever added). */
export interface ExportJson {
  /** The folder written (absolute). */
  output: string;
  method: string;
  ranks: number[][];
  /** The cache dtype the bytes are priced at (absent when only --bytes-per-value was given). */
  cache_dtype?: string;
  bytes_per_value: number;
  key_cache_bytes_per_token: { before: number; after: number };
  value_cache_bytes_per_token: { before: number; after: number };
  kv_cache_bytes_per_token: { before: number; after: number };
  capacity_multiplier: number;
}

/** `export` command. */
export async function runExport(argv: string[], baseIo: CliIo): Promise<number> {
  const args = parseArgs(argv, SPEC, 'export');
  // factoring (or calibrating) and writing run at once: one line with both counters
  const progress = progressFromArgs(args, 'export', baseIo);
  const io = progress.io;
  if (args.positionals.length !== 2) {
    throw new FactoredKeysError(
      `export: expected a checkpoint and an output folder (usage: ${commandUsageLine(SPEC)})`,
    );
  }
  const choice = await policyFromArgs(args, 'export');
  if (!choice.method && !choice.plan) throw new FactoredKeysError('export: --method key-svd|qk-svd|calibrated is required');
  const calibration = await calibrationFromArgs(args, { command: 'export', method: methodOf(choice), checkpoint: args.positionals[0] });
  checkCacheFlags(args, 'export');
  const source = args.positionals[0];
  // the default cache dtype comes from the source's config.json (read again, checked, by the export)
  const config = await readConfigForDefaults(source);
  const cache = cacheChoiceFromArgs(args, 'export', config);
  const cancel = { cancelled: false };
  const onSignal = () => {
    cancel.cancelled = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const result = await exportFactored({
      source,
      dest: args.positionals[1],
      method: methodOf(choice),
      policy: choice.policy,
      overrides: choice.overrides,
      plan: choice.plan,
      planSource: choice.planPath,
      force: args.booleans.has('force'),
      cache,
      calibration,
      cancel,
      progress: progress.fn,
    });
    progress.done();
    const c = result.report.cache;
    const before = c.key_bytes_per_token.before;
    const after = planKeyBytesPerToken(result.plan);
    if (args.booleans.has('json')) {
      const out: ExportJson = {
        output: result.dest,
        method: result.plan.method,
        ranks: result.plan.ranks,
        ...(c.dtype ? { cache_dtype: c.dtype } : {}),
        bytes_per_value: c.bytes_per_value,
        key_cache_bytes_per_token: { before, after },
        value_cache_bytes_per_token: { before: c.value_bytes_per_token, after: c.value_bytes_per_token },
        kv_cache_bytes_per_token: { ...c.kv_bytes_per_token },
        capacity_multiplier: c.capacity_multiplier,
      };
      io.stdout(JSON.stringify(out) + '\n');
    } else {
      io.stdout(
        [
          `wrote ${result.dest}`,
          `method ${result.plan.method}, ${result.config.rope_mode} keys, ranks ${summarizeRanks(result.plan.ranks)} of ${result.config.original_head_dim}`,
          `cache priced as ${describeCacheDtype(cache)}`,
          `key cache per token: ${before} B -> ${after} B (${(100 * (1 - after / before)).toFixed(1)} % smaller)`,
          `KV cache per token: ${c.kv_bytes_per_token.before} B -> ${c.kv_bytes_per_token.after} B, capacity x${c.capacity_multiplier.toFixed(3)}`,
        ].join('\n') + '\n',
      );
    }
    return 0;
  } finally {
    progress.done();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function summarizeRanks(ranks: number[][]): string {
  const flat = ranks.flat();
  const min = Math.min(...flat);
  const max = Math.max(...flat);
  return min === max ? String(min) : `${min}..${max} (mean ${(flat.reduce((a, b) => a + b, 0) / flat.length).toFixed(1)})`;
}
