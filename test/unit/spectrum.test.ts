import { strict as assert } from 'node:assert';
import { closeSync, cpSync, openSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { buildLayout } from '../../src/core/arch';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';
import { decodeToFloat32, encodeFromFloat32, float32ToBf16Bits, type Dtype } from '../../src/core/checkpoint/dtypes';
import { Matrix, SVD } from 'ml-matrix';
import { CancelledError, FactoredKeysError } from '../../src/core/errors';
import { analyzeSpectra, cumulativeEnergy, effectiveRanks, rankForEnergy, stableRank, type SpectrumResult } from '../../src/core/spectrum';
import { EigenPool } from '../../src/core/spectrum/eigenPool';
import { EigenWorkspace, symmetricEigenvalues } from '../../src/core/spectrum/eigenvalues';
import { workerGraph } from '../../src/core/spectrum/workerGram';
import { fastestByPrediction, runSpectrumEngine } from '../../src/core/spectrum/engine';
import { bf16Values, gramModel } from '../../src/core/spectrum/gram';
import { createSession, Tensor } from '../../src/core/compute/session';
import { symmetricEigen } from '../../src/core/linalg';
import { ALL_FIXTURES, REPO_ROOT, fixture, tempDir } from '../helpers/fixtures';
import { writeSafetensors } from '../helpers/safetensors';

interface RefHead {
  layer: number;
  kind: 'key' | 'query';
  head: number;
  singular_values: number[];
}

function reference(name: string): RefHead[] {
  const file = path.join(REPO_ROOT, 'test/reference/spectra', `${name.replace('/', '__')}.json`);
  return (JSON.parse(readFileSync(file, 'utf8')) as { heads: RefHead[] }).heads;
}

async function analyze(name: string, backend: 'cpu' | 'auto'): Promise<SpectrumResult> {
  const ckpt = await openCheckpoint(fixture(name));
  try {
    return await analyzeSpectra(ckpt, buildLayout(ckpt), { backend });
  } finally {
    await ckpt.close();
  }
}

describe('spectra match the float64 LAPACK reference (scripts/reference/spectra.py)', () => {
  for (const backend of ['cpu', 'auto'] as const) {
    for (const name of ALL_FIXTURES) {
      test(`${name} (${backend})`, async () => {
        const ref = reference(name);
        const result = await analyze(name, backend);
        assert.equal(result.heads.length, ref.length, 'head count');
        const key = (h: { layer: number; kind: string; head: number }): string => `${h.layer}/${h.kind}/${h.head}`;
        const ours = new Map(result.heads.map((h) => [key(h), h]));
        for (const r of ref) {
          const h = ours.get(key(r));
          assert.ok(h, `missing head ${key(r)}`);
          assert.ok(!h.nonFinite);
          assert.equal(h.singularValues.length, r.singular_values.length, `${key(r)} length`);
          const tol = 1e-3 * r.singular_values[0];
          for (let i = 0; i < r.singular_values.length; i++) {
            const err = Math.abs(h.singularValues[i] - r.singular_values[i]);
            assert.ok(err <= tol, `${name} ${key(r)} σ${i}: ${h.singularValues[i]} vs ${r.singular_values[i]} (|err| ${err} > ${tol})`);
          }
          for (let i = 1; i < h.singularValues.length; i++) assert.ok(h.singularValues[i] <= h.singularValues[i - 1], 'descending');
          assert.equal(h.cumulativeEnergy.length, h.singularValues.length);
          assert.equal(h.cumulativeEnergy[h.cumulativeEnergy.length - 1], 1);
        }
        assert.ok(typeof result.backend === 'string' && result.backend.length > 0);
        assert.ok(result.seconds >= 0);
      });
    }
  }
});

describe('spectrum result shape', () => {
  test('order: layer, then keys then queries, then head; kinds filter', async () => {
    const ckpt = await openCheckpoint(fixture('mistral-bytes'));
    try {
      const layout = buildLayout(ckpt);
      const all = await analyzeSpectra(ckpt, layout, { backend: 'cpu' });
      const expected: string[] = [];
      for (let l = 0; l < 4; l++) {
        for (let g = 0; g < 2; g++) expected.push(`${l}/key/${g}`);
        for (let h = 0; h < 4; h++) expected.push(`${l}/query/${h}`);
      }
      assert.deepEqual(all.heads.map((h) => `${h.layer}/${h.kind}/${h.head}`), expected);
      const keys = await analyzeSpectra(ckpt, layout, { backend: 'cpu', kinds: ['key'] });
      assert.equal(keys.heads.length, 8);
      assert.ok(keys.heads.every((h) => h.kind === 'key'));
      assert.deepEqual(keys.heads[3].singularValues, all.heads.find((h) => h.layer === 1 && h.kind === 'key' && h.head === 1)!.singularValues);
      // trained keys decay faster than a flat spectrum: p90 < head_dim
      assert.ok(keys.heads.every((h) => h.effectiveRank.p90 < 64 && h.effectiveRank.p90 <= h.effectiveRank.p95 && h.effectiveRank.p95 <= h.effectiveRank.p99));
      assert.equal(all.backend, 'cpu');
    } finally {
      await ckpt.close();
    }
  });

  test('progress is reported per layer and cancellation stops the analysis', async () => {
    const ckpt = await openCheckpoint(fixture('gpt2-bytes'));
    try {
      const layout = buildLayout(ckpt);
      const seen: number[] = [];
      await analyzeSpectra(ckpt, layout, { backend: 'cpu', progress: (done, total) => (assert.equal(total, 4), seen.push(done)) });
      assert.deepEqual(seen, [0, 1, 2, 3, 4]);
      const token = { cancelled: false };
      await assert.rejects(
        analyzeSpectra(ckpt, layout, { backend: 'cpu', cancel: token, progress: (done) => (token.cancelled = done >= 1) }),
        CancelledError,
      );
    } finally {
      await ckpt.close();
    }
  });

  test('a head with NaN/Inf weights is marked nonFinite and skipped; the others are exact', async () => {
    const { dir, cleanup } = tempDir();
    try {
      // llama-shaped, 1 layer, 2 query heads / 1 KV head x 4, hidden 8, bf16
      const hidden = 8;
      const q = Float32Array.from({ length: 8 * hidden }, (_, i) => Math.sin(i + 1));
      const k = Float32Array.from({ length: 4 * hidden }, (_, i) => Math.cos(i * 0.7));
      q[4 * hidden + 3] = Number.NaN; // query head 1
      const bf = (v: Float32Array): Uint8Array => new Uint8Array(float32ToBf16Bits(v).buffer);
      writeSafetensors(path.join(dir, 'model.safetensors'), {
        'model.layers.0.self_attn.q_proj.weight': { dtype: 'BF16', shape: [8, hidden], data: bf(q) },
        'model.layers.0.self_attn.k_proj.weight': { dtype: 'BF16', shape: [4, hidden], data: bf(k) },
        'model.layers.0.self_attn.v_proj.weight': { dtype: 'BF16', shape: [4, hidden], data: bf(k) },
        'model.layers.0.self_attn.o_proj.weight': { dtype: 'BF16', shape: [hidden, 8], data: bf(q) },
      });
      writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: hidden, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4, num_hidden_layers: 1, rope_theta: 10000, vocab_size: 16, intermediate_size: 16 }));
      const ckpt = await openCheckpoint(dir);
      try {
        const r = await analyzeSpectra(ckpt, buildLayout(ckpt), { backend: 'cpu' });
        assert.equal(r.heads.length, 3);
        const bad = r.heads.find((h) => h.kind === 'query' && h.head === 1)!;
        assert.equal(bad.nonFinite, true);
        assert.deepEqual(bad.singularValues, []);
        for (const h of r.heads.filter((x) => x !== bad)) {
          assert.ok(!h.nonFinite);
          assert.equal(h.singularValues.length, 4);
          assert.ok(h.singularValues.every((s) => Number.isFinite(s) && s >= 0));
        }
      } finally {
        await ckpt.close();
      }
    } finally {
      cleanup();
    }
  });
});

