/**
 * Reference attention-score math for export tests, written independently of src/core/factor:
 * key-svd projectors come from ml-matrix's SVD, qk-svd from Householder QR (qrThin) and
 * ml-matrix's symmetric EVD, following the closed form literally.
 */
import { EigenvalueDecomposition, Matrix, SingularValueDecomposition, solve } from 'ml-matrix';
import { readHeadBias, readHeadMatrix } from '../../src/core/arch/heads';
import type { AttentionLayout } from '../../src/core/arch/layout';
import type { Checkpoint } from '../../src/core/checkpoint/checkpoint';
import type { FactoredKeysConfig } from '../../src/core/export/format';
import { loadFactoredLayer } from '../../src/core/export/load';
import { qrThin } from '../../src/core/linalg/dense';

/** Deterministic standard normal samples (mulberry32 + Box-Muller). */
export function gaussian(n: number, seed: number): Float64Array {
  let s = seed >>> 0;
  const uni = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(uni() + 1e-300)) * Math.cos(2 * Math.PI * uni());
  return out;
}

/** Y (T x w) = X (T x d) · W (d x w) + b. */
export function project(x: Float64Array, t: number, d: number, w: ArrayLike<number>, width: number, bias?: ArrayLike<number>): Float64Array {
  const y = new Float64Array(t * width);
  for (let i = 0; i < t; i++) {
    for (let k = 0; k < d; k++) {
      const xv = x[i * d + k];
      for (let j = 0; j < width; j++) y[i * width + j] += xv * w[k * width + j];
    }
    if (bias) for (let j = 0; j < width; j++) y[i * width + j] += bias[j];
  }
  return y;
}

/** Hugging Face rotate-half RoPE on rows of `v` (T x n) at positions 0..T-1, first rotaryDim dims. */
export function rope(v: Float64Array, t: number, n: number, rotaryDim: number, theta: number): Float64Array {
  const out = Float64Array.from(v);
  const half = rotaryDim / 2;
  for (let p = 0; p < t; p++) {
    for (let i = 0; i < half; i++) {
      const ang = p * Math.pow(theta, (-2 * i) / rotaryDim);
      const c = Math.cos(ang);
      const s = Math.sin(ang);
      const a = v[p * n + i];
      const b = v[p * n + i + half];
      out[p * n + i] = a * c - b * s;
      out[p * n + i + half] = b * c + a * s;
    }
  }
  return out;
}

/** S (T x T) = Q Kᵀ for rows of width n. */
export function scores(q: Float64Array, k: Float64Array, t: number, n: number): Float64Array {
  const s = new Float64Array(t * t);
  for (let i = 0; i < t; i++) for (let j = 0; j < t; j++) {
    let acc = 0;
    for (let a = 0; a < n; a++) acc += q[i * n + a] * k[j * n + a];
    s[i * t + j] = acc;
  }
  return s;
}

/** ‖a − b‖ / ‖b‖. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

function augmented(w: Float32Array, d: number, n: number, b?: Float32Array): Matrix {
  const m = new Matrix(b ? d + 1 : d, n);
  for (let i = 0; i < d; i++) for (let j = 0; j < n; j++) m.set(i, j, w[i * n + j]);
  if (b) for (let j = 0; j < n; j++) m.set(d, j, b[j]);
  return m;
}

/**
 * P (n x n) with rank-r scores q·P·kᵀ: key-svd P = V_r V_rᵀ (SVD of W_K alone);
 * qk-svd P = Rᵀ E_r E_rᵀ R⁻ᵀ with W̃_K = Q R and E_r the top eigenvectors of R (Σ W̃_Qᵀ W̃_Q) Rᵀ.
 */
