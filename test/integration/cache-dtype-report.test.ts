/**
 * One explicit cache dtype for plan, export and savings (default: the config's 16-bit
 * torch_dtype, else bf16; never the F32 weights' width), and export reports without absolute
 * paths and with a correct index total_parameters.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { cli } from '../helpers/cli';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';

const fixtures = path.resolve(__dirname, '../../../shared/fixtures');
const gpt2 = path.join(fixtures, 'gpt2-bytes');
const mistral = path.join(fixtures, 'mistral-bytes');
const stories = path.join(fixtures, 'stories260K');
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-cache-'));
after(() => rmSync(work, { recursive: true, force: true }));

async function planJson(...argv: string[]): Promise<{ model: { key_bytes_per_value: number; cache_dtype?: string }; ranks: number[][] }> {
  const r = await cli('plan', ...argv, '--json');
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out);
}

const dims = (ranks: number[][]) => ranks.flat().reduce((a, b) => a + b, 0);

function variant(src: string, name: string, edit: (c: Record<string, unknown>) => void): string {
  const dir = path.join(work, name);
  mkdirSync(dir);
  for (const f of readdirSync(src)) if (f !== 'config.json') symlinkSync(path.join(src, f), path.join(dir, f));
  const c = JSON.parse(readFileSync(path.join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  edit(c);
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c));
  return dir;
}

test('F32 checkpoints are priced at bf16 unless told otherwise; 16-bit configs at their dtype', async () => {
  // gpt2-bytes: F32 weights, config dtype float32 -> bf16 (2 B), not 4 B
  const g = await planJson(gpt2, '--rank', '16');
  assert.equal(g.model.key_bytes_per_value, 2);
  assert.equal(g.model.cache_dtype, 'bf16');
  const s = await planJson(stories, '--rank', '4');
  assert.equal(s.model.cache_dtype, 'bf16'); // torch_dtype float32
  const m = await planJson(mistral, '--rank', '16');
  assert.equal(m.model.cache_dtype, 'bf16'); // config dtype bfloat16
  const f16 = variant(path.join(fixtures, 'layouts', 'llama'), 'llama-f16', (c) => (c.torch_dtype = 'float16'));
  assert.equal((await planJson(f16, '--rank', '4')).model.cache_dtype, 'f16');
  assert.equal((await planJson(gpt2, '--rank', '16', '--cache-dtype', 'f32')).model.key_bytes_per_value, 4);
  assert.equal((await planJson(gpt2, '--rank', '16', '--cache-dtype', 'fp8')).model.key_bytes_per_value, 1);
  const bytes3 = await planJson(gpt2, '--rank', '16', '--bytes-per-value', '3');
  assert.equal(bytes3.model.key_bytes_per_value, 3);
  assert.equal(bytes3.model.cache_dtype, undefined);
});

test('the budget policy spends bytes at the chosen width', async () => {
  // 4 layers x 4 KV heads; a 1024-byte budget is 512 dims at bf16, 256 at f32
  const bf16 = await planJson(gpt2, '--budget-bytes-per-token', '1024');
  assert.equal(dims(bf16.ranks), 512);
  const f32 = await planJson(gpt2, '--budget-bytes-per-token', '1024', '--cache-dtype', 'f32');
  assert.equal(dims(f32.ranks), 256);
  const dest = path.join(work, 'budget-export');
  const e = await cli('export', gpt2, dest, '--method', 'key-svd', '--budget-bytes-per-token', '1024', '--cache-dtype', 'f32', '--json');
  assert.equal(e.code, 0, e.err);
  const j = JSON.parse(e.out);
  assert.equal(dims(j.ranks), 256);
  assert.equal(j.cache_dtype, 'f32');
  assert.deepEqual(j.key_cache_bytes_per_token, { before: 4 * 4 * 64 * 4, after: 1024 });
  const report = JSON.parse(readFileSync(path.join(dest, 'factored_keys_report.json'), 'utf8'));
  assert.equal(report.cache.dtype, 'f32');
  assert.equal(report.cache.bytes_per_value, 4);
});

test('outputs state the cache choice; bad choices are one error line', async () => {
  const t = await cli('plan', gpt2, '--rank', '16');
  assert.match(t.out, /key cache per token: 2048 B -> 512 B/);
  assert.match(t.out, /cache priced as bf16 \(2 B per value, default for float32 weights\)/);
  const e = await cli('export', mistral, path.join(work, 'text-export'), '--method', 'key-svd', '--rank', '16');
  assert.equal(e.code, 0, e.err);
  assert.match(e.out, /cache priced as bf16 \(2 B per value, config\.json dtype bfloat16\)/);
  const sv = await cli('savings', gpt2, '--key-rank', '16', '--context', '10', '--json');
  assert.equal(JSON.parse(sv.out).per_token.kv_bytes.before, 4 * 4 * 64 * 2 * 2);
  const sf = await cli('savings', gpt2, '--key-rank', '16', '--context', '10', '--cache-dtype', 'f32', '--json');
  assert.equal(JSON.parse(sf.out).per_token.kv_bytes.before, 4 * 4 * 64 * 2 * 4);
  assert.match((await cli('savings', gpt2, '--key-rank', '16', '--context', '10')).out, /cache: +bf16 \(2 B per value, default for float32 weights\)/);
  for (const [argv, re] of [
    [['plan', gpt2, '--rank', '8', '--cache-dtype', 'f8'], /plan: --cache-dtype must be one of f32, f16, bf16, fp8, got "f8"/],
    [['plan', gpt2, '--rank', '8', '--cache-dtype', 'f16', '--bytes-per-value', '2'], /plan: give --cache-dtype or --bytes-per-value, not both/],
    [['export', gpt2, path.join(work, 'never'), '--method', 'key-svd', '--rank', '8', '--bytes-per-value', '0'], /export: --bytes-per-value must be at least 1/],
    [['savings', gpt2, '--key-rank', '8', '--context', '1', '--cache-dtype', 'bf16', '--bits-per-value', '4'], /give --cache-dtype or --bits-per-value, not both/],
    [['eval', gpt2, '--text', path.join(fixtures, 'heldout.txt'), '--tokenizer', 'bytes', '--cache-dtype', 'f16'], /eval: --cache-dtype and --bytes-per-value go with a rank policy or --plan/],
  ] as [string[], RegExp][]) {
    const r = await cli(...argv);
    assert.equal(r.code, 1, r.err);
    assert.equal(r.out, '');
    assert.equal(r.err.trim().split('\n').length, 1, r.err);
    assert.match(r.err, re);
  }
});

test('the export report names its source by folder name and manifest hash, never by path', async () => {
  const dest = path.join(work, 'report-export');
  const r = await cli('export', mistral, dest, '--method', 'qk-svd', '--rank', '12', '--json');
  assert.equal(r.code, 0, r.err);
  const text = readFileSync(path.join(dest, 'factored_keys_report.json'), 'utf8');
  const report = JSON.parse(text);
  assert.equal(report.source.name, 'mistral-bytes');
  assert.match(report.source.manifest_sha256, /^[0-9a-f]{64}$/);
  for (const p of [fixtures, work, os.homedir(), os.tmpdir()]) assert.ok(!text.includes(p), `report mentions ${p}`);
  assert.doesNotMatch(text, /"\/[^"]*"/, 'no absolute path anywhere in the report');
  // the same files elsewhere hash the same; another config hashes differently
  const copy = path.join(work, 'copy', 'mistral-bytes');
  mkdirSync(copy, { recursive: true });
  for (const f of readdirSync(mistral)) symlinkSync(path.join(mistral, f), path.join(copy, f));
  const d2 = path.join(work, 'report-copy');
  assert.equal((await cli('export', copy, d2, '--method', 'qk-svd', '--rank', '12')).code, 0);
  assert.equal(JSON.parse(readFileSync(path.join(d2, 'factored_keys_report.json'), 'utf8')).source.manifest_sha256, report.source.manifest_sha256);
  const edited = variant(mistral, 'mistral-edited', (c) => (c.rms_norm_eps = 1e-5));
  const d3 = path.join(work, 'report-edited');
  assert.equal((await cli('export', edited, d3, '--method', 'qk-svd', '--rank', '12')).code, 0);
  assert.notEqual(JSON.parse(readFileSync(path.join(d3, 'factored_keys_report.json'), 'utf8')).source.manifest_sha256, report.source.manifest_sha256);
});

test("the exported index.json's total_parameters and total_size match its shards", async () => {
  const dest = path.join(work, 'index-export');
  const r = await cli('export', mistral, dest, '--method', 'key-svd', '--rank', '16');
  assert.equal(r.code, 0, r.err);
  const source = JSON.parse(readFileSync(path.join(mistral, 'model.safetensors.index.json'), 'utf8')).metadata;
  const index = JSON.parse(readFileSync(path.join(dest, 'model.safetensors.index.json'), 'utf8'));
  // count from the shards' own headers
  const ckpt = await openCheckpoint(dest);
  let params = 0;
  let size = 0;
  try {
    for (const t of ckpt.tensors.values()) {
      params += t.shape.reduce((a, b) => a * b, 1);
      size += t.end - t.start;
    }
  } finally {
    await ckpt.close();
  }
  assert.equal(index.metadata.total_parameters, params);
  assert.equal(index.metadata.total_size, size);
  assert.notEqual(params, source.total_parameters, 'factoring changes the parameter count');
  assert.ok(params < source.total_parameters);
});