/** A llama-shaped F32 checkpoint built in code: `layers` layers, 4 query / 2 KV heads x headDim, hidden 32. */
function writeSmallLlama(dir: string, layers: number, headDim = 8): void {
  const hidden = 32;
  const q = 4 * headDim;
  const kv = 2 * headDim;
  const tensors: Record<string, { dtype: string; shape: number[]; data: Uint8Array }> = {};
  let seed = 1;
  const values = (count: number): Uint8Array => new Uint8Array(Float32Array.from({ length: count }, () => ((seed = (seed * 16807) % 2147483647) / 2147483647) - 0.5).buffer);
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.self_attn.`;
    tensors[p + 'q_proj.weight'] = { dtype: 'F32', shape: [q, hidden], data: values(q * hidden) };
    tensors[p + 'k_proj.weight'] = { dtype: 'F32', shape: [kv, hidden], data: values(kv * hidden) };
    tensors[p + 'v_proj.weight'] = { dtype: 'F32', shape: [kv, hidden], data: values(kv * hidden) };
    tensors[p + 'o_proj.weight'] = { dtype: 'F32', shape: [hidden, q], data: values(q * hidden) };
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: hidden, num_attention_heads: 4, num_key_value_heads: 2, head_dim: headDim, num_hidden_layers: layers, rope_theta: 10000, vocab_size: 16, intermediate_size: 16 }));
}

describe('auto backend choice', () => {
  test('with several usable providers, auto times each inside the run, keeps every result, and remembers the winner', async () => {
    const { dir, cleanup } = tempDir();
    const saved = process.env.FACTORED_KEYS_CACHE_DIR;
    process.env.FACTORED_KEYS_CACHE_DIR = path.join(dir, 'cache');
    try {
      writeSmallLlama(dir, 24);
      const ckpt = await openCheckpoint(dir);
      try {
        const layout = buildLayout(ckpt);
        const plain = await analyzeSpectra(ckpt, layout, { backend: 'cpu' });
        // two candidates that are both the CPU provider: the trial machinery without a GPU
        const first = await runSpectrumEngine(ckpt, layout, { backend: 'auto' }, { autoCandidates: ['cpu', 'cpu'] });
        assert.match(first.notes?.join(' ') ?? '', /auto: measured cpu [\d.]+ ms per layer after \d+ ms of start-up, cpu [\d.]+ ms per layer after \d+ ms of start-up; using cpu/);
        assert.equal(first.heads.length, 24 * 6);
        assert.deepEqual(first.heads.map((h) => h.singularValues), plain.heads.map((h) => h.singularValues));
        const second = await runSpectrumEngine(ckpt, layout, { backend: 'auto' }, { autoCandidates: ['cpu', 'cpu'] });
        assert.match(second.notes?.join(' ') ?? '', /auto: using cpu, measured fastest here/);
        // too few layers for a trial: cpu, said so
        const few = await runSpectrumEngine(ckpt, { ...layout, layers: layout.layers.slice(0, 3) }, { backend: 'auto' }, { autoCandidates: ['cpu', 'webgpu'] });
        assert.equal(few.backend, 'cpu');
        assert.match(few.notes?.join(' ') ?? '', /too few/);
        // three candidates over 24 layers: too few to pay for itself, but enough when asked to calibrate
        const three = await runSpectrumEngine(ckpt, layout, { backend: 'auto' }, { autoCandidates: ['cpu', 'cpu', 'cpu'] });
        assert.match(three.notes?.join(' ') ?? '', /24 layers are too few/);
        const calibrated = await runSpectrumEngine(ckpt, layout, { backend: 'auto', calibrate: true }, { autoCandidates: ['cpu', 'cpu', 'cpu'] });
        assert.match(calibrated.notes?.join(' ') ?? '', /auto: measured cpu [^,]+, cpu [^,]+, cpu [^;]+; using cpu/);
        assert.deepEqual(calibrated.heads.map((h) => h.singularValues), plain.heads.map((h) => h.singularValues));
      } finally {
        await ckpt.close();
      }
    } finally {
      if (saved === undefined) delete process.env.FACTORED_KEYS_CACHE_DIR;
      else process.env.FACTORED_KEYS_CACHE_DIR = saved;
      cleanup();
    }
  });
});

describe('auto: the choice counts start-up', () => {
  test('a GPU a hair faster per layer but with a context to create loses a 7B, and wins where its layers save more', () => {
    // the H200's calibration (CUDA EP): cpu 14.0 ms per layer after ~200 ms, cuda 13.9 after ~560 ms
    assert.equal(fastestByPrediction([14.0, 13.9], [200, 560], 32), 0);
    // per-layer time alone would have picked cuda
    assert.equal(fastestByPrediction([14.0, 13.9], [0, 0], 32), 1);
    // a 70B-sized run (80 layers) where the GPU is twice as fast per layer
    assert.equal(fastestByPrediction([30, 15], [200, 560], 80), 1);
    // a failed candidate never wins
    assert.equal(fastestByPrediction([Number.POSITIVE_INFINITY, 20], [100, 100], 32), 1);
  });
});

describe('other dtypes', () => {
  for (const dtype of ['F16', 'F64'] as const) {
    test(`${dtype} weights (${dtype === 'F16' ? 'fed as 16-bit, widened in the graph' : 'decoded to float32'}) match ml-matrix's float64 SVD`, async () => {
      const { dir, cleanup } = tempDir();
      try {
        const hidden = 48;
        const hd = 16;
        let seed = 3;
        const rand = (n: number): Float32Array => Float32Array.from({ length: n }, () => ((seed = (seed * 48271) % 2147483647) / 2147483647 - 0.5) * 0.2);
        const enc = (v: Float32Array): Uint8Array => encodeFromFloat32(dtype as Dtype, v);
        const q = rand(2 * hd * hidden);
        const k = rand(hd * hidden);
        writeSafetensors(path.join(dir, 'model.safetensors'), {
          'model.layers.0.self_attn.q_proj.weight': { dtype, shape: [2 * hd, hidden], data: enc(q) },
          'model.layers.0.self_attn.k_proj.weight': { dtype, shape: [hd, hidden], data: enc(k) },
          'model.layers.0.self_attn.v_proj.weight': { dtype, shape: [hd, hidden], data: enc(k) },
          'model.layers.0.self_attn.o_proj.weight': { dtype, shape: [hidden, 2 * hd], data: enc(q) },
        });
        writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: hidden, num_attention_heads: 2, num_key_value_heads: 1, head_dim: hd, num_hidden_layers: 1, rope_theta: 10000, vocab_size: 16, intermediate_size: 16 }));
        const ckpt = await openCheckpoint(dir);
        try {
          const r = await analyzeSpectra(ckpt, buildLayout(ckpt), { backend: 'cpu' });
          // reference: the stored values (after rounding to the dtype), rows of the head = W^T
          const stored = (v: Float32Array): Float32Array => decodeToFloat32(dtype as Dtype, enc(v));
          const expect = (w: Float32Array, head: number): number[] => {
            const rows: number[][] = [];
            for (let j = 0; j < hd; j++) rows.push(Array.from(w.subarray((head * hd + j) * hidden, (head * hd + j + 1) * hidden)));
            return new SVD(new Matrix(rows).transpose(), { computeLeftSingularVectors: false, computeRightSingularVectors: false }).diagonal;
          };
          const cases: [string, number, Float32Array][] = [['key', 0, stored(k)], ['query', 0, stored(q)], ['query', 1, stored(q)]];
          for (const [kind, head, w] of cases) {
            const ref = expect(w, head);
            const h = r.heads.find((x) => x.kind === kind && x.head === head)!;
            for (let i = 0; i < hd; i++) assert.ok(Math.abs(h.singularValues[i] - ref[i]) <= 1e-3 * ref[0], `${kind} ${head} σ${i}`);
          }
        } finally {
          await ckpt.close();
        }
      } finally {
        cleanup();
      }
    });
  }
});

