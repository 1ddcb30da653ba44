/**
 * The Hugging Face runtime of exports (python/modeling_factored_keys.py, docs/FORMAT.md section 9):
 * static checks that need no PyTorch, and the figures that scripts/reference/check_runtime.py
 * recorded with transformers (test/reference/runtime/runtime_reference.json) against our own eval.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { cli } from '../helpers/cli';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';
import { AUTO_MAP, RUNTIME_CLASS, RUNTIME_FILE, type FactoredKeysConfig } from '../../src/core/export/format';

const REPO = path.resolve(__dirname, '../..');
const FIXTURES = path.resolve(REPO, '../shared/fixtures');
const TEMPLATE = path.join(REPO, 'python', RUNTIME_FILE);
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-runtime-'));
after(() => rmSync(work, { recursive: true, force: true }));

interface RuntimeRecord {
  pass: boolean;
  template_identical: boolean;
  ppl_runtime: number;
  ppl_ours: number;
  ppl_rel_diff: number;
  tokens: number;
  cache_step_max_abs_diff: number;
  padded_row_equals_unpadded: boolean;
  greedy64_equals_original?: boolean;
  ppl_reference_rel_diff?: number;
  mode: string;
  architecture: string;
}
interface CacheRecord {
  factored: { cached_tokens: number; key_bytes: number; value_bytes: number };
  original: { cached_tokens: number; key_bytes: number; value_bytes: number };
  savings: { per_token: { key_bytes: { before: number; after: number }; value_bytes: { before: number } }; inputs: { context: number; batch: number } };
}
interface RuntimeReference {
  device: string;
  transformers: string;
  exports: Record<string, RuntimeRecord>;
  cache: Record<string, CacheRecord>;
  extras: Record<string, unknown>;
  failures: string[];
}
const readReference = (file: string): RuntimeReference => JSON.parse(readFileSync(path.join(REPO, 'test/reference/runtime', file), 'utf8')) as RuntimeReference;
/** scripts/reference/check_runtime.py's records: on the CPU (float32, the figures our eval is held to) and on the H200. */
const REF = readReference('runtime_reference.json');
const RECORDS: readonly RuntimeReference[] = [REF, readReference('runtime_reference_h200.json')];

function hasPython(): boolean {
  return spawnSync('python3', ['--version'], { stdio: 'ignore' }).status === 0;
}

async function exportAndCheck(source: string, name: string, ...policy: string[]): Promise<string> {
  const dest = path.join(work, name);
  const r = await cli('export', source, dest, ...policy, '--json');
  assert.equal(r.code, 0, r.err);
  // the modelling file is the template, byte for byte
  assert.ok(readFileSync(path.join(dest, RUNTIME_FILE)).equals(readFileSync(TEMPLATE)), `${name}: ${RUNTIME_FILE} differs from python/${RUNTIME_FILE}`);
  const config = JSON.parse(readFileSync(path.join(dest, 'config.json'), 'utf8')) as { auto_map: unknown; factored_keys: FactoredKeysConfig };
  assert.deepEqual(config.auto_map, AUTO_MAP);
  // every shape the runtime gives a module is the shape stored in the safetensors
  const ckpt = await openCheckpoint(dest);
  try {
    for (const layer of config.factored_keys.layers) {
      assert.ok(layer.attention, `layer ${layer.layer} has an attention block`);
      for (const [tensor, shape] of Object.entries(layer.attention.shapes)) assert.deepEqual([...ckpt.tensor(tensor).shape], shape, tensor);
      assert.ok(ckpt.tensor(layer.attention.output), layer.attention.output);
    }
  } finally {
    await ckpt.close();
  }
  return dest;
}

test('the template compiles, and auto_map names a class the file defines', (t) => {
  const text = readFileSync(TEMPLATE, 'utf8');
  const [module, cls] = AUTO_MAP.AutoModelForCausalLM.split('.');
  assert.equal(`${module}.py`, RUNTIME_FILE);
  assert.equal(cls, RUNTIME_CLASS);
  assert.match(text, new RegExp(`^class ${cls}\\b`, 'm'));
  assert.match(text, /^FORMAT_VERSION = 1$/m);
  if (!hasPython()) return t.skip('python3 is not installed');
  const out = path.join(work, 'compiled.pyc');
  execFileSync('python3', ['-c', 'import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)', TEMPLATE, out]);
});

test('exports carry the template unchanged and auto_map (latent GQA, absorbed fused Conv1D, q/k norm, sinks)', async () => {
  await exportAndCheck(path.join(FIXTURES, 'mistral-bytes'), 'mistral', '--method', 'key-svd', '--rank', '16');
  await exportAndCheck(path.join(FIXTURES, 'gpt2-bytes'), 'gpt2', '--method', 'qk-svd', '--rank', '16');
  await exportAndCheck(path.join(FIXTURES, 'layouts2/qwen3'), 'qwen3', '--method', 'key-svd', '--rank', '8');
  await exportAndCheck(path.join(FIXTURES, 'layouts2/gpt_oss'), 'gpt_oss', '--method', 'key-svd', '--rank', '8');
  // the source's number formatting survives (transformers 5 refuses 30 for a float field)
  const gemma2 = await exportAndCheck(path.join(FIXTURES, 'layouts2/gemma2'), 'gemma2', '--method', 'key-svd', '--rank', '8');
  assert.match(readFileSync(path.join(gemma2, 'config.json'), 'utf8'), /"final_logit_softcapping": 30\.0,/);
});

