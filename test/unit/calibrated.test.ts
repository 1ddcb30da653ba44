/**
 * The calibrated closed form (src/core/factor/calibrated.ts, docs/CALIBRATED.md) on small
 * synthetic heads: the objective equals a brute-force sum over token pairs, equals the tail of
 * the energies, is minimal among rank-r maps, P = I at full rank, and the result equals the
 * issue's S_k^{1/2} / SVD formula computed independently with ml-matrix (also when S_k is
 * rank-deficient).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Matrix, SingularValueDecomposition, EigenvalueDecomposition } from 'ml-matrix';
import type { HeadMoments } from '../../src/core/calibration/moments';
import { calibratedBasis, calibratedObjective, keyMapAt } from '../../src/core/factor/calibrated';
import { basisFromGrams } from '../../src/core/factor/basis';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
}

/** Tokens x (T x d, correlated), W̃_K and 2 W̃_Q ((d+1) x n, bias row last), and the moments through C. */
function head(seed: number, d = 12, n = 6, t = 40, keyRank = n) {
  const r = rng(seed);
  const mix = Array.from({ length: d * d }, () => r());
  const x = new Float64Array(t * d);
  for (let i = 0; i < t; i++) {
    const z = Array.from({ length: d }, (_, j) => r() * Math.pow(0.7, j));
    for (let a = 0; a < d; a++) {
      let s = 0;
      for (let b = 0; b < d; b++) s += z[b] * mix[b * d + a];
      x[i * d + a] = s + 0.3;
    }
  }
  const w = (cols: number) => Float64Array.from({ length: (d + 1) * n }, (_, i) => (i % n < cols ? r() : 0));
  const wk = w(keyRank);
  const wq = [w(n), w(n)];
  // C = Σ [x,1]ᵀ[x,1]
  const c = new Float64Array((d + 1) * (d + 1));
  for (let i = 0; i < t; i++) {
    const xa = [...x.subarray(i * d, (i + 1) * d), 1];
    for (let a = 0; a <= d; a++) for (let b = 0; b <= d; b++) c[a * (d + 1) + b] += xa[a] * xa[b];
  }
  const project = (wt: Float64Array) => {
    const m = new Matrix(Array.from({ length: d + 1 }, (_, a) => Array.from(wt.subarray(a * n, (a + 1) * n))));
    const cm = new Matrix(Array.from({ length: d + 1 }, (_, a) => Array.from(c.subarray(a * (d + 1), (a + 1) * (d + 1)))));
    return Float64Array.from(m.transpose().mmul(cm).mmul(m).to1DArray());
  };
  const key = project(wk);
  const query = project(wq[0]).map((v, i) => v + project(wq[1])[i]);
  const moments: HeadMoments = { key, query };
  // row-vector projections of every token
  const proj = (wt: Float64Array) =>
    Array.from({ length: t }, (_, i) => Array.from({ length: n }, (_, j) => {
      let s = wt[d * n + j];
      for (let a = 0; a < d; a++) s += x[i * d + a] * wt[a * n + j];
      return s;
    }));
  // weight Grams (what key-svd and qk-svd see: C = I)
  const gram = (wt: Float64Array, rows: number) => {
    const g = new Float64Array(n * n);
    for (let a = 0; a < rows; a++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) g[i * n + j] += wt[a * n + i] * wt[a * n + j];
    return g;
  };
  const qg = [gram(wq[0], d + 1), gram(wq[1], d + 1)];
  const weightGrams = { keyPlain: gram(wk, d), keyAug: gram(wk, d + 1), queryAug: qg[0].map((v, i) => v + qg[1][i]) };
  return { d, n, t, moments, weightGrams, keys: proj(wk), queries: wq.map(proj) };
}

/** Σ_{t,s} Σ_i (q_i,t · (k_s − k_s P))² by explicit loops. */
function bruteForce(h: ReturnType<typeof head>, p: Float64Array): number {
  const { n } = h;
  let total = 0;
  for (const qs of h.queries) {
    for (const q of qs) {
      for (const k of h.keys) {
        let e = 0;
        for (let a = 0; a < n; a++) {
          let kp = 0;
          for (let b = 0; b < n; b++) kp += k[b] * p[b * n + a];
          e += q[a] * (k[a] - kp);
        }
        total += e * e;
      }
    }
  }
  return total;
}

