/**
 * `export <checkpoint> <outdir> --method key-svd|qk-svd (policy flags) [--force] [--json]`:
 * writes a factored-keys checkpoint (docs/FORMAT.md). Ctrl-C cancels and removes the partial
 * output.
 */
import { FactoredKeysError } from '../core/errors';
import { exportFactored } from '../core/export/export';
import { planKeyBytesPerToken } from '../core/plan/plan';
import { parseArgs } from './args';
import type { CliIo } from './io';
import { commandSpec, commandUsageLine } from './options';
import { methodOf, policyFromArgs } from './plan';

const SPEC = commandSpec('export');
import { percentProgress } from './progress';

/** The `export --json` object (a stable contract). */
export interface ExportJson {
  method: string;
  ranks: number[][];
  key_cache_bytes_per_token: { before: number; after: number };
}

/** `export` command. */
export async function runExport(argv: string[], io: CliIo): Promise<number> {
  const args = parseArgs(argv, SPEC, 'export');
  if (args.positionals.length !== 2) {
    throw new FactoredKeysError(
      `export: expected a checkpoint and an output folder (usage: ${commandUsageLine(SPEC)})`,
    );
  }
  const choice = await policyFromArgs(args, 'export');
  if (!choice.method && !choice.plan) throw new FactoredKeysError('export: --method key-svd|qk-svd is required');
  const cancel = { cancelled: false };
  const onSignal = () => {
    cancel.cancelled = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const result = await exportFactored({
      source: args.positionals[0],
      dest: args.positionals[1],
      method: methodOf(choice),
      policy: choice.policy,
      overrides: choice.overrides,
      plan: choice.plan,
      planSource: choice.planPath,
      force: args.booleans.has('force'),
      cancel,
      progress: args.booleans.has('progress') ? percentProgress(io) : undefined,
    });
    const before = result.report.cache.key_bytes_per_token.before;
    const after = planKeyBytesPerToken(result.plan);
    if (args.booleans.has('json')) {
      const out: ExportJson = { method: result.plan.method, ranks: result.plan.ranks, key_cache_bytes_per_token: { before, after } };
      io.stdout(JSON.stringify(out) + '\n');
    } else {
      const c = result.report.cache;
      io.stdout(
        [
          `wrote ${result.dest}`,
          `method ${result.plan.method}, ${result.config.rope_mode} keys, ranks ${summarizeRanks(result.plan.ranks)} of ${result.config.original_head_dim}`,
          `key cache per token: ${before} B -> ${after} B (${(100 * (1 - after / before)).toFixed(1)} % smaller)`,
          `KV cache per token: ${c.kv_bytes_per_token.before} B -> ${c.kv_bytes_per_token.after} B, capacity x${c.capacity_multiplier.toFixed(3)}`,
        ].join('\n') + '\n',
      );
    }
    return 0;
  } finally {
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
