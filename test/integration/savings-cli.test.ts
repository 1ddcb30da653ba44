/** `savings` CLI contract. */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { cli } from '../helpers/cli';

const fixtures = path.resolve(__dirname, '../../../shared/fixtures');

test('savings --json reproduces the paper example', async () => {
  const r = await cli('savings', '--layers', '32', '--kv-heads', '32', '--head-dim', '128', '--key-rank', '32', '--context', '128000', '--batch', '1', '--bytes-per-value', '2', '--json');
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.deepEqual(
    { baseline_bytes: j.baseline_bytes, factored_bytes: j.factored_bytes, saved_bytes: j.saved_bytes, capacity_multiplier: j.capacity_multiplier },
    { baseline_bytes: 67108864000, factored_bytes: 41943040000, saved_bytes: 25165824000, capacity_multiplier: 1.6 },
  );
  // the inputs it priced and the per-token split
  assert.deepEqual(j.inputs, { layers: 32, kv_heads: 32, head_dim: 128, key_ranks: 32, context: 128000, batch: 1, key_bits_per_value: 16, value_bits_per_value: 16 });
  assert.deepEqual(j.per_token, { key_bytes: { before: 262144, after: 65536 }, value_bytes: { before: 262144, after: 262144 }, kv_bytes: { before: 524288, after: 327680 } });
});

test('savings reads geometry and dtype from a checkpoint', async () => {
  const r = await cli('savings', path.join(fixtures, 'mistral-bytes'), '--key-rank', '16', '--context', '1000', '--batch', '2', '--json');
  assert.equal(r.code, 0, r.err);
  // 4 layers x 2 KV heads, bf16: K 64 -> 16 dims, V 64 dims
  const tokens = 2000;
  const j = JSON.parse(r.out);
  assert.deepEqual(
    { baseline_bytes: j.baseline_bytes, factored_bytes: j.factored_bytes, saved_bytes: j.saved_bytes, capacity_multiplier: j.capacity_multiplier },
    { baseline_bytes: 4 * 2 * 128 * 2 * tokens, factored_bytes: 4 * 2 * 80 * 2 * tokens, saved_bytes: 4 * 2 * 48 * 2 * tokens, capacity_multiplier: 1.6 },
  );
  assert.equal(j.inputs.cache_dtype, 'bf16');
  const q = await cli('savings', path.join(fixtures, 'mistral-bytes'), '--key-rank', '16', '--context', '1000', '--bits-per-value', '4', '--json');
  assert.equal(JSON.parse(q.out).baseline_bytes, (4 * 2 * 128 * 4 * 1000) / 8);
  const text = await cli('savings', '--layers', '32', '--kv-heads', '32', '--head-dim', '128', '--key-rank', '32', '--context', '128000');
  assert.match(text.out, /saved: +25,165,824,000 B/);
});

test('savings errors', async () => {
  for (const [argv, re] of [
    [['savings', '--layers', '32', '--key-rank', '32', '--context', '10'], /give a checkpoint or all of --layers, --kv-heads, --head-dim/],
    [['savings', '--layers', '2', '--kv-heads', '2', '--head-dim', '8', '--context', '10'], /exactly one of --key-rank/],
    [['savings', '--layers', '2', '--kv-heads', '2', '--head-dim', '8', '--key-rank', '9', '--context', '10'], /key rank must be an integer from 1 to head_dim 8/],
    [['savings', '--layers', '2', '--kv-heads', '2', '--head-dim', '8', '--key-rank', '4'], /--context is required/],
    [['savings', '--layers', 'x', '--kv-heads', '2', '--head-dim', '8', '--key-rank', '4', '--context', '1'], /--layers must be an integer/],
  ] as [string[], RegExp][]) {
    const r = await cli(...argv);
    assert.equal(r.code, 1);
    assert.match(r.err, re);
  }
});
