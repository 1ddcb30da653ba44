/**
 * Perplexity end to end on the trained fixtures, against the PyTorch/transformers reference
 * checked in by scripts/reference/eval_reference.py. To keep `npm test` light this runs the
 * protocol on the first WINDOWS windows of heldout.txt (the reference stores every window's NLL);
 * test/integration/eval-full.test.ts runs the whole text (FK_EVAL_FULL=0 skips it).
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { cli } from '../helpers/cli';
import { comparePlan, evaluateCheckpoint, PlanEvaluator, sweepPerplexity } from '../../src/core/eval';
import { fixture, REPO_ROOT } from '../helpers/fixtures';

const WINDOWS = 3;
const SEQ = 256;
const TOLERANCE = 0.005; // the bar: within 0.5 % of the reference

interface RefRun {
  perplexity: number;
  window_nll: number[];
}
const REF: { models: Record<string, { original: RefRun; factored: Record<string, RefRun> }> } = JSON.parse(
  readFileSync(path.join(REPO_ROOT, 'test/reference/eval/eval_reference.json'), 'utf8'),
);
const HELDOUT = Int32Array.from(readFileSync(fixture('heldout.txt')));
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-eval-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** Reference perplexity over the first `n` windows. */
function refPpl(run: RefRun, n = WINDOWS): number {
  return Math.exp(run.window_nll.slice(0, n).reduce((a, b) => a + b, 0) / (n * SEQ));
}

function assertClose(actual: number, expected: number, what: string, tol = TOLERANCE): void {
  assert.ok(Math.abs(actual / expected - 1) <= tol, `${what}: ${actual} vs reference ${expected} (${((actual / expected - 1) * 100).toFixed(4)} %)`);
}

/** The first WINDOWS windows of heldout.txt as a text file, so the CLI evaluates exactly those. */
const shortText = path.join(work, 'heldout-short.txt');
writeFileSync(shortText, readFileSync(fixture('heldout.txt')).subarray(0, WINDOWS * SEQ + 1));

for (const name of ['gpt2-bytes', 'mistral-bytes']) {
  test(`${name}: original and in-memory key-svd/qk-svd plans at ranks 8, 16, 32 match the reference`, async () => {
    const ev = await PlanEvaluator.open(fixture(name));
    try {
      const points = await sweepPerplexity(ev, HELDOUT, { methods: ['key-svd', 'qk-svd'], ranks: [8, 16, 32] }, { seq: SEQ, maxWindows: WINDOWS, backend: 'cpu' });
      assert.equal(points.length, 7);
      assertClose(points[0].perplexity, refPpl(REF.models[name].original), `${name} original`);
      for (const p of points.slice(1)) {
        assertClose(p.perplexity, refPpl(REF.models[name].factored[`${p.method}/${p.rank}`]), `${name} ${p.method} rank ${p.rank}`);
        assert.ok(p.keyCacheBytesPerToken < points[0].keyCacheBytesPerToken);
        assert.ok(Math.abs(p.deltaPercent - (p.perplexity / points[0].perplexity - 1) * 100) < 1e-9);
      }
    } finally {
      await ev.close();
    }
  });
}

for (const [name, method, rank] of [
  ['gpt2-bytes', 'key-svd', '16'],
  ['mistral-bytes', 'qk-svd', '8'],
] as const) {
  test(`${name}: eval of the ${method} rank-${rank} export equals the in-memory plan and the reference`, async () => {
    const dest = path.join(work, `${name}-${method}-${rank}`);
    const e = await cli('export', fixture(name), dest, '--method', method, '--rank', rank, '--json');
    assert.equal(e.code, 0, e.err);
    const r = await cli('eval', dest, '--text', shortText, '--tokenizer', 'bytes', '--seq', String(SEQ), '--backend', 'cpu', '--json');
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assert.deepEqual(Object.keys(j), ['perplexity', 'tokens', 'backend', 'seconds', 'variant', 'method', 'ranks', 'seq', 'tokenizer']);
    assert.equal(j.variant, 'export');
    assert.equal(j.method, method);
    assert.deepEqual(j.ranks, { min: Number(rank), max: Number(rank), mean: Number(rank) });
    assert.equal(j.seq, SEQ);
    assert.equal(j.tokenizer, 'bytes');
    assert.equal(j.tokens, WINDOWS * SEQ);
    assert.equal(j.backend, 'cpu');
    assert.ok(j.seconds > 0);
    assertClose(j.perplexity, refPpl(REF.models[name].factored[`${method}/${rank}`]), `${name} ${method} ${rank} export`);
    const planned = await cli('eval', fixture(name), '--text', shortText, '--tokenizer', 'bytes', '--method', method, '--rank', rank, '--backend', 'cpu', '--json');
    assert.equal(planned.code, 0, planned.err);
    assert.equal(JSON.parse(planned.out).variant, 'plan');
    assert.equal(JSON.parse(planned.out).method, method);
    // Same weights bit for bit up to float64 summation order: essentially identical.
    assertClose(JSON.parse(planned.out).perplexity, j.perplexity, 'in-memory plan vs export', 1e-5);
  });
}

