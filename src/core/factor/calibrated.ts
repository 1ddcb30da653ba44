/**
 * `calibrated`: per KV head, the rank-r key map minimising the expected score error over a
 * calibration text,
 *
 *   E‖q (k − k′)ᵀ‖²  summed over the query heads sharing the KV head  =  tr((I − P)ᵀ S_k (I − P) S_q),
 *
 * k′ = k·P, with S_k, S_q the keys' and queries' second moments (src/core/calibration). The
 * closed form (docs/CALIBRATED.md): U_r = the top-r left singular vectors of S_k^{1/2} S_q^{1/2},
 * P = S_k^{-1/2} U_r U_rᵀ S_k^{1/2}; cache c = k S_k^{-1/2} U_r, up-projection U_rᵀ S_k^{1/2}.
 * As a HeadBasis: T_k = S_k^{-1/2} U, T_q = S_k^{1/2} U (T_q T_kᵀ = I), energies σ_j² (the
 * eigenvalues of S_k^{1/2} S_q S_k^{1/2}), so the objective at rank r is Σ_{j>r} σ_j².
 *
 * Rank-deficient S_k: the square roots are taken on its range (eigenvalues above
 * {@link RANGE_TOLERANCE} of the largest); directions outside it (keys that never vary there)
 * are appended last with energy 0 and identity maps, so P = I still holds at full rank.
 */
import type { AttentionLayout } from '../arch/layout';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { FactoredKeysError } from '../errors';
import { calibrationMoments, type CalibrationInfo, type CalibrationSpec, type HeadMoments } from '../calibration/moments';
import { matmul, transpose } from '../linalg/dense';
import { symmetricEigen } from '../linalg/eigen';
import { requireMethodFeatures, type AnalyzeOptions, type HeadBasis } from './basis';

/** Eigenvalues of S_k below this fraction of the largest are treated as outside its range. */
export const RANGE_TOLERANCE = 1e-10;

/** err(r) = sqrt(tr(D_r Gq′ D_r Gk′) / tr(Gq′ Gk′)) with Gq′ = T_qᵀ S_q T_q, Gk′ = T_kᵀ S_k T_k, D_r = diag(0_r, 1, ...). */
function relativeErrors(sq: Float64Array, sk: Float64Array, tq: Float64Array, tk: Float64Array, n: number): Float64Array {
  const gq = matmul(transpose(tq, n, n), matmul(sq, tq, n, n, n), n, n, n);
  const gk = matmul(transpose(tk, n, n), matmul(sk, tk, n, n, n), n, n, n);
  const tail = new Float64Array(n + 1);
  for (let r = n - 1; r >= 0; r--) {
    let s = gq[r * n + r] * gk[r * n + r];
    for (let b = r + 1; b < n; b++) s += gq[r * n + b] * gk[b * n + r] + gq[b * n + r] * gk[r * n + b];
    tail[r] = tail[r + 1] + s;
  }
  const total = tail[0];
  return Float64Array.from({ length: n + 1 }, (_, r) => (total > 0 ? Math.sqrt(Math.max(0, tail[r]) / total) : 0));
}

/**
 * The objective tr((I − P)ᵀ S_k (I − P) S_q) of a key map P (n x n, k′ = k·P): the expected
 * squared score error (summed over the group's query heads) per (query, key) token pair, times
 * the token count squared when the moments are sums.
 */
export function calibratedObjective(sk: Float64Array, sq: Float64Array, p: Float64Array, n: number): number {
  const e = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) e[i * n + j] = (i === j ? 1 : 0) - p[i * n + j];
  const a = matmul(matmul(transpose(e, n, n), sk, n, n, n), e, n, n, n);
  let s = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) s += a[i * n + j] * sq[j * n + i];
  return s;
}

/** The key map P = T_k,r T_q,rᵀ (k′ = k·P) of a basis at rank r. */
export function keyMapAt(b: HeadBasis, r: number): Float64Array {
  const n = b.headDim;
  const p = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let c = 0; c < r; c++) s += b.keyMap[i * n + c] * b.queryMap[j * n + c];
    p[i * n + j] = s;
  }
  return p;
}

