/** `plan` and `export` CLI contracts (in-process through main()). */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { cli } from '../helpers/cli';

const fixtures = path.resolve(__dirname, '../../../shared/fixtures');
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-cli-'));
after(() => rmSync(work, { recursive: true, force: true }));

test('export --json prints method, ranks and key-cache bytes per token', async () => {
  const dest = path.join(work, 'gpt2-16');
  const r = await cli('export', path.join(fixtures, 'gpt2-bytes'), dest, '--method', 'key-svd', '--rank', '16', '--json');
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.deepEqual(Object.keys(j).sort(), [
    'bytes_per_value',
    'cache_dtype',
    'capacity_multiplier',
    'key_cache_bytes_per_token',
    'kv_cache_bytes_per_token',
    'method',
    'output',
    'ranks',
    'value_cache_bytes_per_token',
  ]);
  assert.equal(j.output, dest);
  assert.equal(j.method, 'key-svd');
  assert.deepEqual(j.ranks, Array(4).fill([16, 16, 16, 16]));
  // GPT-2 fixture: 4 layers x 4 KV heads x 64 dims; F32 weights, so the cache is priced as bf16 (2 B)
  assert.equal(j.cache_dtype, 'bf16');
  assert.equal(j.bytes_per_value, 2);
  assert.deepEqual(j.key_cache_bytes_per_token, { before: 2048, after: 512 });
  assert.deepEqual(j.value_cache_bytes_per_token, { before: 2048, after: 2048 });
  assert.deepEqual(j.kv_cache_bytes_per_token, { before: 4096, after: 2560 });
  assert.equal(j.capacity_multiplier, 4096 / 2560);
});

test('plan --json round-trips into export --plan; budget plans stay within budget', async () => {
  const planFile = path.join(work, 'plan.json');
  const p = await cli('plan', path.join(fixtures, 'mistral-bytes'), '--method', 'qk-svd', '--budget-bytes-per-token', '400', '--override', '0:1=40', '--out', planFile, '--json');
  assert.equal(p.code, 0, p.err);
  const plan = JSON.parse(p.out);
  assert.equal(plan.format, 'factored-keys-plan');
  assert.equal(plan.ranks[0][1], 40);
  assert.ok(plan.ranks.flat().reduce((a: number, b: number) => a + b, 0) * 2 <= 400);
  const e = await cli('export', path.join(fixtures, 'mistral-bytes'), path.join(work, 'm-plan'), '--plan', planFile, '--json');
  assert.equal(e.code, 0, e.err);
  assert.deepEqual(JSON.parse(e.out).ranks, plan.ranks);
  assert.equal(JSON.parse(e.out).method, 'qk-svd');
  const text = await cli('plan', path.join(fixtures, 'mistral-bytes'), '--fraction', '0.25');
  assert.match(text.out, /key cache per token: 1024 B -> 256 B/);
});

test('export errors are one line, exit 1, and leave nothing behind', async () => {
  const dest = path.join(work, 'never');
  const cases: [string[], RegExp][] = [
    [['export', path.join(fixtures, 'mistral-bytes'), dest, '--rank', '8'], /--method key-svd\|qk-svd\|calibrated is required/],
    [['export', path.join(fixtures, 'mistral-bytes'), dest, '--method', 'svd', '--rank', '8'], /--method must be key-svd, qk-svd or calibrated/],
    [['export', path.join(fixtures, 'mistral-bytes'), dest, '--method', 'key-svd'], /give exactly one of --rank/],
    [['export', path.join(fixtures, 'mistral-bytes'), dest, '--method', 'key-svd', '--rank', '8', '--fraction', '0.5'], /give exactly one of/],
    [['export', path.join(fixtures, 'mistral-bytes'), dest, '--method', 'key-svd', '--rank', '100'], /rank must be an integer from 1 to head_dim 64/],
    [['export', path.join(fixtures, 'mistral-bytes'), dest, '--method', 'key-svd', '--override', '0:0', '--rank', '8'], /LAYER:KVHEAD=RANK/],
    [['export', path.join(fixtures, 'mistral-bytes'), dest, '--method', 'key-svd', '--plan', path.join(work, 'missing.json')], /missing\.json: cannot read the plan file/],
    [['export', path.join(fixtures, 'nope'), dest, '--method', 'key-svd', '--rank', '8'], /no such file or folder/],
  ];
  writeFileSync(path.join(work, 'gpt2plan.json'), (await cli('plan', path.join(fixtures, 'gpt2-bytes'), '--rank', '8', '--json')).out);
  cases.push([['export', path.join(fixtures, 'mistral-bytes'), dest, '--method', 'key-svd', '--plan', path.join(work, 'gpt2plan.json')], /gpt2plan\.json: plan is for kv_heads = 4 but the checkpoint has 2/]);
  for (const [argv, re] of cases) {
    const r = await cli(...argv);
    assert.equal(r.code, 1, argv.join(' '));
    assert.match(r.err, re);
    assert.equal(r.err.trim().split('\n').length, 1);
    assert.ok(r.err.startsWith('error: '));
  }
  assert.ok(!existsSync(dest));
  assert.deepEqual(readdirSync(work).filter((e) => e.includes('.fk-')), []);
});

test('plan --out into a folder is a one-line error and leaves no temp file', async () => {
  const r = await cli('plan', path.join(fixtures, 'mistral-bytes'), '--rank', '8', '--out', work);
  assert.equal(r.code, 1);
  assert.match(r.err, /already exists; give --force to replace it/);
  assert.deepEqual(readdirSync(path.dirname(work)).filter((e) => e.startsWith(`${path.basename(work)}.tmp-`)), []);
});
