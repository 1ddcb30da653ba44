/**
 * Per-KV-head factorization bases for `key-svd` and `qk-svd`, computed once in float64 and
 * truncated to any rank afterwards.
 *
 * Both methods end up as a pair of head_dim x head_dim maps (T_q, T_k) with T_q T_kᵀ = I; at
 * rank r the first r columns give a query map T_q,r and a key map T_k,r, and the score of
 * query q and key k (row vectors, biases included) becomes q · T_q,r · T_k,rᵀ · kᵀ = q P kᵀ.
 * - key-svd (the paper): W_K = U Σ Vᵀ, T_q = T_k = V. P = V_r V_rᵀ.
 * - qk-svd: W̃_K = Q R (bias row appended), M = R (Σ_i W̃_Qiᵀ W̃_Qi) Rᵀ = E Λ Eᵀ,
 *   T_k = R⁻¹ E, T_q = Rᵀ E. P = Rᵀ E_r E_rᵀ R⁻ᵀ. See docs/QK_SVD.md.
 */
import type { HeadSlice, AttentionLayout } from '../arch/layout';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { FactoredKeysError, throwIfCancelled, type CancelToken, type ProgressFn } from '../errors';
import { matmul, transpose } from '../linalg/dense';
import type { EigenPool } from '../spectrum/eigenPool';
import { mapsFromGrams, type HeadGrams, type HeadMaps } from './maps';
import { batchedGram, batchedMatmul, type GramFeed, type GramPrecision } from './products';
import type { FactorMethod, HeadEnergies } from '../plan/types';
import type { CalibrationInfo, CalibrationSpec } from '../calibration/moments';
import { analyzeCalibrated } from './calibrated';

/** The full-rank factorization of one KV head; truncate with {@link truncateBasis}. */
export interface HeadBasis {
  readonly layer: number;
  readonly kvHead: number;
  readonly method: FactorMethod;
  readonly headDim: number;
  /**
   * Energy per direction, descending: σ_j² of W_K (key-svd) or eigenvalues λ_j of
   * R (Σ_i W̃_Qiᵀ W̃_Qi) Rᵀ (qk-svd). Negative round-off is clamped to 0.
   */
  readonly energies: Float64Array;
  /** T_q (head_dim x head_dim, row-major; column j = direction j). */
  readonly queryMap: Float64Array;
  /** T_k (head_dim x head_dim, row-major). */
  readonly keyMap: Float64Array;
  /**
   * Relative score error at every rank r = 0..head_dim:
   * sqrt(Σ_i ‖W̃_Qi (I − P_r) W̃_Kᵀ‖²_F / Σ_i ‖W̃_Qi W̃_Kᵀ‖²_F), biases included (W̃ = [W; b]).
   */
  readonly scoreError: Float64Array;
}

/** Query and key maps truncated to rank r (head_dim x r each, row-major). */
export interface TruncatedMaps {
  readonly rank: number;
  readonly queryMap: Float64Array;
  readonly keyMap: Float64Array;
}

/** First `rank` columns of both maps. */
export function truncateBasis(b: HeadBasis, rank: number): TruncatedMaps {
  const n = b.headDim;
  if (!Number.isInteger(rank) || rank < 1 || rank > n) throw new FactoredKeysError(`layer ${b.layer}, KV head ${b.kvHead}: rank ${rank} is outside 1..${n}`);
  const take = (m: Float64Array) => {
    const out = new Float64Array(n * rank);
    for (let i = 0; i < n; i++) for (let j = 0; j < rank; j++) out[i * rank + j] = m[i * n + j];
    return out;
  };
  return { rank, queryMap: take(b.queryMap), keyMap: take(b.keyMap) };
}

/**
 * Gram of feature-major rows F (n x d; row a = weights of output feature a) plus optional
 * bias outer product: G = F Fᵀ + b bᵀ (n x n) — i.e. W̃ᵀW̃ for W̃ = [W; b], W = Fᵀ.
 */
export function featureGram(f: Float32Array, n: number, d: number, bias?: ArrayLike<number>, into?: Float64Array): Float64Array {
  const g = into ?? new Float64Array(n * n);
  for (let a = 0; a < n; a++) {
    const ra = a * d;
    for (let b = a; b < n; b++) {
      const rb = b * d;
      let s = 0;
      for (let x = 0; x < d; x++) s += f[ra + x] * f[rb + x];
      if (bias) s += bias[a] * bias[b];
      g[a * n + b] += s;
      if (b !== a) g[b * n + a] += s;
    }
  }
  return g;
}

