import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';
import { CancelledError } from '../../src/core/errors';
import { keyUpName } from '../../src/core/export/rewrite';
import { copiedEnd, copyTensors, copyTensorsInWorker, headerJson, runCopyTask, headerPrefix, SourceFiles, writeFullyAt, type CopiedTensor } from '../../src/core/export/writer';

const work = path.join(os.tmpdir(), `fk-writer-${process.pid}`);
after(() => fsp.rm(work, { recursive: true, force: true }));

test('headerJson pads to 8 bytes or to an exact reservation, and refuses to overflow it', () => {
  const entries = [{ name: 'a', dtype: 'F32' as const, shape: [2], byteLength: 8 }];
  const h = headerJson(entries, { format: 'pt' });
  assert.equal(h.byteLength % 8, 0);
  assert.deepEqual(JSON.parse(Buffer.from(h).toString()), { __metadata__: { format: 'pt' }, a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } });
  assert.equal(headerJson(entries, {}, 200).byteLength, 200);
  assert.throws(() => headerJson(entries, {}, 8), /needs \d+ bytes but only 8 were reserved/);
});

test('two-phase file: copied data after a reserved header, new tensors appended, readable back', async () => {
  await fsp.mkdir(work, { recursive: true });
  // a source file with 3 MiB of patterned bytes
  const src = path.join(work, 'src.bin');
  const data = Uint8Array.from({ length: 3 << 20 }, (_, i) => (i * 7) & 0xff);
  await fsp.writeFile(src, data);
  const copied: CopiedTensor[] = [
    { name: 'x', dtype: 'U8', shape: [1 << 20], byteLength: 1 << 20, file: src, start: 0 },
    { name: 'y', dtype: 'U8', shape: [1 << 20], byteLength: 1 << 20, file: src, start: 1 << 20 },
    { name: 'z', dtype: 'U8', shape: [16], byteLength: 16, file: src, start: (2 << 20) + 5 },
  ];
  const fresh = { name: 'new', dtype: 'F32' as const, shape: [2], byteLength: 8 };
  const reserved = headerJson([...copied, fresh], {}).byteLength + 64;
  const out = path.join(work, 'model.safetensors');
  const fh = await fsp.open(out, 'wx');
  const sources = new SourceFiles();
  const end = await copyTensors(fh, 8 + reserved, copied, sources);
  assert.equal(end, 8 + reserved + (2 << 20) + 16);
  const value = new Uint8Array(new Float32Array([1.5, -2]).buffer);
  await writeFullyAt(fh, value, 8, end);
  const header = headerJson([...copied, fresh], {}, reserved);
  await writeFullyAt(fh, headerPrefix(header.byteLength), 8, 0);
  await writeFullyAt(fh, header, header.byteLength, 8);
  await fh.close();
  await sources.close();
  await fsp.writeFile(path.join(work, 'config.json'), '{}');
  const ck = await openCheckpoint(out);
  assert.deepEqual(Buffer.from(await ck.readRows('y')), Buffer.from(data.subarray(1 << 20, 2 << 20)));
  assert.deepEqual(Buffer.from(await ck.readRows('z')), Buffer.from(data.subarray((2 << 20) + 5, (2 << 20) + 21)));
  assert.deepEqual([...(await ck.readRowsF32('new'))], [1.5, -2]);
  await ck.close();
  const fh2 = await fsp.open(path.join(work, 'cancelled.bin'), 'wx');
  await assert.rejects(copyTensors(fh2, 0, copied, new SourceFiles(), { cancelled: true }), (e) => e instanceof CancelledError);
  await fh2.close();
});

test('key_up tensor names follow the key tensor', () => {
  assert.equal(keyUpName('model.layers.3.self_attn.k_proj.weight'), 'model.layers.3.self_attn.k_up_proj.weight');
  assert.equal(keyUpName('gpt_neox.layers.0.attention.query_key_value.weight'), 'gpt_neox.layers.0.attention.k_up_proj.weight');
});

test('copyTensorsInWorker: the same bytes and ends as copyTensors, for several files; cancel and write errors reject once the worker stopped', async () => {
  await fsp.mkdir(work, { recursive: true });
  const src = path.join(work, 'wsrc.bin');
  const data = Uint8Array.from({ length: (9 << 20) + 77 }, (_, i) => (i * 13 + (i >> 11)) & 0xff);
  await fsp.writeFile(src, data);
  // contiguous tensors (merged into one range, split into 8 MiB chunks), a gap, a short tail
  const a: CopiedTensor[] = [
    { name: 'a0', dtype: 'U8', shape: [5 << 20], byteLength: 5 << 20, file: src, start: 0 },
    { name: 'a1', dtype: 'U8', shape: [4 << 20], byteLength: 4 << 20, file: src, start: 5 << 20 },
    { name: 'a2', dtype: 'U8', shape: [33], byteLength: 33, file: src, start: (9 << 20) + 40 },
  ];
  const b: CopiedTensor[] = [{ name: 'b0', dtype: 'U8', shape: [1000], byteLength: 1000, file: src, start: 123 }];
  const sources = new SourceFiles();
  const inThread = [await fsp.open(path.join(work, 'r0'), 'wx'), await fsp.open(path.join(work, 'r1'), 'wx')];
  const refEnds = [await copyTensors(inThread[0], 96, a, sources), await copyTensors(inThread[1], 8, b, sources)];
  const viaWorker = [await fsp.open(path.join(work, 'w0'), 'wx'), await fsp.open(path.join(work, 'w1'), 'wx')];
  const seen = [0, 0];
  const ends = await copyTensorsInWorker(
    [
      { fh: viaWorker[0], position: 96, tensors: a },
      { fh: viaWorker[1], position: 8, tensors: b },
    ],
    sources,
    undefined,
    (n, job) => (seen[job] += n),
  );
  assert.deepEqual(ends, refEnds);
  assert.deepEqual(ends, [copiedEnd(96, a), copiedEnd(8, b)]);
  assert.deepEqual(seen, [(9 << 20) + 33, 1000]);
  for (const h of [...inThread, ...viaWorker]) await h.close();
  for (const f of ['0', '1']) assert.ok((await fsp.readFile(path.join(work, `w${f}`))).equals(await fsp.readFile(path.join(work, `r${f}`))), `file ${f} differs`);

  const cancelled = await fsp.open(path.join(work, 'wc'), 'wx');
  await assert.rejects(copyTensorsInWorker([{ fh: cancelled, position: 0, tensors: a }], sources, { cancelled: true }), (e) => e instanceof CancelledError);
  // the worker's loop stops between chunks once the shared flag is set
  const stop = new Int32Array(new SharedArrayBuffer(4));
  const fd = cancelled.fd;
  const chunk = (i: number) => ({ job: 0, in: fd, out: fd, file: 'x', src: 0, dst: i * 4, length: 0 });
  let chunks = 0;
  const reply = runCopyTask({ id: 7, type: 'copy', chunks: [chunk(0), chunk(1), chunk(2)], stop }, () => {
    chunks++;
    Atomics.store(stop, 0, 1);
  });
  assert.deepEqual({ reply, chunks }, { reply: { id: 7, cancelled: true }, chunks: 1 });
  await cancelled.close();
  // a descriptor opened read-only: the write fails in the worker, with its errno code kept
  const readOnly = await fsp.open(path.join(work, 'r0'), 'r');
  await assert.rejects(copyTensorsInWorker([{ fh: readOnly, position: 0, tensors: b }], sources), (e: NodeJS.ErrnoException) => e.code === 'EBADF' && e.syscall === 'write');
  await readOnly.close();
  await sources.close();
});