describe('eigensolves on worker threads', () => {
  test('give exactly the inline results, in the same order', async () => {
    const { dir, cleanup } = tempDir();
    try {
      writeSmallLlama(dir, 6, 32);
      const ckpt = await openCheckpoint(dir);
      try {
        const layout = buildLayout(ckpt);
        const inline = await runSpectrumEngine(ckpt, layout, { backend: 'cpu' }, { workers: false });
        const pooled = await runSpectrumEngine(ckpt, layout, { backend: 'cpu', threads: 2 }, { workers: true });
        assert.equal(pooled.heads.length, 6 * 6);
        assert.deepEqual(pooled.heads, inline.heads);
      } finally {
        await ckpt.close();
      }
    } finally {
      cleanup();
    }
  });
});

describe('spectra computed on the worker threads (the many-core CPU path)', () => {
  for (const name of ['mistral-bytes', 'stories260K', 'layouts/llama'] as const) {
    test(`${name}: every σ within 1e-3·σ_max of LAPACK and of the main-thread Gram, for several part sizes`, async () => {
      const ckpt = await openCheckpoint(fixture(name));
      try {
        const layout = buildLayout(ckpt);
        const ref = reference(name);
        const main = await runSpectrumEngine(ckpt, layout, { backend: 'cpu', threads: 2 }, { workers: true, workerGram: false });
        for (const partHeads of [undefined, 1, 3, 100]) {
          const pooled = await runSpectrumEngine(ckpt, layout, { backend: 'cpu', threads: 2 }, { workers: true, workerGram: true, partHeads });
          assert.equal(pooled.backend, 'cpu');
          assert.equal(pooled.heads.length, ref.length);
          pooled.heads.forEach((h, i) => {
            const g = main.heads[i];
            assert.deepEqual([h.layer, h.kind, h.head], [g.layer, g.kind, g.head]);
            const r = ref.find((x) => x.layer === h.layer && x.kind === h.kind && x.head === h.head)!;
            for (let j = 0; j < r.singular_values.length; j++) {
              assert.ok(Math.abs(h.singularValues[j] - r.singular_values[j]) <= 1e-3 * r.singular_values[0], `parts ${partHeads}: ${h.layer}/${h.kind}/${h.head} σ${j}`);
              assert.ok(Math.abs(h.singularValues[j] - g.singularValues[j]) <= 1e-6 * g.singularValues[0], `parts ${partHeads} vs main thread: ${h.layer}/${h.kind}/${h.head} σ${j}`);
            }
          });
        }
      } finally {
        await ckpt.close();
      }
    });
  }
});

