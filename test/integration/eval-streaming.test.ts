/**
 * Layer streaming (src/core/eval/forward.ts, issue 14): one segment resident at a time, every
 * window through it, hidden states kept or spilled to disk. The split and the spill change no
 * bit of the result; a machine without the memory gets one error line naming the figure.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';
import { FactoredKeysError } from '../../src/core/errors';
import { decodeToFloat32, encodeFromFloat32 } from '../../src/core/checkpoint/dtypes';
import { checkpointSource, convertWeight, evaluateCheckpoint, planStream } from '../../src/core/eval';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { generateSyntheticCheckpoint } from '../../bench/synthetic';
import { CLI, fixture } from '../helpers/fixtures';

const HELDOUT = Int32Array.from(readFileSync(fixture('heldout.txt')));
const run = promisify(execFile);

for (const name of ['mistral-bytes', 'gpt2-bytes']) {
  test(`${name}: one layer per segment, hidden states spilled to disk, gives the same NLL bit for bit`, async () => {
    const options = { seq: 256, backend: 'cpu' as const, maxWindows: 12, batch: 5 };
    const whole = await evaluateCheckpoint(fixture(name), HELDOUT, options);
    const streamed = await evaluateCheckpoint(fixture(name), HELDOUT, { ...options, segmentBytes: 1, spill: true });
    const split = await evaluateCheckpoint(fixture(name), HELDOUT, { ...options, segmentBytes: 1 });
    assert.equal(whole.plan!.segments.length, 1);
    assert.ok(split.plan!.segments.length >= 4, JSON.stringify(split.plan!.segments));
    assert.deepEqual(split.windowNll, whole.windowNll);
    assert.deepEqual(streamed.windowNll, whole.windowNll);
    assert.ok(whole.plan!.peakBytes < 2 ** 30, `estimate ${whole.plan!.peakBytes}`);
  });
}

test('too little memory: one FactoredKeysError naming the figure, before any weight is loaded', async () => {
  const ckpt = await openCheckpoint(fixture('mistral-bytes'));
  try {
    const source = checkpointSource(ckpt);
    assert.throws(
      () => planStream(source, 255, { seq: 256, memoryBytes: 64 * 2 ** 20 }),
      (e: unknown) => e instanceof FactoredKeysError && /^not enough memory to evaluate: needs about \d+ MiB \(.*\), 64 MiB available$/.test(e.message) && !e.message.includes('\n'),
    );
    // enough for one window at a time, with the hidden states spilled
    const tight = planStream(source, 255, { seq: 256, memoryBytes: 420 * 2 ** 20 });
    assert.ok(tight.batch >= 1 && tight.peakBytes <= 420 * 2 ** 20, JSON.stringify(tight));
  } finally {
    await ckpt.close();
  }
});

test('CLI: eval under FK_MEMORY_LIMIT too small exits 1 with one error line', async () => {
  const r = await run(process.execPath, [CLI, 'eval', fixture('mistral-bytes'), '--text', fixture('heldout.txt'), '--tokenizer', 'bytes', '--seq', '256'], { env: { ...process.env, FK_MEMORY_LIMIT: '100M' } }).then(
    () => ({ code: 0, stderr: '' }),
    (e: { code: number; stderr: string }) => e,
  );
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: not enough memory to evaluate: needs about [\d.]+ (MiB|GiB) \([^\n]*\), 100 MiB available\n$/);
});

test('weights convert once, bit-identical to the float32 round trip, on every 16-bit pattern', () => {
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const bytes = new Uint8Array(all.buffer);
  for (const [type, dtype] of [['bfloat16', 'BF16'], ['float16', 'F16']] as const) {
    const got = convertWeight({ type, dims: [65536], data: bytes }, false);
    assert.equal(got.type, 'float32');
    const want = decodeToFloat32(dtype, bytes);
    const g = new Float32Array(got.bytes.buffer, got.bytes.byteOffset, 65536);
    for (let i = 0; i < 65536; i++) if (!(Number.isNaN(want[i]) && Number.isNaN(g[i]))) assert.equal(Object.is(g[i], want[i]), true, `${type} 0x${i.toString(16)}`);
  }
  const finite = all.filter((b) => Math.abs(decodeToFloat32('BF16', new Uint8Array(Uint16Array.of(b).buffer))[0]) <= 65504);
  const half = convertWeight({ type: 'bfloat16', dims: [finite.length], data: new Uint8Array(finite.buffer) }, true);
  assert.equal(half.type, 'float16');
  assert.deepEqual(Buffer.from(half.bytes), Buffer.from(encodeFromFloat32('F16', decodeToFloat32('BF16', new Uint8Array(finite.buffer)))));
  // a value beyond float16's range keeps the tensor in float32
  assert.equal(convertWeight({ type: 'bfloat16', dims: [2], data: new Uint8Array(Uint16Array.of(0x3f80, 0x4780).buffer) }, true).type, 'float32');
});

test('the last segment: a GPU provider runs the batch it was given (the vocabulary stays on the device); the CPU keeps host memory small', async () => {
  // vocabulary 32,000 at seq 256: 65.5 MB of logits and log-probabilities per window
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fk-plan-'));
  try {
    await generateSyntheticCheckpoint('mistral-tiny', dir, { qkOnly: true });
    const ckpt = await openCheckpoint(dir);
    try {
      const source = checkpointSource(ckpt);
      const memoryBytes = 64 * 2 ** 30;
      const cpu = planStream(source, 255, { seq: 256, backend: 'cpu', batch: 16, memoryBytes });
      assert.equal(cpu.batch, 16);
      assert.equal(cpu.lastBatch, 4, 'at most 256 MiB of full-vocabulary values in host memory');
      for (const backend of ['cuda', 'webgpu'] as const) {
        const gpu = planStream(source, 255, { seq: 256, backend, batch: 16, memoryBytes });
        assert.equal(gpu.lastBatch, 16, backend);
        assert.ok(gpu.peakBytes < cpu.peakBytes, `${backend}: host estimate ${gpu.peakBytes} vs ${cpu.peakBytes}`);
        // and still bounded on the device: 2 GiB of them
        assert.equal(planStream(source, 255, { seq: 256, backend, batch: 64, memoryBytes }).lastBatch, 32, backend);
      }
    } finally {
      await ckpt.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
