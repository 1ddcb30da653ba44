import assert from 'node:assert/strict';
import { test } from 'node:test';
import { computeSavings, savingsJson } from '../../src/core/savings';

test('reproduces the paper example exactly (32 layers, 32 KV heads x 128, fp16, 128k tokens, rank 32)', () => {
  const s = computeSavings({ layers: 32, kvHeads: 32, headDim: 128, keyRanks: 32, keyBitsPerValue: 16, context: 128_000, batch: 1 });
  assert.equal(s.baselineBytes, 67_108_864_000);
  assert.equal(s.factoredBytes, 41_943_040_000);
  assert.equal(s.savedBytes, 25_165_824_000);
  assert.equal(s.capacityMultiplier, 1.6);
  assert.equal(s.keySavedFraction, 0.75);
  assert.deepEqual(savingsJson(s), { baseline_bytes: 67_108_864_000, factored_bytes: 41_943_040_000, saved_bytes: 25_165_824_000, capacity_multiplier: 1.6 });
});

test('per-head ranks equal to a uniform rank give the same totals', () => {
  const ranks = Array.from({ length: 32 }, () => Array.from({ length: 32 }, () => 32));
  const a = computeSavings({ layers: 32, kvHeads: 32, headDim: 128, keyRanks: ranks, keyBitsPerValue: 16, context: 128_000, batch: 1 });
  assert.equal(a.factoredBytes, 41_943_040_000);
});

test('GQA counts KV heads, batch multiplies, quantization composes', () => {
  // Mistral-7B-like: 32 layers, 8 KV heads x 128, 4-bit cache, 32k x 4
  const s = computeSavings({ layers: 32, kvHeads: 8, headDim: 128, keyRanks: 32, keyBitsPerValue: 4, context: 32_768, batch: 4 });
  const tokens = 32_768 * 4;
  assert.equal(s.keyBytesPerToken.before, (32 * 8 * 128 * 4) / 8);
  assert.equal(s.keyBytesPerToken.after, (32 * 8 * 32 * 4) / 8);
  assert.equal(s.baselineBytes, 2 * 32 * 8 * 128 * 4 / 8 * tokens);
  assert.equal(s.factoredBytes, (32 * 8 * (32 + 128) * 4) / 8 * tokens);
  assert.equal(s.capacityMultiplier, 256 / 160);
});

test('mixed ranks and odd bit widths round up only at the end', () => {
  const s = computeSavings({ layers: 1, kvHeads: 2, headDim: 8, keyRanks: [[3, 5]], keyBitsPerValue: 3, valueBitsPerValue: 16, context: 3, batch: 1 });
  assert.equal(s.keyBytes.after, Math.ceil((8 * 3 * 3) / 8));
  assert.equal(s.valueBytes.after, 2 * 8 * 2 * 3);
});

test('bad inputs are one-line errors', () => {
  assert.throws(() => computeSavings({ layers: 32, kvHeads: 32, headDim: 128, keyRanks: 129, keyBitsPerValue: 16, context: 1, batch: 1 }), /key rank must be an integer from 1 to head_dim 128/);
  assert.throws(() => computeSavings({ layers: 2, kvHeads: 1, headDim: 8, keyRanks: [[1]], keyBitsPerValue: 16, context: 1, batch: 1 }), /rank plan has 1 layers, the model has 2/);
  assert.throws(() => computeSavings({ layers: 1, kvHeads: 1, headDim: 8, keyBitsPerValue: 0, context: 1, batch: 1 }), /bits/);
  assert.throws(() => computeSavings({ layers: 1, kvHeads: 1, headDim: 8, keyBitsPerValue: 16, context: 0, batch: 1 }), /context must be a positive integer/);
});