/**
 * Eigen-decomposition of a positive semi-definite matrix through A/μ + I, μ = tr(A)/n: the same
 * eigenvectors, eigenvalues mapped back. The QL iteration's convergence test is relative to
 * the diagonal, so a large exact null space (few distinct calibration tokens, a rank-deficient
 * W_K) leaves it tiny off-diagonals against zero diagonals and it may not converge; shifted, the
 * null space sits at μ.
 */
function psdEigen(a: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  let mu = 0;
  for (let i = 0; i < n; i++) mu += a[i * n + i];
  mu = n > 0 ? Math.max(0, mu / n) : 0;
  // scaled to unit mean eigenvalue as well, so no product in the iteration overflows or underflows
  const scale = mu > 0 ? mu : 1;
  const shifted = a.subarray(0, n * n).map((v) => v / scale);
  if (mu > 0) for (let i = 0; i < n; i++) shifted[i * n + i] += 1;
  const e = symmetricEigen(shifted, n, true);
  return { values: e.values.map((v) => (mu > 0 ? v - 1 : v) * scale), vectors: e.vectors! };
}

/** One head's calibrated basis from its moments (pure float64 math; exported for tests). */
export function calibratedBasis(m: HeadMoments, n: number, layer: number, kvHead: number): HeadBasis {
  const sk = m.key;
  const sq = m.query;
  const ek = psdEigen(sk, n);
  const v = ek.vectors;
  const top = Math.max(0, ek.values[0] ?? 0);
  let range = 0;
  while (range < n && ek.values[range] > RANGE_TOLERANCE * top && top > 0) range++;
  const m1 = range;
  // V₊ Λ₊^{±1/2} (n x m1)
  const half = new Float64Array(n * m1);
  const inv = new Float64Array(n * m1);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m1; j++) {
      const s = Math.sqrt(ek.values[j]);
      half[i * m1 + j] = v[i * n + j] * s;
      inv[i * m1 + j] = v[i * n + j] / s;
    }
  }
  // B = Λ₊^{1/2} V₊ᵀ S_q V₊ Λ₊^{1/2}  (= S_k^{1/2} S_q S_k^{1/2} in V₊'s coordinates)
  const bm = matmul(transpose(half, n, m1), matmul(sq, half, n, n, m1), m1, n, m1);
  for (let i = 0; i < m1; i++) for (let j = i + 1; j < m1; j++) bm[i * m1 + j] = bm[j * m1 + i] = 0.5 * (bm[i * m1 + j] + bm[j * m1 + i]);
  const eb = psdEigen(bm, m1);
  const u = eb.vectors;
  const tkRange = matmul(inv, u, n, m1, m1);
  const tqRange = matmul(half, u, n, m1, m1);
  const keyMap = new Float64Array(n * n);
  const queryMap = new Float64Array(n * n);
  const energies = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m1; j++) {
      keyMap[i * n + j] = tkRange[i * m1 + j];
      queryMap[i * n + j] = tqRange[i * m1 + j];
    }
    // outside the range: identity maps on S_k's null directions, energy 0
    for (let j = m1; j < n; j++) keyMap[i * n + j] = queryMap[i * n + j] = v[i * n + j];
  }
  for (let j = 0; j < m1; j++) energies[j] = Math.max(0, eb.values[j]);
  return { layer, kvHead, method: 'calibrated', headDim: n, energies, queryMap, keyMap, scoreError: relativeErrors(sq, sk, queryMap, keyMap, n) };
}

/** Full-rank calibrated bases of every KV head, bases[layer][kvHead], plus the calibration's provenance. */
export async function analyzeCalibrated(ckpt: Checkpoint, layout: AttentionLayout, options: AnalyzeOptions & { readonly calibration?: CalibrationSpec }): Promise<{ bases: HeadBasis[][]; info: CalibrationInfo }> {
  requireMethodFeatures(layout, 'calibrated');
  const spec = options.calibration;
  if (!spec) throw new FactoredKeysError('calibrated needs a calibration text: give --calibration FILE --tokenizer bytes|<tokenizer.json>');
  const stats = await calibrationMoments(ckpt, layout, spec, { cancel: options.cancel, progress: options.progress });
  const n = layout.headDim;
  const bases = stats.moments.map((row, l) => row.map((m, g) => calibratedBasis(m, n, l, g)));
  return { bases, info: stats.info };
}
