import { strict as assert } from 'node:assert';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';
import { decodeToFloat32, encodeFromFloat32, float32ToBf16Bits, float32ToF16Bits } from '../../src/core/checkpoint/dtypes';
import { FactoredKeysError } from '../../src/core/errors';
import { fixture, tempDir } from '../helpers/fixtures';
import { f32Bytes, layout, serialize, writeSafetensors } from '../helpers/safetensors';

const CONFIG = JSON.stringify({ model_type: 'llama' });

/** Writes `bytes` as model.safetensors next to a config.json and expects openCheckpoint to reject it. */
async function expectRejected(bytes: Uint8Array, pattern: RegExp): Promise<void> {
  const t = tempDir();
  try {
    writeFileSync(path.join(t.dir, 'config.json'), CONFIG);
    writeFileSync(path.join(t.dir, 'model.safetensors'), bytes);
    await assert.rejects(openCheckpoint(t.dir), (e: unknown) => {
      assert.ok(e instanceof FactoredKeysError, `expected FactoredKeysError, got ${String(e)}`);
      assert.match(e.message, pattern);
      assert.ok(e.message.includes('model.safetensors'), `message names the file: ${e.message}`);
      assert.ok(!e.message.includes('\n'), 'one line');
      return true;
    });
  } finally {
    t.cleanup();
  }
}

const valid = () => layout({ a: { dtype: 'F32', shape: [2, 3], data: f32Bytes([1, 2, 3, 4, 5, 6]) }, b: { dtype: 'F32', shape: [2], data: f32Bytes([7, 8]) } });

describe('safetensors validation rejects malformed files built in code', () => {
  test('valid file opens and reads back its values', async () => {
    const t = tempDir();
    try {
      writeFileSync(path.join(t.dir, 'config.json'), CONFIG);
      const { header, data } = valid();
      writeFileSync(path.join(t.dir, 'model.safetensors'), serialize(header, data));
      const ck = await openCheckpoint(t.dir);
      assert.deepEqual([...(await ck.readRowsF32('a', 1, 2))], [4, 5, 6]);
      assert.deepEqual([...(await ck.readRowsF32('b'))], [7, 8]);
      await ck.close();
    } finally {
      t.cleanup();
    }
  });

  test('truncated data section', async () => {
    const { header, data } = valid();
    const bytes = serialize(header, data);
    await expectRejected(bytes.subarray(0, bytes.length - 4), /past the data section/);
  });

  test('header length past end of file', async () => {
    const { header, data } = valid();
    await expectRejected(serialize(header, data, 10_000), /runs past the end of the file/);
  });

  test('header length over the 100 MB limit', async () => {
    const { header, data } = valid();
    await expectRejected(serialize(header, data, 2 ** 40), /exceeds the 100000000-byte limit/);
  });

  test('file shorter than the length prefix', async () => {
    await expectRejected(new Uint8Array([1, 2, 3]), /too short/);
  });

  test('overlapping spans', async () => {
    const { header, data } = valid();
    (header.b as { data_offsets: number[] }).data_offsets = [16, 24];
    await expectRejected(serialize(header, data), /overlap/);
  });

  test('span differs from shape x dtype size', async () => {
    const { header, data } = valid();
    (header.a as { shape: number[] }).shape = [2, 2];
    await expectRejected(serialize(header, data), /tensor "a".*needs 16 bytes but data_offsets span 24/);
  });

  test('unknown dtype', async () => {
    const { header, data } = valid();
    (header.a as { dtype: string }).dtype = 'F128';
    await expectRejected(serialize(header, data), /tensor "a" has unknown dtype "F128"/);
  });

  test('header that is not a JSON object', async () => {
    await expectRejected(serialize('[1,2,3]', new Uint8Array()), /not a JSON object/);
    await expectRejected(serialize('{"a": ', new Uint8Array()), /not valid JSON/);
  });

  test('duplicate tensor name in one header', async () => {
    const text = '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
    await expectRejected(serialize(text, new Uint8Array(8)), /"a" appears twice/);
  });

  test('negative and non-integer offsets and shapes', async () => {
    const { header, data } = valid();
    (header.a as { data_offsets: unknown }).data_offsets = [-1, 23];
    await expectRejected(serialize(header, data), /invalid data_offsets/);
    const v2 = valid();
    (v2.header.a as { shape: unknown }).shape = [2, 1.5];
    await expectRejected(serialize(v2.header, v2.data), /invalid shape/);
  });
});

