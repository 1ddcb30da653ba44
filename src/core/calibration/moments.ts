/**
 * Calibration statistics of a checkpoint over a text: per layer and KV head g, the second
 * moments of its keys and of the queries that share it (row vectors, biases included),
 *
 *   S_k = W̃_Kᵀ C W̃_K,   S_q = Σ_{i ∈ G(g)} W̃_Qiᵀ C W̃_Qi,   C = Σ_t [x_t, 1]ᵀ [x_t, 1],
 *
 * with W̃ = [W; b] and x_t the layer's attention input (src/core/calibration/collect.ts). All in
 * float64. They are accumulated as Σ_t k̃_tᵀ k̃_t over the float32 projections k̃_t = [x_t, 1] W̃ the
 * forward pass computes (equal to the above up to their rounding, without forming C);
 * {@link layerMoments} reduces an explicit C, the reference the tests check this against. The
 * moments of a (checkpoint, text, tokenizer, tokens, seq) are cached on disk keyed by content
 * hashes (./cache.ts). See docs/CALIBRATED.md.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { AttentionLayout, HeadSlice } from '../arch/layout';
import type { Checkpoint } from '../checkpoint/checkpoint';
import type { BackendChoice, BackendName } from '../compute/session';
import { FactoredKeysError, type CancelToken, type ProgressFn } from '../errors';
import { readModelSpec } from '../eval/model';
import { readEvalText, tokenizeWithJson } from '../eval/tokenize';
import { LayerTensorCache, readHeadFeatures } from '../factor/basis';
import { batchedMatmul } from '../factor/products';
import { checkpointContentHash, readCachedMoments, writeCachedMoments } from './cache';
import { collectHeadMoments, type ProjectionMoments } from './collect';

/** Default tokens of calibration text used (the whole 256 KB fixture text with `bytes`). */
export const DEFAULT_CALIBRATION_TOKENS = 262144;
/** Default tokens per calibration window (capped by the model's positions). */
export const DEFAULT_CALIBRATION_SEQ = 256;

/** Where calibration statistics come from. */
export interface CalibrationSpec {
  /** The calibration text file. */
  readonly text: string;
  /** `bytes` (id = byte value) or a tokenizer.json path. */
  readonly tokenizer: string;
  /** At most this many tokens of the text are used (default {@link DEFAULT_CALIBRATION_TOKENS}). */
  readonly tokens?: number;
  /** Tokens per window (default {@link DEFAULT_CALIBRATION_SEQ}, at most the model's positions). */
  readonly seq?: number;
  readonly backend?: BackendChoice;
  readonly threads?: number;
  /** Cache folder for the statistics; `null` disables the disk cache (default: the user cache). */
  readonly cacheDir?: string | null;
}

/** Second moments of one KV head (head_dim x head_dim each, row-major, float64). */
export interface HeadMoments {
  readonly key: Float64Array;
  readonly query: Float64Array;
}

/** How a set of moments was made (what an export report records; never an absolute path). */
export interface CalibrationInfo {
  /** The text's file name (no folder). */
  readonly text: string;
  readonly text_sha256: string;
  /** `bytes`, or the tokenizer.json's file name. */
  readonly tokenizer: string;
  readonly tokenizer_sha256?: string;
  /** Tokens the statistics were accumulated over (windows x seq). */
  readonly tokens: number;
  readonly seq: number;
  /** The cache key (sha256 over the checkpoint's content hash and the fields above). */
  readonly key: string;
}

/** Moments of every head, moments[layer][kvHead], plus their provenance. */
export interface CalibrationMoments {
  readonly info: CalibrationInfo;
  readonly headDim: number;
  readonly moments: HeadMoments[][];
  /** Whether they came from the disk cache. */
  readonly cached: boolean;
  /** The provider the forward pass ran on (absent when cached). */
  readonly backend?: BackendName;
}

/** Options of {@link calibrationMoments}. */
export interface MomentOptions {
  readonly cancel?: CancelToken;
  readonly progress?: ProgressFn;
}

const sha256 = (data: Uint8Array | string): string => createHash('sha256').update(data).digest('hex');

