/**
 * The longest sequence a model runs is decided in one place (positionLimit in
 * src/core/arch/rope.ts, read into the description's maxPositions); eval's CLI guards read that
 * description, so they agree with the evaluator, RoPE scaling included.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { ConfigReader, describeModel } from '../../src/core/arch';
import { NO_POSITION_LIMIT } from '../../src/core/arch/description';
import { positionLimit, readRope } from '../../src/core/arch/rope';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';
import { checkBytesTokenizer, checkIds, checkSeq, evalLimits } from '../../src/cli/evalGuards';
import { fixture, REPO_ROOT } from '../helpers/fixtures';

const variant = (name: string) => path.join(REPO_ROOT, 'test/fixtures/variants', name);

/** The limit of a one-layer config with these top-level keys (rope_scaling included). */
function limitOf(config: Record<string, unknown>) {
  const c = new ConfigReader(config, 'config.json');
  const stated = typeof config.max_position_embeddings === 'number' ? { tokens: config.max_position_embeddings, source: 'max_position_embeddings' } : { tokens: NO_POSITION_LIMIT, source: 'none' };
  return positionLimit(stated, [readRope(c, 64)]);
}

describe('positionLimit: config.json, extended by RoPE scaling', () => {
  test('default, linear and llama3 keep max_position_embeddings', () => {
    assert.deepEqual(limitOf({ max_position_embeddings: 4096 }), { tokens: 4096, source: 'max_position_embeddings' });
    assert.deepEqual(limitOf({ max_position_embeddings: 4096, rope_scaling: { rope_type: 'linear', factor: 4 } }), { tokens: 4096, source: 'max_position_embeddings' });
    assert.deepEqual(limitOf({ max_position_embeddings: 131072, rope_scaling: { rope_type: 'llama3', factor: 8, original_max_position_embeddings: 8192 } }).tokens, 131072);
  });

  test('dynamic NTK scaling has no limit', () => {
    assert.deepEqual(limitOf({ max_position_embeddings: 128, rope_scaling: { type: 'dynamic', factor: 4 } }), { tokens: NO_POSITION_LIMIT, source: 'dynamic RoPE scaling: no limit' });
  });

  test('yarn stretches original_max_position_embeddings by its factor (Qwen3), unless the config states more', () => {
    assert.deepEqual(limitOf({ max_position_embeddings: 40960, rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32768 } }), {
      tokens: 131072,
      source: 'yarn RoPE scaling: factor 4 × original_max_position_embeddings 32768',
    });
    assert.deepEqual(limitOf({ max_position_embeddings: 163840, rope_scaling: { rope_type: 'yarn', factor: 40, original_max_position_embeddings: 4096 } }), { tokens: 163840, source: 'max_position_embeddings' });
  });

  test('longrope: max_position_embeddings, or original × factor when a factor is given', () => {
    const factors = { short_factor: Array(32).fill(1), long_factor: Array(32).fill(2), original_max_position_embeddings: 4096 };
    assert.deepEqual(limitOf({ max_position_embeddings: 131072, rope_scaling: { rope_type: 'longrope', ...factors } }), { tokens: 131072, source: 'max_position_embeddings' });
    assert.equal(limitOf({ max_position_embeddings: 1024, rope_scaling: { rope_type: 'longrope', factor: 32, ...factors } }).tokens, 131072);
  });

  test('layers without RoPE keep the stated limit; any layer that extends it extends the model', () => {
    const stated = { tokens: 1024, source: 'max_position_embeddings' };
    const yarn = readRope(new ConfigReader({ max_position_embeddings: 1024, rope_scaling: { rope_type: 'yarn', factor: 8, original_max_position_embeddings: 512 } }, 'config.json'), 64);
    assert.deepEqual(positionLimit(stated, [null, null]), stated);
    assert.equal(positionLimit(stated, [null, yarn]).tokens, 4096);
  });
});

describe("the description's maxPositions on fixtures", () => {
  for (const [dir, tokens, source] of [
    [fixture('gpt2-bytes'), 256, 'n_positions'],
    [fixture('mistral-bytes'), 1024, 'max_position_embeddings'],
    [variant('llama_dynamic'), NO_POSITION_LIMIT, 'dynamic RoPE scaling: no limit'],
    [variant('phi3_longrope'), 1024, 'max_position_embeddings'],
    [fixture('layouts2/gpt_oss'), 131072, 'yarn RoPE scaling: factor 32 × original_max_position_embeddings 4096'],
  ] as const) {
    test(`${path.basename(dir)}: ${tokens} (${source})`, async () => {
      const ckpt = await openCheckpoint(dir);
      try {
        const m = describeModel(ckpt);
        assert.deepEqual([m.maxPositions, m.maxPositionsSource], [tokens, source]);
      } finally {
        await ckpt.close();
      }
      const limits = await evalLimits(dir);
      assert.deepEqual([limits.maxPositions, limits.maxPositionsSource], [tokens, source]);
    });
  }
});

describe("eval's guards read the description", () => {
  test('--seq: one line naming the limit and what sets it; dynamic scaling accepts any length', async () => {
    const gptOss = await evalLimits(fixture('layouts2/gpt_oss'));
    checkSeq(131072, gptOss);
    assert.throws(
      () => checkSeq(131073, gptOss),
      (e: Error) => e.message === `eval: --seq 131073 is longer than the model's 131072 positions (${fixture('layouts2/gpt_oss')}/config.json yarn RoPE scaling: factor 32 × original_max_position_embeddings 4096)`,
    );
    checkSeq(1 << 20, await evalLimits(variant('llama_dynamic')));
    assert.throws(() => checkSeq(257, { vocab: 256, maxPositions: 256, maxPositionsSource: 'n_positions', where: 'm/config.json' }), /^FactoredKeysError: eval: --seq 257 is longer than the model's 256 positions \(m\/config\.json n_positions\)$/);
  });

  test('vocabulary: --tokenizer bytes needs 256 ids, and ids must fit', async () => {
    const stories = await evalLimits(fixture('stories260K'));
    assert.equal(stories.vocab, 512);
    assert.throws(() => checkBytesTokenizer('bytes', stories), /^FactoredKeysError: eval: --tokenizer bytes feeds byte values 0\.\.255, but .*stories260K\/config\.json has vocab_size 512; give the model's tokenizer\.json$/);
    checkBytesTokenizer('tok.json', stories);
    checkIds(Int32Array.from([0, 511]), 'tok.json', stories);
    assert.throws(() => checkIds(Int32Array.from([3, 512, 7]), 'tok.json', stories), /^FactoredKeysError: tok\.json: produces token id 512, outside the model's vocabulary of 512 \(.*stories260K\/config\.json vocab_size\); is it this model's tokenizer\?$/);
  });

  test('a model eval cannot run is refused by the guards already, in one line', async () => {
    await assert.rejects(evalLimits(path.join(REPO_ROOT, 'no-such-checkpoint')), (e: Error) => e.name === 'FactoredKeysError' && !e.message.includes('\n'));
  });
});
