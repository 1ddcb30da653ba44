/** Plans record their model (architecture + fingerprint) and are refused for another model. */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { assertOneError, cli } from '../helpers/cli';
import { FINGERPRINT_PREFIX } from '../../src/core/plan/fingerprint';

const fixtures = path.resolve(__dirname, '../../../shared/fixtures');
const llama = path.join(fixtures, 'layouts', 'llama');
const qwen2 = path.join(fixtures, 'layouts', 'qwen2');
const mistral = path.join(fixtures, 'mistral-bytes');
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-bind-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** A folder with the fixture's files linked in and config.json edited by `edit`. */
function variant(src: string, name: string, edit: (config: Record<string, unknown>) => void): string {
  const dir = path.join(work, name);
  mkdirSync(dir);
  for (const f of readdirSync(src)) if (f !== 'config.json') symlinkSync(path.join(src, f), path.join(dir, f));
  const config = JSON.parse(readFileSync(path.join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  edit(config);
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

async function savePlan(ckpt: string, name: string, ...flags: string[]): Promise<string> {
  const file = path.join(work, name);
  const r = await cli('plan', ckpt, '--method', 'key-svd', '--rank', '4', ...flags, '--out', file);
  assert.equal(r.code, 0, r.err);
  return file;
}

test('a saved plan records the architecture and a fingerprint of its checkpoint', async () => {
  const file = await savePlan(mistral, 'm.json');
  const plan = JSON.parse(readFileSync(file, 'utf8'));
  assert.equal(plan.model.architecture, 'mistral');
  assert.match(plan.model.fingerprint, new RegExp(`^${FINGERPRINT_PREFIX}[0-9a-f]{64}$`));
  // the same checkpoint in another folder has the same fingerprint, and takes the plan
  const copy = variant(mistral, 'mistral-copy', () => undefined);
  const again = JSON.parse((await cli('plan', copy, '--rank', '4', '--json')).out);
  assert.equal(again.model.fingerprint, plan.model.fingerprint);
  const dest = path.join(work, 'm-out');
  const e = await cli('export', copy, dest, '--plan', file, '--json');
  assert.equal(e.code, 0, e.err);
  // models of the same shape but another architecture or layout differ
  const l = JSON.parse((await cli('plan', llama, '--rank', '4', '--json')).out).model.fingerprint;
  const q = JSON.parse((await cli('plan', qwen2, '--rank', '4', '--json')).out).model.fingerprint;
  assert.notEqual(l, q);
});

test('export --plan and eval --plan refuse a qwen2 plan for a llama checkpoint of the same shape', async () => {
  const file = await savePlan(qwen2, 'qwen2.json');
  const dest = path.join(work, 'never');
  assertOneError(await cli('export', llama, dest, '--plan', file), /qwen2\.json: plan was made for a "qwen2" model, but the checkpoint is "llama"/);
  assert.equal(existsSync(dest), false);
  assertOneError(
    await cli('eval', llama, '--text', path.join(fixtures, 'heldout.txt'), '--tokenizer', 'bytes', '--seq', '16', '--plan', file),
    /qwen2\.json: plan was made for a "qwen2" model, but the checkpoint is "llama"/,
  );
  assertOneError(await cli('plan', llama, '--plan', file), /plan was made for a "qwen2" model/);
  assertOneError(await cli('savings', llama, '--plan', file, '--context', '10'), /plan was made for a "qwen2" model/);
});

test('a plan for the same architecture but other geometry or tensors is refused by fingerprint', async () => {
  const file = await savePlan(llama, 'llama.json');
  // same counts and shapes, other RoPE base: another model
  const theta = variant(llama, 'llama-theta', (c) => ((c.rope_parameters as Record<string, unknown>).rope_theta = 500000));
  const dest = path.join(work, 'never2');
  assertOneError(await cli('export', theta, dest, '--plan', file), /llama\.json: plan was made for another checkpoint \(fingerprint "fk1-sha256:.*\): its attention geometry or Q\/K tensor names or shapes differ/);
  assert.equal(existsSync(dest), false);
  assertOneError(
    await cli('eval', theta, '--text', path.join(fixtures, 'heldout.txt'), '--tokenizer', 'bytes', '--seq', '16', '--plan', file),
    /plan was made for another checkpoint/,
  );
  // a tampered fingerprint is refused on the original too
  const plan = JSON.parse(readFileSync(file, 'utf8'));
  const tampered = path.join(work, 'tampered.json');
  writeFileSync(tampered, JSON.stringify({ ...plan, model: { ...plan.model, fingerprint: `${FINGERPRINT_PREFIX}${'0'.repeat(64)}` } }));
  assertOneError(await cli('export', llama, dest, '--plan', tampered), /plan was made for another checkpoint/);
  // a hand-written plan without a fingerprint is still checked by architecture and shape, and accepted
  const bare = path.join(work, 'bare.json');
  const { fingerprint: _drop, ...model } = plan.model;
  void _drop;
  writeFileSync(bare, JSON.stringify({ ...plan, model }));
  const ok = await cli('export', llama, path.join(work, 'bare-out'), '--plan', bare, '--json');
  assert.equal(ok.code, 0, ok.err);
  assert.deepEqual(JSON.parse(ok.out).ranks, plan.ranks);
  assertOneError(await cli('export', theta, dest, '--plan', path.join(work, 'nonstring.json')), /cannot read the plan file/);
  writeFileSync(path.join(work, 'nonstring.json'), JSON.stringify({ ...plan, model: { ...plan.model, fingerprint: 7 } }));
  assertOneError(await cli('export', llama, dest, '--plan', path.join(work, 'nonstring.json')), /model\.fingerprint must be a string/);
});
