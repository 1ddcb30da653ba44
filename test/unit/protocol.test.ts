/** Validation of every message the webview can send, and typed-array revival. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { asFloat32, normalizeSpectra, normalizeSweep, parsePlanControls, parseWebviewMessage, ProtocolError } from '../../src/protocol';

const plan = { policy: 'uniform', rank: 8, fraction: 0.25, energy: 0.95, budget: 0.25, overrides: [] };
const savings = { context: 128000, batch: 1, dtype: 'bf16' };

function rejects(raw: unknown, pattern: RegExp, id?: number): void {
  assert.throws(
    () => parseWebviewMessage(raw),
    (e: unknown) => e instanceof ProtocolError && pattern.test(e.message) && e.id === id,
  );
}

describe('parseWebviewMessage', () => {
  it('accepts every well-formed message', () => {
    assert.deepEqual(parseWebviewMessage({ type: 'ready' }), { type: 'ready' });
    for (const type of ['analyze', 'selectBackend', 'cancel']) assert.deepEqual(parseWebviewMessage({ type, id: 3 }), { type, id: 3 });
    assert.deepEqual(parseWebviewMessage({ type: 'plan', id: 1, plan, savings }), { type: 'plan', id: 1, plan, savings });
    const withOverride = { ...plan, overrides: [{ layer: 1, head: 0, rank: 4 }] };
    assert.deepEqual(parseWebviewMessage({ type: 'export', id: 2, plan: withOverride }), { type: 'export', id: 2, plan: withOverride });
    assert.deepEqual(parseWebviewMessage({ type: 'evaluate', id: 9, plan }), { type: 'evaluate', id: 9, plan });
    assert.deepEqual(parseWebviewMessage({ type: 'sweep', id: 10, plan }), { type: 'sweep', id: 10, plan });
  });

  it('validates sweep requests like evaluate: a plan and nothing else', () => {
    rejects({ type: 'sweep', id: 11 }, /plan must be an object/, 11);
    rejects({ type: 'sweep', id: 11, plan: { ...plan, energy: 0 } }, /plan.energy/, 11);
    // The webview chooses neither the text nor the ranks: the host derives both.
    rejects({ type: 'sweep', id: 11, plan, textFile: '/etc/passwd' }, /unexpected field "textFile"/, 11);
    rejects({ type: 'sweep', id: 11, plan, ranks: [1, 2] }, /unexpected field "ranks"/, 11);
  });

  it('rejects unknown types, bad ids and extra fields', () => {
    rejects(null, /must be an object/);
    rejects([], /must be an object/);
    rejects({ type: 'writeFile', id: 1 }, /unknown message type/);
    rejects({ type: 'analyze' }, /analyze.id must be an integer/);
    rejects({ type: 'analyze', id: 0 }, /analyze.id/);
    rejects({ type: 'analyze', id: 1.5 }, /analyze.id/);
    rejects({ type: 'analyze', id: '1' }, /analyze.id/);
    rejects({ type: 'ready', extra: 1 }, /unexpected field "extra"/);
    rejects({ type: 'analyze', id: 4, path: '/etc' }, /unexpected field "path"/, 4);
    // The webview never supplies a destination: an export with a path is refused.
    rejects({ type: 'export', id: 5, plan, dest: '/tmp/x' }, /unexpected field "dest"/, 5);
  });

  it('rejects malformed plans and savings with the request id', () => {
    rejects({ type: 'plan', id: 7, plan: { ...plan, policy: 'greedy' }, savings }, /plan.policy must be one of/, 7);
    rejects({ type: 'plan', id: 7, plan: { ...plan, rank: 0 }, savings }, /plan.rank/, 7);
    rejects({ type: 'plan', id: 7, plan: { ...plan, rank: Number.NaN }, savings }, /plan.rank/, 7);
    rejects({ type: 'plan', id: 7, plan: { ...plan, energy: 1.5 }, savings }, /plan.energy/, 7);
    rejects({ type: 'plan', id: 7, plan: { ...plan, fraction: Infinity }, savings }, /plan.fraction/, 7);
    rejects({ type: 'plan', id: 7, plan: { ...plan, overrides: {} }, savings }, /plan.overrides must be an array/, 7);
    rejects({ type: 'plan', id: 7, plan: { ...plan, overrides: [{ layer: -1, head: 0, rank: 2 }] }, savings }, /overrides\[0\].layer/, 7);
    rejects({ type: 'plan', id: 7, plan: { ...plan, overrides: [{ layer: 0, head: 0, rank: 2, x: 1 }] }, savings }, /unexpected field "x"/, 7);
    rejects({ type: 'plan', id: 7, plan: { ...plan, overrides: [{ layer: 0, head: 0, rank: 2 }, { layer: 0, head: 0, rank: 3 }] }, savings }, /repeats layer 0 head 0/, 7);
    rejects({ type: 'plan', id: 7, plan, savings: { ...savings, dtype: 'int4' } }, /savings.dtype/, 7);
    rejects({ type: 'plan', id: 7, plan, savings: { ...savings, context: 0 } }, /savings.context/, 7);
    rejects({ type: 'plan', id: 7, plan, savings: { ...savings, batch: 2 ** 40 } }, /savings.batch/, 7);
    rejects({ type: 'plan', id: 7, plan }, /savings must be an object/, 7);
  });

  it('bounds the size of override lists', () => {
    const many = Array.from({ length: 70000 }, (_, i) => ({ layer: i % 1000, head: Math.floor(i / 1000), rank: 1 }));
    assert.throws(() => parsePlanControls({ ...plan, overrides: many }), /at most 65536/);
  });
});

describe('typed arrays across the boundary', () => {
  it('revives plain arrays and index-keyed objects, and checks lengths', () => {
    assert.deepEqual(asFloat32([1, 2, 3], 3, 'x'), Float32Array.from([1, 2, 3]));
    assert.deepEqual(asFloat32({ 0: 1, 1: 2 }, 2, 'x'), Float32Array.from([1, 2]));
    const same = new Float32Array([4]);
    assert.equal(asFloat32(same, 1, 'x'), same);
    assert.throws(() => asFloat32([1, 2], 3, 'x'), /x has 2 values, expected 3/);
    assert.throws(() => asFloat32('nope', 1, 'x'), /not a numeric array/);
  });

  it('normalizes a spectra payload and rejects a truncated one', () => {
    const rows = { k: 2 * 1, q: 2 * 2 };
    const w = 3;
    const payload = {
      backend: 'cpu',
      seconds: 0.1,
      layers: 2,
      kvHeads: 1,
      queryHeads: 2,
      width: w,
      keySingular: Array(rows.k * w).fill(1),
      keyEnergy: Array(rows.k * w).fill(1),
      keyEffRank: Array(rows.k * 3).fill(1),
      keyStableRank: Array(rows.k).fill(1),
      querySingular: Array(rows.q * w).fill(1),
      queryEnergy: Array(rows.q * w).fill(1),
      queryEffRank: Array(rows.q * 3).fill(1),
      queryStableRank: Array(rows.q).fill(1),
      planMethod: 'qk-svd',
      planEnergy: Array(rows.k * w).fill(1),
    };
    const s = normalizeSpectra(payload);
    assert.ok(s.keySingular instanceof Float32Array && s.queryEffRank instanceof Uint32Array);
    assert.equal(s.querySingular.length, 12);
    assert.equal(s.planMethod, 'qk-svd');
    assert.equal(s.planEnergy.length, 6);
    assert.throws(() => normalizeSpectra({ ...payload, querySingular: Array(5).fill(1) }), /querySingular has 5 values, expected 12/);
  });
});

describe('sweep results across the boundary', () => {
  const point = (method: string, rank: number | null, bytes: number, perplexity: number) => ({ method, rank, threshold: null, keyCacheBytesPerToken: bytes, perplexity, deltaPercent: (perplexity / 4 - 1) * 100, seconds: 0.1 });
  const sweep = {
    axis: 'rank',
    points: [point('original', null, 1024, 4), point('key-svd', 8, 128, 6), point('qk-svd', 8, 128, 5)],
    plan: point('plan', null, 128, 6),
    planMethod: 'key-svd',
    tokens: 1920,
    textFile: '/t/held.txt',
    backend: 'cpu',
    seconds: 1.5,
  };

  it('accepts a well-formed sweep and fills absent rank/threshold with null', () => {
    assert.deepEqual(normalizeSweep(sweep), sweep);
    const { threshold: _t, ...noThreshold } = sweep.points[1];
    assert.equal(normalizeSweep({ ...sweep, points: [sweep.points[0], noThreshold] }).points[1].threshold, null);
  });

  it('rejects sweeps that are out of order, of an unknown method, or missing their axis', () => {
    assert.throws(() => normalizeSweep({ ...sweep, axis: 'budget' }), /sweep.axis must be one of rank, energy/);
    assert.throws(() => normalizeSweep({ ...sweep, points: [] }), /non-empty array/);
    assert.throws(() => normalizeSweep({ ...sweep, points: [sweep.points[1], sweep.points[0]] }), /original first/);
    assert.throws(() => normalizeSweep({ ...sweep, points: [sweep.points[0], point('svd', 8, 128, 5)] }), /points\[1\].method must be one of/);
    assert.throws(() => normalizeSweep({ ...sweep, points: [sweep.points[0], point('qk-svd', null, 128, 5)] }), /points\[1\] has no rank/);
    assert.throws(() => normalizeSweep({ ...sweep, axis: 'energy' }), /points\[1\] has no threshold/);
    assert.throws(() => normalizeSweep({ ...sweep, points: [sweep.points[0], { ...sweep.points[1], perplexity: Number.NaN }] }), /points\[1\].perplexity/);
    assert.throws(() => normalizeSweep({ ...sweep, plan: sweep.points[1] }), /sweep.plan.method must be "plan"/);
    assert.throws(() => normalizeSweep({ ...sweep, planMethod: 'original' }), /sweep.planMethod/);
  });
});
