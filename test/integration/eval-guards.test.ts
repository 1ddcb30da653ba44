/** eval refuses inputs that would give meaningless perplexities, each with one clear line. */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { assertOneError, cli } from '../helpers/cli';

const fixtures = path.resolve(__dirname, '../../../shared/fixtures');
const heldout = path.join(fixtures, 'heldout.txt');
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-evalg-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** A word-level tokenizer.json (a format @huggingface/tokenizers reads) with ids up to `maxId`. */
function wordTokenizer(name: string, maxId: number): string {
  const file = path.join(work, name);
  const vocab: Record<string, number> = { '[UNK]': 0, the: 1, and: 2, of: maxId };
  writeFileSync(
    file,
    JSON.stringify({
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: [],
      normalizer: null,
      pre_tokenizer: { type: 'Whitespace' },
      post_processor: null,
      decoder: null,
      model: { type: 'WordLevel', vocab, unk_token: '[UNK]' },
    }),
  );
  return file;
}

test('--tokenizer bytes on a model whose vocabulary is not 256 is refused', async () => {
  assertOneError(
    await cli('eval', path.join(fixtures, 'stories260K'), '--text', heldout, '--tokenizer', 'bytes', '--seq', '64'),
    /eval: --tokenizer bytes feeds byte values 0\.\.255, but .*stories260K\/config\.json has vocab_size 512/,
  );
});

test('--seq beyond the model positions is refused (learned and RoPE positions alike)', async () => {
  assertOneError(await cli('eval', path.join(fixtures, 'gpt2-bytes'), '--text', heldout, '--tokenizer', 'bytes', '--seq', '257'), /eval: --seq 257 is longer than the model's 256 positions \(.*config\.json n_positions\)/);
  assertOneError(
    await cli('eval', path.join(fixtures, 'mistral-bytes'), '--text', heldout, '--tokenizer', 'bytes', '--seq', '2048'),
    /eval: --seq 2048 is longer than the model's 1024 positions \(.*config\.json max_position_embeddings\)/,
  );
});

test("--seq follows the description's positions as RoPE scaling extends them (the evaluator's own limit)", async () => {
  // dynamic NTK scaling runs past max_position_embeddings 128: transformers' reference is at seq 256
  const variants = path.resolve(__dirname, '../fixtures/variants');
  const text = path.join(work, 'heldout-2049.txt');
  writeFileSync(text, readFileSync(heldout).subarray(0, 2049));
  const r = await cli('eval', path.join(variants, 'llama_dynamic'), '--text', text, '--tokenizer', 'bytes', '--seq', '256', '--json');
  assert.equal(r.code, 0, r.err);
  const reference = JSON.parse(readFileSync(path.join(variants, 'reference.json'), 'utf8')).models.llama_dynamic.ppl_2048;
  assert.ok(Math.abs(JSON.parse(r.out).perplexity / reference - 1) < 1e-3, r.out);
  // yarn: factor 32 × original_max_position_embeddings 4096, past the fixture's max_position_embeddings 1024
  assertOneError(
    await cli('eval', path.join(fixtures, 'layouts2/gpt_oss'), '--text', heldout, '--tokenizer', 'bytes', '--seq', '131073'),
    /eval: --seq 131073 is longer than the model's 131072 positions \(.*gpt_oss\/config\.json yarn RoPE scaling: factor 32 × original_max_position_embeddings 4096\)$/,
  );
});

test('a tokenizer whose ids exceed the vocabulary is refused', async () => {
  const tok = wordTokenizer('big.json', 1000);
  assertOneError(await cli('eval', path.join(fixtures, 'gpt2-bytes'), '--text', heldout, '--tokenizer', tok, '--seq', '16'), /big\.json: produces token id 1000, outside the model's vocabulary of 256/);
});

test('a binary file given as text to a real tokenizer warns (and still evaluates)', async () => {
  const tok = wordTokenizer('small.json', 200);
  const bin = path.join(work, 'blob.bin');
  const bytes = Buffer.alloc(4096);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 37 + 11) & 0xff;
  writeFileSync(bin, Buffer.concat([Buffer.from('the and of '.repeat(200)), bytes]));
  const r = await cli('eval', path.join(fixtures, 'gpt2-bytes'), '--text', bin, '--tokenizer', tok, '--seq', '16', '--json');
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /^warning: .*blob\.bin: not valid UTF-8 text \(a binary file\?\)/m);
  assert.ok(Number.isFinite(JSON.parse(r.out).perplexity));
  // valid UTF-8 text: no warning
  const ok = await cli('eval', path.join(fixtures, 'gpt2-bytes'), '--text', heldout, '--tokenizer', tok, '--seq', '16', '--json');
  assert.equal(ok.code, 0, ok.err);
  assert.doesNotMatch(ok.err, /warning/);
  const j = JSON.parse(ok.out);
  assert.deepEqual([j.variant, j.method, j.ranks, j.seq, j.tokenizer], ['original', null, null, 16, 'small.json']);
});