describe('the workers\' own reads', () => {
  test('a checkpoint truncated after it was opened: one-line user error naming the file, no result', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const copy = path.join(dir, 'ckpt');
      cpSync(fixture('mistral-bytes'), copy, { recursive: true });
      const ckpt = await openCheckpoint(copy);
      try {
        const layout = buildLayout(ckpt);
        // cut the file in the middle of layer 1's query rows, after the headers were checked
        const q = ckpt.tensor(layout.layers[1].queryHeads[0].tensor);
        truncateSync(q.file, q.start + 100);
        const run = runSpectrumEngine(ckpt, layout, { backend: 'cpu', threads: 2 }, { workers: true, workerGram: true });
        await assert.rejects(run, (e: Error) => {
          assert.ok(e instanceof FactoredKeysError, `a user error, not ${e.name}`);
          assert.ok(e.message.startsWith(`${q.file}: unexpected end of file at byte `), e.message);
          assert.match(e.message, /at byte \d+ \(was it changed while being read\?\)$/);
          assert.ok(!e.message.includes('\n'));
          return true;
        });
      } finally {
        await ckpt.close();
      }
    } finally {
      cleanup();
    }
  });

  test('closing the pool while its workers are inside onnxruntime runs: they finish first, the rest are dropped', async () => {
    // tasks of 4 heads of 128 x 4096 (a few ms a run each), so that the close lands inside runs
    const { dir, cleanup } = tempDir();
    const file = path.join(dir, 'rows.bin');
    const bits = new Uint16Array(4 * 128 * 4096);
    let x = 0x9e3779b9;
    for (let i = 0; i < bits.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      bits[i] = 0x3c00 | ((x >>> 0) & 0x7f) | (x & 0x8000);
    }
    writeFileSync(file, bits);
    const fd = openSync(file, 'r');
    try {
      const source = { file, fd, offset: 0, length: bits.byteLength };
      // several times over: a close lands inside a run often, not always
      for (let round = 0; round < 5; round++) {
        const pool = EigenPool.create(2, 128);
        assert.ok(pool);
        try {
          const tasks = Array.from({ length: 40 }, () => pool.spectra('bfloat16', source, 4, 128, 4096));
          const settled = Promise.allSettled(tasks);
          await tasks[0];
          // terminating a thread inside a run aborts the whole process; this one has to survive it
          await pool.close();
          const results = await settled;
          assert.equal(results[0].status, 'fulfilled');
          const dropped = results.filter((r) => r.status === 'rejected');
          assert.ok(dropped.length > 0, 'tasks still queued are dropped');
          for (const r of dropped) assert.match(String((r as PromiseRejectedResult).reason), /eigen pool closed/);
        } finally {
          await pool.close();
        }
      }
    } finally {
      closeSync(fd);
      cleanup();
    }
  });

  test('every range a worker read was reported to the read observer, inside its tensor', async () => {
    const seen: { file: string; position: number; length: number }[] = [];
    const ckpt = await openCheckpoint(fixture('mistral-bytes'), { observeRead: (file, position, length) => seen.push({ file, position, length }) });
    try {
      const layout = buildLayout(ckpt);
      seen.length = 0;
      const r = await runSpectrumEngine(ckpt, layout, { backend: 'cpu', threads: 2 }, { workers: true, workerGram: true, partHeads: 3 });
      assert.equal(r.heads.length, 24);
      const qk = new Map<string, { start: number; end: number }>();
      for (const l of layout.layers) for (const s of [...l.keyHeads, ...l.queryHeads]) qk.set(s.tensor, ckpt.tensor(s.tensor));
      const bytes = [...qk.values()].reduce((a, t) => a + t.end - t.start, 0);
      assert.equal(seen.reduce((a, x) => a + x.length, 0), bytes, 'each Q/K byte read once');
      for (const x of seen) assert.ok([...qk.values()].some((t) => x.position >= t.start && x.position + x.length <= t.end), `read ${x.position}+${x.length} inside a Q/K tensor`);
    } finally {
      await ckpt.close();
    }
  });
});