for (const REF of RECORDS) test(`recorded transformers run (${REF.device}): every export passes, both trained fixtures and every layouts2 family`, () => {
  assert.deepEqual(REF.failures, []);
  assert.equal(REF.transformers, '5.17.0');
  const names = Object.keys(REF.exports);
  for (const m of ['gpt2-bytes', 'mistral-bytes']) for (const method of ['key-svd', 'qk-svd']) for (const r of ['r16', 'full']) assert.ok(names.includes(`${m}.${method}.${r}`), `${m}.${method}.${r} was checked`);
  const families = ['cohere2', 'gemma2', 'gemma3', 'gpt_bigcode', 'gpt_oss', 'gptj', 'granite', 'llama3', 'mixtral', 'olmo2', 'phi', 'phi3', 'qwen3', 'qwen3_moe', 'smollm3', 'stablelm', 'starcoder2'];
  for (const f of families) for (const r of ['r8', 'full']) assert.ok(names.includes(`layouts2.${f}.${r}`), `layouts2.${f}.${r} was checked`);
  for (const [name, rec] of Object.entries(REF.exports)) {
    assert.equal(rec.pass, true, name);
    assert.equal(rec.template_identical, true, name);
    assert.ok(rec.ppl_rel_diff <= 1e-3, `${name}: transformers ppl ${rec.ppl_runtime} vs our eval ${rec.ppl_ours}`);
    assert.ok(rec.cache_step_max_abs_diff <= 1e-3, `${name}: cached decoding drifts ${rec.cache_step_max_abs_diff}`);
    assert.equal(rec.padded_row_equals_unpadded, true, name);
    if (name.endsWith('.full')) assert.equal(rec.greedy64_equals_original, true, `${name}: 64 greedy tokens as the original`);
    if (rec.ppl_reference_rel_diff !== undefined) assert.ok(rec.ppl_reference_rel_diff <= 1e-3, `${name}: vs the full-shape rank-r model`);
  }
});

for (const REF of RECORDS) test(`recorded cache bytes (${REF.device}) at the model context (1,024 mistral-bytes, 256 gpt2-bytes) x batch 8 equal savings, before and after`, () => {
  for (const name of ['mistral-bytes.key-svd.r16', 'gpt2-bytes.key-svd.r16']) {
    const c = REF.cache[name];
    assert.ok(c, name);
    const tokens = c.savings.inputs.context * c.savings.inputs.batch;
    assert.equal(c.factored.cached_tokens, c.savings.inputs.context);
    assert.equal(c.factored.key_bytes, c.savings.per_token.key_bytes.after * tokens, `${name}: factored key bytes`);
    assert.equal(c.original.key_bytes, c.savings.per_token.key_bytes.before * tokens, `${name}: original key bytes`);
    assert.equal(c.factored.value_bytes, c.savings.per_token.value_bytes.before * tokens);
    assert.equal(c.original.value_bytes, c.factored.value_bytes);
  }
  assert.equal(REF.extras.roundtrip_config_has_block, true);
  assert.equal(REF.extras.roundtrip_template_identical, true);
  assert.ok((REF.extras.roundtrip_logits_max_abs_diff as number) === 0);
});

test('our eval of fresh exports reproduces the perplexity transformers measured on them', async () => {
  const cases: [string, string, string[]][] = [
    ['mistral-bytes.key-svd.r16', path.join(FIXTURES, 'mistral-bytes'), ['--method', 'key-svd', '--rank', '16']],
    ['layouts2.gemma3.r8', path.join(FIXTURES, 'layouts2/gemma3'), ['--method', 'key-svd', '--rank', '8']],
  ];
  for (const [name, source, policy] of cases) {
    const rec = REF.exports[name];
    const text = path.join(work, `${name}.txt`);
    writeFileSync(text, readFileSync(path.join(FIXTURES, 'heldout.txt')).subarray(0, rec.tokens + 1));
    const dest = path.join(work, `eval-${name}`);
    const ex = await cli('export', source, dest, ...policy);
    assert.equal(ex.code, 0, ex.err);
    const ev = await cli('eval', dest, '--text', text, '--tokenizer', 'bytes', '--seq', '256', '--json');
    assert.equal(ev.code, 0, ev.err);
    const ppl = (JSON.parse(ev.out) as { perplexity: number }).perplexity;
    assert.ok(Math.abs(ppl - rec.ppl_runtime) / rec.ppl_runtime <= 1e-3, `${name}: our eval ${ppl} vs transformers ${rec.ppl_runtime}`);
  }
});