/** The calibration token ids of a spec, checked against the model (one-line errors). */
export async function calibrationTokens(spec: CalibrationSpec, vocab: number, maxPositions: number): Promise<{ ids: Int32Array; windows: number; seq: number; textSha: string; tokenizerSha?: string }> {
  const bytes = await readEvalText(spec.text);
  if (bytes.length === 0) throw new FactoredKeysError(`${spec.text}: the calibration text is empty`);
  let ids: Int32Array;
  let tokenizerSha: string | undefined;
  if (spec.tokenizer === 'bytes') {
    ids = Int32Array.from(bytes);
  } else {
    const raw = await fsp.readFile(spec.tokenizer).catch(() => {
      throw new FactoredKeysError(`${spec.tokenizer}: tokenizer file not found (give --tokenizer bytes or a tokenizer.json path)`);
    });
    tokenizerSha = sha256(raw);
    ids = await tokenizeWithJson(spec.tokenizer, bytes);
  }
  const seq = Math.min(spec.seq ?? DEFAULT_CALIBRATION_SEQ, maxPositions);
  const limit = spec.tokens ?? DEFAULT_CALIBRATION_TOKENS;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new FactoredKeysError(`--calibration-tokens must be a positive integer, got ${limit}`);
  const used = Math.min(limit, ids.length);
  const windows = Math.floor(used / seq);
  if (windows < 1) {
    throw new FactoredKeysError(`${spec.text}: ${used} calibration tokens${used < ids.length ? ' (--calibration-tokens)' : ''} is shorter than one window of ${seq} tokens`);
  }
  for (let i = 0; i < windows * seq; i++) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      throw new FactoredKeysError(`${spec.text}: calibration token ${i} has id ${ids[i]}, outside the model's vocabulary of ${vocab} (wrong --tokenizer?)`);
    }
  }
  return { ids: ids.subarray(0, windows * seq), windows, seq, textSha: sha256(bytes), tokenizerSha };
}

/** W̃ᵀ (head_dim x (d+1)) of several heads, stacked, and the same as columns of one (d+1) x (heads·hd) matrix. */
async function augmentedWeights(ckpt: Checkpoint, cache: LayerTensorCache, slices: readonly HeadSlice[], hd: number, d: number): Promise<{ rowsT: Float64Array; cols: Float64Array }> {
  const w = d + 1;
  const nh = slices.length;
  const rowsT = new Float64Array(nh * hd * w);
  const cols = new Float64Array(w * nh * hd);
  for (let h = 0; h < nh; h++) {
    const { features, bias } = await readHeadFeatures(ckpt, cache, slices[h], hd);
    for (let a = 0; a < hd; a++) {
      const r = (h * hd + a) * w;
      const col = h * hd + a;
      for (let x = 0; x < d; x++) {
        const v = features[a * d + x];
        rowsT[r + x] = v;
        cols[x * nh * hd + col] = v;
      }
      const b = bias ? bias[a] : 0;
      rowsT[r + d] = b;
      cols[d * nh * hd + col] = b;
    }
  }
  return { rowsT, cols };
}

/** W̃_hᵀ C W̃_h for each head h of `slices` (float64 products on onnxruntime). */
export async function projectMoments(ckpt: Checkpoint, cache: LayerTensorCache, slices: readonly HeadSlice[], c: Float64Array, hd: number, d: number): Promise<Float64Array[]> {
  const w = d + 1;
  const nh = slices.length;
  const { rowsT, cols } = await augmentedWeights(ckpt, cache, slices, hd, d);
  const y = await batchedMatmul(c, cols, 1, w, w, nh * hd); // C W̃_all: (d+1) x (nh·hd)
  const yh = new Float64Array(nh * w * hd);
  for (let x = 0; x < w; x++) for (let h = 0; h < nh; h++) for (let a = 0; a < hd; a++) yh[h * w * hd + x * hd + a] = y[x * nh * hd + h * hd + a];
  const s = await batchedMatmul(rowsT, yh, nh, hd, w, hd);
  return Array.from({ length: nh }, (_, h) => {
    const m = s.slice(h * hd * hd, (h + 1) * hd * hd);
    for (let i = 0; i < hd; i++) for (let j = i + 1; j < hd; j++) m[i * hd + j] = m[j * hd + i] = 0.5 * (m[i * hd + j] + m[j * hd + i]);
    return m;
  });
}

