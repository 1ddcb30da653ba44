/**
 * KV-cache size arithmetic: bytes per token and at context x batch, before and after factoring
 * the keys, for any element width (bits per value, so quantized caches compose), with GQA
 * (one cached key/value vector per KV head, not per query head).
 *
 * Everything is exact integer arithmetic on bit counts; totals are rounded up to whole bytes
 * only at the very end, so odd bit widths (e.g. 3-bit) do not accumulate rounding.
 */
import { FactoredKeysError } from '../errors';

/** What the cache looks like: one key and one value vector per layer, KV head and token. */
export interface CacheGeometry {
  /** Transformer layers that keep a KV cache. */
  readonly layers: number;
  /** KV heads per layer (GQA/MQA: fewer than query heads). */
  readonly kvHeads: number;
  /** Original key (and value) head dimension. */
  readonly headDim: number;
  /** Value head dimension when it differs from the key's (rare); defaults to headDim. */
  readonly valueHeadDim?: number;
}

/** Inputs of a savings computation. */
export interface SavingsInput extends CacheGeometry {
  /**
   * Cached key dimensions after factoring: one rank for every head, or ranks[layer][kvHead]
   * (a rank plan). Omit for "no factoring" (keys at headDim).
   */
  readonly keyRanks?: number | readonly (readonly number[])[];
  /** Bits per cached key element (16 for fp16/bf16, 8 or 4 for a quantized cache). */
  readonly keyBitsPerValue: number;
  /** Bits per cached value element; defaults to keyBitsPerValue. */
  readonly valueBitsPerValue?: number;
  /** Tokens per sequence held in the cache. */
  readonly context: number;
  /** Sequences held at once. */
  readonly batch: number;
}

/** A before/after pair of byte counts. */
export interface BeforeAfter {
  readonly before: number;
  readonly after: number;
}

/** Result of {@link computeSavings}; every byte count is an integer. */
export interface CacheSavings {
  /** Key bytes per token, all layers and KV heads (batch 1). */
  readonly keyBytesPerToken: BeforeAfter;
  /** Value bytes per token (unchanged by key factoring). */
  readonly valueBytesPerToken: BeforeAfter;
  /** Key + value bytes per token. */
  readonly kvBytesPerToken: BeforeAfter;
  /** Key bytes at context x batch. */
  readonly keyBytes: BeforeAfter;
  /** Value bytes at context x batch. */
  readonly valueBytes: BeforeAfter;
  /** K + V bytes at context x batch before factoring. */
  readonly baselineBytes: number;
  /** K + V bytes at context x batch after factoring. */
  readonly factoredBytes: number;
  /** baselineBytes - factoredBytes. */
  readonly savedBytes: number;
  /** Fraction of the key cache removed (0.75 for rank 32 of 128). */
  readonly keySavedFraction: number;
  /** Fraction of the whole KV cache removed. */
  readonly kvSavedFraction: number;
  /**
   * How many times more sequences fit in the same KV memory: baseline / factored bytes per
   * token (1.6 for keys at 32 of 128 dims with equal K/V widths).
   */
  readonly capacityMultiplier: number;
}

function positiveInt(v: number, what: string): number {
  if (!Number.isSafeInteger(v) || v <= 0) throw new FactoredKeysError(`savings: ${what} must be a positive integer, got ${v}`);
  return v;
}

function positiveBits(v: number, what: string): number {
  if (!Number.isSafeInteger(v) || v <= 0 || v > 64) throw new FactoredKeysError(`savings: ${what} must be a whole number of bits from 1 to 64, got ${v}`);
  return v;
}

/** Sum of cached key dims over all layers and KV heads, validating every rank against headDim. */
export function totalKeyDims(geometry: CacheGeometry, keyRanks: SavingsInput['keyRanks']): number {
  const { layers, kvHeads, headDim } = geometry;
  if (keyRanks === undefined) return layers * kvHeads * headDim;
  if (typeof keyRanks === 'number') {
    if (!Number.isSafeInteger(keyRanks) || keyRanks < 1 || keyRanks > headDim) {
      throw new FactoredKeysError(`savings: key rank must be an integer from 1 to head_dim ${headDim}, got ${keyRanks}`);
    }
    return layers * kvHeads * keyRanks;
  }
  if (keyRanks.length !== layers) throw new FactoredKeysError(`savings: rank plan has ${keyRanks.length} layers, the model has ${layers}`);
  let sum = 0;
  keyRanks.forEach((row, l) => {
    if (row.length !== kvHeads) throw new FactoredKeysError(`savings: rank plan layer ${l} has ${row.length} KV heads, the model has ${kvHeads}`);
    row.forEach((r, g) => {
      if (!Number.isSafeInteger(r) || r < 1 || r > headDim) {
        throw new FactoredKeysError(`savings: rank at layer ${l}, KV head ${g} must be an integer from 1 to ${headDim}, got ${r}`);
      }
      sum += r;
    });
  });
  return sum;
}