test('evaluateCheckpoint reports the protocol: windows, tokens, per-window NLL', async () => {
  const r = await evaluateCheckpoint(fixture('gpt2-bytes'), HELDOUT, { seq: SEQ, maxWindows: 2, backend: 'cpu' });
  assert.equal(r.windows, 2);
  assert.equal(r.tokens, 2 * SEQ);
  REF.models['gpt2-bytes'].original.window_nll.slice(0, 2).forEach((expected, w) => assertClose(r.windowNll[w], expected, `window ${w} NLL`, 1e-4));
});

test('eval CLI: human output, and one-line errors for bad input', async () => {
  const ok = await cli('eval', fixture('gpt2-bytes'), '--text', shortText, '--tokenizer', 'bytes', '--backend', 'cpu');
  assert.equal(ok.code, 0, ok.err);
  assert.match(ok.out, /^perplexity \d+\.\d{4} over 768 tokens \(3 windows of 256\) on cpu in \d+\.\d+ s\n$/);
  const cases: [string[], RegExp][] = [
    [['eval', fixture('gpt2-bytes'), '--tokenizer', 'bytes'], /--text FILE is required/],
    [['eval', fixture('gpt2-bytes'), '--text', shortText], /--tokenizer is required/],
    [['eval', fixture('gpt2-bytes'), '--text', shortText, '--tokenizer', path.join(work, 'nope.json')], /nope\.json: tokenizer file not found/],
    [['eval', fixture('gpt2-bytes'), '--text', path.join(work, 'nope.txt'), '--tokenizer', 'bytes'], /nope\.txt: text file not found/],
    [['eval', fixture('gpt2-bytes'), '--text', shortText, '--tokenizer', 'bytes', '--seq', '512'], /--seq 512 is longer than the model's 256 positions/],
    [['eval', fixture('gpt2-bytes'), '--text', shortText, '--tokenizer', 'bytes', '--seq', '1024'], /--seq 1024 is longer/],
    [['eval', fixture('mistral-bytes'), '--text', shortText, '--tokenizer', 'bytes', '--seq', '1000'], /too short for one window of --seq 1000/],
    [['eval', fixture('gpt2-bytes'), '--text', shortText, '--tokenizer', 'bytes', '--backend', 'tpu'], /--backend must be one of/],
    [['eval', fixture('gpt2-bytes'), '--text', shortText, '--tokenizer', 'bytes', '--method', 'key-svd', '--rank', '65'], /rank/],
    [['eval', fixture('gpt2-bytes'), '--text', shortText, '--tokenizer', 'bytes', '--method', 'pca', '--rank', '8'], /--method must be key-svd, qk-svd or calibrated/],
    [['eval', fixture('layouts2/deepseek_v3'), '--text', shortText, '--tokenizer', 'bytes'], /eval does not support multi-head latent attention \(deepseek_v3\)/],
    [['eval', path.join(work, 'gpt2-bytes-key-svd-16'), '--text', shortText, '--tokenizer', 'bytes', '--method', 'key-svd', '--rank', '8'], /already factored/],
    [['eval', fixture('gpt2-bytes'), '--text', shortText, '--tokenizer', 'bytes', '--bogus'], /unknown option --bogus/],
  ];
  for (const [argv, message] of cases) {
    const r = await cli(...argv);
    assert.equal(r.code, 1, `${argv.join(' ')} should fail`);
    assert.equal(r.out, '', 'no partial output');
    assert.match(r.err, /^error: [^\n]+\n$/);
    assert.match(r.err, message, r.err);
  }
});

test('comparePlan: original and plan side by side with the delta and cache sizes (the panel\'s Evaluate)', async () => {
  const ev = await PlanEvaluator.open(fixture('mistral-bytes'));
  const plan = await ev.uniformPlan('key-svd', 16);
  await ev.close();
  const seen: number[] = [];
  const c = await comparePlan(fixture('mistral-bytes'), plan, HELDOUT, { seq: SEQ, maxWindows: 2, batch: 1, backend: 'cpu', progress: (done, total) => seen.push(done / total) });
  assertClose(c.original.perplexity, refPpl(REF.models['mistral-bytes'].original, 2), 'original');
  assertClose(c.plan.perplexity, refPpl(REF.models['mistral-bytes'].factored['key-svd/16'], 2), 'plan');
  assert.ok(Math.abs(c.deltaPercent - (c.plan.perplexity / c.original.perplexity - 1) * 100) < 1e-9);
  assert.deepEqual(c.keyCacheBytesPerToken, { before: 4 * 2 * 64 * 2, after: 4 * 2 * 16 * 2 });
  assert.deepEqual(seen, [0.25, 0.5, 0.75, 1]);
});

test('eval of a damaged factored_keys block fails with one line naming what is wrong', async () => {
  const src = path.join(work, 'mistral-bytes-qk-svd-8'); // exported by an earlier test
  const damage: [string, (fk: Record<string, unknown> & { layers: Record<string, unknown>[]; ranks: number[][] }) => void, RegExp][] = [
    ['no-key-up', (fk) => (fk.layers[1].key_up = null), /factored_keys\.layers\[1\]\.key_up is missing/],
    ['bad-rank', (fk) => (fk.ranks[0][0] = 9), /layer 0 KV head 0 key slice is 8 wide but its rank is 9/],
    ['bad-scale', (fk) => (fk.softmax_scale = -1), /softmax_scale -1 is not the model's score scale/],
    ['bad-mode', (fk) => (fk.rope_mode = 'absorbed'), /rope_mode "absorbed" does not fit this mistral model, whose keys are stored latent/],
    ['bad-tensor', (fk) => ((fk.layers[0].key as { tensor: string }[])[0].tensor = 'nope.weight'), /tensor "nope\.weight" not found/],
  ];
  for (const [name, edit, message] of damage) {
    const dir = path.join(work, `damaged-${name}`);
    cpSync(src, dir, { recursive: true });
    const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    edit(config.factored_keys);
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    const r = await cli('eval', dir, '--text', shortText, '--tokenizer', 'bytes', '--backend', 'cpu', '--json');
    assert.equal(r.code, 1, name);
    assert.equal(r.out, '');
    assert.match(r.err, /^error: [^\n]+\n$/);
    assert.match(r.err, message, `${name}: ${r.err}`);
  }
});

test('sweepPerplexity over energy thresholds: per-head ranks from the spectrum, cache shrinking with the threshold', async () => {
  const ev = await PlanEvaluator.open(fixture('gpt2-bytes'));
  try {
    const seen: string[] = [];
    const points = await sweepPerplexity(ev, HELDOUT, { methods: ['key-svd'], thresholds: [0.8, 0.99] }, { seq: SEQ, maxWindows: 1, backend: 'cpu', progress: (d, t, label) => seen.push(`${d}/${t} ${label}`) });
    assert.deepEqual(points.map((p) => [p.method, p.threshold]), [['original', undefined], ['key-svd', 0.8], ['key-svd', 0.99]]);
    assert.ok(points[1].keyCacheBytesPerToken < points[2].keyCacheBytesPerToken && points[2].keyCacheBytesPerToken < points[0].keyCacheBytesPerToken);
    assert.ok(points[1].perplexity > points[2].perplexity);
    assert.deepEqual(seen, ['1/3 original', '2/3 key-svd energy 0.8', '3/3 key-svd energy 0.99']);
  } finally {
    await ev.close();
  }
});

test('eval --plan: a saved plan file is evaluated in memory, like the equivalent --method/--rank', async () => {
  const planFile = path.join(work, 'gpt2-plan.json');
  const p = await cli('plan', fixture('gpt2-bytes'), '--method', 'qk-svd', '--rank', '16', '--out', planFile, '--json');
  assert.equal(p.code, 0, p.err);
  const viaPlan = await cli('eval', fixture('gpt2-bytes'), '--text', shortText, '--tokenizer', 'bytes', '--plan', planFile, '--backend', 'cpu', '--json');
  assert.equal(viaPlan.code, 0, viaPlan.err);
  assertClose(JSON.parse(viaPlan.out).perplexity, refPpl(REF.models['gpt2-bytes'].factored['qk-svd/16']), 'eval --plan');
  const bad = await cli('eval', fixture('mistral-bytes'), '--text', shortText, '--tokenizer', 'bytes', '--plan', planFile, '--backend', 'cpu');
  assert.equal(bad.code, 1);
  assert.match(bad.err, /^error: .*gpt2-plan\.json: plan is for kv_heads = 4 but the checkpoint has 2\n$/);
});

test('gpt2-bytes: an export with different ranks per head (zero-padded absorbed heads) evaluates like its in-memory plan', async () => {
  const dest = path.join(work, 'gpt2-energy');
  const e = await cli('export', fixture('gpt2-bytes'), dest, '--method', 'qk-svd', '--energy', '0.9', '--json');
  assert.equal(e.code, 0, e.err);
  const ranks: number[][] = JSON.parse(e.out).ranks;
  assert.ok(ranks.some((row) => new Set(row).size > 1), `ranks vary within a layer: ${JSON.stringify(ranks)}`);
  const exported = await cli('eval', dest, '--text', shortText, '--tokenizer', 'bytes', '--backend', 'cpu', '--json');
  const planned = await cli('eval', fixture('gpt2-bytes'), '--text', shortText, '--tokenizer', 'bytes', '--backend', 'cpu', '--method', 'qk-svd', '--energy', '0.9', '--json');
  assert.equal(exported.code, 0, exported.err);
  assert.equal(planned.code, 0, planned.err);
  assertClose(JSON.parse(exported.out).perplexity, JSON.parse(planned.out).perplexity, 'export vs plan', 1e-5);
});