/** err(r) for all r from the Grams already rotated into the (T_q, T_k) basis; see HeadBasis.scoreError. */
function scoreErrorsFromRotated(gqB: Float64Array, gkB: Float64Array, n: number): Float64Array {
  // x[a][b] = Gq'[a][b] · Gk'[b][a]; err²(r) = Σ_{a,b >= r} x[a][b]
  const sq = new Float64Array(n + 1);
  for (let r = n - 1; r >= 0; r--) {
    let s = gqB[r * n + r] * gkB[r * n + r];
    for (let b = r + 1; b < n; b++) s += gqB[r * n + b] * gkB[b * n + r] + gqB[b * n + r] * gkB[r * n + b];
    sq[r] = sq[r + 1] + s;
  }
  const total = sq[0];
  const out = new Float64Array(n + 1);
  for (let r = 0; r <= n; r++) out[r] = total > 0 ? Math.sqrt(Math.max(0, sq[r]) / total) : 0;
  return out;
}

/** err(r) from the plain Grams (JS products; the batched path is in analyzeHeads). */
function scoreErrors(gq: Float64Array, gk: Float64Array, tq: Float64Array, tk: Float64Array, n: number): Float64Array {
  const gqB = matmul(transpose(tq, n, n), matmul(gq, tq, n, n, n), n, n, n);
  const gkB = matmul(transpose(tk, n, n), matmul(gk, tk, n, n, n), n, n, n);
  return scoreErrorsFromRotated(gqB, gkB, n);
}

export type { HeadGrams } from './maps';

/** Computes one head's basis from its Grams (pure math; exported for tests). */
export function basisFromGrams(method: FactorMethod, grams: HeadGrams, n: number, layer: number, kvHead: number, keyTensor: string): HeadBasis {
  const maps = mapsFromGrams(method, grams, n, layer, kvHead, keyTensor);
  return { ...maps, scoreError: scoreErrors(grams.queryAug, grams.keyAug, maps.queryMap, maps.keyMap, n) };
}

/**
 * Bases of a layer's heads: the eigensolves on the pool's workers when one is given (the same
 * `mapsFromGrams`, so the same bits), else inline; then the score-error products batched on
 * onnxruntime.
 */
async function basesFromGrams(method: FactorMethod, grams: readonly HeadGrams[], n: number, layer: number, keyTensors: readonly string[], pool?: EigenPool): Promise<HeadBasis[]> {
  const maps = pool && method !== 'calibrated' ? await pool.maps(method, grams, n, layer, keyTensors) : grams.map((g, kv) => mapsFromGrams(method, g, n, layer, kv, keyTensors[kv]));
  return withScoreErrors(maps, grams, n);
}

/** Adds the score errors of every rank to a layer's maps (products batched on onnxruntime). */
async function withScoreErrors(maps: readonly HeadMaps[], grams: readonly HeadGrams[], n: number): Promise<HeadBasis[]> {
  const count = grams.length;
  // X = [G_q T_q ; G_k T_k] per head, then Tᵀ X
  const gs = new Float64Array(2 * count * n * n);
  const ts = new Float64Array(2 * count * n * n);
  const tts = new Float64Array(2 * count * n * n);
  for (let h = 0; h < count; h++) {
    gs.set(grams[h].queryAug, 2 * h * n * n);
    gs.set(grams[h].keyAug, (2 * h + 1) * n * n);
    ts.set(maps[h].queryMap, 2 * h * n * n);
    ts.set(maps[h].keyMap, (2 * h + 1) * n * n);
    tts.set(transpose(maps[h].queryMap, n, n), 2 * h * n * n);
    tts.set(transpose(maps[h].keyMap, n, n), (2 * h + 1) * n * n);
  }
  const rotated = await batchedMatmul(tts, await batchedMatmul(gs, ts, 2 * count, n, n, n), 2 * count, n, n, n);
  return maps.map((m, h) => ({
    ...m,
    scoreError: scoreErrorsFromRotated(rotated.subarray(2 * h * n * n, (2 * h + 1) * n * n), rotated.subarray((2 * h + 1) * n * n, (2 * h + 2) * n * n), n),
  }));
}

/**
 * Reads whole projection tensors of one layer once each (decoded to float32) so fused tensors
 * are not re-read per head. Memory: the layer's Q/K/V tensors.
 */
export class LayerTensorCache {
  private readonly tensors = new Map<string, Promise<Float32Array>>();
  private readonly raws = new Map<string, Promise<Uint8Array>>();
  constructor(private readonly ckpt: Checkpoint) {}

