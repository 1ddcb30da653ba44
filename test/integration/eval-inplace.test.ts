/**
 * Weights in place (the CUDA path, `inPlaceFor`): each stored 16/32-bit weight is referenced in
 * its checkpoint file through a hard link and widened on the device at every run, instead of
 * being read, converted and rewritten. Exercised on the CPU through the test hook: the NLL of
 * every window must equal the float32 path's, for a BF16 and an F32 fixture, an export, and when
 * no link can be made (a segment folder on another file system: bytes copied as stored). F32
 * weights give the same bits; widened BF16 weights agree to 1e-6 relative, not bit for bit, as the
 * CPU's Gemm packs a constant float32 weight ahead but not the output of an in-graph Cast, and
 * sums in another order.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, afterEach, test } from 'node:test';
import { evaluateCheckpoint } from '../../src/core/eval';
import { forwardInternals } from '../../src/core/eval/forward';
import { cli } from '../helpers/cli';
import { fixture } from '../helpers/fixtures';

const HELDOUT = Int32Array.from(readFileSync(fixture('heldout.txt')).subarray(0, 8 * 256 + 1));
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-inplace-'));
const savedTmp = process.env.FK_EVAL_TMPDIR;
afterEach(() => {
  forwardInternals.inPlaceBackends.delete('cpu');
  if (savedTmp === undefined) delete process.env.FK_EVAL_TMPDIR;
  else process.env.FK_EVAL_TMPDIR = savedTmp;
});
after(() => rmSync(work, { recursive: true, force: true }));

/** `linked`: the least share of weight bytes referenced in place (fused and re-assembled projections are written). */
async function both(dir: string, exact = false, linked = 0.9): Promise<void> {
  const plain = await evaluateCheckpoint(dir, HELDOUT, { seq: 256, backend: 'cpu', threads: 2 });
  assert.equal(plain.plan?.inPlace, false);
  forwardInternals.inPlaceBackends.add('cpu');
  const inPlace = await evaluateCheckpoint(dir, HELDOUT, { seq: 256, backend: 'cpu', threads: 2 });
  assert.equal(inPlace.plan?.inPlace, true);
  assert.equal(inPlace.plan?.half, false);
  const t = inPlace.timings!;
  if (linked > 0) assert.ok(t.linkedBytes >= linked * (t.linkedBytes + t.writtenBytes), `${t.linkedBytes} bytes linked, ${t.writtenBytes} written`);
  else assert.equal(t.linkedBytes, 0);
  assert.equal(plain.timings!.linkedBytes, 0);
  assert.equal(inPlace.windowNll.length, plain.windowNll.length);
  inPlace.windowNll.forEach((v, i) => {
    const rel = Math.abs(v - plain.windowNll[i]) / Math.abs(plain.windowNll[i]);
    assert.ok(exact ? rel === 0 : rel < 1e-6, `window ${i}: ${v} vs ${plain.windowNll[i]} (${rel.toExponential(2)} relative)`);
  });
  // float16 products were asked for: the converted path, not in place
  const half = await evaluateCheckpoint(dir, HELDOUT, { seq: 256, backend: 'cpu', threads: 2, precision: 'float16' });
  assert.equal(half.plan?.inPlace, false);
}

test('BF16 checkpoint: in place equals the float32 path window by window', async () => {
  await both(fixture('mistral-bytes'));
});

test('F32 checkpoint with Conv1D weights: in place equals the float32 path', async () => {
  await both(fixture('gpt2-bytes'), true, 0.7);
});

test('a factored export: in place equals the float32 path', async () => {
  const out = path.join(work, 'export');
  const r = await cli('export', fixture('mistral-bytes'), out, '--method', 'key-svd', '--rank', '16');
  assert.equal(r.code, 0, r.err);
  await both(out, false, 0.8);
});

test('no hard link possible (another file system): the stored bytes are copied, same result', async (t) => {
  const shm = '/dev/shm';
  if (!existsSync(shm) || statSync(shm).dev === statSync(fixture('mistral-bytes')).dev) return t.skip('no second file system here');
  process.env.FK_EVAL_TMPDIR = shm;
  await both(fixture('mistral-bytes'), false, 0);
});

test('fused RMSNorms (the GPU providers\' SimplifiedLayerNormalization) agree with the elementwise form, on the CPU through the test hook', async () => {
  // mistral-bytes: RMSNorm; gemma3: (1 + w) RMSNorms, per-head q/k norms on 4-D inputs; qwen3: per-head q/k norms
  for (const dir of [fixture('mistral-bytes'), fixture('layouts2/gemma3'), fixture('layouts2/qwen3')]) {
    const plain = await evaluateCheckpoint(dir, HELDOUT, { seq: 64, backend: 'cpu', threads: 2, maxWindows: 4 });
    forwardInternals.fusedNormBackends.add('cpu');
    try {
      const fused = await evaluateCheckpoint(dir, HELDOUT, { seq: 64, backend: 'cpu', threads: 2, maxWindows: 4 });
      assert.equal(fused.windowNll.length, plain.windowNll.length);
      fused.windowNll.forEach((v, i) => {
        const rel = Math.abs(v - plain.windowNll[i]) / Math.abs(plain.windowNll[i]);
        assert.ok(rel < 1e-5, `${path.basename(dir)} window ${i}: ${v} vs ${plain.windowNll[i]} (${rel.toExponential(2)} relative)`);
      });
      // and the fused graph really ran: its rounding differs in the last bits
      assert.ok(fused.windowNll.some((v, i) => v !== plain.windowNll[i]), `${path.basename(dir)}: fused NLL equals the elementwise form bit for bit`);
    } finally {
      forwardInternals.fusedNormBackends.delete('cpu');
    }
  }
});
