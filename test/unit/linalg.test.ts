import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { gram, matmul, qrThin, solveUpper, symmetricEigen, transpose, tridiagonalEigenvalues, tridiagonalQl } from '../../src/core/linalg';

/** Deterministic pseudo-random numbers so failures reproduce. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

function randomMatrix(m: number, n: number, seed: number): Float64Array {
  const r = rng(seed);
  return Float64Array.from({ length: m * n }, r);
}

test('symmetricEigen reconstructs A = V diag(w) Vᵀ with orthonormal V', () => {
  for (const n of [1, 2, 3, 7, 32, 64]) {
    const x = randomMatrix(n + 5, n, n);
    const a = gram(x, n + 5, n);
    const { values, vectors } = symmetricEigen(a, n, true);
    assert.ok(vectors);
    for (let i = 1; i < n; i++) assert.ok(values[i - 1] >= values[i], 'descending');
    let scale = 0;
    for (const v of a) scale = Math.max(scale, Math.abs(v));
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let rec = 0;
        let dot = 0;
        for (let k = 0; k < n; k++) {
          rec += vectors[i * n + k] * values[k] * vectors[j * n + k];
          dot += vectors[k * n + i] * vectors[k * n + j];
        }
        assert.ok(Math.abs(rec - a[i * n + j]) < 1e-10 * scale, `reconstruction n=${n}`);
        assert.ok(Math.abs(dot - (i === j ? 1 : 0)) < 1e-10, `orthonormal n=${n}`);
      }
    }
  }
});

test('symmetricEigen handles diagonal, repeated and rank-deficient matrices', () => {
  const diag = Float64Array.from([3, 0, 0, 0, 1, 0, 0, 0, 2]);
  assert.deepEqual([...symmetricEigen(diag, 3).values], [3, 2, 1]);
  const ones = new Float64Array(16).fill(1); // rank 1: eigenvalues 4, 0, 0, 0
  const w = symmetricEigen(ones, 4).values;
  assert.ok(Math.abs(w[0] - 4) < 1e-12);
  for (let i = 1; i < 4; i++) assert.ok(Math.abs(w[i]) < 1e-12);
  assert.deepEqual([...symmetricEigen(new Float64Array(9), 3).values], [0, 0, 0]);
});

test('symmetricEigen converges on a 128 x 128 Gram matrix of rank 40 (a factored key map re-analysed)', () => {
  // 88 eigenvalues at zero: a relative-only deflation test asked their couplings to fall far
  // below rounding and gave up after 64 sweeps
  const n = 128;
  const rank = 40;
  const w = randomMatrix(n, rank, 11); // W: n x rank, G = W Wᵀ
  const g = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < rank; k++) g[i * n + j] += w[i * rank + k] * w[j * rank + k];
  const values = symmetricEigen(g, n).values;
  const small = symmetricEigen(gram(w, n, rank), rank).values; // Wᵀ W: the same nonzero eigenvalues
  for (let i = 0; i < rank; i++) assert.ok(Math.abs(values[i] - small[i]) <= 1e-12 * small[0], `λ${i}`);
  for (let i = rank; i < n; i++) assert.ok(Math.abs(values[i]) <= 1e-12 * small[0], `λ${i} = ${values[i]}`);
});

test('tridiagonalEigenvalues (root-free QL) matches tridiagonalQl and refuses what it cannot square', () => {
  const r = rng(5);
  const cases: [string, Float64Array, Float64Array][] = [];
  for (const n of [1, 2, 3, 5, 33, 128]) cases.push([`random ${n}`, Float64Array.from({ length: n }, r), Float64Array.from({ length: n }, (_, i) => (i < n - 1 ? r() : 0))]);
  // graded, a repeated eigenvalue (zero couplings), a cluster at zero, a zero diagonal
  cases.push(['graded', Float64Array.from({ length: 40 }, (_, i) => 10 ** (-i / 4)), Float64Array.from({ length: 40 }, (_, i) => (i < 39 ? 10 ** (-i / 4 - 0.1) : 0))]);
  cases.push(['repeated', new Float64Array(12).fill(2), new Float64Array(12)]);
  cases.push(['zero cluster', Float64Array.from({ length: 50 }, (_, i) => (i < 5 ? i + 1 : 1e-17 * r())), Float64Array.from({ length: 50 }, (_, i) => (i < 49 ? (i < 5 ? 0.3 : 1e-17 * r()) : 0))]);
  cases.push(['zero diagonal', new Float64Array(20), Float64Array.from({ length: 20 }, (_, i) => (i < 19 ? 1 : 0))]);
  for (const [name, d, e] of cases) {
    const n = d.length;
    const qlD = d.slice();
    tridiagonalQl(qlD, e.slice(), n);
    const ours = d.slice();
    assert.ok(tridiagonalEigenvalues(ours, e.slice(), n), name);
    const a = [...qlD].sort((x, y) => x - y);
    const b = [...ours].sort((x, y) => x - y);
    const scale = Math.max(...a.map(Math.abs), 1e-300);
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) <= 1e-13 * scale, `${name} λ${i}: ${b[i]} vs ${v}`));
  }
  // squares of 1e200 overflow: left to the sqrt-based sweep
  assert.equal(tridiagonalEigenvalues(Float64Array.from([1e200, 1]), Float64Array.from([1e200, 0]), 2), false);
  assert.equal(tridiagonalEigenvalues(Float64Array.from([Number.NaN, 1]), Float64Array.from([1, 0]), 2), false);
});

test('qrThin gives orthonormal Q, upper-triangular R, A = QR; solveUpper inverts R', () => {
  const m = 20;
  const n = 6;
  const a = randomMatrix(m, n, 7);
  const { q, r } = qrThin(a, m, n);
  const qr = matmul(q, r, m, n, n);
  for (let i = 0; i < m * n; i++) assert.ok(Math.abs(qr[i] - a[i]) < 1e-12);
  const qtq = matmul(transpose(q, m, n), q, n, m, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) assert.ok(Math.abs(qtq[i * n + j] - (i === j ? 1 : 0)) < 1e-12);
  for (let i = 0; i < n; i++) {
    assert.ok(r[i * n + i] >= 0);
    for (let j = 0; j < i; j++) assert.equal(r[i * n + j], 0);
  }
  const b = randomMatrix(n, 3, 9);
  const x = solveUpper(r, b, n, 3);
  const rx = matmul(r, x, n, n, 3);
  for (let i = 0; i < n * 3; i++) assert.ok(Math.abs(rx[i] - b[i]) < 1e-10);
});
