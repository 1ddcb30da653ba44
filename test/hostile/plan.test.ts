/**
 * Plan files are shared between people, so `validatePlan` sees untrusted JSON: fuzz it with
 * mutated valid plans and arbitrary values. Only FactoredKeysError may escape, and an accepted
 * plan must have exactly the model's shape with ranks in 1..head_dim.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FactoredKeysError } from '../../src/core/errors';
import { validatePlan } from '../../src/core/plan/plan';
import type { PlanModel } from '../../src/core/plan/types';
import { mutateJson } from './mutateJson';

const MODEL: PlanModel = { architecture: 'llama', layers: 2, kv_heads: 2, head_dim: 16, key_bytes_per_value: 4 };
const VALID = {
  format: 'factored-keys-plan',
  version: 1,
  method: 'key-svd',
  policy: { kind: 'uniform', rank: 8 },
  model: { ...MODEL },
  ranks: [
    [8, 8],
    [8, 8],
  ],
  overrides: [{ layer: 1, kv_head: 0, rank: 8 }],
};

/** The valid plan with one value somewhere replaced or removed, or a key added. */
const mutatedPlan = fc
  .record({
    path: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }),
    action: fc.constantFrom('replace', 'delete', 'add'),
    key: fc.oneof(fc.constantFrom('__proto__', 'constructor', 'kind', 'rank', 'layer'), fc.string({ maxLength: 6 })),
    value: fc.oneof(
      fc.anything({ maxDepth: 2 }),
      fc.constantFrom(0, -1, 1, 8, 16, 17, 0.5, 2 ** 53, NaN, Infinity, '8', null, [], {}, [[8, 8]], 'uniform', 'budget', 'manual', 'qk-svd'),
    ),
  })
  .map(({ path, action, key, value }) => mutateJson(VALID as Record<string, unknown>, { path, action, key, value }));

test('plan files, fuzzed: validatePlan throws only FactoredKeysError and accepts only well-shaped plans', (t) => {
  assert.doesNotThrow(() => validatePlan(structuredClone(VALID), 'plan.json', MODEL));
  let accepted = 0;
  let refused = 0;
  fc.assert(
    fc.property(fc.oneof({ arbitrary: mutatedPlan, weight: 4 }, { arbitrary: fc.anything({ maxDepth: 3 }), weight: 1 }), (value) => {
      // as an in-process API value (sparse arrays, NaN, -0 ...) and as a plan file holds it (JSON)
      const inputs: unknown[] = [value];
      try {
        inputs.push(JSON.parse(JSON.stringify(value) ?? 'null'));
      } catch {
        // not representable as JSON (e.g. BigInt): the in-process check is enough
      }
      for (const raw of inputs) {
        let plan;
        try {
          plan = validatePlan(raw, 'plan.json', MODEL);
        } catch (e) {
          if (!(e instanceof FactoredKeysError)) throw new Error(`${(e as Error).name}: ${(e as Error).message}`);
          assert.ok(e.message.startsWith('plan.json') && e.message.length < 2000, e.message.slice(0, 300));
          refused++;
          continue;
        }
        accepted++;
        assert.equal(plan.ranks.length, MODEL.layers);
        for (let l = 0; l < MODEL.layers; l++) {
          assert.equal(plan.ranks[l]?.length, MODEL.kv_heads);
          for (let g = 0; g < MODEL.kv_heads; g++) {
            const r = plan.ranks[l][g];
            assert.ok(Number.isInteger(r) && r >= 1 && r <= MODEL.head_dim, `rank ${r}`);
          }
        }
        for (const o of plan.overrides) {
          assert.ok(o !== null && typeof o === 'object', `override ${String(o)}`);
          assert.ok(Number.isInteger(o.layer) && o.layer >= 0 && o.layer < MODEL.layers && Number.isInteger(o.rank), JSON.stringify(o));
        }
      }
    }),
    { numRuns: 5000, seed: Number(process.env.FK_FUZZ_SEED ?? 7) },
  );
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  t.diagnostic(`plan fuzz: ${accepted + refused} plan inputs (5000 values, in-process and through JSON), ${refused} refused with FactoredKeysError, ${accepted} accepted (shape and ranks checked)`);
});
