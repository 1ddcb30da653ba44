/**
 * The 2025–26 families end to end, on the transformers-written fixtures of
 * ../shared/fixtures/layouts2 and the hyper-parameter variants of test/fixtures/variants
 * (scripts/reference/variants.py): inspect reports the config's true shape, analyze's key spectra
 * match float64 LAPACK (scripts/reference/spectra.py), eval reproduces transformers' logits and
 * perplexity, and a key-svd rank-8 export evaluates to the full-shape rank-8 model computed here
 * from an independent eigendecomposition of each W_Kᵀ W_K.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { buildLayout, describeModel } from '../../src/core/arch';
import { openCheckpoint, type Checkpoint } from '../../src/core/checkpoint/checkpoint';
import { checkpointSource, CheckpointWeights, evaluatePerplexity, loadForward, PlanEvaluator, readModelSpec, sweepPerplexity, type WeightSource } from '../../src/core/eval';
import { constFromFloat32, constToFloat32, type LayerWeights, type Linear } from '../../src/core/eval/model';
import { exportFactored } from '../../src/core/export/export';
import { symmetricEigen } from '../../src/core/linalg/eigen';
import { analyzeSpectra } from '../../src/core/spectrum';
import { CLI, fixture, REPO_ROOT, tempDir } from '../helpers/fixtures';

interface Reference {
  models: Record<string, { model_type: string; probe_ids: number[]; logits: number[][]; ppl_2048: number }>;
}

const SETS = [
  { dir: fixture('layouts2'), prefix: 'layouts2__' },
  { dir: path.join(REPO_ROOT, 'test/fixtures/variants'), prefix: 'variants__' },
];
const HELDOUT = Int32Array.from(readFileSync(fixture('heldout.txt')).subarray(0, 2049));

async function withCheckpoint<T>(dir: string, f: (c: Checkpoint) => Promise<T>): Promise<T> {
  const c = await openCheckpoint(dir);
  try {
    return await f(c);
  } finally {
    await c.close();
  }
}

/** The model with every KV head's W_K (and bias) replaced by its rank-r truncation W_K·V_r·V_rᵀ, full shape. */
class FullShapeLowRank implements WeightSource {
  private readonly base: CheckpointWeights;
  constructor(
    ckpt: Checkpoint,
    readonly spec: ReturnType<typeof readModelSpec>,
    readonly rank: number,
  ) {
    this.base = new CheckpointWeights(ckpt, spec);
  }
  outer() {
    return this.base.outer();
  }
  async layer(i: number): Promise<LayerWeights> {
    const w = await this.base.layer(i);
    const { kvHeads: kv, headDim: hd, hidden: d } = this.spec;
    const k = w.qkv.k;
    assert.ok(k.transposed && k.weight.dims[0] === kv * hd && k.weight.dims[1] === d);
    const f = constToFloat32(k.weight);
    const b = k.bias ? constToFloat32(k.bias) : undefined;
    const out = new Float32Array(f.length);
    const outBias = b ? new Float32Array(b.length) : undefined;
    for (let g = 0; g < kv; g++) {
      const gram = new Float64Array(hd * hd);
      for (let a = 0; a < hd; a++) for (let c = 0; c < hd; c++) {
        let s = 0;
        for (let x = 0; x < d; x++) s += f[(g * hd + a) * d + x] * f[(g * hd + c) * d + x];
        gram[a * hd + c] = s;
      }
      const v = symmetricEigen(gram, hd, true).vectors!;
      const p = new Float64Array(hd * hd); // V_r V_rᵀ
      for (let a = 0; a < hd; a++) for (let c = 0; c < hd; c++) {
        let s = 0;
        for (let j = 0; j < this.rank; j++) s += v[a * hd + j] * v[c * hd + j];
        p[a * hd + c] = s;
      }
      for (let a = 0; a < hd; a++) {
        for (let x = 0; x < d; x++) {
          let s = 0;
          for (let c = 0; c < hd; c++) s += p[a * hd + c] * f[(g * hd + c) * d + x];
          out[(g * hd + a) * d + x] = s;
        }
        if (b && outBias) {
          let s = 0;
          for (let c = 0; c < hd; c++) s += p[a * hd + c] * b[g * hd + c];
          outBias[g * hd + a] = s;
        }
      }
    }
    const lowRank: Linear = { weight: constFromFloat32(out, [kv * hd, d], 'F32'), transposed: true, bias: outBias ? constFromFloat32(outBias, [kv * hd], 'F32') : undefined };
    return { ...w, qkv: { ...w.qkv, k: lowRank } };
  }
}

