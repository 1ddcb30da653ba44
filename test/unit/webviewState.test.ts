/** The inspection panel's state logic (webview/state.ts), without a browser. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CheckpointSummary, HostMessage, PanelDefaults, PlanResult, SpectraPayload, SweepPointView, SweepResult } from '../../src/protocol';
import { canExport, formatBytes, heatmapValues, initialState, reduce, sanitizePlan, selectedRank, selectedSpectra, sweepChart, sweepRows, sweepSetting, withOverride, type Action, type PanelState } from '../../webview/state';

// A 2-layer GQA model: 4 query heads share 2 KV heads (0,0,1,1), head_dim 4.
const summary: CheckpointSummary = {
  name: 'tiny',
  dir: '/x/tiny',
  architecture: 'mistral',
  layers: 2,
  hiddenSize: 16,
  queryHeads: 4,
  kvHeads: 2,
  headDim: 4,
  rope: true,
  rotaryDim: 4,
  ropeTheta: 10000,
  dtype: 'BF16',
  parameters: 1000,
  files: 1,
  queryToKv: [0, 0, 1, 1],
  features: [],
};
const defaults: PanelDefaults = { backend: 'cpu', plan: { policy: 'energy', rank: 2, fraction: 0.5, energy: 0.9, budget: 0.5, overrides: [] }, savings: { context: 1000, batch: 2, dtype: 'f16' } };
const init: HostMessage = { type: 'init', version: 1, summary, defaults, trusted: true, evaluateAvailable: false, reference: { label: 'ref', baselineBytes: 2, factoredBytes: 1, capacityMultiplier: 2 } };

function spectra(): SpectraPayload {
  const w = 4;
  // Row r of a kind has singular values r+4, r+3, ... so each head is distinguishable.
  const rows = (n: number) => Float32Array.from({ length: n * w }, (_, i) => Math.floor(i / w) + w - (i % w));
  const eff = (n: number) => Uint32Array.from({ length: n * 3 }, (_, i) => Math.floor(i / 3) + 1 + (i % 3));
  return {
    backend: 'cpu',
    seconds: 0.01,
    layers: 2,
    kvHeads: 2,
    queryHeads: 4,
    width: w,
    keySingular: rows(4),
    keyEnergy: Float32Array.from({ length: 16 }, (_, i) => ((i % 4) + 1) / 4),
    keyEffRank: eff(4),
    keyStableRank: new Float32Array(4).fill(1.5),
    querySingular: rows(8),
    queryEnergy: Float32Array.from({ length: 32 }, (_, i) => ((i % 4) + 1) / 4),
    queryEffRank: eff(8),
    queryStableRank: new Float32Array(8).fill(2),
    planMethod: 'key-svd',
    planEnergy: rows(4).map((x) => x * x),
  };
}

const run = (actions: Action[], from: PanelState = initialState()) => actions.reduce(reduce, from);
const ready = () => run([{ kind: 'host', message: init }, { kind: 'host', message: { type: 'spectra', spectra: spectra() } }]);

describe('panel state', () => {
  it('takes the settings from init and asks for a plan', () => {
    const s = run([{ kind: 'host', message: init }]);
    assert.equal(s.summary, summary);
    assert.deepEqual(s.plan, defaults.plan);
    assert.deepEqual(s.savings, defaults.savings);
    assert.equal(s.planPending, true);
    assert.equal(s.backend, 'cpu');
  });

  it('marks the plan pending on every control change and clears it on a result', () => {
    let s = ready();
    const result: PlanResult = { ranks: Uint32Array.from([1, 2, 3, 4]), savings: {} as PlanResult['savings'], meanRetainedEnergy: 0.9 };
    s = reduce(s, { kind: 'planResult', result });
    assert.equal(s.planPending, false);
    for (const a of [
      { kind: 'policy', policy: 'uniform' },
      { kind: 'param', field: 'rank', value: 3 },
      { kind: 'savings', field: 'context', value: '2048' },
      { kind: 'savings', field: 'dtype', value: 'fp8' },
      { kind: 'override', layer: 1, head: 1, rank: 2 },
    ] as Action[]) {
      const next = reduce(s, a);
      assert.equal(next.planPending, true, a.kind);
    }
    // Nonsense input leaves the state untouched.
    assert.equal(reduce(s, { kind: 'savings', field: 'dtype', value: 'int3' }), s);
    assert.equal(reduce(s, { kind: 'savings', field: 'batch', value: 'abc' }), s);
    assert.equal(reduce(s, { kind: 'param', field: 'rank', value: Number.NaN }), s);
  });

  it('clamps ranks to head_dim and drops overrides outside the model', () => {
    const s = ready();
    assert.equal(reduce(s, { kind: 'param', field: 'rank', value: 99 }).plan.rank, 4);
    assert.equal(reduce(s, { kind: 'param', field: 'energy', value: 7 }).plan.energy, 1);
    assert.equal(reduce(s, { kind: 'override', layer: 0, head: 1, rank: 50 }).plan.overrides[0].rank, 4);
    const cleaned = sanitizePlan({ ...s.plan, overrides: [{ layer: 5, head: 0, rank: 1 }, { layer: 1, head: 1, rank: 2 }] }, summary);
    assert.deepEqual(cleaned.overrides, [{ layer: 1, head: 1, rank: 2 }]);
  });

  it('keeps one override per head in a stable order, and removes it on unpin', () => {
    let o = withOverride([], 1, 0, 3);
    o = withOverride(o, 0, 1, 2);
    o = withOverride(o, 1, 0, 4);
    assert.deepEqual(o, [
      { layer: 0, head: 1, rank: 2 },
      { layer: 1, head: 0, rank: 4 },
    ]);
    assert.deepEqual(withOverride(o, 0, 1, null), [{ layer: 1, head: 0, rank: 4 }]);
  });

  it('shows effective ranks per head, or the chosen rank shared by each KV group', () => {
    let s = ready();
    // Key rows are (l*2+g); p95 is the middle of each triple: row + 2.
    assert.deepEqual(Array.from(heatmapValues(s, 'key')!), [2, 3, 4, 5]);
    s = reduce(s, { kind: 'level', level: 'p99' });
    assert.deepEqual(Array.from(heatmapValues(s, 'query')!), [3, 4, 5, 6, 7, 8, 9, 10]);
    s = reduce(s, { kind: 'heatmapMode', mode: 'chosen' });
    assert.equal(heatmapValues(s, 'key'), null, 'no plan result yet');
    s = reduce(s, { kind: 'planResult', result: { ranks: Uint32Array.from([1, 2, 3, 4]), savings: {} as PlanResult['savings'], meanRetainedEnergy: null } });
    assert.deepEqual(Array.from(heatmapValues(s, 'key')!), [1, 2, 3, 4]);
    // Query heads 0,1 use KV 0; 2,3 use KV 1.
    assert.deepEqual(Array.from(heatmapValues(s, 'query')!), [1, 1, 2, 2, 3, 3, 4, 4]);
  });

  it('plots the selected KV head against the query heads that share it', () => {
    let s = ready();
    s = reduce(s, { kind: 'select', layer: 1, kvHead: 1, queryHead: 3 });
    const series = selectedSpectra(s);
    assert.deepEqual(series.map((x) => x.label), ['key L1 KV1', 'query L1 Q2', 'query L1 Q3']);
    // Key row 3 has singular values 7,6,5,4 -> normalized by the first.
    assert.deepEqual(Array.from(series[0].normalized), [1, 6 / 7, 5 / 7, 4 / 7].map(Math.fround));
    // Selecting outside the model is ignored.
    assert.equal(reduce(s, { kind: 'select', layer: 2, kvHead: 0, queryHead: null }), s);
  });

  it('reports the selected rank, pinned or from the policy', () => {
    let s = ready();
    s = reduce(s, { kind: 'planResult', result: { ranks: Uint32Array.from([1, 2, 3, 4]), savings: {} as PlanResult['savings'], meanRetainedEnergy: null } });
    s = reduce(s, { kind: 'select', layer: 1, kvHead: 0, queryHead: null });
    assert.deepEqual(selectedRank(s), { rank: 3, pinned: false });
    s = reduce(s, { kind: 'override', layer: 1, head: 0, rank: 2 });
    assert.deepEqual(selectedRank(s), { rank: 2, pinned: true });
  });

  it('allows export only when trusted, idle and planned', () => {
    let s = ready();
    assert.equal(canExport(s), false);
    s = reduce(s, { kind: 'planResult', result: { ranks: new Uint32Array(4), savings: {} as PlanResult['savings'], meanRetainedEnergy: null } });
    assert.equal(canExport(s), true);
    assert.equal(canExport(reduce(s, { kind: 'host', message: { type: 'busy', task: 'analyze' } })), false);
    assert.equal(canExport({ ...s, trusted: false }), false);
  });

  it('formats bytes in SI units like the paper', () => {
    assert.equal(formatBytes(25_165_824_000), '25.2 GB');
    assert.equal(formatBytes(262_144_000), '262 MB');
    assert.equal(formatBytes(1024), '1.02 kB');
    assert.equal(formatBytes(128), '128 B');
  });

  it('keeps the last sweep and marks its plan point stale when the plan changes', () => {
    let s = ready();
    const result = (ranks: number[]): PlanResult => ({ ranks: Uint32Array.from(ranks), savings: {} as PlanResult['savings'], meanRetainedEnergy: null });
    s = reduce(s, { kind: 'planResult', result: result([2, 2, 2, 2]) });
    s = reduce(s, { kind: 'host', message: { type: 'busy', task: 'sweep', label: 'qk-svd rank 2 (3/8)' } });
    assert.equal(s.busy?.task, 'sweep');
    assert.equal(canExport(s), false);
    s = reduce(s, { kind: 'sweep', result: rankSweep });
    assert.equal(s.sweep?.stale, false);
    assert.equal(reduce(s, { kind: 'planResult', result: result([2, 2, 2, 2]) }).sweep?.stale, false, 'same ranks: still the plan');
    assert.equal(reduce(s, { kind: 'planResult', result: result([2, 1, 2, 2]) }).sweep?.stale, true);
  });

  it('charts a rank sweep: both methods share each rank\'s x, the original spans every x, the plan is one point', () => {
    const chart = sweepChart(rankSweep);
    assert.deepEqual(chart.xs, [16, 32, 64]);
    assert.deepEqual(chart.series.map((x) => [x.kind, x.label]), [['key-svd', 'key-svd'], ['qk-svd', 'qk-svd'], ['original', 'original (4.000)'], ['plan', 'plan (qk-svd)']]);
    assert.deepEqual(chart.series.map((x) => x.ys), [[9, 6, 4.5], [7, 5, 4.25], [4, 4, 4], [null, 5, null]]);
    assert.equal(sweepChart({ ...rankSweep, stale: true }).series[3].label, 'earlier plan (qk-svd)');
  });

  it('charts an energy sweep: per-method points at their own key-cache sizes, gaps elsewhere', () => {
    const t = (method: 'key-svd' | 'qk-svd', threshold: number, bytes: number, ppl: number): SweepPointView => ({ method, rank: null, threshold, keyCacheBytesPerToken: bytes, perplexity: ppl, deltaPercent: 0, seconds: 0 });
    const sweep: SweepResult = { ...rankSweep, axis: 'energy', points: [rankSweep.points[0], t('key-svd', 0.9, 20, 6), t('key-svd', 0.99, 40, 4.5), t('key-svd', 0.999, 40, 4.5), t('qk-svd', 0.9, 24, 5)], plan: { ...rankSweep.plan, keyCacheBytesPerToken: 30 } };
    const chart = sweepChart(sweep);
    assert.deepEqual(chart.xs, [20, 24, 30, 40, 64]);
    assert.deepEqual(chart.series[0].ys, [6, null, null, 4.5, null]);
    assert.deepEqual(chart.series[1].ys, [null, 5, null, null, null]);
    assert.deepEqual(chart.series[3].ys, [null, null, 5, null, null]);
    assert.deepEqual(sweepRows(sweep).map(sweepSetting), ['full', '90% energy', '99% energy', '99.9% energy', '90% energy', '']);
  });

  it('lists the table rows: original, key-svd then qk-svd by growing cache, then the plan', () => {
    assert.deepEqual(sweepRows(rankSweep).map((p) => `${p.method}:${p.rank ?? '-'}`), ['original:-', 'key-svd:1', 'key-svd:2', 'key-svd:4', 'qk-svd:1', 'qk-svd:2', 'qk-svd:4', 'plan:-']);
  });
});

/** A rank sweep on the 2-layer model above (bytes = 2 layers × 2 KV heads × rank × 4 B), in evaluation order. */
const rankSweep: SweepResult = (() => {
  const p = (method: SweepPointView['method'], rank: number | null, bytes: number, ppl: number): SweepPointView => ({ method, rank, threshold: null, keyCacheBytesPerToken: bytes, perplexity: ppl, deltaPercent: (ppl / 4 - 1) * 100, seconds: 0.1 });
  return {
    axis: 'rank',
    points: [p('original', null, 64, 4), p('key-svd', 4, 64, 4.5), p('key-svd', 1, 16, 9), p('key-svd', 2, 32, 6), p('qk-svd', 1, 16, 7), p('qk-svd', 2, 32, 5), p('qk-svd', 4, 64, 4.25)],
    plan: p('plan', null, 32, 5),
    planMethod: 'qk-svd',
    tokens: 100,
    textFile: '/t/x.txt',
    backend: 'cpu',
    seconds: 1,
  };
})();