export async function referenceProjector(ckpt: Checkpoint, layout: AttentionLayout, layer: number, g: number, method: 'key-svd' | 'qk-svd', r: number): Promise<Matrix> {
  const n = layout.headDim;
  const d = layout.hiddenSize;
  const L = layout.layers[layer];
  const wk = await readHeadMatrix(ckpt, L.keyHeads[g], n);
  const bk = await readHeadBias(ckpt, L.keyHeads[g], n);
  if (method === 'key-svd') {
    const svd = new SingularValueDecomposition(augmented(wk, d, n), { computeLeftSingularVectors: false, autoTranspose: true });
    const v = svd.rightSingularVectors.subMatrix(0, n - 1, 0, r - 1);
    return v.mmul(v.transpose());
  }
  const ka = augmented(wk, d, n, bk);
  const { r: rr } = qrThin(ka.to1DArray(), ka.rows, n);
  const R = new Matrix(n, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) R.set(i, j, rr[i * n + j]);
  let gq = Matrix.zeros(n, n);
  for (let h = 0; h < layout.queryHeads; h++) {
    if (layout.queryToKv[h] !== g) continue;
    const qa = augmented(await readHeadMatrix(ckpt, L.queryHeads[h], n), d, n, await readHeadBias(ckpt, L.queryHeads[h], n));
    gq = gq.add(qa.transpose().mmul(qa));
  }
  const m = R.mmul(gq).mmul(R.transpose());
  const sym = m.add(m.transpose()).div(2);
  const evd = new EigenvalueDecomposition(sym, { assumeSymmetric: true });
  const order = evd.realEigenvalues.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]).map((x) => x[1]);
  const e = new Matrix(n, r);
  for (let j = 0; j < r; j++) for (let i = 0; i < n; i++) e.set(i, j, evd.eigenvectorMatrix.get(i, order[j]));
  // Rᵀ E Eᵀ R⁻ᵀ
  const inv = solve(R.transpose(), Matrix.eye(n));
  return R.transpose().mmul(e).mmul(e.transpose()).mmul(inv);
}

/** Original-model scores of query head h against its KV head, with keys mapped by `keyMap` (kᵀ ↦ P kᵀ) when given. */
export async function originalScores(ckpt: Checkpoint, layout: AttentionLayout, layer: number, h: number, x: Float64Array, t: number, projector?: Matrix): Promise<Float64Array> {
  const n = layout.headDim;
  const d = layout.hiddenSize;
  const L = layout.layers[layer];
  const g = layout.queryToKv[h];
  let q = project(x, t, d, await readHeadMatrix(ckpt, L.queryHeads[h], n), n, await readHeadBias(ckpt, L.queryHeads[h], n));
  let k = project(x, t, d, await readHeadMatrix(ckpt, L.keyHeads[g], n), n, await readHeadBias(ckpt, L.keyHeads[g], n));
  if (projector) {
    // q P kᵀ = q (k Pᵀ)ᵀ: the full-shape rank-r model's keys are k Pᵀ
    k = project(k, t, n, projector.transpose().to1DArray(), n);
  }
  if (layout.rope) {
    q = rope(q, t, n, layout.rope.rotaryDim, layout.rope.theta);
    k = rope(k, t, n, layout.rope.rotaryDim, layout.rope.theta);
  }
  return scores(q, k, t, n);
}

/** Scores of query head h computed from an exported checkpoint by the rules of docs/FORMAT.md. */
export async function exportedScores(ckpt: Checkpoint, fk: FactoredKeysConfig, layer: number, h: number, x: Float64Array, t: number, d: number): Promise<Float64Array> {
  const w = await loadFactoredLayer(ckpt, fk, layer);
  const g = fk.query_to_kv[h];
  const n = fk.original_head_dim;
  const qh = w.query[h];
  let q = project(x, t, d, qh.weight, qh.width, qh.bias);
  const kh = w.key[g];
  let k = project(x, t, d, kh.weight, kh.width, kh.bias);
  if (fk.rope_mode === 'absorbed') return scores(q, k, t, kh.width);
  k = project(k, t, kh.width, w.keyUp![g], n);
  if (fk.rope) {
    q = rope(q, t, n, fk.rope.rotary_dim, fk.rope.theta);
    k = rope(k, t, n, fk.rope.rotary_dim, fk.rope.theta);
  }
  return scores(q, k, t, n);
}
