/**
 * The ONNX forward pass against an independent reference: logits checked in by
 * scripts/reference/eval_reference.py (transformers, float32, eager attention) for the trained
 * fixtures and the Llama/Qwen2/stories260K layouts; and factored models at full rank against
 * the original.
 */
import assert from 'node:assert/strict';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { buildLayout } from '../../src/core/arch';
import { openCheckpoint, type Checkpoint } from '../../src/core/checkpoint/checkpoint';
import { CheckpointWeights, checkpointSource, computeBases, loadForward, PlanWeights, readModelSpec, windowBatch, type WeightSource } from '../../src/core/eval';
import { exportFactored } from '../../src/core/export/export';
import { FactoredKeysError } from '../../src/core/errors';
import { fixture, REPO_ROOT, tempDir } from '../helpers/fixtures';

interface Reference {
  logit_windows: number[];
  logit_positions: number[];
  models: Record<string, { logits: Record<string, Record<string, number[]>> }>;
  layout_logits: { input: number[]; positions: number[]; models: Record<string, Record<string, number[]>> };
}
const REF: Reference = JSON.parse(readFileSync(path.join(REPO_ROOT, 'test/reference/eval/eval_reference.json'), 'utf8'));
const HELDOUT = Int32Array.from(readFileSync(fixture('heldout.txt')));

async function logitsOf(source: WeightSource, ids: Int32Array, seq: number, first: number, windows: number): Promise<Float32Array> {
  const fwd = await loadForward(source, { seq, logits: true });
  try {
    const padded = new Int32Array(Math.max(ids.length, (first + windows) * seq + 1));
    padded.set(ids);
    const { inputs, targets } = windowBatch(padded, seq, first, windows);
    return (await fwd.run(inputs, targets, windows)).logits!;
  } finally {
    await fwd.dispose();
  }
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function withCheckpoint<T>(name: string, f: (c: Checkpoint) => Promise<T>): Promise<T> {
  const c = await openCheckpoint(fixture(name));
  try {
    return await f(c);
  } finally {
    await c.close();
  }
}

for (const name of ['gpt2-bytes', 'mistral-bytes']) {
  test(`${name}: logits match transformers for windows ${REF.logit_windows.join(', ')}`, async () => {
    await withCheckpoint(name, async (ckpt) => {
      const spec = readModelSpec(ckpt);
      const src = new CheckpointWeights(ckpt, spec);
      for (const w of REF.logit_windows) {
        const logits = await logitsOf(src, HELDOUT, 256, w, 1);
        for (const p of REF.logit_positions) {
          const expected = REF.models[name].logits[String(w)][String(p)];
          const d = maxAbsDiff(expected, logits.subarray(p * spec.vocab, (p + 1) * spec.vocab));
          assert.ok(d < 2e-3, `${name} window ${w} position ${p}: max |Δlogit| ${d}`);
        }
      }
    });
  });
}

for (const name of Object.keys(REF.layout_logits.models)) {
  test(`${name}: logits match transformers (GQA, biases, explicit head_dim, tied embeddings)`, async () => {
    await withCheckpoint(name, async (ckpt) => {
      const spec = readModelSpec(ckpt);
      const input = Int32Array.from(REF.layout_logits.input);
      const logits = await logitsOf(new CheckpointWeights(ckpt, spec), input, input.length, 0, 1);
      for (const p of REF.layout_logits.positions) {
        const expected = REF.layout_logits.models[name][String(p)];
        const d = maxAbsDiff(expected, logits.subarray(p * spec.vocab, (p + 1) * spec.vocab));
        assert.ok(d < 1e-3, `${name} position ${p}: max |Δlogit| ${d}`);
      }
    });
  });
}

for (const name of ['gpt2-bytes', 'mistral-bytes']) {
  for (const method of ['key-svd', 'qk-svd'] as const) {
    test(`${name} ${method}: the factored forward at full rank equals the original`, async () => {
      await withCheckpoint(name, async (ckpt) => {
        const spec = readModelSpec(ckpt);
        const layout = buildLayout(ckpt);
        const { bases } = await computeBases(ckpt, method);
        const full = layout.layers.map(() => Array(spec.kvHeads).fill(spec.headDim));
        const original = await logitsOf(new CheckpointWeights(ckpt, spec), HELDOUT, 64, 0, 1);
        // Factorization alone (float32 weights): equal up to float32 round-off.
        const exact = await logitsOf(new PlanWeights(ckpt, spec, layout, bases, full, true), HELDOUT, 64, 0, 1);
        assert.ok(maxAbsDiff(original, exact) < 5e-4, `float32 factored vs original: ${maxAbsDiff(original, exact)}`);
        // As exported: factored weights rounded to the checkpoint dtype (BF16 for Mistral).
        const stored = await logitsOf(new PlanWeights(ckpt, spec, layout, bases, full), HELDOUT, 64, 0, 1);
        const tol = layout.dtype === 'F32' ? 2e-3 : 0.1;
        assert.ok(maxAbsDiff(original, stored) < tol, `${layout.dtype} factored vs original: ${maxAbsDiff(original, stored)}`);
      });
    });
  }
}

test('eval refuses features it does not run, naming them: ALiBi (Falcon), multi-head latent attention (DeepSeek-V3)', async () => {
  const t = tempDir();
  try {
    const dir = path.join(t.dir, 'falcon-alibi');
    cpSync(fixture('layouts/falcon'), dir, { recursive: true });
    const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, alibi: true }));
    const ckpt = await openCheckpoint(dir);
    try {
      assert.throws(() => readModelSpec(ckpt), (e: Error) => e instanceof FactoredKeysError && /falcon-alibi\/config\.json: eval does not support ALiBi \(falcon\)$/.test(e.message));
    } finally {
      await ckpt.close();
    }
  } finally {
    t.cleanup();
  }
  await withCheckpoint('layouts2/deepseek_v3', async (ckpt) => {
    assert.throws(() => readModelSpec(ckpt), (e: Error) => e instanceof FactoredKeysError && /config\.json: eval does not support multi-head latent attention \(deepseek_v3\)/.test(e.message));
  });
});

