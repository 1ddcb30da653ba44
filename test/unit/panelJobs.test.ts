/**
 * The extension's job worker (dist/jobWorker.js) run as the extension runs it: a worker thread
 * with a shared cancel flag, on the Mistral fixture. Analysis (both methods), export with
 * cancellation, evaluation, quality sweeps (against the CLI, cancellable), and error reporting.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import type { JobEvent, JobRequest, JobWorkerData } from '../../src/extension/jobProtocol';
import { panelPlan } from '../../src/extension/panelModel';
import { normalizeSweep, type CheckpointSummary, type EvaluationResult, type SpectraPayload, type SweepResult } from '../../src/protocol';
import { CLI, fixture, REPO_ROOT, tempDir } from '../helpers/fixtures';

const WORKER = path.join(REPO_ROOT, 'dist/jobWorker.js');
const MISTRAL = fixture('mistral-bytes');

interface Outcome {
  result?: unknown;
  error?: { message: string; userFacing: boolean; cancelled: boolean };
  progress: number;
}

/** Runs one job; `cancelAfter` sets the cancel flag after that many progress events. */
function runJob(request: JobRequest, cancelAfter?: number): Promise<Outcome> {
  const cancelFlag = new SharedArrayBuffer(4);
  // No inherited --import tsx: the worker runs the plain bundle, as in the extension host.
  const worker = new Worker(WORKER, { workerData: { request, cancelFlag } satisfies JobWorkerData, execArgv: [] });
  let progress = 0;
  return new Promise((resolve, reject) => {
    worker.on('message', (e: JobEvent) => {
      if (e.type === 'progress') {
        progress++;
        if (cancelAfter !== undefined && progress >= cancelAfter) Atomics.store(new Int32Array(cancelFlag), 0, 1);
      } else if (e.type === 'done') resolve({ result: e.result, progress });
      else resolve({ error: { message: e.message, userFacing: e.userFacing, cancelled: e.cancelled }, progress });
    });
    worker.on('error', reject);
  }).finally(() => worker.terminate()) as Promise<Outcome>;
}

const summary: CheckpointSummary = {
  name: 'mistral-bytes', dir: MISTRAL, architecture: 'mistral', layers: 4, hiddenSize: 256, queryHeads: 4, kvHeads: 2, headDim: 64,
  rope: true, rotaryDim: 64, ropeTheta: 10000, dtype: 'BF16', parameters: 0, files: 3, queryToKv: [0, 0, 1, 1], features: [],
};

