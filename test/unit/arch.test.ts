import { strict as assert } from 'node:assert';
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { buildLayout } from '../../src/core/arch';
import { readHeadBias, readHeadMatrix } from '../../src/core/arch/heads';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';
import { ALL_FIXTURES, fixture } from '../helpers/fixtures';

/**
 * An independent reader for the tests: whole-file parse of one safetensors file, decoding
 * F32/BF16 to a plain number[] with numpy-like row-major indexing.
 */
function loadAll(dir: string): Map<string, { shape: number[]; values: number[] }> {
  const out = new Map<string, { shape: number[]; values: number[] }>();
  const files = readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  for (const f of files) {
    const buf = readFileSync(path.join(dir, f));
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
    for (const [name, e] of Object.entries<{ dtype: string; shape: number[]; data_offsets: [number, number] }>(header)) {
      if (name === '__metadata__') continue;
      const start = 8 + n + e.data_offsets[0];
      const count = e.shape.reduce((a, b) => a * b, 1);
      const values: number[] = [];
      for (let i = 0; i < count; i++) {
        if (e.dtype === 'F32') values.push(buf.readFloatLE(start + 4 * i));
        else if (e.dtype === 'BF16') {
          const b = Buffer.alloc(4);
          b.writeUInt16LE(buf.readUInt16LE(start + 2 * i), 2);
          values.push(b.readFloatLE(0));
        } else throw new Error(e.dtype);
      }
      out.set(name, { shape: e.shape, values });
    }
  }
  return out;
}

/** W (d x hd) with W[i][j] = T[row0 + j][i] for an nn.Linear [out, in] tensor. */
function linearRows(t: { shape: number[]; values: number[] }, row0: number, hd: number): number[] {
  const [, d] = t.shape;
  const w: number[] = [];
  for (let i = 0; i < d; i++) for (let j = 0; j < hd; j++) w.push(t.values[(row0 + j) * d + i]);
  return w;
}

/**
 * Where each fixture keeps query head h and key head g, written out per architecture from
 * the Hugging Face modelling code, independently of src/core/arch.
 */
const EXPECTED: Record<string, { q: (h: number, l: number) => [string, number]; k: (g: number, l: number) => [string, number]; conv1d?: boolean }> = {
  'gpt2-bytes': { q: (h, l) => [`transformer.h.${l}.attn.c_attn.weight`, 64 * h], k: (g, l) => [`transformer.h.${l}.attn.c_attn.weight`, 256 + 64 * g], conv1d: true },
  'mistral-bytes': { q: (h, l) => [`model.layers.${l}.self_attn.q_proj.weight`, 64 * h], k: (g, l) => [`model.layers.${l}.self_attn.k_proj.weight`, 64 * g] },
  stories260K: { q: (h, l) => [`model.layers.${l}.self_attn.q_proj.weight`, 8 * h], k: (g, l) => [`model.layers.${l}.self_attn.k_proj.weight`, 8 * g] },
  'layouts/llama': { q: (h, l) => [`model.layers.${l}.self_attn.q_proj.weight`, 16 * h], k: (g, l) => [`model.layers.${l}.self_attn.k_proj.weight`, 16 * g] },
  'layouts/qwen2': { q: (h, l) => [`model.layers.${l}.self_attn.q_proj.weight`, 16 * h], k: (g, l) => [`model.layers.${l}.self_attn.k_proj.weight`, 16 * g] },
  'layouts/gemma': { q: (h, l) => [`model.layers.${l}.self_attn.q_proj.weight`, 32 * h], k: (g, l) => [`model.layers.${l}.self_attn.k_proj.weight`, 32 * g] },
  // Phi-3: [q (4x16) | k (2x16) | v (2x16)] rows
  'layouts/phi3': { q: (h, l) => [`model.layers.${l}.self_attn.qkv_proj.weight`, 16 * h], k: (g, l) => [`model.layers.${l}.self_attn.qkv_proj.weight`, 64 + 16 * g] },
  // GPT-NeoX: per head [q_h | k_h | v_h], 48 rows a head
  'layouts/gpt_neox': { q: (h, l) => [`gpt_neox.layers.${l}.attention.query_key_value.weight`, 48 * h], k: (g, l) => [`gpt_neox.layers.${l}.attention.query_key_value.weight`, 48 * g + 16] },
  // Falcon multi-query: [q (4x16) | k (16) | v (16)] rows
  'layouts/falcon': { q: (h, l) => [`transformer.h.${l}.self_attention.query_key_value.weight`, 16 * h], k: (_g, l) => [`transformer.h.${l}.self_attention.query_key_value.weight`, 64] },
};