  /** The tensor's raw little-endian bytes (in a fresh, aligned buffer). */
  raw(name: string): Promise<Uint8Array> {
    let t = this.raws.get(name);
    if (!t) {
      t = this.ckpt.readRows(name);
      this.raws.set(name, t);
    }
    return t;
  }

  get(name: string): Promise<Float32Array> {
    let t = this.tensors.get(name);
    if (!t) {
      t = this.ckpt.readRowsF32(name);
      this.tensors.set(name, t);
    }
    return t;
  }

  clear(): void {
    this.tensors.clear();
    this.raws.clear();
  }
}

/**
 * Output features [offset, offset + count) of a projection as feature-major rows
 * (count x d_model); a view into `all` for `linear` tensors, so treat it as read-only.
 */
export function sliceFeatures(all: Float32Array, shape: readonly number[], orientation: HeadSlice['orientation'], offset: number, count: number): Float32Array {
  if (orientation === 'linear') return all.subarray(offset * shape[1], (offset + count) * shape[1]);
  const [d, cols] = shape;
  const out = new Float32Array(count * d);
  for (let x = 0; x < d; x++) {
    const src = x * cols + offset;
    for (let j = 0; j < count; j++) out[j * d + x] = all[src + j];
  }
  return out;
}

/** A head's feature-major weights (head_dim x d_model) and bias. */
export async function readHeadFeatures(
  ckpt: Checkpoint,
  cache: LayerTensorCache,
  slice: HeadSlice,
  headDim: number,
): Promise<{ features: Float32Array; bias?: Float32Array }> {
  const t = ckpt.tensor(slice.tensor);
  const all = await cache.get(slice.tensor);
  const features = sliceFeatures(all, t.shape, slice.orientation, slice.offset, headDim);
  const bias = slice.bias ? (await cache.get(slice.bias)).slice(slice.offset, slice.offset + headDim) : undefined;
  return { features, bias };
}

/** Options for {@link analyzeHeads}. */
export interface AnalyzeOptions {
  readonly cancel?: CancelToken;
  readonly progress?: ProgressFn;
  /** Where `calibrated` gets its statistics (required for that method, ignored by the others). */
  readonly calibration?: CalibrationSpec;
  /** Called with the calibration's provenance once `calibrated` has its statistics. */
  readonly onCalibrated?: (info: CalibrationInfo) => void;
  /**
   * Worker threads for the per-head eigensolves (key-svd, qk-svd). A layer's eigensolves then
   * run while the next layers' Grams are computed and the main thread stays free (the export
   * copies files meanwhile); results are bit-identical to the inline path.
   */
  readonly pool?: EigenPool;
}

/**
 * Pass 1 of an export (and the data behind `plan`): the full-rank basis of every KV head,
 * bases[layer][kvHead]. Reads each layer's Q and K projections once.
 */
/**
 * Refuses a method whose objective the model's attention breaks. qk-svd preserves the bilinear
 * scores q·kᵀ of the projections; a q- or k-norm between projection and score makes the scores
 * a different function, so its optimum would not be the model's. key-svd (a rank-r W_K rebuilt
 * before the norm) stays exact as a full-shape rank-r model.
 */
export function requireMethodFeatures(layout: AttentionLayout, method: FactorMethod): void {
  if (method !== 'key-svd') {
    const normed = layout.description.blocks.some((b) => b.attention.qNorm || b.attention.kNorm);
    if (normed) throw new FactoredKeysError(`${method} does not support q/k-norm (${layout.architecture} normalises q and k between projection and score, so the method's score objective is not the model's); use --method key-svd`);
  }
}