/** M ← (M + Mᵀ)/2, in place. */
function symmetrize(m: Float64Array, n: number): Float64Array {
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) m[i * n + j] = m[j * n + i] = 0.5 * (m[i * n + j] + m[j * n + i]);
  return m;
}

/** One layer's KV-head moments from its per-head projection moments (query heads summed per KV head). */
export function momentsFromProjections(layout: AttentionLayout, p: ProjectionMoments): HeadMoments[] {
  const hd = layout.headDim;
  return p.key.map((key, g) => {
    const query = new Float64Array(hd * hd);
    p.query.forEach((q, h) => {
      if (layout.queryToKv[h] === g) for (let i = 0; i < q.length; i++) query[i] += q[i];
    });
    return { key: symmetrize(Float64Array.from(key), hd), query: symmetrize(query, hd) };
  });
}

/** Reduces one layer's C to the moments of its KV heads. */
export async function layerMoments(ckpt: Checkpoint, layout: AttentionLayout, layer: number, c: Float64Array): Promise<HeadMoments[]> {
  const hd = layout.headDim;
  const d = layout.hiddenSize;
  const lay = layout.layers[layer];
  const cache = new LayerTensorCache(ckpt);
  try {
    const keys = await projectMoments(ckpt, cache, lay.keyHeads, c, hd, d);
    const queries = await projectMoments(ckpt, cache, lay.queryHeads, c, hd, d);
    return keys.map((key, g) => {
      const query = new Float64Array(hd * hd);
      queries.forEach((q, h) => {
        if (layout.queryToKv[h] === g) for (let i = 0; i < q.length; i++) query[i] += q[i];
      });
      return { key, query };
    });
  } finally {
    cache.clear();
  }
}

/** Cache format version: bump when what the moments mean changes. */
const MOMENTS_VERSION = 1;

/**
 * The calibration moments of every KV head of `ckpt` for `spec`: from the disk cache when the
 * same (checkpoint content, text, tokenizer, tokens, seq) was calibrated before, else by
 * running the model (progress per layer and batch; cancellable between batches).
 */
export async function calibrationMoments(ckpt: Checkpoint, layout: AttentionLayout, spec: CalibrationSpec, options: MomentOptions = {}): Promise<CalibrationMoments> {
  const model = readModelSpec(ckpt);
  const tokens = await calibrationTokens(spec, model.vocab, model.maxPositions);
  const ckptHash = await checkpointContentHash(ckpt);
  const keyFields = { version: MOMENTS_VERSION, checkpoint: ckptHash, text: tokens.textSha, tokenizer: spec.tokenizer === 'bytes' ? 'bytes' : tokens.tokenizerSha, tokens: tokens.windows * tokens.seq, seq: tokens.seq };
  const key = sha256(JSON.stringify(keyFields));
  const info: CalibrationInfo = {
    text: path.basename(spec.text),
    text_sha256: tokens.textSha,
    tokenizer: spec.tokenizer === 'bytes' ? 'bytes' : path.basename(spec.tokenizer),
    ...(tokens.tokenizerSha ? { tokenizer_sha256: tokens.tokenizerSha } : {}),
    tokens: tokens.windows * tokens.seq,
    seq: tokens.seq,
    key,
  };
  const hd = layout.headDim;
  const shape = { layers: layout.layers.length, kvHeads: layout.kvHeads, headDim: hd };
  if (spec.cacheDir !== null) {
    const hit = await readCachedMoments(spec.cacheDir, key, shape);
    if (hit) {
      options.progress?.(1, 1, 'calibration statistics from cache');
      return { info, headDim: hd, moments: hit, cached: true };
    }
  }
  const moments: HeadMoments[][] = [];
  const run = await collectHeadMoments(ckpt, model, tokens.ids, tokens.windows, { seq: tokens.seq, backend: spec.backend, threads: spec.threads, cancel: options.cancel, progress: options.progress }, (_layer, p) => {
    moments.push(momentsFromProjections(layout, p));
  });
  if (spec.cacheDir !== null) await writeCachedMoments(spec.cacheDir, key, shape, moments, keyFields);
  return { info, headDim: hd, moments, cached: false, backend: run.backend };
}