const close = (a: number, b: number, rel: number, what: string) => assert.ok(Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b), 1e-300), `${what}: ${a} vs ${b}`);

test('calibrated: objective = brute force over token pairs = tail of the energies; error curve consistent', () => {
  const h = head(7);
  const b = calibratedBasis(h.moments, h.n, 0, 0);
  const total = b.energies.reduce((s, e) => s + e, 0);
  for (let r = 0; r <= h.n; r++) {
    const p = keyMapAt(b, r);
    const brute = bruteForce(h, p);
    const closed = calibratedObjective(h.moments.key, h.moments.query, p, h.n);
    let tail = 0;
    for (let j = r; j < h.n; j++) tail += b.energies[j];
    // C is a sum over t, so the moments give the sum over (t, s) pairs
    if (r < h.n) {
      close(closed, brute, 1e-9, `r=${r} closed vs brute`);
      close(tail, brute, 1e-9, `r=${r} energy tail vs brute`);
    } else {
      assert.ok(brute < 1e-18 * total && Math.abs(closed) < 1e-18 * total, `full rank leaves ${brute}`);
    }
    close(b.scoreError[r] ** 2 * total, tail, 1e-8, `r=${r} scoreError`);
  }
  // energies descending and non-negative
  for (let j = 1; j < h.n; j++) assert.ok(b.energies[j] <= b.energies[j - 1] && b.energies[j] >= 0);
});

test('calibrated: P = I at full rank and T_q T_kᵀ = I', () => {
  const h = head(11);
  const b = calibratedBasis(h.moments, h.n, 0, 0);
  const p = keyMapAt(b, h.n);
  for (let i = 0; i < h.n; i++) for (let j = 0; j < h.n; j++) assert.ok(Math.abs(p[i * h.n + j] - (i === j ? 1 : 0)) < 1e-10, `P[${i}][${j}] = ${p[i * h.n + j]}`);
});

test('calibrated: minimal among rank-r maps (vs perturbations, key-svd and qk-svd maps on the same statistics)', () => {
  const h = head(3);
  const n = h.n;
  const b = calibratedBasis(h.moments, n, 0, 0);
  const r0 = rng(99);
  for (const r of [1, 2, 3, 5]) {
    const best = calibratedObjective(h.moments.key, h.moments.query, keyMapAt(b, r), n);
    // perturb the basis columns: T_k ± ε, T_q ± ε, still rank r
    for (let trial = 0; trial < 20; trial++) {
      const tk = b.keyMap.map((v) => v + 0.05 * r0() * Math.abs(v));
      const tq = b.queryMap.map((v) => v + 0.05 * r0() * Math.abs(v));
      const pert = keyMapAt({ ...b, keyMap: tk, queryMap: tq }, r);
      assert.ok(calibratedObjective(h.moments.key, h.moments.query, pert, n) >= best * (1 - 1e-12), `r=${r} perturbation beat the closed form`);
    }
    // weight-only maps from W̃ Grams (C = I) are worse under the calibration statistics
    for (const method of ['key-svd', 'qk-svd'] as const) {
      const other = basisFromGrams(method, h.weightGrams, n, 0, 0, 'k');
      const o = calibratedObjective(h.moments.key, h.moments.query, keyMapAt(other, r), n);
      assert.ok(o >= best * (1 - 1e-9), `r=${r}: ${method} (${o}) beat calibrated (${best})`);
    }
  }
});

