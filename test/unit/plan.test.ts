import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildPlan, planKeyBytesPerToken, rankForEnergy, retainedEnergy, validatePlan } from '../../src/core/plan/plan';
import type { HeadEnergies, PlanModel } from '../../src/core/plan/types';

const model: PlanModel = { architecture: 'test', layers: 2, kv_heads: 2, head_dim: 4, key_bytes_per_value: 2 };
// Descending energies per head; head (1,1) is nearly rank 1.
const energies: HeadEnergies = [
  [[4, 3, 2, 1], [8, 4, 2, 1]],
  [[1, 1, 1, 1], [100, 0.01, 0.01, 0]],
];

test('uniform and fraction policies', () => {
  assert.deepEqual(buildPlan({ method: 'key-svd', policy: { kind: 'uniform', rank: 3 }, model }).ranks, [[3, 3], [3, 3]]);
  assert.deepEqual(buildPlan({ method: 'key-svd', policy: { kind: 'fraction', fraction: 0.25 }, model }).ranks, [[1, 1], [1, 1]]);
  const p = buildPlan({ method: 'qk-svd', policy: { kind: 'fraction', fraction: 0.5 }, model, energies });
  assert.deepEqual(p.ranks, [[2, 2], [2, 2]]);
  assert.equal(p.retained_energy![0][0], 0.7);
  assert.equal(planKeyBytesPerToken(p), 4 * 2 * 2); // 4 heads x rank 2 x 2 bytes
});

test('energy threshold picks the smallest rank reaching it', () => {
  assert.equal(rankForEnergy([4, 3, 2, 1], 0.7, 4), 2);
  assert.equal(rankForEnergy([4, 3, 2, 1], 0.71, 4), 3);
  assert.equal(rankForEnergy([4, 3, 2, 1], 1, 4), 4);
  assert.equal(rankForEnergy([0, 0], 0.9, 2), 1);
  const p = buildPlan({ method: 'key-svd', policy: { kind: 'energy', threshold: 0.9 }, model, energies });
  assert.deepEqual(p.ranks, [[3, 3], [4, 1]]);
  for (const [l, row] of p.ranks.entries()) for (const [g, r] of row.entries()) assert.ok(retainedEnergy(energies[l][g], r) >= 0.9);
});

/** Brute force: best summed retained fraction over all rank assignments within the budget. */
function bruteForce(e: HeadEnergies, m: PlanModel, budgetDims: number): number {
  const heads = e.flat();
  let best = -1;
  const rec = (i: number, used: number, acc: number) => {
    if (used > budgetDims) return;
    if (i === heads.length) {
      best = Math.max(best, acc);
      return;
    }
    for (let r = 1; r <= m.head_dim; r++) rec(i + 1, used + r, acc + retainedEnergy(heads[i], r));
  };
  rec(0, 0, 0);
  return best;
}

test('budget policy matches brute force and respects the budget', () => {
  for (let dims = 4; dims <= 16; dims++) {
    const p = buildPlan({ method: 'key-svd', policy: { kind: 'budget', key_bytes_per_token: dims * 2 }, model, energies });
    assert.ok(planKeyBytesPerToken(p) <= dims * 2, `budget ${dims}`);
    const got = p.ranks.flatMap((row, l) => row.map((r, g) => retainedEnergy(energies[l][g], r))).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(got - bruteForce(energies, model, dims)) < 1e-12, `budget ${dims} dims: ${got}`);
  }
  assert.throws(() => buildPlan({ method: 'key-svd', policy: { kind: 'budget', key_bytes_per_token: 7 }, model, energies }), /below the minimum of 8/);
});

test('overrides win over the policy and count against the budget', () => {
  const p = buildPlan({ method: 'key-svd', policy: { kind: 'uniform', rank: 2 }, model, overrides: [{ layer: 1, kv_head: 0, rank: 4 }] });
  assert.deepEqual(p.ranks, [[2, 2], [4, 2]]);
  const b = buildPlan({ method: 'key-svd', policy: { kind: 'budget', key_bytes_per_token: 20 }, model, energies, overrides: [{ layer: 1, kv_head: 0, rank: 4 }] });
  assert.equal(b.ranks[1][0], 4);
  assert.ok(planKeyBytesPerToken(b) <= 20);
});

