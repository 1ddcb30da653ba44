import assert from 'node:assert/strict';
import { test } from 'node:test';
import { basisFromGrams, featureGram, truncateBasis, type HeadGrams } from '../../src/core/factor/basis';
import { FactoredKeysError } from '../../src/core/errors';
import { choleskyUpper } from '../../src/core/linalg/cholesky';
import { matmul, qrThin, transpose } from '../../src/core/linalg/dense';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
}

/** A synthetic head group: 3 query heads of W (d x n) with biases and one key head with a decaying spectrum. */
function group(seed: number, d = 24, n = 8) {
  const r = rng(seed);
  const mk = (scale: (j: number) => number) => Float32Array.from({ length: n * d }, (_, i) => r() * scale(Math.floor(i / d)));
  const keyFeatures = mk((j) => Math.pow(0.6, j)); // feature-major n x d
  const keyBias = Float32Array.from({ length: n }, () => r());
  const queries = [0, 1, 2].map(() => ({ f: mk(() => 1), b: Float32Array.from({ length: n }, () => r()) }));
  const keyPlain = featureGram(keyFeatures, n, d);
  const keyAug = featureGram(keyFeatures, n, d, keyBias);
  const queryAug = new Float64Array(n * n);
  for (const q of queries) featureGram(q.f, n, d, q.b, queryAug);
  const grams: HeadGrams = { keyPlain, keyAug, queryAug };
  return { d, n, keyFeatures, keyBias, queries, grams };
}

/** Brute-force Σ_i ‖W̃_Qi (I − P) W̃_Kᵀ‖² and Σ_i ‖W̃_Qi W̃_Kᵀ‖² with explicit matrices. */
function bruteError(g: ReturnType<typeof group>, p: Float64Array): number {
  const { d, n } = g;
  const aug = (f: Float32Array, b: Float32Array) => {
    const w = new Float64Array((d + 1) * n);
    for (let j = 0; j < n; j++) {
      for (let x = 0; x < d; x++) w[x * n + j] = f[j * d + x];
      w[d * n + j] = b[j];
    }
    return w;
  };
  const wk = aug(g.keyFeatures, g.keyBias);
  const ip = Float64Array.from({ length: n * n }, (_, i) => (i % (n + 1) === 0 ? 1 : 0) - p[i]);
  let num = 0;
  let den = 0;
  for (const q of g.queries) {
    const wq = aug(q.f, q.b);
    const full = matmul(wq, transpose(wk, d + 1, n), d + 1, n, d + 1);
    const diff = matmul(matmul(wq, ip, d + 1, n, n), transpose(wk, d + 1, n), d + 1, n, d + 1);
    for (const v of full) den += v * v;
    for (const v of diff) num += v * v;
  }
  return Math.sqrt(num / den);
}

test('Cholesky of the augmented Gram equals thin-QR R', () => {
  const g = group(1);
  const { d, n } = g;
  const w = new Float64Array((d + 1) * n);
  for (let j = 0; j < n; j++) {
    for (let x = 0; x < d; x++) w[x * n + j] = g.keyFeatures[j * d + x];
    w[d * n + j] = g.keyBias[j];
  }
  const { r } = qrThin(w, d + 1, n);
  const c = choleskyUpper(g.grams.keyAug, n)!;
  for (let i = 0; i < n * n; i++) assert.ok(Math.abs(r[i] - c[i]) < 1e-9 * Math.max(1, Math.abs(r[i])), `R[${i}]`);
  assert.equal(choleskyUpper(new Float64Array([1, 1, 1, 1]), 2), undefined);
});