/** The formula with ml-matrix: U_r from SVD(S_k^{1/2} S_q^{1/2}), P = S_k^{-1/2} U_r U_rᵀ S_k^{1/2} (pseudo-inverse on S_k's range). */
function referenceP(m: HeadMoments, n: number, r: number): Matrix {
  const toM = (a: Float64Array) => new Matrix(Array.from({ length: n }, (_, i) => Array.from(a.subarray(i * n, (i + 1) * n))));
  const sqrtm = (s: Matrix, inverse: boolean) => {
    const e = new EigenvalueDecomposition(s, { assumeSymmetric: true });
    const top = Math.max(...e.realEigenvalues);
    const lam = e.realEigenvalues.map((l) => (l > 1e-10 * top ? (inverse ? 1 / Math.sqrt(l) : Math.sqrt(l)) : 0));
    return e.eigenvectorMatrix.mmul(Matrix.diag(lam)).mmul(e.eigenvectorMatrix.transpose());
  };
  const sk = toM(m.key);
  const sq = toM(m.query);
  const a = sqrtm(sk, false).mmul(sqrtm(sq, false));
  const u = new SingularValueDecomposition(a).leftSingularVectors.subMatrix(0, n - 1, 0, r - 1);
  return sqrtm(sk, true).mmul(u).mmul(u.transpose()).mmul(sqrtm(sk, false));
}

for (const [label, keyRank] of [['full-rank', 6], ['rank-deficient (W_K of rank 4)', 4]] as const) {
  test(`calibrated: equals the issue's S_k^{1/2} formula (ml-matrix SVD), ${label}`, () => {
    const h = head(21, 12, 6, 40, keyRank);
    const b = calibratedBasis(h.moments, h.n, 0, 0);
    for (const v of [...b.keyMap, ...b.queryMap]) assert.ok(Number.isFinite(v));
    for (const r of [1, 2, 3]) {
      const p = keyMapAt(b, r);
      const ref = referenceP(h.moments, h.n, r);
      let worst = 0;
      let scale = 0;
      for (let i = 0; i < h.n; i++) for (let j = 0; j < h.n; j++) {
        worst = Math.max(worst, Math.abs(p[i * h.n + j] - ref.get(i, j)));
        scale = Math.max(scale, Math.abs(ref.get(i, j)));
      }
      assert.ok(worst < 1e-7 * Math.max(1, scale), `r=${r}: P differs from the reference by ${worst}`);
      close(calibratedObjective(h.moments.key, h.moments.query, p, h.n), bruteForce(h, p), 1e-8, `r=${r} objective`);
    }
    // full rank is still exactly the identity (null directions keep identity maps)
    const p = keyMapAt(b, h.n);
    for (let i = 0; i < h.n; i++) for (let j = 0; j < h.n; j++) assert.ok(Math.abs(p[i * h.n + j] - (i === j ? 1 : 0)) < 1e-8);
    if (keyRank < h.n) for (let j = keyRank; j < h.n; j++) assert.ok(b.energies[j] < 1e-9 * b.energies[0], `energy ${j} of the null space is ${b.energies[j]}`);
  });
}

test('calibrated: all-zero statistics give identity maps and zero energies', () => {
  const n = 4;
  const b = calibratedBasis({ key: new Float64Array(n * n), query: new Float64Array(n * n) }, n, 0, 0);
  assert.deepEqual(Array.from(b.energies), [0, 0, 0, 0]);
  const p = keyMapAt(b, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) assert.ok(Math.abs(p[i * n + j] - (i === j ? 1 : 0)) < 1e-12);
});

test('calibrated: a large exact null space (128-dim heads, statistics of rank 40) and extreme scales still decompose', () => {
  const n = 128;
  const t = 40;
  const r0 = rng(5);
  const a = Float64Array.from({ length: n * t }, () => r0());
  const b = Float64Array.from({ length: n * t }, () => r0());
  const gram = (x: Float64Array, scale: number) => {
    const m = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < t; k++) s += x[i * t + k] * x[j * t + k];
      m[i * n + j] = s * scale;
    }
    return m;
  };
  for (const scale of [1, 1e-150, 1e150]) {
    const m = { key: gram(a, scale), query: gram(b, scale) };
    const basis = calibratedBasis(m, n, 0, 0);
    const p = keyMapAt(basis, n);
    let worst = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) worst = Math.max(worst, Math.abs(p[i * n + j] - (i === j ? 1 : 0)));
    assert.ok(worst < 1e-6, `scale ${scale}: full-rank P off identity by ${worst}`);
    let tail = 0;
    for (let j = 20; j < n; j++) tail += basis.energies[j];
    close(calibratedObjective(m.key, m.query, keyMapAt(basis, 20), n), tail, 1e-6, `scale ${scale}: objective at rank 20`);
  }
});
