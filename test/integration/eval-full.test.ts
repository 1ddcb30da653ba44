/**
 * The acceptance bar, on the whole of heldout.txt (255 windows of 256 tokens per
 * model): `eval` of both trained fixtures, and of their key-svd and qk-svd exports at ranks 8,
 * 16 and 32, within 0.5 % of the PyTorch/transformers reference. About 25 s on a quiet 2-core
 * machine, so it runs in `npm test` (and CI); FK_EVAL_FULL=0 skips it for quick local runs:
 *   node --import tsx --test test/integration/eval-full.test.ts
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { evaluateCheckpoint } from '../../src/core/eval';
import { exportFactored } from '../../src/core/export/export';
import { fixture, REPO_ROOT } from '../helpers/fixtures';

const REF: { models: Record<string, { original: { perplexity: number }; factored: Record<string, { perplexity: number }> }> } = JSON.parse(
  readFileSync(path.join(REPO_ROOT, 'test/reference/eval/eval_reference.json'), 'utf8'),
);
const HELDOUT = Int32Array.from(readFileSync(fixture('heldout.txt')));
const enabled = process.env.FK_EVAL_FULL !== '0';
const work = enabled ? mkdtempSync(path.join(os.tmpdir(), 'fk-eval-full-')) : '';
after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

for (const name of ['gpt2-bytes', 'mistral-bytes']) {
  test(`${name}: full heldout.txt, original and key-svd/qk-svd exports at ranks 8/16/32 within 0.5 % of the reference`, { skip: !enabled && 'FK_EVAL_FULL=0' }, async (t) => {
    const rows: string[] = [];
    const check = async (dir: string, expected: number, label: string) => {
      const r = await evaluateCheckpoint(dir, HELDOUT, { seq: 256, backend: 'cpu' });
      assert.equal(r.tokens, 255 * 256);
      const rel = r.perplexity / expected - 1;
      rows.push(`${label}: ${r.perplexity.toFixed(6)} vs reference ${expected.toFixed(6)} (${(rel * 100).toFixed(4)} %, ${r.seconds.toFixed(1)} s)`);
      assert.ok(Math.abs(rel) <= 0.005, rows[rows.length - 1]);
    };
    await check(fixture(name), REF.models[name].original.perplexity, `${name} original`);
    for (const method of ['key-svd', 'qk-svd'] as const) {
      for (const rank of [8, 16, 32]) {
        const dest = path.join(work, `${name}-${method}-${rank}`);
        await exportFactored({ source: fixture(name), dest, method, policy: { kind: 'uniform', rank } });
        await check(dest, REF.models[name].factored[`${method}/${rank}`].perplexity, `${name} ${method} rank ${rank} export`);
      }
    }
    for (const row of rows) t.diagnostic(row);
  });
}