/** Exact bytes for `elements` values of `bits` each, rounded up to a whole byte. */
function bytesFor(elements: number, bits: number): number {
  const total = BigInt(elements) * BigInt(bits);
  const bytes = (total + 7n) / 8n;
  const n = Number(bytes);
  if (!Number.isSafeInteger(n)) throw new FactoredKeysError(`savings: ${bytes} bytes is beyond exact integer range`);
  return n;
}

/**
 * KV-cache bytes before and after key factoring. Reproduces the paper's example: 32 layers,
 * 32 KV heads x 128, 16-bit, 128,000 tokens, keys at rank 32 -> 67,108,864,000 B before,
 * 41,943,040,000 B after, 25,165,824,000 B saved, capacity x1.6.
 */
export function computeSavings(input: SavingsInput): CacheSavings {
  const layers = positiveInt(input.layers, 'layers');
  const kvHeads = positiveInt(input.kvHeads, 'KV heads');
  const headDim = positiveInt(input.headDim, 'head dim');
  const valueHeadDim = positiveInt(input.valueHeadDim ?? headDim, 'value head dim');
  const context = positiveInt(input.context, 'context');
  const batch = positiveInt(input.batch, 'batch');
  const keyBits = positiveBits(input.keyBitsPerValue, 'bits per key value');
  const valueBits = positiveBits(input.valueBitsPerValue ?? input.keyBitsPerValue, 'bits per value-cache value');
  const keyDimsBefore = layers * kvHeads * headDim;
  const keyDimsAfter = totalKeyDims({ layers, kvHeads, headDim }, input.keyRanks);
  const valueDims = layers * kvHeads * valueHeadDim;
  const tokens = context * batch;
  const keyBytesPerToken = { before: bytesFor(keyDimsBefore, keyBits), after: bytesFor(keyDimsAfter, keyBits) };
  const valueBytesPerToken = { before: bytesFor(valueDims, valueBits), after: bytesFor(valueDims, valueBits) };
  const keyBytes = { before: bytesFor(keyDimsBefore * tokens, keyBits), after: bytesFor(keyDimsAfter * tokens, keyBits) };
  const valueBytes = { before: bytesFor(valueDims * tokens, valueBits), after: bytesFor(valueDims * tokens, valueBits) };
  const baselineBytes = keyBytes.before + valueBytes.before;
  const factoredBytes = keyBytes.after + valueBytes.after;
  const kvBefore = keyBytesPerToken.before + valueBytesPerToken.before;
  const kvAfter = keyBytesPerToken.after + valueBytesPerToken.after;
  return {
    keyBytesPerToken,
    valueBytesPerToken,
    kvBytesPerToken: { before: kvBefore, after: kvAfter },
    keyBytes,
    valueBytes,
    baselineBytes,
    factoredBytes,
    savedBytes: baselineBytes - factoredBytes,
    keySavedFraction: 1 - keyDimsAfter / keyDimsBefore,
    kvSavedFraction: 1 - factoredBytes / baselineBytes,
    // Bit-exact ratio of per-token totals, independent of context/batch rounding.
    capacityMultiplier: (keyDimsBefore * keyBits + valueDims * valueBits) / (keyDimsAfter * keyBits + valueDims * valueBits),
  };
}

/** The `savings --json` object (a stable contract): K + V totals at context x batch. */
export interface SavingsJson {
  baseline_bytes: number;
  factored_bytes: number;
  saved_bytes: number;
  capacity_multiplier: number;
}

/** Maps a {@link CacheSavings} to the CLI's JSON contract. */
export function savingsJson(s: CacheSavings): SavingsJson {
  return { baseline_bytes: s.baselineBytes, factored_bytes: s.factoredBytes, saved_bytes: s.savedBytes, capacity_multiplier: s.capacityMultiplier };
}
