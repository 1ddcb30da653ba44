/** The perplexity protocol (windows, NLL accumulation, token checks) and the tokenizers. */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { FactoredKeysError } from '../../src/core/errors';
import { bytesToIds, checkTokens, defaultBatch, NllAccumulator, tokenizeFile, windowBatch, windowCount } from '../../src/core/eval';
import { ropeTables } from '../../src/core/arch/rope';
import { causalMask } from '../../src/core/eval/graph';
import { fixture, tempDir } from '../helpers/fixtures';

test('window count is floor((N-1)/seq): every predicted token has a successor', () => {
  assert.equal(windowCount(65536, 256), 255);
  assert.equal(windowCount(257, 256), 1);
  assert.equal(windowCount(256, 256), 0);
  assert.equal(windowCount(513, 256), 2);
  assert.equal(windowCount(0, 256), 0);
  assert.throws(() => windowCount(10, 0), FactoredKeysError);
});

test('window j feeds ids[j*seq ..] and predicts ids[j*seq+1 ..], windows do not overlap', () => {
  const ids = Int32Array.from({ length: 20 }, (_, i) => i);
  const { inputs, targets } = windowBatch(ids, 4, 1, 2);
  assert.deepEqual(Array.from(inputs, Number), [4, 5, 6, 7, 8, 9, 10, 11]);
  assert.deepEqual(Array.from(targets, Number), [5, 6, 7, 8, 9, 10, 11, 12]);
});

test('NLL accumulates in float64 per window; PPL = exp(mean NLL)', () => {
  const acc = new NllAccumulator();
  acc.addWindows(Float32Array.from([1, 2, 3, 4]), 2, 2);
  acc.addWindows(Float32Array.from([0.5, 0.5]), 1, 2);
  assert.deepEqual(acc.windowSums, [3, 7, 1]);
  assert.equal(acc.tokens, 6);
  assert.ok(Math.abs(acc.perplexity - Math.exp(11 / 6)) < 1e-12);
});

test('checkTokens refuses short texts and ids outside the vocabulary, naming the token', () => {
  assert.throws(() => checkTokens(Int32Array.from([1, 2, 3]), 4, 256, 'x.txt'), /too short for one window of --seq 4/);
  assert.throws(() => checkTokens(Int32Array.from([1, 2, 300, 4, 5]), 4, 256, 'x.txt'), /token 2 has id 300, outside the model's vocabulary of 256/);
  // ids beyond the last window's target are never fed, so they are not checked
  assert.equal(checkTokens(Int32Array.from([1, 2, 3, 4, 5, 999]), 4, 256, 'x.txt'), 1);
});

test('bytes tokenizer: id = byte value, including multi-byte UTF-8', async () => {
  assert.deepEqual(Array.from(bytesToIds(new TextEncoder().encode('aé'))), [97, 0xc3, 0xa9]);
  const r = await tokenizeFile(fixture('heldout.txt'), 'bytes');
  assert.equal(r.ids.length, 65536);
  assert.equal(r.tokenizer, 'bytes');
});

test('tokenizer.json through @huggingface/tokenizers (a word-level tokenizer built here)', async () => {
  const t = tempDir();
  try {
    const tok = {
      version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null,
      pre_tokenizer: { type: 'Whitespace' }, post_processor: null, decoder: null,
      model: { type: 'WordLevel', vocab: { hello: 0, world: 1, '[UNK]': 2 }, unk_token: '[UNK]' },
    };
    writeFileSync(path.join(t.dir, 'tokenizer.json'), JSON.stringify(tok));
    writeFileSync(path.join(t.dir, 'text.txt'), 'hello world hello');
    const r = await tokenizeFile(path.join(t.dir, 'text.txt'), path.join(t.dir, 'tokenizer.json'));
    assert.deepEqual(Array.from(r.ids), [0, 1, 0]);
    writeFileSync(path.join(t.dir, 'bad.json'), '{"model": ');
    await assert.rejects(tokenizeFile(path.join(t.dir, 'text.txt'), path.join(t.dir, 'bad.json')), /bad\.json: tokenizer\.json is not valid JSON/);
    writeFileSync(path.join(t.dir, 'nomodel.json'), '{}');
    await assert.rejects(tokenizeFile(path.join(t.dir, 'text.txt'), path.join(t.dir, 'nomodel.json')), /has no "model" section/);
    await assert.rejects(tokenizeFile(path.join(t.dir, 'missing.txt'), 'bytes'), /missing\.txt: text file not found/);
  } finally {
    t.cleanup();
  }
});

test('causal mask blocks the future (and, with a window, the distant past)', () => {
  const m = causalMask(4, null);
  assert.equal(m[0 * 4 + 1] < -1e38, true);
  assert.equal(m[3 * 4 + 0], 0);
  const w = causalMask(4, 2);
  assert.equal(w[3 * 4 + 1] < -1e38, true);
  assert.equal(w[3 * 4 + 2], 0);
});

test('RoPE tables: position 0 is the identity, halves repeat (rotate-half layout)', () => {
  const { cos, sin } = ropeTables({ style: 'rotate-half', rotaryDim: 8, theta: 10000, scaling: { type: 'default' } }, 3);
  for (let i = 0; i < 8; i++) {
    assert.equal(cos[i], 1);
    assert.equal(sin[i], 0);
  }
  assert.equal(cos[8 + 0], cos[8 + 4]);
  assert.ok(Math.abs(cos[8 + 0] - Math.cos(1)) < 1e-7);
  assert.ok(Math.abs(sin[2 * 8 + 1] - Math.sin(2 * Math.fround(1 / Math.fround(Math.pow(10000, 0.25))))) < 1e-6);
});

test('default batch: ~4096 tokens per run, fewer for large vocabularies (logits stay near 256 MiB)', () => {
  assert.equal(defaultBatch(256, 256), 16);
  assert.equal(defaultBatch(256, 32000), 8);
  assert.equal(defaultBatch(256, 152064), 1);
  assert.equal(defaultBatch(8192, 256), 1);
  assert.equal(defaultBatch(16, 256), 64);
});