describe('sharded checkpoints', () => {
  function shardedCopy(dir: string, weightMap: Record<string, string>): void {
    const src = fixture('mistral-bytes');
    for (const f of ['config.json', 'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors']) {
      copyFileSync(path.join(src, f), path.join(dir, f));
    }
    writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  }

  test('index.json naming ../x.safetensors is refused', async () => {
    const t = tempDir();
    try {
      mkdirSync(path.join(t.dir, 'ck'));
      writeSafetensors(path.join(t.dir, 'x.safetensors'), { w: { dtype: 'F32', shape: [1], data: f32Bytes([1]) } });
      shardedCopy(path.join(t.dir, 'ck'), { w: '../x.safetensors' });
      await assert.rejects(openCheckpoint(path.join(t.dir, 'ck')), /model\.safetensors\.index\.json: shard "\.\.\/x\.safetensors" is not a plain file name/);
    } finally {
      t.cleanup();
    }
  });

  test('index.json naming a missing shard is refused', async () => {
    const t = tempDir();
    try {
      shardedCopy(t.dir, { w: 'model-00009-of-00009.safetensors' });
      await assert.rejects(openCheckpoint(t.dir), /model-00009-of-00009\.safetensors: cannot open \(ENOENT\)/);
    } finally {
      t.cleanup();
    }
  });

  test('index.json that disagrees with the shards is refused', async () => {
    const t = tempDir();
    try {
      shardedCopy(t.dir, { 'model.embed_tokens.weight': 'model-00002-of-00003.safetensors' });
      await assert.rejects(openCheckpoint(t.dir), /"model.embed_tokens.weight" is listed in model-00002-of-00003.safetensors but/);
    } finally {
      t.cleanup();
    }
  });

  test('the real sharded Mistral fixture opens from the folder, the index file, and agrees with its index', async () => {
    for (const p of [fixture('mistral-bytes'), path.join(fixture('mistral-bytes'), 'model.safetensors.index.json')]) {
      const ck = await openCheckpoint(p);
      assert.equal(ck.files.length, 3);
      assert.equal(ck.tensors.get('model.layers.0.self_attn.k_proj.weight')?.dtype, 'BF16');
      await ck.close();
    }
  });

  test('a lone .safetensors file with config.json beside it opens', async () => {
    const ck = await openCheckpoint(path.join(fixture('gpt2-bytes'), 'model.safetensors'));
    assert.equal(ck.files.length, 1);
    assert.deepEqual(ck.tensor('transformer.h.0.attn.c_attn.weight').shape, [256, 768]);
    await ck.close();
  });

  test('a folder with several .safetensors files and no index is refused', async () => {
    const t = tempDir();
    try {
      writeFileSync(path.join(t.dir, 'config.json'), CONFIG);
      writeSafetensors(path.join(t.dir, 'a.safetensors'), { w: { dtype: 'F32', shape: [1], data: f32Bytes([1]) } });
      writeSafetensors(path.join(t.dir, 'b.safetensors'), { v: { dtype: 'F32', shape: [1], data: f32Bytes([1]) } });
      await assert.rejects(openCheckpoint(t.dir), /2 \.safetensors files but no model\.safetensors\.index\.json/);
    } finally {
      t.cleanup();
    }
  });
});

describe('dtype decoding', () => {
  test('BF16 and F16 round-trip exactly representable values', () => {
    const values = Float32Array.from([0, 1, -2, 0.5, 65504, -0.0001220703125, 3.140625]);
    const bf = new Uint8Array(float32ToBf16Bits(values).buffer);
    // 65504 is not a bf16 value: round-to-nearest-even takes it to 65536.
    assert.deepEqual([...decodeToFloat32('BF16', bf)], [...values].map((v) => (v === 65504 ? 65536 : v)));
    const h = new Uint8Array(float32ToF16Bits(values).buffer);
    assert.deepEqual([...decodeToFloat32('F16', h)], [...values]);
  });

  test('F16 rounds to nearest even and handles subnormals and infinities', () => {
    const x = Float32Array.from([1 + 2 ** -11, 1 + 3 * 2 ** -11, 2 ** -24, 2 ** -25, 70000, -Infinity]);
    const back = decodeToFloat32('F16', new Uint8Array(float32ToF16Bits(x).buffer));
    assert.deepEqual([...back], [1, 1 + 2 ** -9, 2 ** -24, 0, Infinity, -Infinity]);
  });

  test('F8 E4M3 and E5M2 decode known bit patterns', () => {
    // E4M3FN: 0x38 = 1.0, 0x7e = 448 (max), 0x7f = NaN, 0x01 = 2^-9
    const e4 = decodeToFloat32('F8_E4M3', Uint8Array.from([0x38, 0x7e, 0x7f, 0x01, 0xb8]));
    assert.deepEqual([...e4.subarray(0, 2)], [1, 448]);
    assert.ok(Number.isNaN(e4[2]));
    assert.equal(e4[3], 2 ** -9);
    assert.equal(e4[4], -1);
    // E5M2: 0x3c = 1.0, 0x7b = 57344 (max), 0x7c = inf
    const e5 = decodeToFloat32('F8_E5M2', Uint8Array.from([0x3c, 0x7b, 0x7c]));
    assert.deepEqual([...e5], [1, 57344, Infinity]);
  });

  test('decoding is alignment-independent', () => {
    const values = Float32Array.from([1.5, -2.25, 3]);
    for (const dtype of ['F32', 'BF16', 'F16'] as const) {
      const enc = encodeFromFloat32(dtype, values);
      const shifted = new Uint8Array(enc.byteLength + 1);
      shifted.set(enc, 1);
      assert.deepEqual([...decodeToFloat32(dtype, shifted.subarray(1))], [...values]);
    }
  });
});