export async function analyzeHeads(ckpt: Checkpoint, layout: AttentionLayout, method: FactorMethod, options: AnalyzeOptions = {}): Promise<HeadBasis[][]> {
  requireMethodFeatures(layout, method);
  if (method === 'calibrated') {
    const { bases, info } = await analyzeCalibrated(ckpt, layout, options);
    options.onCalibrated?.(info);
    return bases;
  }
  const n = layout.headDim;
  const out: Promise<HeadBasis[]>[] = [];
  let failed = false;
  for (const layer of layout.layers) {
    if (failed) break;
    throwIfCancelled(options.cancel);
    options.progress?.(layer.layer, layout.layers.length, `factoring layer ${layer.layer}`);
    const cache = new LayerTensorCache(ckpt);
    // key-svd needs the query Grams only for the reported score error: float32 accumulation is
    // plenty there; qk-svd factors with them, so float64.
    const queryGrams = await headGrams(ckpt, cache, layer.queryHeads, n, true, method === 'key-svd' ? 'float32' : 'float64', options.cancel);
    const queryAug = Array.from({ length: layout.kvHeads }, () => new Float64Array(n * n));
    queryGrams.forEach((g, h) => {
      const acc = queryAug[layout.queryToKv[h]];
      for (let i = 0; i < n * n; i++) acc[i] += g[i];
    });
    const keyPlain = await headGrams(ckpt, cache, layer.keyHeads, n, false, 'float64', options.cancel);
    const grams: HeadGrams[] = [];
    for (let g = 0; g < layout.kvHeads; g++) {
      const slice = layer.keyHeads[g];
      const bias = slice.bias ? (await cache.get(slice.bias)).subarray(slice.offset, slice.offset + n) : undefined;
      grams.push({ keyPlain: keyPlain[g], keyAug: bias ? addOuter(keyPlain[g], bias, n) : keyPlain[g], queryAug: queryAug[g] });
    }
    cache.clear();
    const bases = basesFromGrams(method, grams, n, layer.layer, layer.keyHeads.map((k) => k.tensor), options.pool);
    // with a pool this layer's eigensolves run while the next layer's Grams are computed; a
    // failure stops the loop and is thrown by the Promise.all below
    bases.catch(() => (failed = true));
    out.push(bases);
    if (!options.pool) await bases;
  }
  const all = await Promise.all(out);
  options.progress?.(layout.layers.length, layout.layers.length, 'factored');
  return all;
}

/** G + b bᵀ (a copy). */
function addOuter(g: Float64Array, b: ArrayLike<number>, n: number): Float64Array {
  const out = Float64Array.from(g);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) out[i * n + j] += b[i] * b[j];
  return out;
}

/** Heads per batched Gram call: bounds the staging buffer and onnxruntime's float64 copy (8 x 128 x 4096 x 8 B = 32 MiB). */
const GRAM_BATCH = 8;

/** Gram W̃ᵀW̃ (float64 result) of every head in `slices`, with its bias when `withBias`. */
async function headGrams(
  ckpt: Checkpoint,
  cache: LayerTensorCache,
  slices: readonly HeadSlice[],
  n: number,
  withBias: boolean,
  precision: GramPrecision,
  cancel?: CancelToken,
): Promise<Float64Array[]> {
  const out: Float64Array[] = [];
  for (let start = 0; start < slices.length; start += GRAM_BATCH) {
    throwIfCancelled(cancel);
    const chunk = slices.slice(start, start + GRAM_BATCH);
    const first = chunk[0];
    const t = ckpt.tensor(first.tensor);
    const d = first.orientation === 'linear' ? t.shape[1] : t.shape[0];
    const contiguous = first.orientation === 'linear' && chunk.every((s, i) => s.tensor === first.tensor && s.offset === first.offset + i * n);
    let feed: GramFeed;
    const width = t.dtype === 'F32' ? 4 : 2;
    const raw = contiguous && (t.dtype === 'BF16' || t.dtype === 'F16' || t.dtype === 'F32') ? await cache.raw(first.tensor) : undefined;
    const begin = raw ? raw.byteOffset + first.offset * d * width : 0;
    if (raw && begin % width === 0) {
      // consecutive heads of a [out, in] tensor are already stacked feature-major blocks:
      // hand their raw bytes to the graph without decoding
      const count = chunk.length * n * d;
      feed = t.dtype === 'F32' ? { kind: 'float32', data: new Float32Array(raw.buffer, begin, count) } : { kind: t.dtype === 'BF16' ? 'bfloat16' : 'float16', data: new Uint16Array(raw.buffer, begin, count) };
    } else {
      const buf = new Float32Array(chunk.length * n * d);
      for (let i = 0; i < chunk.length; i++) {
        const s = chunk[i];
        buf.set(sliceFeatures(await cache.get(s.tensor), ckpt.tensor(s.tensor).shape, s.orientation, s.offset, n), i * n * d);
      }
      feed = { kind: 'float32', data: buf };
    }
    const grams = await batchedGram(feed, chunk.length, n, d, precision);
    for (let i = 0; i < chunk.length; i++) {
      const g = grams.slice(i * n * n, (i + 1) * n * n);
      const s = chunk[i];
      out.push(withBias && s.bias ? addOuter(g, (await cache.get(s.bias)).subarray(s.offset, s.offset + n), n) : g);
    }
  }
  return out;
}

/** Energies of every head as plain arrays, the planner's input. */
export function energiesOf(bases: readonly (readonly HeadBasis[])[]): HeadEnergies {
  return bases.map((row) => row.map((b) => Array.from(b.energies)));
}
