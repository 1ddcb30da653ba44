import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';
import { CancelledError } from '../../src/core/errors';
import { keyUpName } from '../../src/core/export/rewrite';
import { copyTensors, headerJson, headerPrefix, SourceFiles, writeFullyAt, type CopiedTensor } from '../../src/core/export/writer';

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