describe('auto trial with the workers computing the CPU candidate', () => {
  for (const candidates of [['cpu', 'cpu'], ['cpu', 'webgpu']] as const) {
    test(`candidates ${candidates.join(', ')}: every result kept, the CPU chosen`, async () => {
      const { dir, cleanup } = tempDir();
      const saved = process.env.FACTORED_KEYS_CACHE_DIR;
      process.env.FACTORED_KEYS_CACHE_DIR = path.join(dir, 'cache');
      try {
        writeSmallLlama(dir, 24);
        const ckpt = await openCheckpoint(dir);
        try {
          const layout = buildLayout(ckpt);
          const plain = await runSpectrumEngine(ckpt, layout, { backend: 'cpu' }, { workers: false });
          const r = await runSpectrumEngine(ckpt, layout, { backend: 'auto', threads: 2 }, { autoCandidates: candidates, workers: true, workerGram: true });
          assert.equal(r.backend, 'cpu');
          assert.match(r.notes?.join(' ') ?? '', /auto: measured cpu [\d.]+ ms per layer after \d+ ms of start-up, /);
          assert.equal(r.heads.length, plain.heads.length);
          r.heads.forEach((h, i) => {
            const p = plain.heads[i];
            assert.deepEqual([h.layer, h.kind, h.head], [p.layer, p.kind, p.head]);
            h.singularValues.forEach((v, j) => assert.ok(Math.abs(v - p.singularValues[j]) <= 1e-6 * p.singularValues[0], `${h.layer}/${h.kind}/${h.head} σ${j}`));
          });
        } finally {
          await ckpt.close();
        }
      } finally {
        if (saved === undefined) delete process.env.FACTORED_KEYS_CACHE_DIR;
        else process.env.FACTORED_KEYS_CACHE_DIR = saved;
        cleanup();
      }
    });
  }
});

