/**
 * The element type of the KV cache being priced. It is one explicit choice, never silently the
 * weights' storage type: F32 checkpoints are almost always served with a 16-bit cache.
 */
import type { ModelConfig } from '../checkpoint/checkpoint';
import { FactoredKeysError } from '../errors';

/** Cache element types with a byte width. */
export type CacheDtype = 'f32' | 'f16' | 'bf16' | 'fp8';

export const CACHE_DTYPES: readonly CacheDtype[] = ['f32', 'f16', 'bf16', 'fp8'];

/** Bytes per cached element of each cache dtype. */
export const CACHE_DTYPE_BYTES: Readonly<Record<CacheDtype, number>> = { f32: 4, f16: 2, bf16: 2, fp8: 1 };

/** Where the cache dtype came from. */
export type CacheDtypeSource = 'flag' | 'config' | 'default';

/** The resolved choice. `dtype` is absent when only a byte width was given. */
export interface CacheDtypeChoice {
  readonly dtype?: CacheDtype;
  readonly bytesPerValue: number;
  readonly source: CacheDtypeSource;
  /** Human-readable reason, e.g. `config.json torch_dtype bfloat16`. */
  readonly why: string;
}

/** Parses a `--cache-dtype` value. */
export function parseCacheDtype(raw: string, what: string): CacheDtype {
  if ((CACHE_DTYPES as readonly string[]).includes(raw)) return raw as CacheDtype;
  throw new FactoredKeysError(`${what} must be one of ${CACHE_DTYPES.join(', ')}, got ${JSON.stringify(raw)}`);
}

const CONFIG_16_BIT: Readonly<Record<string, CacheDtype>> = { float16: 'f16', bfloat16: 'bf16' };

/**
 * The default cache dtype of a checkpoint: its config's `torch_dtype` (or transformers 5's
 * `dtype`) when that is 16-bit, else bf16.
 */
export function defaultCacheDtype(config: ModelConfig | undefined): CacheDtypeChoice {
  for (const key of ['torch_dtype', 'dtype']) {
    const v = config?.[key];
    if (typeof v === 'string' && Object.hasOwn(CONFIG_16_BIT, v)) {
      const dtype = CONFIG_16_BIT[v];
      return { dtype, bytesPerValue: CACHE_DTYPE_BYTES[dtype], source: 'config', why: `config.json ${key} ${v}` };
    }
  }
  const declared = ['torch_dtype', 'dtype'].map((k) => config?.[k]).find((v) => typeof v === 'string');
  return { dtype: 'bf16', bytesPerValue: 2, source: 'default', why: declared ? `default for ${String(declared)} weights` : 'default' };
}

/** An explicit choice from a flag. */
export function explicitCacheDtype(dtype: CacheDtype): CacheDtypeChoice {
  return { dtype, bytesPerValue: CACHE_DTYPE_BYTES[dtype], source: 'flag', why: '--cache-dtype' };
}

/** A short label: `bf16 (2 B per value, config.json torch_dtype bfloat16)`. */
export function describeCacheDtype(c: CacheDtypeChoice): string {
  return `${c.dtype ?? `${c.bytesPerValue}-byte`} (${c.bytesPerValue} B per value, ${c.why})`;
}
