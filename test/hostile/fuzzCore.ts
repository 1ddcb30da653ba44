/**
 * Checkpoint fuzzing: fast-check arbitraries that mutate real fixtures (header JSON, header
 * bytes, length prefix, file length, tensor data, config.json, index.json) and a harness that
 * runs openCheckpoint + buildLayout + every head read on the result, watching every read.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { buildLayout } from '../../src/core/arch';
import { readModelSpec } from '../../src/core/eval/model';
import { readHeadBias, readHeadMatrix } from '../../src/core/arch/heads';
import { openCheckpoint, INDEX_FILE } from '../../src/core/checkpoint/checkpoint';
import { FactoredKeysError } from '../../src/core/errors';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Fixture folders the fuzzer starts from, with a relative weight. */
export const FUZZ_BASES: readonly { name: string; weight: number }[] = [
  { name: 'layouts/llama', weight: 3 },
  { name: 'layouts/qwen2', weight: 3 },
  { name: 'layouts/phi3', weight: 3 },
  { name: 'layouts/gpt_neox', weight: 3 },
  { name: 'layouts/falcon', weight: 3 },
  { name: 'layouts/gemma', weight: 3 },
  { name: 'stories260K', weight: 2 },
  { name: 'mistral-bytes', weight: 3 },
  { name: 'gpt2-bytes', weight: 1 },
  // 2025–26 families: q/k norms, MoE tensors, sinks, fused experts, per-layer RoPE, MLA
  ...['qwen3', 'qwen3_moe', 'gemma2', 'gemma3', 'mixtral', 'olmo2', 'smollm3', 'gpt_oss', 'cohere2', 'granite', 'gptj', 'gpt_bigcode', 'phi', 'stablelm', 'starcoder2', 'llama3', 'deepseek_v3'].map((n) => ({ name: `layouts2/${n}`, weight: 1 })),
];

/** A mutation of one safetensors header, applied to its parsed JSON. */
export type HeaderMutation =
  | { kind: 'field'; tensor: number; field: 'dtype' | 'shape' | 'data_offsets' | 'entry' | 'extra'; value: Json }
  | { kind: 'offset-shift'; tensor: number; which: 0 | 1 | 2; delta: number }
  | { kind: 'shape-dim'; tensor: number; dim: number; value: number }
  | { kind: 'swap-shapes'; a: number; b: number }
  | { kind: 'drop'; tensor: number }
  | { kind: 'rename'; tensor: number; name: string }
  | { kind: 'duplicate-as'; tensor: number; other: number }
  | { kind: 'metadata'; value: Json };

/** A mutation of a file's bytes after the header is serialised. */
export type ByteMutation =
  | { kind: 'header-bytes'; edits: { pos: number; byte: number }[] }
  | { kind: 'header-splice'; pos: number; remove: number; insert: string; keepLength: boolean }
  | { kind: 'length-prefix'; value: bigint }
  | { kind: 'length-delta'; delta: number }
  | { kind: 'truncate'; keep: number }
  | { kind: 'append'; bytes: Uint8Array }
  | { kind: 'data-bytes'; edits: { pos: number; byte: number }[] };

/** config.json or index.json edits: set a key to a value, or delete it (value undefined). */
export interface JsonEdit {
  readonly key: string;
  readonly value?: Json;
}

/** One generated fuzz case. */
export interface FuzzCase {
  readonly base: string;
  /** Which safetensors file of the base to mutate (modulo the file count). */
  readonly file: number;
  readonly header: HeaderMutation[];
  readonly bytes: ByteMutation[];
  readonly config: JsonEdit[];
  readonly index: JsonEdit[];
}

const DTYPES = ['F32', 'F16', 'BF16', 'F64', 'F8_E4M3', 'F8_E5M2', 'I8', 'U8', 'I32', 'I64', 'BOOL', 'F4', 'F6_E2M3', 'C64', 'U16'];
const CONFIG_KEYS = [
  'model_type', 'hidden_size', 'num_attention_heads', 'num_key_value_heads', 'head_dim', 'num_hidden_layers', 'n_embd', 'n_head',
  'n_layer', 'partial_rotary_factor', 'rotary_pct', 'rope_theta', 'rope_parameters', 'multi_query', 'new_decoder_architecture',
  'num_kv_heads', 'alibi', 'model_type',
  'layer_types', 'sliding_window', 'use_sliding_window', 'max_window_layers', 'no_rope_layers', 'no_rope_layer_interval', 'num_experts_per_tok',
  'num_local_experts', 'num_experts', 'norm_topk_prob', 'decoder_sparse_step', 'mlp_only_layers', 'query_pre_attn_scalar', 'attn_logit_softcapping',
  'final_logit_softcapping', 'attention_multiplier', 'embedding_multiplier', 'residual_multiplier', 'logits_scaling', 'logit_scale', 'rotary_dim',
  'hidden_act', 'hidden_activation', 'activation_function', 'rms_norm_eps', 'layer_norm_eps', 'use_parallel_residual', 'qk_layernorm', 'rope_scaling',
  'original_max_position_embeddings', 'max_position_embeddings', 'kv_lora_rank', 'qk_nope_head_dim', 'qk_rope_head_dim', 'sliding_window_pattern', 'vocab_size',
];

