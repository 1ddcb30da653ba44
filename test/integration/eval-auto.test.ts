/**
 * `eval --backend auto` where several providers are usable: a trial on the first layers times
 * each, the fastest estimate wins and is remembered per model shape; a provider that fails its
 * trial is passed over. The candidates are injected (this machine has only the CPU), so the CPU
 * stands in for a second provider where the real trial runs.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, afterEach, before, test } from 'node:test';
import { chooseEvalBackend, estimateMs, evalTrialInternals, MIN_WINDOWS_FOR_TRIAL, type TrialTiming } from '../../src/core/eval/backendTrial';
import { checkpointSource, evaluateCheckpoint } from '../../src/core/eval';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';
import type { BackendName } from '../../src/core/compute/session';
import type { ModelSpec } from '../../src/core/eval/model';
import { fixture } from '../helpers/fixtures';

const HELDOUT = Int32Array.from(readFileSync(path.join(fixture('heldout.txt'))));
const cache = mkdtempSync(path.join(os.tmpdir(), 'fk-eval-auto-'));
const saved = process.env.FACTORED_KEYS_CACHE_DIR;
before(() => {
  process.env.FACTORED_KEYS_CACHE_DIR = cache;
});
afterEach(() => {
  rmSync(path.join(cache, 'eval-backend.json'), { force: true });
  evalTrialInternals.autoCandidates = undefined;
});
after(() => {
  if (saved === undefined) delete process.env.FACTORED_KEYS_CACHE_DIR;
  else process.env.FACTORED_KEYS_CACHE_DIR = saved;
  rmSync(cache, { recursive: true, force: true });
});

async function specOf(name: string): Promise<ModelSpec> {
  const ckpt = await openCheckpoint(fixture(name));
  try {
    return checkpointSource(ckpt).spec;
  } finally {
    await ckpt.close();
  }
}

const timing = (buildMs: number, runMs: number): TrialTiming => ({ buildMs, runMs, layers: 2, windows: 2 });

test('the estimate scales the trial to every layer and window', () => {
  // 4 layers = twice the trial's 2: build 2 × 10 ms, runs 2 × (6 ms / 2 windows) × 32 windows
  assert.equal(estimateMs(timing(10, 6), 4, 32), 2 * 10 + 2 * 3 * 32);
});

test('auto with one possible provider times nothing', async () => {
  evalTrialInternals.autoCandidates = ['cpu'];
  const r = await chooseEvalBackend(await specOf('mistral-bytes'), 100, { seq: 256 }, () => assert.fail('no trial expected'));
  assert.deepEqual(r, { backend: 'cpu' });
});

test('auto times each provider, picks the fastest estimate, remembers it and recalls it without timing', async () => {
  const spec = await specOf('mistral-bytes');
  evalTrialInternals.autoCandidates = ['cpu', 'webgpu'];
  const timed: BackendName[] = [];
  // webgpu builds slowly but runs fast: it wins on 64 windows
  const measure = async (b: BackendName) => {
    timed.push(b);
    return b === 'webgpu' ? timing(200, 2) : timing(5, 20);
  };
  const first = await chooseEvalBackend(spec, 64, { seq: 256, threads: 2 }, measure);
  assert.equal(first.backend, 'webgpu');
  assert.deepEqual(timed.sort(), ['cpu', 'webgpu']);
  assert.match(first.note ?? '', /timed .*cpu.*webgpu.*using webgpu/);
  const stored = JSON.parse(readFileSync(path.join(cache, 'eval-backend.json'), 'utf8')) as Record<string, { backend: string }>;
  assert.deepEqual(Object.values(stored).map((e) => e.backend), ['webgpu']);
  const again = await chooseEvalBackend(spec, 64, { seq: 256, threads: 2 }, () => assert.fail('a remembered choice needs no trial'));
  assert.equal(again.backend, 'webgpu');
  assert.match(again.note ?? '', /measured fastest/);
  // another window length is another problem: timed again
  timed.length = 0;
  await chooseEvalBackend(spec, 64, { seq: 128, threads: 2 }, measure);
  assert.equal(timed.length, 2);
});

test('a provider that fails its trial is passed over; too few windows time nothing', async () => {
  const spec = await specOf('mistral-bytes');
  evalTrialInternals.autoCandidates = ['cpu', 'webgpu'];
  const r = await chooseEvalBackend(spec, 64, { seq: 256 }, async (b) => {
    if (b === 'webgpu') throw new Error('device lost\nstack');
    return timing(5, 20);
  });
  assert.equal(r.backend, 'cpu');
  assert.match(r.note ?? '', /webgpu failed/);
  rmSync(path.join(cache, 'eval-backend.json'), { force: true });
  const few = await chooseEvalBackend(spec, MIN_WINDOWS_FOR_TRIAL - 1, { seq: 256 }, () => assert.fail('no trial expected'));
  assert.match(few.note ?? '', /too few/);
  assert.equal(existsSync(path.join(cache, 'eval-backend.json')), false);
});

test('a real trial (the CPU as both candidates) gives the same perplexity as --backend cpu and says how it chose', async () => {
  evalTrialInternals.autoCandidates = ['cpu', 'cpu'];
  const options = { seq: 128, maxWindows: MIN_WINDOWS_FOR_TRIAL };
  const auto = await evaluateCheckpoint(fixture('mistral-bytes'), HELDOUT, { ...options, backend: 'auto' });
  const cpu = await evaluateCheckpoint(fixture('mistral-bytes'), HELDOUT, { ...options, backend: 'cpu' });
  assert.equal(auto.backend, 'cpu');
  assert.equal(auto.perplexity, cpu.perplexity);
  assert.match(auto.backendNote ?? '', /^auto: timed cpu, cpu on 2 layers; estimated cpu [\d.]+ s; using cpu$/);
  assert.equal(cpu.backendNote, undefined);
  // the trial's segment files are gone with the evaluation's folder
  const left = readdirSync(os.tmpdir()).filter((n) => n.startsWith(`fk-eval-${process.pid}-`));
  assert.deepEqual(left, []);
});
