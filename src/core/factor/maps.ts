/**
 * The eigensolve step of `key-svd` and `qk-svd`: one KV head's maps (T_q, T_k) and energies
 * from its Grams (see ./basis.ts for the math). Pure float64 JavaScript with no onnxruntime,
 * so the worker threads run this very code (src/core/worker/worker.ts, the `maps` task of
 * EigenPool) and produce the same bits as the main thread would.
 */
import { FactoredKeysError } from '../errors';
import { choleskyUpper } from '../linalg/cholesky';
import { matmul, solveUpper, transpose } from '../linalg/dense';
import { symmetricEigen } from '../linalg/eigen';
import type { FactorMethod } from '../plan/types';
import type { HeadBasis } from './basis';

/** Inputs for one head's basis: Grams over the head's output features. */
export interface HeadGrams {
  /** W_Kᵀ W_K without bias (key-svd follows the paper: SVD of the weight alone). */
  readonly keyPlain: Float64Array;
  /** W̃_Kᵀ W̃_K with the key bias row (equals keyPlain when there is no bias). */
  readonly keyAug: Float64Array;
  /** Σ_i W̃_Qiᵀ W̃_Qi over the query heads sharing this KV head, biases included. */
  readonly queryAug: Float64Array;
}

/** The maps and energies of one head (everything but the score errors). */
export type HeadMaps = Omit<HeadBasis, 'scoreError'>;

export function mapsFromGrams(method: FactorMethod, grams: HeadGrams, n: number, layer: number, kvHead: number, keyTensor: string): HeadMaps {
  if (method === 'key-svd') {
    const eig = symmetricEigen(grams.keyPlain, n, true);
    return { layer, kvHead, method, headDim: n, energies: eig.values.map((v) => Math.max(0, v)), queryMap: eig.vectors!, keyMap: eig.vectors! };
  }
  const r = choleskyUpper(grams.keyAug, n);
  if (!r) {
    throw new FactoredKeysError(`${keyTensor}: layer ${layer} KV head ${kvHead} key projection is rank-deficient, so qk-svd is undefined for it (use key-svd)`);
  }
  const rt = transpose(r, n, n);
  const m = matmul(matmul(r, grams.queryAug, n, n, n), rt, n, n, n);
  // symmetrize against round-off before the eigensolver
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) m[i * n + j] = m[j * n + i] = 0.5 * (m[i * n + j] + m[j * n + i]);
  const eig = symmetricEigen(m, n, true);
  const e = eig.vectors!;
  return { layer, kvHead, method, headDim: n, energies: eig.values.map((v) => Math.max(0, v)), queryMap: matmul(rt, e, n, n, n), keyMap: solveUpper(r, e, n, n) };
}

/**
 * Message to a worker: the maps of one layer's heads (`maps` task of EigenPool). Only the
 * Grams the method reads are sent: key-svd `keyPlain`, qk-svd `keyAug` and `queryAug`.
 */
export interface MapsTask {
  readonly id: number;
  readonly type: 'maps';
  readonly method: 'key-svd' | 'qk-svd';
  readonly n: number;
  readonly layer: number;
  readonly keyTensors: readonly string[];
  readonly grams: readonly Partial<HeadGrams>[];
}

/** Worker reply to a {@link MapsTask}; `userError` marks a FactoredKeysError (one-line message). */
export interface MapsReply {
  readonly id: number;
  readonly maps?: HeadMaps[];
  readonly error?: string;
  readonly userError?: boolean;
}

/** The grams of a {@link MapsTask} for `method` (what crosses to the worker). */
export function mapsTaskGrams(method: 'key-svd' | 'qk-svd', grams: readonly HeadGrams[]): Partial<HeadGrams>[] {
  return grams.map((g) => (method === 'key-svd' ? { keyPlain: g.keyPlain } : { keyAug: g.keyAug, queryAug: g.queryAug }));
}

/** Runs a {@link MapsTask} in this thread (what the worker does). */
export function solveMapsTask(task: MapsTask): MapsReply {
  try {
    const maps = task.grams.map((g, kv) => mapsFromGrams(task.method, g as HeadGrams, task.n, task.layer, kv, task.keyTensors[kv]));
    return { id: task.id, maps };
  } catch (e) {
    return { id: task.id, error: (e as Error)?.message ?? String(e), userError: e instanceof FactoredKeysError };
  }
}

/** The buffers of a reply's maps, each once (key-svd's query and key maps are one array). */
export function mapsTransferList(maps: readonly HeadMaps[] | undefined): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  for (const m of maps ?? []) for (const a of [m.energies, m.queryMap, m.keyMap]) out.add(a.buffer as ArrayBuffer);
  return [...out];
}