const interestingNumber = fc.oneof(
  fc.constantFrom(0, 1, -1, 2, 3, 8, 16, 63, 64, 65, 128, 255, 256, 768, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 2 ** 64, 1e308, -1e308, 0.5, 1e-9),
  fc.integer({ min: -1000, max: 1_000_000 }),
);
const interestingString = fc.oneof(fc.constantFrom(...DTYPES, 'f32', '', 'constructor', '__proto__', 'toString', 'llama', 'gpt2', 'falcon', 'bert'), fc.string({ maxLength: 12 }));
const interestingJson: fc.Arbitrary<Json> = fc.oneof(
  interestingNumber,
  interestingString,
  fc.constant(null),
  fc.boolean(),
  fc.array(interestingNumber, { maxLength: 4 }),
  fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Json>,
);

const headerMutation: fc.Arbitrary<HeaderMutation> = fc.oneof(
  fc.record({ kind: fc.constant('field' as const), tensor: fc.nat(), field: fc.constantFrom('dtype' as const, 'shape' as const, 'data_offsets' as const, 'entry' as const, 'extra' as const), value: interestingJson }),
  fc.record({ kind: fc.constant('offset-shift' as const), tensor: fc.nat(), which: fc.constantFrom(0 as const, 1 as const, 2 as const), delta: fc.oneof(fc.integer({ min: -8, max: 8 }), interestingNumber) }),
  fc.record({ kind: fc.constant('shape-dim' as const), tensor: fc.nat(), dim: fc.nat(3), value: interestingNumber }),
  fc.record({ kind: fc.constant('swap-shapes' as const), a: fc.nat(), b: fc.nat() }),
  fc.record({ kind: fc.constant('drop' as const), tensor: fc.nat() }),
  fc.record({ kind: fc.constant('rename' as const), tensor: fc.nat(), name: interestingString }),
  fc.record({ kind: fc.constant('duplicate-as' as const), tensor: fc.nat(), other: fc.nat() }),
  fc.record({ kind: fc.constant('metadata' as const), value: interestingJson }),
);

const JSON_CHARS = '{}[]",:0123456789-.eE \\u';
const headerByte = fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(...[...JSON_CHARS].map((c) => c.charCodeAt(0))));
const byteMutation: fc.Arbitrary<ByteMutation> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('header-bytes' as const), edits: fc.array(fc.record({ pos: fc.nat(), byte: headerByte }), { minLength: 1, maxLength: 4 }) }), weight: 4 },
  { arbitrary: fc.record({ kind: fc.constant('header-splice' as const), pos: fc.nat(), remove: fc.nat(40), insert: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('{', '}', '[', ']', '"', ',', ':', '"a":', '[[[[[[', '\\u0000')), keepLength: fc.boolean() }), weight: 3 },
  { arbitrary: fc.record({ kind: fc.constant('length-prefix' as const), value: fc.oneof(fc.bigInt(0n, 2n ** 64n - 1n), fc.constantFrom(0n, 1n, 2n, 7n, 8n, 100_000_000n, 100_000_001n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n)) }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('length-delta' as const), delta: fc.integer({ min: -16, max: 16 }) }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('truncate' as const), keep: fc.nat() }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('append' as const), bytes: fc.uint8Array({ maxLength: 64 }) }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('data-bytes' as const), edits: fc.array(fc.record({ pos: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 8 }) }), weight: 2 },
);