for (const method of ['key-svd', 'qk-svd'] as const) {
  test(`${method}: P = T_q T_kᵀ is the identity at full rank and scoreError matches brute force`, () => {
    const g = group(7);
    const { n } = g;
    const b = basisFromGrams(method, g.grams, n, 0, 0, 'k');
    for (let r = 1; r <= n; r++) {
      const t = truncateBasis(b, r);
      const p = matmul(t.queryMap, transpose(t.keyMap, n, r), n, r, n);
      const brute = bruteError(g, p);
      assert.ok(Math.abs(brute - b.scoreError[r]) < 1e-9, `r=${r}: ${brute} vs ${b.scoreError[r]}`);
      if (r === n) for (let i = 0; i < n * n; i++) assert.ok(Math.abs(p[i] - (i % (n + 1) === 0 ? 1 : 0)) < 1e-9);
    }
    for (let j = 1; j < n; j++) assert.ok(b.energies[j] <= b.energies[j - 1]);
  });
}

test('qk-svd: error is sqrt(1 − retained λ) and never worse than key-svd', () => {
  for (const seed of [3, 11, 29]) {
    const g = group(seed);
    const qk = basisFromGrams('qk-svd', g.grams, g.n, 0, 0, 'k');
    const ks = basisFromGrams('key-svd', g.grams, g.n, 0, 0, 'k');
    const total = qk.energies.reduce((a, b) => a + b, 0);
    let kept = 0;
    for (let r = 1; r <= g.n; r++) {
      kept += qk.energies[r - 1];
      assert.ok(Math.abs(qk.scoreError[r] - Math.sqrt(Math.max(0, 1 - kept / total))) < 1e-7);
      assert.ok(qk.scoreError[r] <= ks.scoreError[r] + 1e-12, `seed ${seed} r=${r}`);
    }
  }
});

test('qk-svd refuses a rank-deficient key projection with a message naming the tensor', () => {
  const n = 3;
  const grams: HeadGrams = { keyPlain: new Float64Array(9), keyAug: new Float64Array([1, 1, 0, 1, 1, 0, 0, 0, 1]), queryAug: new Float64Array([1, 0, 0, 0, 1, 0, 0, 0, 1]) };
  assert.throws(() => basisFromGrams('qk-svd', grams, n, 2, 1, 'model.layers.2.self_attn.k_proj.weight'), /k_proj\.weight: layer 2 KV head 1 key projection is rank-deficient/);
});

test('EigenPool.maps: the workers compute the same bits as the main thread (key-svd, qk-svd), and its errors', async () => {
  const { EigenPool } = await import('../../src/core/spectrum/eigenPool');
  const { mapsFromGrams } = await import('../../src/core/factor/maps');
  const pool = EigenPool.create(2);
  assert.ok(pool, 'a worker entry exists');
  try {
    const heads = [group(11, 40, 16), group(12, 40, 16), group(13, 40, 16)];
    const grams = heads.map((h) => h.grams);
    const bits = (a: Float64Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');
    for (const method of ['key-svd', 'qk-svd'] as const) {
      const inWorkers = await pool.maps(method, grams, 16, 3, ['k0', 'k1', 'k2']);
      const inline = grams.map((g, kv) => mapsFromGrams(method, g, 16, 3, kv, `k${kv}`));
      assert.equal(inWorkers.length, 3);
      inWorkers.forEach((m, kv) => {
        assert.deepEqual({ layer: m.layer, kvHead: m.kvHead, method: m.method, headDim: m.headDim }, { layer: 3, kvHead: kv, method, headDim: 16 });
        for (const f of ['energies', 'queryMap', 'keyMap'] as const) assert.equal(bits(m[f]), bits(inline[kv][f]), `${method} head ${kv} ${f}`);
      });
    }
    const n = 3;
    const deficient = { keyPlain: new Float64Array(9), keyAug: new Float64Array([1, 1, 0, 1, 1, 0, 0, 0, 1]), queryAug: new Float64Array([1, 0, 0, 0, 1, 0, 0, 0, 1]) };
    await assert.rejects(pool.maps('qk-svd', [deficient], n, 2, ['model.layers.2.self_attn.k_proj.weight']), (e: Error) => e instanceof FactoredKeysError && /k_proj\.weight: layer 2 KV head 0 key projection is rank-deficient/.test(e.message));
  } finally {
    await pool.close();
  }
});