test('plans survive a JSON round trip and validation', () => {
  const p = buildPlan({ method: 'qk-svd', policy: { kind: 'energy', threshold: 0.8 }, model, energies, overrides: [{ layer: 0, kv_head: 1, rank: 4 }] });
  const back = validatePlan(JSON.parse(JSON.stringify(p)), 'plan.json', model);
  assert.deepEqual(back.ranks, p.ranks);
  assert.equal(back.method, 'qk-svd');
});

test('bad plans give one-line errors naming the file', () => {
  const good = JSON.parse(JSON.stringify(buildPlan({ method: 'key-svd', policy: { kind: 'uniform', rank: 2 }, model })));
  const bad = (patch: Record<string, unknown>) => ({ ...good, ...patch });
  assert.throws(() => validatePlan([], 'p.json'), /p\.json: plan is not a JSON object/);
  assert.throws(() => validatePlan(bad({ format: 'x' }), 'p.json'), /"format" must be/);
  assert.throws(() => validatePlan(bad({ version: 2 }), 'p.json'), /version 2 is not supported/);
  assert.throws(() => validatePlan(bad({ method: 'pca' }), 'p.json'), /"method" must be one of key-svd, qk-svd, calibrated/);
  assert.throws(() => validatePlan(bad({ ranks: [[2, 2]] }), 'p.json'), /ranks must be an array of 2 layers/);
  assert.throws(() => validatePlan(bad({ ranks: [[2, 2], [2, 5]] }), 'p.json'), /ranks\[1\]\[1\] must be an integer from 1 to head_dim 4, got 5/);
  assert.throws(() => validatePlan(bad({ ranks: [[2, 2], [2, 1.5]] }), 'p.json'), /ranks\[1\]\[1\]/);
  assert.throws(() => validatePlan(bad({ overrides: [{ layer: 0, kv_head: 0, rank: 3 }] }), 'p.json'), /ranks\[0\]\[0\] is 2 but an override sets 3/);
  assert.throws(() => validatePlan(bad({ overrides: [{ layer: 9, kv_head: 0, rank: 3 }] }), 'p.json'), /overrides\[0\]\.layer must be 0\.\.1/);
  assert.throws(() => validatePlan(bad({ policy: { kind: 'magic' } }), 'p.json'), /unknown policy kind "magic"/);
  assert.throws(() => validatePlan(good, 'p.json', { ...model, head_dim: 8 }), /plan is for head_dim = 4 but the checkpoint has 8/);
  assert.throws(() => buildPlan({ method: 'key-svd', policy: { kind: 'energy', threshold: 0.9 }, model }), /needs per-head spectra/);
  assert.throws(() => buildPlan({ method: 'key-svd', policy: { kind: 'uniform', rank: 0 }, model }), /rank must be an integer from 1/);
  assert.throws(() => buildPlan({ method: 'key-svd', policy: { kind: 'fraction', fraction: 1.5 }, model }), /fraction must be in \(0, 1\]/);
});

test('key energies from analyzeSpectra-shaped heads are squared singular values', async () => {
  const { keyEnergiesFromSpectra } = await import('../../src/core/plan/plan');
  const e = keyEnergiesFromSpectra(
    [
      { layer: 0, kind: 'key', head: 1, singularValues: [3, 2, 1, 0] },
      { layer: 0, kind: 'query', head: 0, singularValues: [9, 9, 9, 9] },
      { layer: 1, kind: 'key', head: 0, singularValues: [] },
    ],
    2,
    2,
    4,
  );
  assert.deepEqual(e[0][1], [9, 4, 1, 0]);
  assert.deepEqual(e[0][0], [0, 0, 0, 0]);
  assert.equal(buildPlan({ method: 'key-svd', policy: { kind: 'energy', threshold: 0.9 }, model, energies: e }).ranks[0][1], 2);
});
