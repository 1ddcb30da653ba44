/**
 * Exports of the trained fixtures (GPT-2: absorbed; Mistral: latent with RoPE) and the layout
 * fixtures, read back through openCheckpoint, checked against independent reference math.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { buildLayout } from '../../src/core/arch';
import { openCheckpoint, type Checkpoint } from '../../src/core/checkpoint/checkpoint';
import { exportFactored } from '../../src/core/export/export';
import { readFactoredKeysConfig } from '../../src/core/export/load';
import type { FactorMethod } from '../../src/core/plan/types';
import { exportedScores, gaussian, originalScores, referenceProjector, relError } from './exportMath';

const fixtures = path.resolve(__dirname, '../../../shared/fixtures');
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-export-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** Float tolerance by dtype: F32 weights round at ~6e-8, BF16 at ~4e-3 (one rounding of the new tensors). */
const tolerance = (dtype: string) => (dtype === 'F32' ? 1e-6 : 1.5e-2);

async function check(fixture: string, method: Exclude<FactorMethod, 'calibrated'>, rank: number, layers?: number[]): Promise<{ worstRef: number; worstOrig: number }> {
  const src = await openCheckpoint(path.join(fixtures, fixture));
  const dest = path.join(work, `${fixture.replace('/', '_')}-${method}-${rank}`);
  try {
    const layout = buildLayout(src);
    const result = await exportFactored({ source: src.dir, dest, method, policy: { kind: 'uniform', rank } });
    assert.deepEqual(result.plan.ranks, layout.layers.map(() => Array(layout.kvHeads).fill(rank)));
    const out = await openCheckpoint(dest);
    try {
      const fk = readFactoredKeysConfig(out.config, dest);
      assert.equal(fk.rope_mode, layout.rope ? 'latent' : 'absorbed');
      assert.equal(fk.softmax_scale, 1 / Math.sqrt(layout.headDim));
      assert.equal(fk.original_head_dim, layout.headDim);
      const t = 12;
      const x = gaussian(t * layout.hiddenSize, 1234);
      let worstRef = 0;
      let worstOrig = 0;
      for (const layer of layers ?? layout.layers.map((l) => l.layer)) {
        for (let h = 0; h < layout.queryHeads; h++) {
          const got = await exportedScores(out, fk, layer, h, x, t, layout.hiddenSize);
          const p = await referenceProjector(src, layout, layer, layout.queryToKv[h], method, rank);
          worstRef = Math.max(worstRef, relError(got, await originalScores(src, layout, layer, h, x, t, p)));
          if (rank === layout.headDim) worstOrig = Math.max(worstOrig, relError(got, await originalScores(src, layout, layer, h, x, t)));
        }
      }
      const tol = tolerance(layout.dtype);
      assert.ok(worstRef < tol, `${fixture} ${method} r=${rank}: scores vs reference q·P·kᵀ off by ${worstRef}`);
      assert.ok(worstOrig < tol, `${fixture} ${method} r=${rank}: scores vs original off by ${worstOrig}`);
      return { worstRef, worstOrig };
    } finally {
      await out.close();
    }
  } finally {
    await src.close();
  }
}

for (const fixture of ['gpt2-bytes', 'mistral-bytes']) {
  for (const method of ['key-svd', 'qk-svd'] as const) {
    test(`${fixture} ${method}: full rank reproduces the original scores`, async () => {
      await check(fixture, method, 64);
    });
    test(`${fixture} ${method}: rank 16 (75 % key saving) matches the reference q·P·kᵀ`, async () => {
      await check(fixture, method, 16);
    });
  }
}

for (const fixture of ['layouts/qwen2', 'layouts/phi3', 'layouts/gpt_neox', 'layouts/falcon', 'layouts/gemma', 'stories260K']) {
  test(`${fixture}: fused/biased/partial-rotary layout exports match the reference`, async () => {
    const src = await openCheckpoint(path.join(fixtures, fixture));
    const hd = buildLayout(src).headDim;
    await src.close();
    await check(fixture, 'qk-svd', hd / 2, [0]);
    await check(fixture, 'key-svd', hd / 4, [0]);
  });
}

async function rawEqual(a: Checkpoint, b: Checkpoint, name: string): Promise<boolean> {
  return Buffer.from(await a.readRows(name)).equals(Buffer.from(await b.readRows(name)));
}