for (const name of ['layouts/qwen2', 'layouts/llama']) {
  test(`${name}: factored at full rank equals the original, and a rank-5 export reads back as the in-memory plan (biases, latent keys)`, async () => {
    const t = tempDir();
    try {
      await withCheckpoint(name, async (ckpt) => {
        const spec = readModelSpec(ckpt);
        const layout = buildLayout(ckpt);
        const input = Int32Array.from(REF.layout_logits.input);
        const original = await logitsOf(new CheckpointWeights(ckpt, spec), input, 32, 0, 1);
        for (const method of ['key-svd', 'qk-svd'] as const) {
          const { bases } = await computeBases(ckpt, method);
          const full = layout.layers.map(() => Array(spec.kvHeads).fill(spec.headDim));
          const d = maxAbsDiff(original, await logitsOf(new PlanWeights(ckpt, spec, layout, bases, full), input, 32, 0, 1));
          assert.ok(d < 1e-4, `${method} full rank: ${d}`);
          const five = layout.layers.map(() => Array(spec.kvHeads).fill(5));
          const planned = await logitsOf(new PlanWeights(ckpt, spec, layout, bases, five), input, 32, 0, 1);
          const dest = path.join(t.dir, method);
          await exportFactored({ source: fixture(name), dest, method, policy: { kind: 'uniform', rank: 5 } });
          const exported = await openCheckpoint(dest);
          try {
            const e = await logitsOf(checkpointSource(exported), input, 32, 0, 1);
            assert.ok(maxAbsDiff(planned, e) < 1e-5, `${method} rank 5: export vs plan ${maxAbsDiff(planned, e)}`);
            assert.ok(maxAbsDiff(original, e) > 1e-3, 'rank 5 changes the model');
          } finally {
            await exported.close();
          }
        }
      });
    } finally {
      t.cleanup();
    }
  });
}
