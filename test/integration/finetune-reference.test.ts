/**
 * The fine-tune figures measured on the H200 (test/reference/finetune/finetune_reference.json,
 * docs/FINETUNE.md): recorded consistency (our eval of each brought-back fine-tuned checkpoint
 * against PyTorch's perplexity of the same folder, better than the export), and, where those
 * checkpoints are present (.fkft/ft-<name>, as scripts/reference/finetune_sweep.py leaves them
 * after unpacking; or FK_FINETUNED_DIR), our own eval of them again against the record.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { main } from '../../src/cli/main';

const REPO = path.resolve(__dirname, '../..');
const FIXTURES = path.resolve(REPO, '../shared/fixtures');
const REF = JSON.parse(readFileSync(path.join(REPO, 'test/reference/finetune/finetune_reference.json'), 'utf8')) as {
  original_perplexity_ours: Record<string, number>;
  checkpoints: Record<string, { shards: Record<string, string>; perplexity_ours: number; perplexity_torch: number; export_perplexity_ours: number; tokens: number }>;
};
const BASE = (process.env.FK_FINETUNED_DIR ?? path.join(REPO, '.fkft'));

test('recorded: our eval of each fine-tuned checkpoint matches PyTorch on it and beats the export', () => {
  for (const [name, c] of Object.entries(REF.checkpoints)) {
    assert.ok(Math.abs(c.perplexity_ours / c.perplexity_torch - 1) < 1e-3, `${name}: ours ${c.perplexity_ours} vs torch ${c.perplexity_torch}`);
    assert.ok(c.perplexity_ours < c.export_perplexity_ours, name);
    assert.equal(c.tokens, 65280);
  }
  // the criteria: mistral-bytes (4.30765) within 3 % at rank 16 and 5 % at rank 8, after
  // 300 steps; gpt2-bytes rank 16 no worse than key-svd's 4.3757
  assert.ok(REF.checkpoints['mistral-r16'].perplexity_ours <= 4.437);
  assert.ok(REF.checkpoints['mistral-r8'].perplexity_ours <= 4.523);
  assert.ok(REF.checkpoints['gpt2-r16'].perplexity_ours <= 4.3757);
});

for (const name of Object.keys(REF.checkpoints)) {
  test(`our eval of the fine-tuned ${name} reproduces the record`, async (t) => {
    const dir = path.join(BASE, `ft-${name}`);
    const c = REF.checkpoints[name];
    if (!existsSync(dir)) return t.skip(`${dir} not present (the GPU run's checkpoints are not committed)`);
    for (const [f, sha] of Object.entries(c.shards)) {
      const got = createHash('sha256').update(readFileSync(path.join(dir, f))).digest('hex');
      if (got !== sha) return t.skip(`${dir}/${f} is another fine-tune (sha256 differs)`);
    }
    let out = '';
    const code = await main(['eval', dir, '--text', path.join(FIXTURES, 'heldout.txt'), '--tokenizer', 'bytes', '--seq', '256', '--json', '--quiet'], { stdout: (s) => (out += s), stderr: () => undefined });
    assert.equal(code, 0);
    const j = JSON.parse(out);
    assert.equal(j.variant, 'export');
    assert.ok(Math.abs(j.perplexity / c.perplexity_ours - 1) < 1e-6, `${j.perplexity} vs ${c.perplexity_ours}`);
  });
}