describe('job worker (dist/jobWorker.js)', () => {
  const tmp = tempDir('fk-jobs-');
  let keySpectra: SpectraPayload;

  before(() => {
    if (!existsSync(WORKER)) execFileSync(process.execPath, [path.join(REPO_ROOT, 'scripts/build.mjs')], { cwd: REPO_ROOT });
  });
  after(() => tmp.cleanup());

  it('analyzes every head and returns typed arrays', async () => {
    const out = await runJob({ kind: 'analyze', dir: MISTRAL, backend: 'cpu', threads: 1, method: 'key-svd' });
    assert.equal(out.error, undefined);
    keySpectra = (out.result as { spectra: SpectraPayload }).spectra;
    assert.ok(keySpectra.keySingular instanceof Float32Array && keySpectra.queryEffRank instanceof Uint32Array);
    assert.equal(keySpectra.keySingular.length, 4 * 2 * 64);
    assert.equal(keySpectra.planMethod, 'key-svd');
    assert.ok(out.progress >= 4, `progress events: ${out.progress}`);
  });

  it('adds query-aware energies for qk-svd', async () => {
    const out = await runJob({ kind: 'analyze', dir: MISTRAL, backend: 'cpu', threads: 1, method: 'qk-svd' });
    const qk = (out.result as { spectra: SpectraPayload }).spectra;
    assert.equal(qk.planMethod, 'qk-svd');
    assert.deepEqual(qk.keySingular, keySpectra.keySingular);
    assert.notDeepEqual(qk.planEnergy, keySpectra.planEnergy);
    const plan = panelPlan(summary, qk, { policy: 'energy', rank: 8, fraction: 0.25, energy: 0.9, budget: 0.25, overrides: [] }, 'qk-svd');
    assert.ok(plan.ranks.flat().every((r) => r >= 1 && r <= 64));
  });

  it('exports, and a cancelled export leaves nothing behind', async () => {
    const plan = panelPlan(summary, keySpectra, { policy: 'uniform', rank: 8, fraction: 0.25, energy: 0.9, budget: 0.25, overrides: [{ layer: 1, head: 1, rank: 4 }] }, 'key-svd');
    const cancelled = path.join(tmp.dir, 'cancelled');
    const c = await runJob({ kind: 'export', dir: MISTRAL, dest: cancelled, plan, backend: 'cpu', threads: 1 }, 1);
    assert.deepEqual(c.error && { cancelled: c.error.cancelled, message: c.error.message }, { cancelled: true, message: 'cancelled' });
    assert.deepEqual(readdirSync(tmp.dir), [], 'no destination and no temporary folder');
    const dest = path.join(tmp.dir, 'done');
    const ok = await runJob({ kind: 'export', dir: MISTRAL, dest, plan, backend: 'cpu', threads: 1 });
    assert.equal(ok.error, undefined);
    assert.ok((ok.result as { files: string[] }).files.includes('config.json'));
    const config = JSON.parse(readFileSync(path.join(dest, 'config.json'), 'utf8'));
    assert.deepEqual(config.factored_keys.ranks, [[8, 8], [8, 4], [8, 8], [8, 8]]);
    // Exporting again onto the now non-empty folder is refused with one line, as a user error.
    const again = await runJob({ kind: 'export', dir: MISTRAL, dest, plan, backend: 'cpu', threads: 1 });
    assert.equal(again.error?.userFacing, true);
    assert.doesNotMatch(again.error!.message, /\n/);
  });

  it('evaluates the original and the plan on the same tokens', async () => {
    const text = path.join(tmp.dir, 'text.txt');
    writeFileSync(text, readFileSync(fixture('heldout.txt')).subarray(0, 1024));
    const plan = panelPlan(summary, keySpectra, { policy: 'uniform', rank: 8, fraction: 0.25, energy: 0.9, budget: 0.25, overrides: [] }, 'key-svd');
    const out = await runJob({ kind: 'evaluate', dir: MISTRAL, plan, textFile: text, tokenizer: 'bytes', seq: 128, maxWindows: 0, backend: 'cpu', threads: 1 });
    const r = out.result as EvaluationResult;
    assert.equal(out.error, undefined);
    assert.equal(r.tokens, 7 * 128);
    assert.ok(r.original > 1 && r.factored > 1);
    assert.equal(r.deltaPercent, (r.factored / r.original - 1) * 100);
  });

  it('sweeps both methods over ranks; each point is what `eval --method --rank` measures', async () => {
    const text = path.join(tmp.dir, 'sweep.txt');
    writeFileSync(text, readFileSync(fixture('heldout.txt')).subarray(0, 1024));
    const plan = panelPlan(summary, keySpectra, { policy: 'uniform', rank: 16, fraction: 0.25, energy: 0.9, budget: 0.25, overrides: [] }, 'qk-svd');
    const out = await runJob({ kind: 'sweep', dir: MISTRAL, plan, axis: 'rank', values: [8, 64], textFile: text, tokenizer: 'bytes', seq: 128, maxWindows: 0, backend: 'cpu', threads: 1 });
    assert.equal(out.error, undefined);
    const r = normalizeSweep(out.result) satisfies SweepResult;
    assert.deepEqual(r.points.map((p) => `${p.method}:${p.rank}:${p.keyCacheBytesPerToken}`), ['original:null:1024', 'key-svd:8:128', 'key-svd:64:1024', 'qk-svd:8:128', 'qk-svd:64:1024']);
    assert.equal(out.progress, 6, 'the original, four plans, then the panel plan');
    assert.equal(r.tokens, 7 * 128);
    const cli = (...args: string[]) => JSON.parse(execFileSync(process.execPath, [CLI, 'eval', MISTRAL, '--text', text, '--tokenizer', 'bytes', '--seq', '128', '--backend', 'cpu', '--threads', '1', '--json', ...args], { encoding: 'utf8' })).perplexity as number;
    assert.equal(r.points[0].perplexity, cli());
    assert.equal(r.points[3].perplexity, cli('--method', 'qk-svd', '--rank', '8'));
    assert.equal(r.plan.perplexity, cli('--method', 'qk-svd', '--rank', '16'));
    assert.equal(r.plan.keyCacheBytesPerToken, 256);
    // Full rank reproduces the original up to the 16-bit rounding of the factored weights.
    for (const p of [r.points[2], r.points[4]]) assert.ok(Math.abs(p.deltaPercent) < 0.05, `${p.method} full rank: ${p.deltaPercent}%`);
    // Rank 8 of 64 costs quality on this trained model.
    assert.ok(r.points[1].deltaPercent > 1 && r.points[3].deltaPercent > 1);
  });

  it('sweeps energy thresholds, and a cancelled sweep reports cancelled', async () => {
    const text = path.join(tmp.dir, 'sweep-e.txt');
    writeFileSync(text, readFileSync(fixture('heldout.txt')).subarray(0, 600));
    const plan = panelPlan(summary, keySpectra, { policy: 'energy', rank: 16, fraction: 0.25, energy: 0.9, budget: 0.25, overrides: [] }, 'key-svd');
    const job: JobRequest = { kind: 'sweep', dir: MISTRAL, plan, axis: 'energy', values: [0.5, 0.9], textFile: text, tokenizer: 'bytes', seq: 128, maxWindows: 2, backend: 'cpu', threads: 1 };
    const out = await runJob(job);
    const r = normalizeSweep(out.result);
    assert.equal(r.axis, 'energy');
    assert.equal(r.tokens, 2 * 128);
    assert.deepEqual(r.points.slice(1).map((p) => `${p.method}@${p.threshold}`), ['key-svd@0.5', 'key-svd@0.9', 'qk-svd@0.5', 'qk-svd@0.9']);
    // The key-svd 0.9 point is the panel's plan (same energies, same threshold).
    assert.equal(r.plan.perplexity, r.points[2].perplexity);
    assert.equal(r.plan.keyCacheBytesPerToken, r.points[2].keyCacheBytesPerToken);
    assert.ok(r.points[1].keyCacheBytesPerToken < r.points[2].keyCacheBytesPerToken);
    const c = await runJob(job, 1);
    assert.deepEqual(c.error && { cancelled: c.error.cancelled, message: c.error.message }, { cancelled: true, message: 'cancelled' });
  });

  it('reports a bad checkpoint as one user-facing line', async () => {
    const out = await runJob({ kind: 'analyze', dir: path.join(tmp.dir, 'missing'), backend: 'cpu', threads: 1, method: 'key-svd' });
    assert.equal(out.error?.userFacing, true);
    assert.match(out.error!.message, /missing: no such file or folder/);
  });
});