const configEdit: fc.Arbitrary<JsonEdit> = fc.record({ key: fc.constantFrom(...CONFIG_KEYS), value: fc.option(interestingJson, { nil: undefined }) }, { requiredKeys: ['key'] });
const indexEdit: fc.Arbitrary<JsonEdit> = fc.record(
  {
    key: fc.oneof(fc.constantFrom('lm_head.weight', 'model.norm.weight', 'model.layers.0.self_attn.k_proj.weight', 'weight_map', 'ghost'), interestingString),
    value: fc.option(
      fc.oneof(fc.constantFrom('model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors', '../x.safetensors', '/etc/passwd', 'config.json', '.', ''), interestingJson),
      { nil: undefined },
    ),
  },
  { requiredKeys: ['key'] },
);

const base = fc.oneof(...FUZZ_BASES.map((b) => ({ arbitrary: fc.constant(b.name), weight: b.weight })));
const dataBytes = byteMutation.filter((m) => m.kind === 'data-bytes');
const none = fc.constant([] as never[]);

/**
 * The fast-check arbitrary for whole cases. Mutation families are mixed by weight so that
 * enough cases survive the header checks to exercise the layout and the head reads.
 */
export const fuzzCase: fc.Arbitrary<FuzzCase> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ base, file: fc.nat(2), header: fc.array(headerMutation, { minLength: 1, maxLength: 2 }), bytes: fc.array(byteMutation, { maxLength: 1 }), config: none, index: none }) },
  { weight: 3, arbitrary: fc.record({ base, file: fc.nat(2), header: none, bytes: fc.array(byteMutation, { minLength: 1, maxLength: 2 }), config: none, index: none }) },
  { weight: 2, arbitrary: fc.record({ base, file: fc.nat(2), header: none, bytes: fc.array(dataBytes, { minLength: 1, maxLength: 2 }), config: none, index: none }) },
  { weight: 2, arbitrary: fc.record({ base, file: fc.nat(2), header: none, bytes: none, config: fc.array(configEdit, { minLength: 1, maxLength: 2 }), index: none }) },
  { weight: 1, arbitrary: fc.record({ base: fc.constant('mistral-bytes'), file: fc.nat(2), header: none, bytes: none, config: none, index: fc.array(indexEdit, { minLength: 1, maxLength: 2 }) }) },
);

interface BaseFiles {
  readonly dir: string;
  /** File name -> original bytes, for every file of the base folder. */
  readonly originals: Map<string, Uint8Array>;
  /** safetensors file names in sorted order. */
  readonly shards: string[];
}

/** One working copy per base, rewritten in place case after case. */
export class FuzzWorkspace {
  private readonly bases = new Map<string, BaseFiles>();
  private readonly dirty = new Set<string>();

  constructor(private readonly root: string, private readonly fixtures: string) {}