describe('architecture adapters on every fixture', () => {
  for (const name of ALL_FIXTURES) {
    test(`${name}: layout matches config.json and head slices match the bytes`, async () => {
      const dir = fixture(name);
      const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
      const ck = await openCheckpoint(dir);
      try {
        const lay = buildLayout(ck);
        const heads = config.num_attention_heads ?? config.n_head;
        const kv = config.multi_query ? 1 : (config.num_key_value_heads ?? heads);
        const hidden = config.hidden_size ?? config.n_embd;
        assert.equal(lay.architecture, config.model_type);
        assert.equal(lay.layers.length, config.num_hidden_layers ?? config.n_layer);
        assert.equal(lay.queryHeads, heads);
        assert.equal(lay.kvHeads, kv);
        assert.equal(lay.headDim, config.head_dim ?? hidden / heads);
        assert.equal(lay.rope === null, config.model_type === 'gpt2');
        assert.deepEqual(lay.queryToKv, Array.from({ length: heads }, (_, h) => Math.floor(h / (heads / kv))));
        const all = loadAll(dir);
        const exp = EXPECTED[name];
        const hd = lay.headDim;
        for (const layer of lay.layers) {
          for (const [kind, slices, where] of [['q', layer.queryHeads, exp.q], ['k', layer.keyHeads, exp.k]] as const) {
            for (let h = 0; h < slices.length; h++) {
              const [tensor, first] = where(h, layer.layer);
              const t = all.get(tensor);
              assert.ok(t, `${tensor} exists`);
              let expected: number[];
              if (exp.conv1d) {
                expected = [];
                for (let i = 0; i < t.shape[0]; i++) for (let j = 0; j < hd; j++) expected.push(t.values[i * t.shape[1] + first + j]);
              } else expected = linearRows(t, first, hd);
              const got = await readHeadMatrix(ck, slices[h], hd);
              assert.equal(got.length, expected.length);
              assert.deepEqual([...got], expected, `${name} layer ${layer.layer} ${kind} head ${h}`);
            }
          }
        }
      } finally {
        await ck.close();
      }
    });
  }

  test('Qwen2 and GPT-2 biases are sliced per head', async () => {
    const ck = await openCheckpoint(fixture('layouts/qwen2'));
    const lay = buildLayout(ck);
    assert.equal(lay.qkBias, true);
    const all = loadAll(fixture('layouts/qwen2'));
    const kb = all.get('model.layers.1.self_attn.k_proj.bias')!.values;
    assert.deepEqual([...(await readHeadBias(ck, lay.layers[1].keyHeads[1], 16))!], kb.slice(16, 32));
    await ck.close();
    const g = await openCheckpoint(fixture('gpt2-bytes'));
    const gl = buildLayout(g);
    const cb = loadAll(fixture('gpt2-bytes')).get('transformer.h.2.attn.c_attn.bias')!.values;
    assert.deepEqual([...(await readHeadBias(g, gl.layers[2].keyHeads[3], 64))!], cb.slice(256 + 192, 256 + 256));
    await g.close();
  });
});

describe('reading Q/K touches only their byte ranges', () => {
  test('Mistral: every data read lies inside a q_proj or k_proj tensor span', async () => {
    const reads: { file: string; position: number; length: number }[] = [];
    const ck = await openCheckpoint(fixture('mistral-bytes'), { observeRead: (file, position, length) => reads.push({ file, position, length }) });
    const headerReads = reads.length;
    const lay = buildLayout(ck);
    for (const layer of lay.layers) for (const s of [...layer.queryHeads, ...layer.keyHeads]) await readHeadMatrix(ck, s, lay.headDim);
    await ck.close();
    // Header phase: only the 8-byte prefix and the header itself of each shard.
    for (const r of reads.slice(0, headerReads)) {
      const h = ck.files.find((f) => f.file === r.file)!;
      assert.ok((r.position === 0 && r.length === 8) || (r.position === 8 && r.length === h.headerLength), `header read ${JSON.stringify(r)}`);
    }
    const qk = [...ck.tensors.values()].filter((t) => /\.(q|k)_proj\.weight$/.test(t.name));
    assert.equal(qk.length, 8);
    let bytes = 0;
    for (const r of reads.slice(headerReads)) {
      const inside = qk.some((t) => t.file === r.file && r.position >= t.start && r.position + r.length <= t.end);
      assert.ok(inside, `read ${r.position}+${r.length} in ${path.basename(r.file)} is outside every Q/K tensor`);
      bytes += r.length;
    }
    // Each head's rows are read once: exactly the Q/K bytes, no more.
    assert.equal(bytes, qk.reduce((s, t) => s + (t.end - t.start), 0));
  });
});
