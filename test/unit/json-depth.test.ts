import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jsonTooDeep, MAX_JSON_DEPTH } from '../../src/core/checkpoint/jsonDepth';

test('jsonTooDeep: real configs pass; runaway nesting is found under its key, fast', () => {
  assert.equal(jsonTooDeep(JSON.stringify({ a: [1, { b: [[2]] }], rope_scaling: { type: 'yarn', factor: 4 } })), undefined);
  // brackets inside strings (escaped quotes too) are not nesting
  assert.equal(jsonTooDeep(JSON.stringify({ s: '['.repeat(10_000), t: 'x\\"[[[' })), undefined);
  assert.equal(jsonTooDeep(`{"a":${'['.repeat(MAX_JSON_DEPTH - 1)}${']'.repeat(MAX_JSON_DEPTH - 1)}}`), undefined);
  assert.equal(jsonTooDeep(`{"a":${'['.repeat(MAX_JSON_DEPTH)}${']'.repeat(MAX_JSON_DEPTH)}}`), 'a');
  const deep = `{"x":1,"factored_keys":{"method":"key-svd","rope_mode" : ${'['.repeat(1e6)}${']'.repeat(1e6)}}}`;
  const t = performance.now();
  assert.equal(jsonTooDeep(deep), 'rope_mode');
  assert.ok(performance.now() - t < 1000, 'one linear scan');
  assert.equal(jsonTooDeep('['.repeat(1000)), '(top level)');
});