  private base(name: string): BaseFiles {
    let b = this.bases.get(name);
    if (!b) {
      const dir = path.join(this.root, name.replace(/\//g, '_'));
      fs.mkdirSync(dir, { recursive: true });
      const originals = new Map<string, Uint8Array>();
      for (const f of fs.readdirSync(path.join(this.fixtures, name))) {
        const bytes = new Uint8Array(fs.readFileSync(path.join(this.fixtures, name, f)));
        originals.set(f, bytes);
        fs.writeFileSync(path.join(dir, f), bytes);
      }
      b = { dir, originals, shards: [...originals.keys()].filter((f) => f.endsWith('.safetensors')).sort() };
      this.bases.set(name, b);
    }
    return b;
  }

  /** Writes the mutated files of `c` (restoring what the previous case changed); returns the folder. */
  prepare(c: FuzzCase): string {
    for (const file of this.dirty) {
      const [baseName, f] = JSON.parse(file) as [string, string];
      const b = this.base(baseName);
      fs.writeFileSync(path.join(b.dir, f), b.originals.get(f)!);
    }
    this.dirty.clear();
    const b = this.base(c.base);
    const write = (f: string, bytes: Uint8Array | string) => {
      fs.writeFileSync(path.join(b.dir, f), bytes);
      this.dirty.add(JSON.stringify([c.base, f]));
    };
    if (c.header.length || c.bytes.length) {
      const shard = b.shards[c.file % b.shards.length];
      write(shard, mutateFile(b.originals.get(shard)!, c.header, c.bytes));
    }
    if (c.config.length) write('config.json', editJson(b.originals.get('config.json')!, c.config, false));
    if (c.index.length && b.originals.has(INDEX_FILE)) write(INDEX_FILE, editJson(b.originals.get(INDEX_FILE)!, c.index, true));
    return b.dir;
  }
}

function editJson(original: Uint8Array, edits: readonly JsonEdit[], isIndex: boolean): string {
  const doc = JSON.parse(Buffer.from(original).toString('utf8')) as Record<string, Json>;
  for (const e of edits) {
    // index edits go to weight_map, except edits of the weight_map key itself
    const target = isIndex && e.key !== 'weight_map' ? (doc.weight_map as Record<string, Json>) : doc;
    if (target === null || typeof target !== 'object') continue; // weight_map already replaced
    if (e.value === undefined) delete target[e.key];
    else target[e.key] = e.value;
  }
  return JSON.stringify(doc);
}

/** Applies header (structured) then byte mutations to a safetensors file. */
export function mutateFile(original: Uint8Array, header: readonly HeaderMutation[], bytes: readonly ByteMutation[]): Uint8Array {
  const view = new DataView(original.buffer, original.byteOffset, original.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  let data = original.subarray(8 + headerLength);
  let headerBytes: Uint8Array = original.subarray(8, 8 + headerLength);
  if (header.length) {
    const h = JSON.parse(Buffer.from(headerBytes).toString('utf8')) as Record<string, Json>;
    for (const m of header) {
      // Attention tensors first, so even indices hit the projections the layout reads.
      const names = Object.keys(h).filter((k) => k !== '__metadata__');
      if (names.length === 0) break;
      const attention = names.filter((n) => /attn|attention/.test(n));
      const pick = (i: number) => {
        const pool = i % 2 === 0 && attention.length ? attention : names;
        return pool[Math.floor(i / 2) % pool.length];
      };
      try {
        applyHeaderMutation(h, m, pick);
      } catch {
        // the entry is no longer an object (an earlier mutation replaced it): skip this one
      }
    }
    headerBytes = Buffer.from(JSON.stringify(h), 'utf8');
  }
  let declared: bigint = BigInt(headerBytes.length);
  for (const m of bytes) {
    switch (m.kind) {
      case 'header-bytes': {
        headerBytes = new Uint8Array(headerBytes);
        for (const e of m.edits) if (headerBytes.length) headerBytes[e.pos % headerBytes.length] = e.byte;
        break;
      }
      case 'header-splice': {
        const pos = headerBytes.length ? m.pos % headerBytes.length : 0;
        const insert = Buffer.from(m.insert, 'utf8');
        const next = new Uint8Array(headerBytes.length - Math.min(m.remove, headerBytes.length - pos) + insert.length);
        next.set(headerBytes.subarray(0, pos));
        next.set(insert, pos);
        next.set(headerBytes.subarray(pos + m.remove), pos + insert.length);
        headerBytes = next;
        if (!m.keepLength) declared = BigInt(headerBytes.length);
        break;
      }
      case 'length-prefix':
        declared = m.value;
        break;
      case 'length-delta':
        declared = declared + BigInt(m.delta) < 0n ? 0n : declared + BigInt(m.delta);
        break;
      case 'data-bytes': {
        data = new Uint8Array(data);
        for (const e of m.edits) if (data.length) data[e.pos % data.length] = e.byte;
        break;
      }
      case 'truncate':
      case 'append':
        break; // applied to the assembled file below
    }
  }
  let file = new Uint8Array(8 + headerBytes.length + data.length);
  new DataView(file.buffer).setBigUint64(0, declared & 0xffff_ffff_ffff_ffffn, true);
  file.set(headerBytes, 8);
  file.set(data, 8 + headerBytes.length);
  for (const m of bytes) {
    if (m.kind === 'truncate') file = file.subarray(0, m.keep % (file.length + 1));
    if (m.kind === 'append') {
      const longer = new Uint8Array(file.length + m.bytes.length);
      longer.set(file);
      longer.set(m.bytes, file.length);
      file = longer;
    }
  }
  return file;
}

function applyHeaderMutation(h: Record<string, Json>, m: HeaderMutation, pick: (i: number) => string): void {
  const entry = (i: number) => h[pick(i)] as Record<string, Json>;
  switch (m.kind) {
    case 'field':
      if (m.field === 'entry') h[pick(m.tensor)] = m.value;
      else if (m.field === 'extra') entry(m.tensor)[`x${String(m.value).length}`] = m.value;
      else entry(m.tensor)[m.field] = m.value;
      break;
    case 'offset-shift': {
      const offsets = entry(m.tensor).data_offsets as number[];
      if (m.which !== 1) offsets[0] += m.delta;
      if (m.which !== 0) offsets[1] += m.delta;
      break;
    }
    case 'shape-dim': {
      const shape = entry(m.tensor).shape as number[];
      if (shape.length) shape[m.dim % shape.length] = m.value;
      else shape.push(m.value);
      break;
    }
    case 'swap-shapes': {
      const a = entry(m.a);
      const b = entry(m.b);
      [a.shape, b.shape] = [b.shape, a.shape];
      break;
    }
    case 'drop':
      delete h[pick(m.tensor)];
      break;
    case 'rename': {
      const from = pick(m.tensor);
      const e = h[from];
      delete h[from];
      h[m.name] = e;
      break;
    }
    case 'duplicate-as': {
      // Point another tensor at this one's bytes (an overlap), under its own name.
      h[pick(m.other)] = structuredClone(h[pick(m.tensor)]);
      break;
    }
    case 'metadata':
      h.__metadata__ = m.value;
      break;
  }
}

/** What happened to one case. */
export type FuzzOutcome =
  | { kind: 'accepted'; heads: number }
  | { kind: 'rejected'; stage: 'open' | 'layout' | 'read'; message: string };

/** A violated guarantee: thrown by {@link runFuzzCase} and reported with the case. */
export class GuaranteeViolation extends Error {}

/**
 * Opens `dir`, builds the layout and reads every query/key/value head and bias, asserting
 * that every read stays inside its file, and data reads inside a declared tensor.
 * FactoredKeysError is a clean rejection; anything else is re-thrown as a violation.
 */
export async function runFuzzCase(dir: string): Promise<FuzzOutcome> {
  const sizes = new Map<string, number>();
  for (const f of fs.readdirSync(dir)) {
    const st = fs.statSync(path.join(dir, f));
    if (st.isFile()) sizes.set(path.join(dir, f), st.size);
  }
  let phase: 'open' | 'data' = 'open';
  let spans: { file: string; start: number; end: number }[] = [];
  const violations: string[] = [];
  const observeRead = (file: string, position: number, length: number) => {
    const size = sizes.get(file);
    if (size === undefined) violations.push(`read of ${file}, which is not a file of the checkpoint folder`);
    else if (!(Number.isSafeInteger(position) && Number.isSafeInteger(length) && position >= 0 && length >= 0 && position + length <= size && (length === 0 || position < size))) {
      violations.push(`read [${position}, ${position + length}) outside ${path.basename(file)} (${size} bytes)`);
    }
    if (phase === 'data' && !spans.some((s) => s.file === file && position >= s.start && position + length <= s.end)) {
      violations.push(`data read [${position}, ${position + length}) of ${path.basename(file)} outside every declared tensor`);
    }
  };
  let stage: 'open' | 'layout' | 'read' = 'open';
  let heads = 0;
  try {
    const ckpt = await openCheckpoint(dir, { observeRead });
    try {
      phase = 'data';
      spans = [...ckpt.tensors.values()].map((t) => ({ file: t.file, start: t.start, end: t.end }));
      for (const t of ckpt.tensors.values()) {
        const header = ckpt.files.find((f) => f.file === t.file);
        if (!header || t.start < header.dataStart || t.end > header.fileSize || t.end < t.start) {
          violations.push(`tensor "${t.name}" span [${t.start}, ${t.end}) accepted outside the data section`);
        }
      }
      stage = 'layout';
      // the full description (every role, as eval reads it) must also accept or refuse cleanly
      readModelSpec(ckpt);
      const layout = buildLayout(ckpt);
      stage = 'read';
      for (const layer of layout.layers) {
        for (const slice of [...layer.queryHeads, ...layer.keyHeads, ...layer.valueHeads]) {
          const w = await readHeadMatrix(ckpt, slice, layout.headDim);
          if (w.length !== layout.hiddenSize * layout.headDim) violations.push(`head matrix of ${slice.tensor} has ${w.length} values`);
          await readHeadBias(ckpt, slice, layout.headDim);
          heads++;
        }
      }
    } finally {
      await ckpt.close();
    }
  } catch (e) {
    if (violations.length) throw new GuaranteeViolation(violations.join('; '));
    if (e instanceof FactoredKeysError) return { kind: 'rejected', stage, message: e.message };
    throw new GuaranteeViolation(`uncaught ${(e as Error)?.name ?? typeof e} at ${stage}: ${(e as Error)?.stack ?? String(e)}`);
  }
  if (violations.length) throw new GuaranteeViolation(violations.join('; '));
  return { kind: 'accepted', heads };
}