for (const set of SETS) {
  const ref: Reference = JSON.parse(readFileSync(path.join(set.dir, 'reference.json'), 'utf8'));
  describe(path.basename(set.dir), () => {
    for (const [name, r] of Object.entries(ref.models)) {
      const dir = path.join(set.dir, name);
      test(`${name}: inspect, spectra, logits and perplexity as transformers, key-svd rank 8 = full-shape rank 8`, async () => {
        const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
        const insp = spawnSync(process.execPath, [CLI, 'inspect', dir, '--json'], { encoding: 'utf8' });
        assert.equal(insp.status, 0, insp.stderr);
        const s = JSON.parse(insp.stdout);
        assert.equal(s.architecture, config.model_type);
        assert.equal(s.layers, config.num_hidden_layers ?? config.n_layer);
        assert.equal(s.query_heads, config.num_attention_heads ?? config.n_head);
        const heads = config.num_attention_heads ?? config.n_head;
        const expectedKv = config.model_type === 'gpt_bigcode' ? (config.multi_query === false ? heads : 1) : config.model_type === 'gptj' ? heads : (config.num_key_value_heads ?? heads);
        assert.equal(s.kv_heads, expectedKv);
        assert.equal(s.head_dim, config.head_dim ?? (config.hidden_size ?? config.n_embd) / heads);

        await withCheckpoint(dir, async (ckpt) => {
          // key (and query) spectra against float64 LAPACK
          const spectraRef = JSON.parse(readFileSync(path.join(REPO_ROOT, 'test/reference/spectra', `${set.prefix}${name}.json`), 'utf8')).heads as { layer: number; kind: string; head: number; singular_values: number[] }[];
          const spectra = await analyzeSpectra(ckpt, buildLayout(ckpt), { backend: 'cpu', threads: 2 });
          assert.equal(spectra.heads.length, spectraRef.length);
          for (const h of spectra.heads) {
            const want = spectraRef.find((x) => x.layer === h.layer && x.kind === h.kind && x.head === h.head)!;
            for (let i = 0; i < want.singular_values.length; i++) assert.ok(Math.abs(h.singularValues[i] - want.singular_values[i]) <= 1e-3 * want.singular_values[0], `${name} ${h.kind} ${h.layer}/${h.head} σ${i}`);
          }
          // logits of the probe and the 8-window perplexity against transformers
          const spec = readModelSpec(ckpt);
          const src = checkpointSource(ckpt);
          const fwd = await loadForward(src, { seq: r.probe_ids.length, logits: true });
          const ids = BigInt64Array.from(r.probe_ids.map(BigInt));
          const logits = (await fwd.run(ids, ids, 1)).logits!;
          await fwd.dispose();
          const V = spec.vocab;
          let worst = 0;
          r.logits.forEach((row, p) => row.forEach((x, t) => (worst = Math.max(worst, Math.abs(logits[p * V + t] - x)))));
          assert.ok(worst < 1e-3, `${name}: worst logit difference ${worst}`);
          const original = await evaluatePerplexity(src, HELDOUT, { seq: 256 });
          assert.ok(Math.abs(original.perplexity / r.ppl_2048 - 1) < 1e-3, `${name}: perplexity ${original.perplexity} vs ${r.ppl_2048}`);
          // key-svd rank 8 exported, against the full-shape rank-8 model
          const want = await evaluatePerplexity(new FullShapeLowRank(ckpt, spec, 8), HELDOUT, { seq: 256 });
          const t = tempDir();
          try {
            const out = path.join(t.dir, 'out');
            await exportFactored({ source: dir, dest: out, method: 'key-svd', policy: { kind: 'uniform', rank: 8 } });
            const got = await withCheckpoint(out, (e) => evaluatePerplexity(checkpointSource(e), HELDOUT, { seq: 256 }));
            assert.ok(Math.abs(got.perplexity / want.perplexity - 1) < 1e-3, `${name}: export ${got.perplexity} vs full-shape rank 8 ${want.perplexity}`);
            assert.notEqual(want.perplexity, original.perplexity);
          } finally {
            t.cleanup();
          }
        });
      });
    }
  });
}

test('deepseek_v3 (multi-head latent attention): inspect reports it; analyze, export and eval refuse in one line', async () => {
  const dir = fixture('layouts2/deepseek_v3');
  const insp = spawnSync(process.execPath, [CLI, 'inspect', dir, '--json'], { encoding: 'utf8' });
  assert.equal(insp.status, 0, insp.stderr);
  const s = JSON.parse(insp.stdout);
  assert.equal(s.architecture, 'deepseek_v3');
  assert.equal(s.latent_attention.kv_lora_rank, 32);
  assert.equal(s.head_dim, 24);
  for (const args of [['analyze', dir], ['export', dir, path.join(tempDir().dir, 'x'), '--method', 'key-svd', '--rank', '8'], ['eval', dir, '--text', fixture('heldout.txt'), '--tokenizer', 'bytes']]) {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^error: .*latent attention/);
  }
  await withCheckpoint(dir, async (ckpt) => assert.ok(describeModel(ckpt).latentAttention));
});

test('every layouts2 checkpoint is covered by a reference', () => {
  const names = readdirSync(fixture('layouts2')).filter((n) => existsSync(path.join(fixture('layouts2'), n, 'config.json')));
  const ref: Reference = JSON.parse(readFileSync(path.join(fixture('layouts2'), 'reference.json'), 'utf8'));
  assert.deepEqual(names.filter((n) => !ref.models[n]).sort(), ['deepseek_v3']);
});

test('sweep on a q/k-norm model (qwen3) leaves out qk-svd instead of failing', async () => {
  const ev = await PlanEvaluator.open(fixture('layouts2/qwen3'));
  try {
    const points = await sweepPerplexity(ev, HELDOUT, { methods: ['key-svd', 'qk-svd'], ranks: [4, 8] }, { seq: 256 });
    assert.deepEqual(points.map((p) => `${p.method}${p.rank ?? ''}`), ['original', 'key-svd4', 'key-svd8']);
  } finally {
    await ev.close();
  }
});
