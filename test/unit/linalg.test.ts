import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { gram, matmul, qrThin, solveUpper, symmetricEigen, transpose } from '../../src/core/linalg';

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
