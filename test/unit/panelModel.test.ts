/** Host-side panel logic (src/extension/panelModel.ts) on the real Mistral fixture. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { buildLayout } from '../../src/core/arch';
import { openCheckpoint, type Checkpoint } from '../../src/core/checkpoint/checkpoint';
import { analyzeSpectra, type SpectrumResult } from '../../src/core/spectrum';
import { analyzeHeads, energiesOf } from '../../src/core/factor/basis';
import { rankForEnergy } from '../../src/core/plan/plan';
import type { EvalResult, SweepPoint } from '../../src/core/eval/evaluate';
import { checkpointSummary, keyEnergies, panelPlan, paperReference, planResult, rankPolicy, savingsView, spectraPayload, sweepAxis, sweepResult, withPlanEnergies } from '../../src/extension/panelModel';
import type { CheckpointSummary, PlanControls, SpectraPayload } from '../../src/protocol';
import { fixture } from '../helpers/fixtures';

const base: PlanControls = { policy: 'uniform', rank: 8, fraction: 0.25, energy: 0.95, budget: 0.25, overrides: [] };

describe('panel model on mistral-bytes', () => {
  let ckpt: Checkpoint;
  let summary: CheckpointSummary;
  let result: SpectrumResult;
  let spectra: SpectraPayload;

  before(async () => {
    ckpt = await openCheckpoint(fixture('mistral-bytes'));
    const layout = buildLayout(ckpt);
    summary = checkpointSummary(ckpt.dir, layout, ckpt.files.length);
    result = await analyzeSpectra(ckpt, layout, { backend: 'cpu', threads: 1 });
    spectra = spectraPayload(result, summary);
  });
  after(() => ckpt?.close());

  it('summarizes the checkpoint like inspect', () => {
    assert.equal(summary.name, 'mistral-bytes');
    assert.deepEqual([summary.layers, summary.queryHeads, summary.kvHeads, summary.headDim, summary.files], [4, 4, 2, 64, 3]);
    assert.deepEqual(summary.queryToKv, [0, 0, 1, 1]);
  });

  it('packs every head of the core result into flat typed arrays at row l × heads + h', () => {
    assert.equal(spectra.keySingular.length, 4 * 2 * 64);
    assert.equal(spectra.querySingular.length, 4 * 4 * 64);
    for (const h of result.heads) {
      const heads = h.kind === 'key' ? 2 : 4;
      const row = h.layer * heads + h.head;
      const sv = h.kind === 'key' ? spectra.keySingular : spectra.querySingular;
      const eff = h.kind === 'key' ? spectra.keyEffRank : spectra.queryEffRank;
      assert.equal(sv[row * 64], Math.fround(h.singularValues[0]));
      assert.equal(sv[row * 64 + 63], Math.fround(h.singularValues[63]));
      assert.deepEqual(Array.from(eff.subarray(row * 3, row * 3 + 3)), [h.effectiveRank.p90, h.effectiveRank.p95, h.effectiveRank.p99]);
    }
    const energies = keyEnergies(spectra);
    assert.equal(energies.length, 4);
    assert.equal(energies[2][1].length, 64);
  });

  it('rejects a core result that misses a head or places one outside the model', () => {
    const missing = { ...result, heads: result.heads.filter((h) => !(h.kind === 'key' && h.layer === 3 && h.head === 1)) };
    assert.throws(() => spectraPayload(missing, summary), /no result for key head 1 of layer 3/);
    const outside = { ...result, heads: [...result.heads, { ...result.heads[0], head: 7 }] };
    assert.throws(() => spectraPayload(outside, summary), /outside the model/);
  });

  it('builds plans for every policy, with overrides winning', () => {
    const uniform = panelPlan(summary, spectra, base, 'key-svd');
    assert.deepEqual(uniform.ranks, [[8, 8], [8, 8], [8, 8], [8, 8]]);
    const pinned = panelPlan(summary, spectra, { ...base, overrides: [{ layer: 2, head: 1, rank: 3 }] }, 'key-svd');
    assert.equal(pinned.ranks[2][1], 3);
    assert.equal(pinned.ranks[2][0], 8);
    const fraction = panelPlan(summary, spectra, { ...base, policy: 'fraction', fraction: 0.25 }, 'key-svd');
    assert.deepEqual(fraction.ranks.flat(), Array(8).fill(16));
    // Energy: each head's rank is its own smallest rank reaching the threshold.
    const energy = panelPlan(summary, spectra, { ...base, policy: 'energy', energy: 0.95 }, 'key-svd');
    for (let l = 0; l < 4; l++) for (let g = 0; g < 2; g++) assert.equal(energy.ranks[l][g], spectra.keyEffRank[(l * 2 + g) * 3 + 1]);
    // Budget: a quarter of the original key cache (bf16 keys: 4 × 2 × 64 × 2 bytes per token).
    const budget = panelPlan(summary, spectra, { ...base, policy: 'budget', budget: 0.25 }, 'key-svd');
    const dims = budget.ranks.flat().reduce((a, b) => a + b, 0);
    assert.ok(dims * 2 <= 0.25 * 4 * 2 * 64 * 2, `budget plan uses ${dims} dims`);
    assert.ok(budget.ranks.flat().every((r) => r >= 1));
  });

  it('plans qk-svd from the query-aware energies, and refuses spectra of another method', async () => {
    const layout = buildLayout(ckpt);
    const energies = energiesOf(await analyzeHeads(ckpt, layout, 'qk-svd'));
    const qk = withPlanEnergies(spectra, 'qk-svd', energies);
    const plan = panelPlan(summary, qk, { ...base, policy: 'energy', energy: 0.9 }, 'qk-svd');
    assert.equal(plan.method, 'qk-svd');
    for (let l = 0; l < 4; l++) for (let g = 0; g < 2; g++) assert.equal(plan.ranks[l][g], rankForEnergy(energies[l][g], 0.9, 64));
    // key-svd energies are σ² of W_K.
    assert.equal(keyEnergies(spectra)[1][0][0], Math.fround(spectra.keySingular[2 * 64] ** 2));
    assert.throws(() => panelPlan(summary, spectra, { ...base, policy: 'energy' }, 'qk-svd'), /analyzed for key-svd, but the method is now qk-svd/);
    // Uniform ranks do not depend on energies, so any spectra do.
    assert.equal(panelPlan(summary, spectra, base, 'qk-svd').ranks[0][0], 8);
  });

  it('needs spectra for energy and budget policies', () => {
    assert.throws(() => panelPlan(summary, null, { ...base, policy: 'energy' }, 'key-svd'), /needs the spectra/);
    assert.deepEqual(panelPlan(summary, null, base, 'key-svd').ranks[0], [8, 8]);
  });

  it('maps the budget share to key bytes per token and never below one dim per head', () => {
    const model = { architecture: 'mistral', layers: 4, kv_heads: 2, head_dim: 64, key_bytes_per_value: 2 };
    assert.deepEqual(rankPolicy({ ...base, policy: 'budget', budget: 0.5 }, model), { kind: 'budget', key_bytes_per_token: 512 });
    assert.deepEqual(rankPolicy({ ...base, policy: 'budget', budget: 1e-6 }, model), { kind: 'budget', key_bytes_per_token: 16 });
  });

  it('prices a plan: rank 8 of 64 at 128,000 tokens in bf16', () => {
    const r = planResult(summary, panelPlan(summary, spectra, base, 'key-svd'), { context: 128000, batch: 1, dtype: 'bf16' });
    assert.deepEqual(Array.from(r.ranks), Array(8).fill(8));
    // Per token: keys 4 layers × 2 heads × 64 dims × 2 bytes before, × 8 dims after; values unchanged.
    assert.equal(r.savings.baselineKeyBytesPerToken, 1024);
    assert.equal(r.savings.factoredKeyBytesPerToken, 128);
    assert.equal(r.savings.baselineBytes, 2048 * 128000);
    assert.equal(r.savings.factoredBytes, (128 + 1024) * 128000);
    assert.equal(r.savings.capacityMultiplier, 2048 / 1152);
    assert.ok(r.meanRetainedEnergy !== null && r.meanRetainedEnergy > 0 && r.meanRetainedEnergy < 1);
    const fp8 = savingsView(summary, [[8, 8], [8, 8], [8, 8], [8, 8]], { context: 10, batch: 3, dtype: 'fp8' });
    assert.equal(fp8.baselineBytes, 1024 * 30);
  });

  it("reproduces the paper's 25.2 GB example", () => {
    const ref = paperReference();
    assert.equal(ref.baselineBytes - ref.factoredBytes, 25_165_824_000);
    assert.equal(ref.capacityMultiplier, 1.6);
  });
});

describe('sweep settings and results', () => {
  it('sweeps ranks head_dim/16 … full, rounded, at least 1, without repeats', () => {
    assert.deepEqual(sweepAxis({ headDim: 64 }, base), { axis: 'rank', values: [4, 8, 16, 32, 64] });
    assert.deepEqual(sweepAxis({ headDim: 80 }, { ...base, policy: 'budget' }), { axis: 'rank', values: [5, 10, 20, 40, 80] });
    // stories260K: head_dim 8, so /16 and /8 both give rank 1.
    assert.deepEqual(sweepAxis({ headDim: 8 }, { ...base, policy: 'fraction' }), { axis: 'rank', values: [1, 2, 4, 8] });
    assert.deepEqual(sweepAxis({ headDim: 1 }, base), { axis: 'rank', values: [1] });
  });

  it("sweeps energy thresholds under the energy policy, the plan's own included once", () => {
    assert.deepEqual(sweepAxis({ headDim: 64 }, { ...base, policy: 'energy', energy: 0.95 }), { axis: 'energy', values: [0.8, 0.9, 0.95, 0.99] });
    assert.deepEqual(sweepAxis({ headDim: 64 }, { ...base, policy: 'energy', energy: 0.97 }), { axis: 'energy', values: [0.8, 0.9, 0.95, 0.97, 0.99] });
    assert.deepEqual(sweepAxis({ headDim: 64 }, { ...base, policy: 'energy', energy: 0.5 }).values, [0.5, 0.8, 0.9, 0.95, 0.99]);
  });

  it('carries core points as protocol points and measures the plan against the original', () => {
    const points: SweepPoint[] = [
      { method: 'original', keyCacheBytesPerToken: 1024, perplexity: 4, deltaPercent: 0, seconds: 0.2 },
      { method: 'key-svd', rank: 8, keyCacheBytesPerToken: 128, perplexity: 5, deltaPercent: 25, seconds: 0.1 },
    ];
    const plan = panelPlan({ name: 'm', dir: '/m', architecture: 'mistral', layers: 4, hiddenSize: 256, queryHeads: 4, kvHeads: 2, headDim: 64, rope: true, rotaryDim: 64, ropeTheta: 1e4, dtype: 'BF16', parameters: 0, files: 1, queryToKv: [0, 0, 1, 1], features: [] }, null, { ...base, rank: 16 }, 'qk-svd');
    const planned = { perplexity: 4.2, tokens: 1920, backend: 'cpu', seconds: 0.3 } as EvalResult;
    const r = sweepResult('rank', points, plan, planned, '/t/h.txt', 2);
    assert.deepEqual(r.points[1], { method: 'key-svd', rank: 8, threshold: null, keyCacheBytesPerToken: 128, perplexity: 5, deltaPercent: 25, seconds: 0.1 });
    assert.equal(r.plan.keyCacheBytesPerToken, 4 * 2 * 16 * 2);
    assert.ok(Math.abs(r.plan.deltaPercent - 5) < 1e-12);
    assert.equal(r.planMethod, 'qk-svd');
    assert.equal(r.tokens, 1920);
    assert.throws(() => sweepResult('rank', points.slice(1), plan, planned, '/t/h.txt', 2), /original was not evaluated first/);
  });
});


describe('panel model summary of the 2025–26 families', () => {
  for (const [name, want] of [
    ['layouts2/gpt_oss', ['RoPE yarn', 'sliding 64 on 1 of 2 layers', 'attention sinks', 'MoE 4×top-2']],
    ['layouts2/qwen3', ['q/k-norm', 'RoPE']],
    ['layouts2/olmo2', ['q/k-norm (whole projection)']],
    ['layouts2/smollm3', ['NoPE on 1 of 2 layers']],
    ['layouts2/gemma2', ['score softcap 50', 'logit softcap 30']],
    ['mistral-bytes', ['RoPE']],
  ] as const) {
    it(`${name}: features ${want.join(' · ')}`, async () => {
      const c = await openCheckpoint(fixture(name));
      try {
        const s = checkpointSummary(c.dir, buildLayout(c), c.files.length);
        for (const w of want) assert.ok(s.features.includes(w), `${name}: ${s.features.join(' · ')} lacks ${w}`);
      } finally {
        await c.close();
      }
    });
  }
});