test('untouched tensors are byte-identical, under the same names, dtypes and shards', async () => {
  for (const [fixture, method] of [['mistral-bytes', 'key-svd'], ['gpt2-bytes', 'qk-svd']] as const) {
    const src = await openCheckpoint(path.join(fixtures, fixture));
    const dest = path.join(work, `${fixture}-bytes`);
    const result = await exportFactored({ source: src.dir, dest, method, policy: { kind: 'fraction', fraction: 0.25 } });
    const out = await openCheckpoint(dest);
    const changed = new Set(result.config.layers.flatMap((l) => [...l.key.map((s) => s.tensor), ...l.key.flatMap((s) => (s.bias ? [s.bias] : [])), ...(l.key_up ? [l.key_up] : [])]));
    if (result.config.rope_mode === 'absorbed') for (const l of result.config.layers) for (const s of l.query) changed.add(s.tensor).add(s.bias ?? s.tensor);
    let same = 0;
    for (const t of src.tensors.values()) {
      const o = out.tensor(t.name);
      assert.equal(path.basename(o.file), path.basename(t.file), `${t.name} moved shard`);
      if (changed.has(t.name)) continue;
      assert.equal(o.dtype, t.dtype);
      assert.deepEqual(o.shape, t.shape);
      assert.ok(await rawEqual(src, out, t.name), `${t.name} differs`);
      same++;
    }
    assert.ok(same > src.tensors.size / 2);
    for (const name of changed) if (out.tensors.has(name)) assert.equal(out.tensor(name).dtype, src.tensors.get(name)?.dtype ?? buildLayout(src).dtype);
    assert.equal(out.files.length, src.files.length);
    assert.equal(Boolean(out.indexFile), Boolean(src.indexFile));
    await out.close();
    await src.close();
  }
});

test('worker threads (copy, eigensolves) and the main thread write the same bytes', async () => {
  const { readdirSync, readFileSync } = await import('node:fs');
  for (const [fixture, method] of [['mistral-bytes', 'key-svd'], ['gpt2-bytes', 'qk-svd']] as const) {
    const files = async (internals: { copyInWorker: boolean; eigenWorkers: boolean }, tag: string) => {
      const dest = path.join(work, `${fixture}-${method}-${tag}`);
      await exportFactored({ source: path.join(fixtures, fixture), dest, method, policy: { kind: 'energy', threshold: 0.9 } }, internals);
      return Object.fromEntries(readdirSync(dest).sort().map((f) => [f, readFileSync(path.join(dest, f)).toString('base64')]));
    };
    const inline = await files({ copyInWorker: false, eigenWorkers: false }, 'inline');
    const workers = await files({ copyInWorker: true, eigenWorkers: true }, 'workers');
    assert.deepEqual(Object.keys(workers), Object.keys(inline));
    for (const f of Object.keys(inline)) assert.ok(workers[f] === inline[f], `${fixture} ${method}: ${f} differs between the worker and main-thread paths`);
  }
});

test('report holds plan, per-head retained energy and score error, cache sizes', async () => {
  const dest = path.join(work, 'report');
  const r = await exportFactored({ source: path.join(fixtures, 'mistral-bytes'), dest, method: 'qk-svd', policy: { kind: 'energy', threshold: 0.8 } });
  const report = JSON.parse((await import('node:fs')).readFileSync(path.join(dest, 'factored_keys_report.json'), 'utf8'));
  assert.equal(report.heads.length, 4 * 2);
  for (const h of report.heads) {
    assert.ok(h.retained_energy >= 0.8 - 1e-12);
    assert.ok(Math.abs(h.score_error - Math.sqrt(1 - h.retained_energy)) < 1e-6, 'qk-svd score error = sqrt(1 - retained)');
  }
  assert.equal(report.cache.key_bytes_per_token.before, 4 * 2 * 64 * 2);
  assert.deepEqual(report.plan.ranks, r.plan.ranks);
});

test('absorbed mode with MQA (Falcon with ALiBi): query heads of a group share the thin key map', async () => {
  // layouts/falcon re-declared as an ALiBi model (no RoPE): same weights, absorbed export
  const dir = path.join(work, 'falcon-alibi');
  const { cpSync, readFileSync, writeFileSync } = await import('node:fs');
  cpSync(path.join(fixtures, 'layouts', 'falcon'), dir, { recursive: true });
  const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, alibi: true }));
  for (const method of ['key-svd', 'qk-svd'] as const) {
    const src = await openCheckpoint(dir);
    const layout = buildLayout(src);
    assert.equal(layout.rope, null);
    const dest = path.join(work, `falcon-alibi-${method}`);
    await exportFactored({ source: dir, dest, method, policy: { kind: 'uniform', rank: 5 } });
    const out = await openCheckpoint(dest);
    const fk = readFactoredKeysConfig(out.config, dest);
    assert.equal(fk.rope_mode, 'absorbed');
    assert.equal(fk.num_kv_heads, 1);
    const t = 9;
    const x = gaussian(t * layout.hiddenSize, 99);
    for (let h = 0; h < layout.queryHeads; h++) {
      assert.equal(fk.layers[1].query[h].width, 5);
      const p = await referenceProjector(src, layout, 1, 0, method, 5);
      const err = relError(await exportedScores(out, fk, 1, h, x, t, layout.hiddenSize), await originalScores(src, layout, 1, h, x, t, p));
      assert.ok(err < 1e-6, `${method} head ${h}: ${err}`);
    }
    await out.close();
    await src.close();
  }
});