describe('eigenvalue solver and metrics', () => {
  test('specialised eigenvalues (WebAssembly SIMD and JavaScript reductions) agree with linalg.symmetricEigen', () => {
    let seed = 7;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5;
    for (const n of [1, 2, 3, 4, 17, 64, 65]) {
      const b = Float64Array.from({ length: n * (n + 5) }, rand);
      const g = new Float64Array(n * n);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < n + 5; k++) g[i * n + j] += b[i * (n + 5) + k] * b[j * (n + 5) + k];
      const ref = symmetricEigen(g, n, false).values;
      for (const wasm of [true, false]) {
        const ours = symmetricEigenvalues(g, n, wasm);
        for (let i = 0; i < n; i++) assert.ok(Math.abs(ours[i] - ref[i]) <= 1e-10 * Math.max(1, ref[0]), `n=${n} wasm=${wasm} λ${i}`);
      }
    }
    // a workspace is reusable and handles rank-deficient and zero matrices
    const ws = new EigenWorkspace(3);
    const out = new Float64Array(3);
    ws.eigenvaluesInto([0, 0, 0, 0, 0, 0, 0, 0, 0], 0, out);
    assert.deepEqual([...out], [0, 0, 0]);
    ws.eigenvaluesInto([2, 0, 0, 0, 5, 0, 0, 0, 1], 0, out);
    assert.deepEqual([...out], [5, 2, 1]);
  });

  test('cumulative energy, effective and stable ranks', () => {
    const sv = [3, 2, 1, 0];
    const c = cumulativeEnergy(sv);
    assert.deepEqual(c.map((x) => +x.toFixed(6)), [0.642857, 0.928571, 1, 1]);
    assert.deepEqual(effectiveRanks(c), { p90: 2, p95: 3, p99: 3 });
    assert.equal(stableRank(sv), 14 / 9);
    assert.equal(rankForEnergy(cumulativeEnergy([1, 1, 1, 1]), 0.5), 2);
    assert.deepEqual(cumulativeEnergy([0, 0]), [0, 0]);
    assert.deepEqual(effectiveRanks(cumulativeEnergy([0, 0])), { p90: 0, p95: 0, p99: 0 });
    assert.equal(stableRank([0, 0]), 0);
  });
});

