/** The panel's sweep with the calibrated curve next to key-svd and qk-svd (webview/state.ts, src/protocol.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { normalizeSpectra, normalizeSweep, type SweepPointView, type SweepResult } from '../../src/protocol';
import { sweepChart, sweepRows } from '../../webview/state';

const p = (method: SweepPointView['method'], rank: number | null, bytes: number, ppl: number): SweepPointView => ({ method, rank, threshold: null, keyCacheBytesPerToken: bytes, perplexity: ppl, deltaPercent: (ppl / 4 - 1) * 100, seconds: 0.1 });
const sweep: SweepResult = {
  axis: 'rank',
  points: [p('original', null, 64, 4), p('key-svd', 1, 16, 9), p('key-svd', 2, 32, 6), p('qk-svd', 1, 16, 7), p('qk-svd', 2, 32, 5), p('calibrated', 2, 32, 4.5), p('calibrated', 1, 16, 5.5)],
  plan: p('plan', null, 32, 4.5),
  planMethod: 'calibrated',
  tokens: 100,
  textFile: '/t/x.txt',
  backend: 'cpu',
  seconds: 1,
};

test('sweep chart: the calibrated curve joins key-svd and qk-svd; rows list it after them', () => {
  const chart = sweepChart(sweep);
  assert.deepEqual(chart.series.map((s) => s.kind), ['key-svd', 'qk-svd', 'calibrated', 'original', 'plan']);
  assert.deepEqual(chart.series[2].ys, [5.5, 4.5, null]);
  assert.equal(chart.series[4].label, 'plan (calibrated)');
  assert.deepEqual(sweepRows(sweep).map((r) => `${r.method}:${r.rank ?? '-'}`), ['original:-', 'key-svd:1', 'key-svd:2', 'qk-svd:1', 'qk-svd:2', 'calibrated:1', 'calibrated:2', 'plan:-']);
});

test('protocol: a sweep with calibrated points and a calibrated plan survives normalisation', () => {
  const back = normalizeSweep(JSON.parse(JSON.stringify(sweep)));
  assert.equal(back.planMethod, 'calibrated');
  assert.equal(back.points.filter((x) => x.method === 'calibrated').length, 2);
});

test('protocol: spectra computed for calibrated keep planMethod calibrated', () => {
  const w = 3;
  const k = 2;
  const q = 4;
  const payload = {
    ...{ backend: 'cpu', seconds: 0.1, layers: 2, kvHeads: 1, queryHeads: 2, width: w },
    ...{ keySingular: Array(k * w).fill(1), keyEnergy: Array(k * w).fill(1), keyEffRank: Array(k * 3).fill(1), keyStableRank: Array(k).fill(1) },
    ...{ querySingular: Array(q * w).fill(1), queryEnergy: Array(q * w).fill(1), queryEffRank: Array(q * 3).fill(1), queryStableRank: Array(q).fill(1) },
    planMethod: 'calibrated',
    planEnergy: Array(k * w).fill(1),
  };
  assert.equal(normalizeSpectra(payload).planMethod, 'calibrated');
});
