/**
 * The extension's settings (`factoredKeys.*`), read once per use so changes apply immediately.
 */
import * as os from 'node:os';
import * as vscode from 'vscode';
import { BACKEND_CHOICES } from '../core/compute/session';
import { FACTOR_METHODS, type FactorMethod } from '../core/plan';
import { CACHE_DTYPES, POLICIES, type CacheDtype, type PanelDefaults, type PolicyName } from '../protocol';

/** Everything the extension reads from configuration, validated with safe fallbacks. */
export interface Settings {
  readonly backend: string;
  readonly method: FactorMethod;
  readonly threads: number;
  readonly defaults: PanelDefaults;
  readonly openWorkspaceCheckpointOnStartup: boolean;
  readonly eval: { readonly textFile: string; readonly tokenizer: string; readonly seq: number; readonly maxWindows: number };
}

function pick<T extends string>(value: unknown, options: readonly T[], fallback: T): T {
  return typeof value === 'string' && (options as readonly string[]).includes(value) ? (value as T) : fallback;
}

function positive(value: unknown, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? Math.min(max, value) : fallback;
}

/** Reads `factoredKeys.*`. `maxThreads` 0 means all cores but one (the extension host keeps one). */
export function readSettings(): Settings {
  const c = vscode.workspace.getConfiguration('factoredKeys');
  const maxThreads = c.get<number>('maxThreads', 0);
  const threads = Number.isInteger(maxThreads) && maxThreads > 0 ? maxThreads : Math.max(1, os.cpus().length - 1);
  const backend = pick(c.get('backend'), BACKEND_CHOICES, 'auto');
  return {
    backend,
    method: pick(c.get('method'), FACTOR_METHODS, 'key-svd'),
    threads,
    openWorkspaceCheckpointOnStartup: c.get<boolean>('openWorkspaceCheckpointOnStartup', false) === true,
    eval: {
      textFile: String(c.get('eval.textFile') ?? ''),
      tokenizer: String(c.get('eval.tokenizer') ?? 'auto') || 'auto',
      seq: Math.round(positive(c.get('eval.seq'), 256, 1 << 16)),
      maxWindows: Math.max(0, Math.round(Number(c.get('eval.maxWindows') ?? 16)) || 0),
    },
    defaults: {
      backend,
      plan: {
        policy: pick<PolicyName>(c.get('policy'), POLICIES, 'energy'),
        rank: Math.round(positive(c.get('rank'), 16, 65536)),
        fraction: positive(c.get('fraction'), 0.25, 1),
        energy: positive(c.get('energy'), 0.95, 1),
        budget: positive(c.get('budget'), 0.25, 1),
        overrides: [],
      },
      savings: {
        context: Math.round(positive(c.get('savings.contextLength'), 128000, 1 << 24)),
        batch: Math.round(positive(c.get('savings.batchSize'), 1, 1 << 16)),
        dtype: pick<CacheDtype>(c.get('savings.dtype'), CACHE_DTYPES, 'bf16'),
      },
    },
  };
}