describe('the Gram graphs', () => {
  test('the workers\' graphs: the half split (the default) agrees with the per-head Gemm within 1e-6·σ_max, which gives the batched MatMul\'s bits', async () => {
    const ckpt = await openCheckpoint(fixture('mistral-bytes'));
    const saved = process.env.FK_SPECTRUM_WORKER_GRAPH;
    try {
      const layout = buildLayout(ckpt);
      const run = async (graph: string | undefined) => {
        if (graph === undefined) delete process.env.FK_SPECTRUM_WORKER_GRAPH;
        else process.env.FK_SPECTRUM_WORKER_GRAPH = graph;
        return runSpectrumEngine(ckpt, layout, { backend: 'cpu', threads: 2 }, { workers: true, workerGram: true, partHeads: 3 });
      };
      delete process.env.FK_SPECTRUM_WORKER_GRAPH;
      assert.equal(workerGraph(layout.headDim), 'half');
      assert.equal(workerGraph(1), 'gemm');
      const half = await run(undefined);
      const gemm = await run('gemm');
      const batched = await run('batched');
      const values = (r: typeof half) => r.heads.map((h) => h.singularValues);
      assert.deepEqual(values(gemm), values(batched));
      // the blocks' dot products may be accumulated in another order (they differ in the last
      // bits on the 7B shape, by 6.7e-8·σ_max at most)
      assert.equal(half.heads.length, 24);
      half.heads.forEach((h, i) => {
        const g = gemm.heads[i];
        h.singularValues.forEach((v, j) => assert.ok(Math.abs(v - g.singularValues[j]) <= 1e-6 * g.singularValues[0], `${h.layer}/${h.kind}/${h.head} σ${j}`));
      });
    } finally {
      if (saved === undefined) delete process.env.FK_SPECTRUM_WORKER_GRAPH;
      else process.env.FK_SPECTRUM_WORKER_GRAPH = saved;
      await ckpt.close();
    }
  });

  test('bfloat16 widened by the value table (GPU providers) gives the same Grams as BitCast + Cast, special values included', async () => {
    const [batch, hd, dm] = [3, 8, 64];
    const bits = new Uint16Array(batch * hd * dm);
    let x = 0x2545f491;
    for (let i = 0; i < bits.length; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      bits[i] = (x & 0x807f) | ((110 + ((x >>> 7) & 15)) << 7);
    }
    // zeros and subnormals; the third head holds the largest finite values and an infinity
    bits.set([0x0000, 0x8000, 0x0001, 0x807f], 5);
    bits.set([0x7f7f, 0xff7f, 0x7f80], 2 * hd * dm + 7);
    const table = bf16Values();
    assert.equal(table[0x3f80], 1);
    assert.equal(table[0xc000], -2);
    assert.ok(Number.isNaN(table[0x7fc0]));
    const grams: Float32Array[] = [];
    for (const widening of ['bitcast', 'table'] as const) {
      const s = await createSession(gramModel('bfloat16', hd, dm, 1, 1, widening), { backend: 'cpu', threads: 1 });
      try {
        grams.push((await s.run({ w: new Tensor('uint16', bits, [batch, hd, dm]) })).gram.data as Float32Array);
      } finally {
        await s.dispose();
      }
    }
    assert.equal(grams[0].length, batch * hd * hd);
    assert.ok(grams[0].subarray(0, 2 * hd * hd).every(Number.isFinite));
    assert.ok(grams[0].subarray(2 * hd * hd).some((v) => !Number.isFinite(v)));
    assert.deepEqual(Array.from(grams[1], (v) => (Number.isNaN(v) ? 'NaN' : v)), Array.from(grams[0], (v) => (Number.isNaN(v) ? 'NaN' : v)));
  });
});
