/**
 * Malformed-checkpoint corpus: builds, in a scratch folder, one checkpoint folder per hostile
 * case, each a mutated copy of a real fixture. Nothing binary is checked in; the corpus is
 * regenerated at test time (test/hostile/corpus.test.ts) or by hand:
 *
 *   node --import tsx scripts/corpus.ts <out-dir> [fixtures-dir]
 *
 * Every case records which CLI command to run on it, whether it must fail (`error`), succeed
 * with a warning (`warning`) or succeed within bounds (`ok`), and the substrings the one-line
 * message must contain (the file, tensor or config key at fault).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';

/** What a case must produce when the CLI runs on it. */
export type CaseExpectation = 'error' | 'warning' | 'ok';

/** One generated hostile input. */
export interface CorpusCase {
  /** Unique id, also the folder name under the corpus root. */
  readonly name: string;
  /** Group for counting: prefix, header, dtype, shape, offsets, truncation, ... */
  readonly category: string;
  /** CLI arguments after the program, e.g. ['inspect', '<path>']. */
  readonly argv: readonly string[];
  readonly expect: CaseExpectation;
  /** Substrings the error (or warning) line must contain. */
  readonly mentions: readonly string[];
  /** Peak resident memory the CLI may use on this case, in MiB. */
  readonly maxRssMiB: number;
  /** A path the command must not create (an export destination). */
  readonly mustNotExist?: string;
  /** For NaN/Inf cases: the heads `analyze --json` must flag non_finite, as "layer/kind/head". */
  readonly nonFiniteHeads?: readonly string[];
}

/** Options for {@link writeCorpus}. */
export interface CorpusOptions {
  /** Adds the cases that need the `analyze` command (NaN/Inf weights). */
  readonly withAnalyze?: boolean;
  /**
   * A finished factored export of layouts/llama (key-svd, rank 8): adds the cases that feed
   * `eval` a factored checkpoint with a hostile `factored_keys` block.
   */
  readonly factoredBase?: string;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type HeaderEntry = { dtype: Json; shape: Json; data_offsets: Json; [k: string]: Json };

/** A safetensors file split into its parts, for mutation. */
interface RawFile {
  readonly header: Record<string, Json>;
  readonly headerLength: number;
  /** The data section (everything after the header). */
  readonly data: Uint8Array;
  readonly bytes: Uint8Array;
}

/** A tensor with its own bytes, for rebuilding consistent files. */
interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

const DEFAULT_RSS_MIB = 256;

function readRaw(file: string): RawFile {
  const bytes = new Uint8Array(fs.readFileSync(file));
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + headerLength)).toString('utf8')) as Record<string, Json>;
  return { header, headerLength, data: bytes.subarray(8 + headerLength), bytes };
}

/** Serialises a header text (or bytes) and data; `declaredLength` overrides the length prefix. */
function encode(header: string | Uint8Array, data: Uint8Array, declaredLength?: bigint): Uint8Array {
  const headerBytes = typeof header === 'string' ? Buffer.from(header, 'utf8') : header;
  const out = new Uint8Array(8 + headerBytes.length + data.length);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(data, 8 + headerBytes.length);
  return out;
}

function entriesOf(raw: RawFile): Entry[] {
  const list: Entry[] = [];
  for (const [name, v] of Object.entries(raw.header)) {
    if (name === '__metadata__') continue;
    const e = v as HeaderEntry;
    const [b, end] = e.data_offsets as number[];
    list.push({ name, dtype: e.dtype as string, shape: e.shape as number[], data: raw.data.subarray(b, end) });
  }
  return list;
}

/** A valid file from tensors, offsets packed in order (the consistent rebuild). */
function pack(entries: readonly Entry[]): Uint8Array {
  const header: Record<string, Json> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const e of entries) {
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + e.data.length] };
    offset += e.data.length;
  }
  const data = new Uint8Array(offset);
  offset = 0;
  for (const e of entries) {
    data.set(e.data, offset);
    offset += e.data.length;
  }
  return encode(JSON.stringify(header), data);
}

function deepArray(depth: number): string {
  return '['.repeat(depth) + ']'.repeat(depth);
}

/** Writes the corpus under `outDir` (created, must be empty or absent) and returns its cases. */
export function writeCorpus(outDir: string, fixturesDir: string, options: CorpusOptions = {}): CorpusCase[] {
  fs.mkdirSync(outDir, { recursive: true });
  const cases: CorpusCase[] = [];
  const fixture = (name: string) => path.join(fixturesDir, name);
  const LLAMA = 'layouts/llama';
  const FILE = 'model.safetensors';
  const Q0 = 'model.layers.0.self_attn.q_proj.weight';
  const K0 = 'model.layers.0.self_attn.k_proj.weight';
  const llamaRaw = readRaw(path.join(fixture(LLAMA), FILE));

  /** Copies a fixture folder's files into a new case folder; returns the folder. */
  const caseDir = (name: string, from?: string): string => {
    const dir = path.join(outDir, name);
    if (fs.existsSync(dir)) throw new Error(`duplicate corpus case ${name}`);
    fs.mkdirSync(dir);
    if (from) for (const f of fs.readdirSync(fixture(from))) fs.copyFileSync(path.join(fixture(from), f), path.join(dir, f));
    return dir;
  };
  const add = (
    name: string,
    category: string,
    mentions: string[],
    target: string,
    extra: { expect?: CaseExpectation; command?: string; args?: string[]; maxRssMiB?: number; fileNotNamed?: boolean; nonFiniteHeads?: string[] } = {},
  ) => {
    cases.push({
      name,
      category,
      argv: [extra.command ?? 'inspect', target, ...(extra.args ?? [])],
      expect: extra.expect ?? 'error',
      mentions,
      maxRssMiB: extra.maxRssMiB ?? DEFAULT_RSS_MIB,
      ...(extra.nonFiniteHeads ? { nonFiniteHeads: extra.nonFiniteHeads } : {}),
    });
  };
  /** A llama-layout case whose model.safetensors is replaced by `bytes`. */
  const llamaFile = (name: string, category: string, mentions: string[], bytes: Uint8Array, extra?: Parameters<typeof add>[4]) => {
    const dir = caseDir(name, LLAMA);
    fs.writeFileSync(path.join(dir, FILE), bytes);
    add(name, category, extra?.fileNotNamed ? mentions : [FILE, ...mentions], dir, extra);
  };
  /** A llama-layout case with the header JSON object mutated (data untouched). */
  const llamaHeader = (name: string, category: string, mentions: string[], mutate: (h: Record<string, Json>) => void) => {
    const h = structuredClone(llamaRaw.header);
    mutate(h);
    llamaFile(name, category, mentions, encode(JSON.stringify(h), llamaRaw.data));
  };
  /** A llama-layout case with one tensor's header entry mutated. */
  const llamaTensor = (name: string, category: string, tensor: string, mutate: (e: HeaderEntry) => void, mentions: string[] = []) =>
    llamaHeader(name, category, [tensor, ...mentions], (h) => mutate(h[tensor] as HeaderEntry));
  /** A llama-layout case rebuilt consistently from mutated tensors. */
  const llamaEntries = (name: string, category: string, mentions: string[], mutate: (list: Entry[]) => Entry[] | void, fileNotNamed = false) => {
    const list = entriesOf(llamaRaw).map((e) => ({ ...e, shape: [...e.shape] }));
    llamaFile(name, category, mentions, pack(mutate(list) ?? list), { fileNotNamed });
  };
  /**
   * A case from `from` with config.json replaced by `config` (object or raw text). Errors found
   * in config.json itself name it; contradictions found against a tensor name the tensor.
   */
  const withConfig = (name: string, category: string, from: string, mentions: string[], config: Record<string, Json> | string) => {
    const dir = caseDir(name, from);
    fs.writeFileSync(path.join(dir, 'config.json'), typeof config === 'string' ? config : JSON.stringify(config, null, 2));
    add(name, category, mentions, dir);
  };
  const configOf = (from: string) => JSON.parse(fs.readFileSync(path.join(fixture(from), 'config.json'), 'utf8')) as Record<string, Json>;
  const llamaConfig = (name: string, mentions: string[], edit: (c: Record<string, Json>) => void) => {
    const c = configOf(LLAMA);
    edit(c);
    withConfig(name, name.startsWith('huge') ? 'huge' : 'config', LLAMA, mentions, c);
  };

  // ---- 8-byte length prefix --------------------------------------------------------------
  const body = llamaRaw.bytes.subarray(8);
  llamaFile('prefix-empty-file', 'prefix', ['too short'], new Uint8Array(0));
  llamaFile('prefix-5-bytes', 'prefix', ['too short'], llamaRaw.bytes.subarray(0, 5));
  llamaFile('prefix-length-0', 'prefix', ['length 0'], encode(body, new Uint8Array(0), 0n));
  llamaFile('prefix-length-1', 'prefix', ['length 1'], encode(body, new Uint8Array(0), 1n));
  llamaFile('prefix-length-past-eof', 'prefix', ['past the end'], encode(body, new Uint8Array(0), BigInt(body.length + 1)));
  llamaFile('prefix-length-u64-max', 'prefix', ['exceeds'], encode(body, new Uint8Array(0), 0xffff_ffff_ffff_ffffn));
  llamaFile('prefix-length-2^53', 'prefix', ['exceeds'], encode(body, new Uint8Array(0), 2n ** 53n));
  llamaFile('prefix-length-over-cap', 'prefix', ['exceeds'], encode(body, new Uint8Array(0), 100_000_001n));
  llamaFile('prefix-length-short', 'prefix', ['not valid JSON'], encode(body, new Uint8Array(0), BigInt(llamaRaw.headerLength - 10)));

  // ---- header text -------------------------------------------------------------------------
  const headerText = JSON.stringify(llamaRaw.header);
  const notUtf8 = Buffer.from(headerText, 'utf8');
  notUtf8[notUtf8.indexOf('lm_head')] = 0xff;
  llamaFile('header-not-utf8', 'header', ['UTF-8'], encode(notUtf8, llamaRaw.data));
  llamaFile('header-not-json', 'header', ['not valid JSON'], encode(headerText.slice(0, -1) + ',', llamaRaw.data));
  llamaFile('header-trailing-garbage', 'header', ['not valid JSON'], encode(headerText + 'xyz', llamaRaw.data));
  llamaFile('header-all-nul', 'header', ['not valid JSON'], encode(new Uint8Array(64), llamaRaw.data));
  llamaFile('header-array', 'header', ['not a JSON object'], encode('[]', llamaRaw.data));
  llamaFile('header-null', 'header', ['not a JSON object'], encode('null', llamaRaw.data));
  llamaFile('header-number', 'header', ['not a JSON object'], encode('12345678', llamaRaw.data));
  llamaFile('header-string', 'header', ['not a JSON object'], encode('"model"', llamaRaw.data));
  llamaHeader('header-metadata-array', 'header', ['__metadata__'], (h) => (h.__metadata__ = ['pt']));
  llamaHeader('header-metadata-number-value', 'header', ['__metadata__.format'], (h) => (h.__metadata__ = { format: 1 }));
  llamaTensor('header-entry-number', 'header', Q0, (e) => Object.assign(e, { dtype: 5 }));
  llamaHeader('header-entry-null', 'header', [Q0], (h) => (h[Q0] = null));
  llamaHeader('header-entry-array', 'header', [Q0], (h) => (h[Q0] = [1, 2]));
  llamaHeader('header-entry-string', 'header', [Q0], (h) => (h[Q0] = 'F32'));
  llamaHeader('header-control-chars-name', 'header', ['bad\\u001b[31mname'], (h) => (h['bad\u001b[31mname'] = { dtype: 'F32', shape: [1], data_offsets: [0, 8] }));

  // ---- dtype ---------------------------------------------------------------------------------
  llamaTensor('dtype-unknown', 'dtype', Q0, (e) => (e.dtype = 'F33'), ['unknown dtype']);
  llamaTensor('dtype-missing', 'dtype', Q0, (e) => delete (e as Record<string, Json>).dtype, ['unknown dtype']);
  llamaTensor('dtype-number', 'dtype', Q0, (e) => (e.dtype = 32), ['unknown dtype']);
  llamaTensor('dtype-lowercase', 'dtype', Q0, (e) => (e.dtype = 'f32'), ['unknown dtype']);
  llamaTensor('dtype-proto-name', 'dtype', Q0, (e) => (e.dtype = 'constructor'), ['unknown dtype']);
  llamaTensor('dtype-size-mismatch', 'dtype', Q0, (e) => (e.dtype = 'F16'), ['needs']);
  llamaTensor('dtype-sub-byte-odd', 'dtype', 'model.layers.0.input_layernorm.weight', (e) => Object.assign(e, { dtype: 'F4', shape: [511] }), ['impossible']);
  llamaEntries('dtype-int-weights', 'dtype', [Q0, 'I32'], (list) => {
    for (const e of list) if (e.name.includes('_proj') && e.name.includes('self_attn')) e.dtype = 'I32';
  });
  llamaEntries('dtype-q-k-differ', 'dtype', [K0], (list) => {
    for (const e of list) if (e.name === K0) e.dtype = 'I32';
  });
  llamaEntries('dtype-layers-differ', 'dtype', ['model.layers.1.self_attn.q_proj.weight', 'earlier layers'], (list) => {
    for (const e of list) if (e.name.startsWith('model.layers.1.self_attn.') && /[qk]_proj/.test(e.name)) e.dtype = 'I32';
  });

  // ---- shape ---------------------------------------------------------------------------------
  llamaTensor('shape-not-array', 'shape', Q0, (e) => (e.shape = 64), ['invalid shape']);
  llamaTensor('shape-negative', 'shape', Q0, (e) => (e.shape = [-64, -64]), ['invalid shape']);
  llamaTensor('shape-float', 'shape', Q0, (e) => (e.shape = [64.5, 64]), ['invalid shape']);
  llamaTensor('shape-string-dim', 'shape', Q0, (e) => (e.shape = ['64', 64]), ['invalid shape']);
  llamaTensor('shape-null-dim', 'shape', Q0, (e) => (e.shape = [null, 64]), ['invalid shape']);
  llamaTensor('shape-unsafe-int', 'shape', Q0, (e) => (e.shape = [2 ** 53 + 2, 1]), ['invalid shape']);
  llamaTensor('shape-overflow', 'shape', Q0, (e) => (e.shape = [2 ** 40, 2 ** 40]), ['impossible']);
  llamaTensor('shape-too-big-for-span', 'shape', Q0, (e) => (e.shape = [64, 65]), ['needs']);
  llamaTensor('shape-too-small-for-span', 'shape', Q0, (e) => (e.shape = [64, 63]), ['needs']);
  llamaTensor('shape-zero-dim', 'shape', Q0, (e) => (e.shape = [0, 64]), ['needs']);
  llamaTensor('shape-long', 'shape', Q0, (e) => (e.shape = [...Array.from({ length: 100_000 }, () => 1), 64, 64]), [Q0]);

  // ---- data_offsets --------------------------------------------------------------------------
  const qOffsets = (llamaRaw.header[Q0] as HeaderEntry).data_offsets as number[];
  const dataSize = llamaRaw.data.length;
  llamaTensor('offsets-missing', 'offsets', Q0, (e) => delete (e as Record<string, Json>).data_offsets, ['data_offsets']);
  llamaTensor('offsets-one', 'offsets', Q0, (e) => (e.data_offsets = [qOffsets[0]]), ['data_offsets']);
  llamaTensor('offsets-three', 'offsets', Q0, (e) => (e.data_offsets = [...qOffsets, qOffsets[1]]), ['data_offsets']);
  llamaTensor('offsets-negative', 'offsets', Q0, (e) => (e.data_offsets = [-16384, 0]), ['data_offsets']);
  llamaTensor('offsets-float', 'offsets', Q0, (e) => (e.data_offsets = [qOffsets[0] + 0.5, qOffsets[1] + 0.5]), ['data_offsets']);
  llamaTensor('offsets-string', 'offsets', Q0, (e) => (e.data_offsets = qOffsets.map(String)), ['data_offsets']);
  llamaTensor('offsets-reversed', 'offsets', Q0, (e) => (e.data_offsets = [qOffsets[1], qOffsets[0]]), ['end before they begin']);
  llamaTensor('offsets-past-data', 'offsets', Q0, (e) => (e.data_offsets = [dataSize - 16384 + 4, dataSize + 4]), ['past the data section']);
  llamaTensor('offsets-2^53-1', 'offsets', Q0, (e) => (e.data_offsets = [2 ** 53 - 16385, 2 ** 53 - 1]), ['past the data section']);
  llamaTensor('offsets-2^64', 'offsets', Q0, (e) => (e.data_offsets = [0, 2 ** 64]), ['data_offsets']);
  llamaTensor('offsets-overlap', 'offsets', Q0, (e) => (e.data_offsets = [qOffsets[0] - 4, qOffsets[1] - 4]), ['overlap']);
  llamaHeader('offsets-same-span', 'offsets', [Q0, 'overlap'], (h) => {
    const k = h[K0] as HeaderEntry;
    (h[Q0] as HeaderEntry).data_offsets = k.data_offsets;
    (h[Q0] as HeaderEntry).shape = k.shape;
  });

  // ---- duplicate names -----------------------------------------------------------------------
  {
    const q = JSON.stringify(llamaRaw.header[Q0]);
    const text = headerText.slice(0, -1) + `,${JSON.stringify(Q0)}:${q}}`;
    llamaFile('duplicate-name-in-header', 'duplicate', [Q0, 'twice'], encode(text, llamaRaw.data));
    const escaped = JSON.stringify(Q0).replace('q_proj', '\\u0071_proj');
    llamaFile('duplicate-name-escaped', 'duplicate', [Q0, 'twice'], encode(headerText.slice(0, -1) + `,${escaped}:${q}}`, llamaRaw.data));
  }
  {
    // The same tensor stored in two shards of the Mistral checkpoint.
    const dir = caseDir('duplicate-name-across-shards', 'mistral-bytes');
    const s1 = path.join(dir, 'model-00001-of-00003.safetensors');
    const s3 = readRaw(path.join(dir, 'model-00003-of-00003.safetensors'));
    const norm = entriesOf(s3).find((e) => e.name === 'model.norm.weight')!;
    fs.writeFileSync(s1, pack([...entriesOf(readRaw(s1)), norm]));
    add('duplicate-name-across-shards', 'duplicate', ['model.norm.weight', 'also in'], dir);
  }

  // ---- truncation at every structural boundary -----------------------------------------------
  {
    const dataStart = 8 + llamaRaw.headerLength;
    const cuts = new Map<number, string>([
      [8, 'after-prefix'],
      [8 + Math.floor(llamaRaw.headerLength / 2), 'mid-header'],
      [dataStart - 1, 'header-minus-1'],
      [dataStart, 'end-of-header'],
    ]);
    for (const e of entriesOf(llamaRaw)) {
      const start = dataStart + (e.data.byteOffset - llamaRaw.data.byteOffset);
      const end = start + e.data.length;
      if (!cuts.has(start)) cuts.set(start, `at-${e.name}`);
      if (!cuts.has(start + 1)) cuts.set(start + 1, `in-${e.name}-start`);
      if (!cuts.has(end - 1)) cuts.set(end - 1, `in-${e.name}-end`);
    }
    for (const [at, label] of [...cuts].sort((a, b) => a[0] - b[0])) {
      const expectText = at < dataStart ? 'past the end' : 'past the data section';
      llamaFile(`truncated-${label}`, 'truncation', [expectText], llamaRaw.bytes.subarray(0, at));
    }
    const dir = caseDir('truncated-shard-2', 'mistral-bytes');
    const shard = path.join(dir, 'model-00002-of-00003.safetensors');
    fs.truncateSync(shard, Math.floor(fs.statSync(shard).size / 2));
    add('truncated-shard-2', 'truncation', ['model-00002-of-00003.safetensors', 'past the data section'], dir);
  }

  // ---- huge declared sizes -------------------------------------------------------------------
  {
    // A consistent header whose extra tensor spans 64 GiB of a sparse file: opening and
    // inspecting must not read (or allocate) it.
    const dir = caseDir('huge-sparse-tensor', LLAMA);
    const huge = 2 ** 36;
    const h = structuredClone(llamaRaw.header);
    h['extra.huge'] = { dtype: 'F32', shape: [huge / 4 / 1024, 1024], data_offsets: [dataSize, dataSize + huge] };
    const bytes = encode(JSON.stringify(h), llamaRaw.data);
    const file = path.join(dir, FILE);
    fs.writeFileSync(file, bytes);
    fs.truncateSync(file, bytes.length + huge);
    add('huge-sparse-tensor', 'huge', [], dir, { expect: 'ok' });
  }
  llamaConfig('huge-config-heads', ['config.json', '1000000000 attention heads'], (c) => Object.assign(c, { num_attention_heads: 1_000_000_000, num_key_value_heads: 1_000_000_000 }));
  llamaConfig('huge-config-head-dim', [Q0], (c) => (c.head_dim = 2 ** 40));
  llamaConfig('huge-config-layers', ['config.json', 'num_hidden_layers'], (c) => (c.num_hidden_layers = 2 ** 31));
  llamaConfig('huge-config-hidden', ['hidden_size'], (c) => (c.hidden_size = 2 ** 53 - 1));
  llamaConfig('huge-config-unsafe-int', ['config.json', 'hidden_size'], (c) => (c.hidden_size = 2 ** 60));

  // ---- 2025–26 config keys and tensor roles (layouts2) --------------------------------------
  // Config keys are checked when the model is described (inspect); roles outside the attention
  // projections when it is run (eval), so those cases use eval.
  const EVAL = { command: 'eval', args: ['--text', fixture('heldout.txt'), '--tokenizer', 'bytes', '--seq', '64'] };
  const modernConfig = (name: string, from: string, mentions: string[], edit: (c: Record<string, Json>) => void) => {
    const c = configOf(`layouts2/${from}`);
    edit(c);
    withConfig(name, 'modern-config', `layouts2/${from}`, ['config.json', ...mentions], c);
  };
  const ropeParams = (c: Record<string, Json>) => c.rope_parameters as Record<string, Json>;
  modernConfig('rope-type-unknown', 'llama3', ['rope_type "banana" is not supported'], (c) => (ropeParams(c).rope_type = 'banana'));
  modernConfig('rope-factor-string', 'llama3', ['"factor" must be a number'], (c) => (ropeParams(c).factor = '8'));
  modernConfig('rope-llama3-no-original', 'llama3', ['original_max_position_embeddings'], (c) => delete ropeParams(c).original_max_position_embeddings);
  modernConfig('rope-yarn-factor-below-1', 'gpt_oss', ['"factor" must be at least 1'], (c) => (ropeParams(c).factor = 0.5));
  modernConfig('rope-per-layer-type-not-object', 'gemma3', ['rope_parameters.sliding_attention'], (c) => (ropeParams(c).sliding_attention = 'fast'));
  modernConfig('rope-partial-odd', 'phi', ['partial rotary factor'], (c) => (ropeParams(c).partial_rotary_factor = 0.1));
  modernConfig('rope-theta-negative', 'qwen3', ['rope_theta'], (c) => (ropeParams(c).rope_theta = -5));
  modernConfig('layer-types-length', 'gemma2', ['"layer_types" lists 3 layers'], (c) => (c.layer_types = ['sliding_attention', 'full_attention', 'full_attention']));
  modernConfig('layer-types-unknown', 'gemma2', ['layer_types[1] "chunked_attention"'], (c) => (c.layer_types = ['sliding_attention', 'chunked_attention']));
  modernConfig('layer-types-no-window', 'gpt_oss', ['"sliding_window" is not set'], (c) => delete c.sliding_window);
  modernConfig('no-rope-layers-bad', 'smollm3', ['no_rope_layers'], (c) => (c.no_rope_layers = [1, 2]));
  modernConfig('activation-unknown', 'mixtral', ['activation "banana"'], (c) => (c.hidden_act = 'banana'));
  modernConfig('score-multiplier-negative', 'granite', ['attention_multiplier'], (c) => (c.attention_multiplier = -0.25));
  modernConfig('logit-scale-string', 'cohere2', ['logit_scale'], (c) => (c.logit_scale = 'x'));
  modernConfig('softcap-string', 'gemma2', ['attn_logit_softcapping'], (c) => (c.attn_logit_softcapping = 'none'));
  modernConfig('moe-topk-not-int', 'qwen3_moe', ['num_experts_per_tok'], (c) => (c.num_experts_per_tok = 1.5));
  modernConfig('mla-rank-missing', 'deepseek_v3', ['kv_lora_rank'], (c) => delete c.kv_lora_rank);
  /** A layouts2 case whose model.safetensors has its tensors edited (removed, reshaped), run by eval. */
  const modernTensors = (name: string, from: string, mentions: string[], mutate: (list: Entry[]) => Entry[]) => {
    const dir = caseDir(name, `layouts2/${from}`);
    const raw = readRaw(path.join(fixture(`layouts2/${from}`), FILE));
    fs.writeFileSync(path.join(dir, FILE), pack(mutate(entriesOf(raw).map((e) => ({ ...e, shape: [...e.shape] })))));
    add(name, 'modern-roles', mentions, dir, EVAL);
  };
  const without = (tensor: string) => (list: Entry[]) => list.filter((e) => e.name !== tensor);
  const reshaped = (tensor: string, shape: number[]) => (list: Entry[]) => list.map((e) => (e.name === tensor ? { ...e, shape } : e));
  modernTensors('k-norm-missing', 'qwen3', ['model.layers.1.self_attn.k_norm.weight', 'missing'], without('model.layers.1.self_attn.k_norm.weight'));
  modernTensors('k-norm-wrong-size', 'olmo2', ['model.layers.0.self_attn.k_norm.weight', 'expected [32]'], (list) => list.map((e) => (e.name === 'model.layers.0.self_attn.k_norm.weight' ? { ...e, shape: [16], data: e.data.subarray(0, 64) } : e)));
  modernTensors('sinks-2d', 'gpt_oss', ['model.layers.0.self_attn.sinks', 'expected [4]'], reshaped('model.layers.0.self_attn.sinks', [2, 2]));
  modernTensors('experts-stacked-wrong', 'gpt_oss', ['model.layers.1.mlp.experts.gate_up_proj'], reshaped('model.layers.1.mlp.experts.gate_up_proj', [4, 128, 128]));
  modernTensors('expert-missing', 'mixtral', ['model.layers.0.block_sparse_moe.experts.3.w2.weight', 'missing'], without('model.layers.0.block_sparse_moe.experts.3.w2.weight'));
  modernTensors('router-wrong-experts', 'qwen3_moe', ['model.layers.0.mlp.gate.weight', 'does not score 4 experts'], (list) => list.map((e) => (e.name === 'model.layers.0.mlp.gate.weight' ? { ...e, shape: [3, 64], data: e.data.subarray(0, 3 * 64 * 4) } : e)));
  modernTensors('post-norm-missing', 'gemma2', ['model.layers.0.post_feedforward_layernorm.weight', 'missing'], without('model.layers.0.post_feedforward_layernorm.weight'));
  modernTensors('fused-gate-up-short', 'phi3', ['model.layers.0.mlp.gate_up_proj.weight'], (list) => list.map((e) => (e.name === 'model.layers.0.mlp.gate_up_proj.weight' ? { ...e, shape: [128, 64], data: e.data.subarray(0, 128 * 64 * 4) } : e)));
  const mla = caseDir('mla-eval', 'layouts2/deepseek_v3');
  add('mla-eval', 'modern-roles', ['config.json', 'multi-head latent attention'], mla, EVAL);

  // ---- JSON bombs ----------------------------------------------------------------------------
  const DEEP = 1_000_000;
  llamaFile('bomb-deep-metadata', 'bomb', ['__metadata__'], encode(`{"__metadata__":{"x":${deepArray(DEEP)}}}`, new Uint8Array(0)));
  llamaFile('bomb-deep-shape', 'bomb', [Q0, 'invalid shape'], encode(`{${JSON.stringify(Q0)}:{"dtype":"F32","shape":${deepArray(DEEP)},"data_offsets":[0,0]}}`, new Uint8Array(0)));
  llamaFile('bomb-deep-dtype', 'bomb', [Q0, 'unknown dtype'], encode(`{${JSON.stringify(Q0)}:{"dtype":${deepArray(DEEP)},"shape":[],"data_offsets":[0,0]}}`, new Uint8Array(0)));
  llamaFile('bomb-deep-offsets', 'bomb', [Q0, 'data_offsets'], encode(`{${JSON.stringify(Q0)}:{"dtype":"F32","shape":[],"data_offsets":${deepArray(DEEP)}}}`, new Uint8Array(0)));
  llamaFile('bomb-deep-object-key', 'bomb', ['__metadata__'], encode(`{"__metadata__":${'{"a":'.repeat(DEEP)}1${'}'.repeat(DEEP)}}`, new Uint8Array(0)));
  {
    // ~90 MB of header, just under the 100 MB cap, with one bad tensor at its end.
    const pad = ' '.repeat(90_000_000);
    const text = headerText.slice(0, -1) + `,"zz.bad":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}${pad}}`;
    llamaFile('bomb-giant-header', 'bomb', ['zz.bad', 'needs'], encode(text, llamaRaw.data), { maxRssMiB: 1024 });
  }
  {
    // 300k zero-size tensors: a valid header that is expensive only if something is quadratic.
    const parts = [headerText.slice(0, -1)];
    for (let i = 0; i < 300_000; i++) parts.push(`,"z.${i}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`);
    parts.push('}');
    llamaFile('bomb-many-tensors', 'bomb', [], encode(parts.join(''), llamaRaw.data), { expect: 'ok', maxRssMiB: 768 });
  }
  {
    const c = configOf(LLAMA);
    delete c.hidden_size;
    withConfig('bomb-config-deep-value', 'bomb', LLAMA, ['config.json', 'hidden_size'], JSON.stringify(c).slice(0, -1) + `,"hidden_size":${deepArray(DEEP)}}`);
  }
  withConfig('bomb-config-deep-raw', 'bomb', LLAMA, ['config.json', 'levels deep', '"x"'], `{"x":${deepArray(DEEP)}}`);
  {
    const dir = caseDir('bomb-config-giant', LLAMA);
    fs.writeFileSync(path.join(dir, 'config.json'), '{');
    fs.truncateSync(path.join(dir, 'config.json'), 65 * 1024 * 1024); // sparse
    add('bomb-config-giant', 'bomb', ['config.json', 'too large'], dir);
  }

  // ---- index.json ----------------------------------------------------------------------------
  const INDEX = 'model.safetensors.index.json';
  const mistralIndex = JSON.parse(fs.readFileSync(path.join(fixture('mistral-bytes'), INDEX), 'utf8')) as { weight_map: Record<string, Json> };
  /** A Mistral case with index.json replaced; `mentions` are complete (some errors name the shard). */
  const withIndex = (name: string, mentions: string[], index: unknown, prepare?: (dir: string) => void, maxRssMiB?: number) => {
    const dir = caseDir(name, 'mistral-bytes');
    prepare?.(dir);
    fs.writeFileSync(path.join(dir, INDEX), typeof index === 'string' ? index : JSON.stringify(index));
    add(name, 'index', mentions, dir, { maxRssMiB });
  };
  /** index.json text with the shard of lm_head.weight replaced by raw JSON text. */
  const rawShardOf = (rawJson: string) => JSON.stringify({ ...mistralIndex, weight_map: { ...mistralIndex.weight_map, 'lm_head.weight': '@@' } }).replace('"@@"', rawJson);
  const remap = (edit: (m: Record<string, Json>) => void) => {
    const m = structuredClone(mistralIndex.weight_map);
    edit(m);
    return { ...mistralIndex, weight_map: m };
  };
  const LM = 'lm_head.weight';
  withIndex('index-parent-dir', [INDEX, '../'], remap((m) => (m[LM] = '../model-00003-of-00003.safetensors')));
  withIndex('index-absolute', [INDEX, '/etc/passwd'], remap((m) => (m[LM] = '/etc/passwd')));
  withIndex('index-subdir', [INDEX, 'sub/model.safetensors'], remap((m) => (m[LM] = 'sub/model.safetensors')), (dir) => {
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.copyFileSync(path.join(dir, 'model-00003-of-00003.safetensors'), path.join(dir, 'sub', FILE));
  });
  withIndex('index-backslash', [INDEX, '..'], remap((m) => (m[LM] = '..\\model.safetensors')));
  withIndex('index-dot', [INDEX, '"."'], remap((m) => (m[LM] = '.')));
  withIndex('index-dotdot', [INDEX, '".."'], remap((m) => (m[LM] = '..')));
  withIndex('index-nul-byte', [INDEX, 'plain file name'], remap((m) => (m[LM] = 'model\u0000.safetensors')));
  withIndex('index-empty-name', [INDEX, 'non-string'], remap((m) => (m[LM] = '')));
  withIndex('index-number-name', [INDEX, 'non-string'], remap((m) => (m[LM] = 3)));
  withIndex('index-deep-name', [INDEX, 'levels deep', 'lm_head.weight'], rawShardOf(deepArray(DEEP)));
  withIndex('index-missing-shard', ['model-00009-of-00009.safetensors'], remap((m) => (m[LM] = 'model-00009-of-00009.safetensors')));
  withIndex('index-shard-is-dir', ['shard.safetensors', 'regular file'], remap((m) => (m[LM] = 'shard.safetensors')), (dir) => fs.mkdirSync(path.join(dir, 'shard.safetensors')));
  withIndex('index-no-weight-map', [INDEX, 'weight_map'], { metadata: {} });
  withIndex('index-weight-map-array', [INDEX, 'weight_map'], { weight_map: ['model-00001-of-00003.safetensors'] });
  withIndex('index-weight-map-empty', [INDEX, 'empty'], { weight_map: {} });
  withIndex('index-not-json', [INDEX, 'not valid JSON'], '{"weight_map": ');
  withIndex('index-array', [INDEX, 'weight_map'], '[]');
  withIndex('index-null', [INDEX, 'weight_map'], 'null');
  withIndex('index-deep', [INDEX, 'weight_map'], `{"weight_map":${deepArray(DEEP)}}`);
  withIndex('index-listed-not-stored', [INDEX, 'ghost.weight'], remap((m) => (m['ghost.weight'] = 'model-00003-of-00003.safetensors')));
  withIndex('index-wrong-shard', [INDEX, LM, 'stored in'], remap((m) => (m[LM] = 'model-00001-of-00003.safetensors')));
  {
    // A tensor missing from the index: once plainly, once named after an Object.prototype key.
    const dir = caseDir('index-unlisted-tensor', 'mistral-bytes');
    fs.writeFileSync(path.join(dir, INDEX), JSON.stringify(remap((m) => delete m[LM])));
    add('index-unlisted-tensor', 'index', [LM, 'not listed'], dir);
    const dir2 = caseDir('index-unlisted-proto-name', 'mistral-bytes');
    fs.writeFileSync(path.join(dir2, INDEX), JSON.stringify(remap((m) => delete m[LM])));
    const s3 = path.join(dir2, 'model-00003-of-00003.safetensors');
    fs.writeFileSync(s3, pack(entriesOf(readRaw(s3)).map((e) => (e.name === LM ? { ...e, name: 'constructor' } : e))));
    add('index-unlisted-proto-name', 'index', ['constructor', 'not listed'], dir2);
  }
  {
    const shards = Array.from({ length: 200_000 }, (_, i) => [`t.${i}`, `shard-${i}.safetensors`]);
    withIndex('index-many-shards', ['shard-'], { weight_map: Object.fromEntries(shards) }, undefined, 512);
    const dir = caseDir('index-giant', 'mistral-bytes');
    fs.writeFileSync(path.join(dir, INDEX), '{');
    fs.truncateSync(path.join(dir, INDEX), 65 * 1024 * 1024);
    add('index-giant', 'index', [INDEX, 'too large'], dir);
  }

  // ---- location and file kinds ---------------------------------------------------------------
  add('location-missing-path', 'location', ['no-such-checkpoint'], path.join(outDir, 'no-such-checkpoint'));
  {
    const dir = caseDir('location-not-safetensors', LLAMA);
    add('location-not-safetensors', 'location', ['config.json'], path.join(dir, 'config.json'));
    const empty = caseDir('location-empty-folder');
    add('location-empty-folder', 'location', ['location-empty-folder', 'no .safetensors'], empty);
    const two = caseDir('location-two-files-no-index', LLAMA);
    fs.copyFileSync(path.join(two, FILE), path.join(two, 'other.safetensors'));
    add('location-two-files-no-index', 'location', ['model.safetensors.index.json'], two);
    const lone = caseDir('location-lone-file-no-config');
    fs.copyFileSync(path.join(fixture(LLAMA), FILE), path.join(lone, FILE));
    add('location-lone-file-no-config', 'location', ['config.json', 'not found'], path.join(lone, FILE));
    const cfgDir = caseDir('location-config-is-dir', LLAMA);
    fs.rmSync(path.join(cfgDir, 'config.json'));
    fs.mkdirSync(path.join(cfgDir, 'config.json'));
    add('location-config-is-dir', 'location', ['config.json'], cfgDir);
    const devZero = caseDir('location-shard-is-dev-zero', LLAMA);
    fs.rmSync(path.join(devZero, FILE));
    fs.symlinkSync('/dev/zero', path.join(devZero, FILE));
    add('location-shard-is-dev-zero', 'location', [FILE, 'regular file'], devZero);
    const cfgZero = caseDir('location-config-is-dev-zero', LLAMA);
    fs.rmSync(path.join(cfgZero, 'config.json'));
    fs.symlinkSync('/dev/zero', path.join(cfgZero, 'config.json'));
    add('location-config-is-dev-zero', 'location', ['config.json'], cfgZero);
    const fifo = caseDir('location-config-is-fifo', LLAMA);
    fs.rmSync(path.join(fifo, 'config.json'));
    execFileSync('mkfifo', [path.join(fifo, 'config.json')]);
    add('location-config-is-fifo', 'location', ['config.json'], fifo);
    const fifoShard = caseDir('location-shard-is-fifo', LLAMA);
    fs.rmSync(path.join(fifoShard, FILE));
    execFileSync('mkfifo', [path.join(fifoShard, FILE)]);
    add('location-shard-is-fifo', 'location', [FILE, 'regular file'], fifoShard);
  }

  // ---- config.json contradicting the tensors -------------------------------------------------
  withConfig('config-not-json', 'config', LLAMA, ['config.json', 'not valid JSON'], '{"model_type": "llama",');
  withConfig('config-array', 'config', LLAMA, ['config.json', 'not a JSON object'], '[]');
  withConfig('config-null', 'config', LLAMA, ['config.json', 'not a JSON object'], 'null');
  llamaConfig('config-no-model-type', ['config.json', 'model_type'], (c) => delete c.model_type);
  llamaConfig('config-model-type-number', ['config.json', 'model_type'], (c) => (c.model_type = 7));
  llamaConfig('config-model-type-unsupported', ['config.json', 'model_type', 'bert'], (c) => (c.model_type = 'bert'));
  for (const proto of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
    llamaConfig(`config-model-type-${proto.replace(/_/g, '')}`, ['config.json', proto, 'not supported'], (c) => (c.model_type = proto));
  }
  llamaConfig('config-hidden-string', ['config.json', 'hidden_size'], (c) => (c.hidden_size = '64'));
  llamaConfig('config-hidden-negative', ['config.json', 'hidden_size'], (c) => (c.hidden_size = -64));
  llamaConfig('config-hidden-float', ['config.json', 'hidden_size'], (c) => (c.hidden_size = 64.5));
  llamaConfig('config-hidden-missing', ['config.json', 'hidden_size'], (c) => delete c.hidden_size);
  llamaConfig('config-heads-zero', ['config.json', 'num_attention_heads'], (c) => (c.num_attention_heads = 0));
  llamaConfig('config-layers-zero', ['config.json', 'num_hidden_layers'], (c) => (c.num_hidden_layers = 0));
  llamaConfig('config-kv-not-dividing-heads', ['config.json', 'key/value heads'], (c) => (c.num_key_value_heads = 3));
  llamaConfig('config-kv-more-than-heads', ['config.json', 'key/value heads'], (c) => (c.num_key_value_heads = 8));
  llamaConfig('config-head-dim-too-big', [Q0], (c) => (c.head_dim = 32));
  llamaConfig('config-head-dim-too-small', [Q0, 'output features'], (c) => (c.head_dim = 8));
  llamaConfig('config-hidden-mismatch', [Q0, 'input features'], (c) => (c.hidden_size = 128));
  llamaConfig('config-extra-layer', ['model.layers.2.'], (c) => (c.num_hidden_layers = 3));
  llamaConfig('config-rope-odd', ['config.json', 'partial rotary'], (c) => (c.partial_rotary_factor = 0.1));
  llamaConfig('config-rope-theta-string', ['config.json', 'rope_theta'], (c) => (c.rope_parameters = { rope_theta: 'big' }));
  {
    const c = configOf('gpt2-bytes');
    c.n_head = 3;
    withConfig('config-heads-not-dividing-hidden', 'config', 'gpt2-bytes', ['config.json', 'not divisible'], c);
    const h = configOf('layouts/llama');
    delete h.head_dim;
    h.num_attention_heads = 5;
    h.num_key_value_heads = 5;
    withConfig('config-heads-not-dividing-hidden-llama', 'config', LLAMA, ['config.json', 'not divisible'], h);
    const f = configOf('layouts/falcon');
    f.new_decoder_architecture = true;
    delete f.num_kv_heads;
    withConfig('config-falcon-no-kv-heads', 'config', 'layouts/falcon', ['config.json', 'num_kv_heads'], f);
    const p = configOf('layouts/phi3');
    p.num_key_value_heads = 4;
    withConfig('config-phi3-kv-mismatch', 'config', 'layouts/phi3', ['qkv_proj'], p);
    const m = configOf('mistral-bytes');
    m.head_dim = 32;
    withConfig('config-mistral-head-dim', 'config', 'mistral-bytes', ['q_proj', 'output features'], m);
  }
  llamaEntries('config-missing-q-tensor', 'config', [Q0, 'missing'], (list) => list.filter((e) => e.name !== Q0), true);
  llamaEntries('config-missing-k-tensor', 'config', [K0, 'missing'], (list) => list.filter((e) => e.name !== K0), true);
  llamaEntries('config-k-1d', 'config', [K0, '2-D'], (list) => {
    const k = list.find((e) => e.name === K0)!;
    k.shape = [k.shape[0] * k.shape[1]];
  });
  llamaEntries('config-q-transposed', 'config', [Q0], (list) => {
    const q = list.find((e) => e.name === Q0)!;
    q.shape = [q.shape[0] / 2, q.shape[1] * 2];
  });
  {
    const qwen = readRaw(path.join(fixture('layouts/qwen2'), FILE));
    const dir = caseDir('config-bias-shape', 'layouts/qwen2');
    const bias = 'model.layers.0.self_attn.q_proj.bias';
    fs.writeFileSync(
      path.join(dir, FILE),
      pack(entriesOf(qwen).map((e) => (e.name === bias ? { ...e, shape: [e.shape[0] / 2], data: e.data.subarray(0, e.data.length / 2) } : e))),
    );
    add('config-bias-shape', 'config', [bias], dir);
  }

  // ---- plan files given to `export --plan` (shared plans are untrusted too) ------------------
  {
    const validPlan = {
      format: 'factored-keys-plan',
      version: 1,
      method: 'key-svd',
      policy: { kind: 'uniform', rank: 8 },
      model: { architecture: 'llama', layers: 2, kv_heads: 2, head_dim: 16, key_bytes_per_value: 4 },
      ranks: [[8, 8], [8, 8]],
      overrides: [],
    };
    const planCase = (name: string, mentions: string[], plan: unknown, prepare?: (file: string) => void, maxRssMiB = DEFAULT_RSS_MIB) => {
      const dir = caseDir(name);
      const file = path.join(dir, 'plan.json');
      if (prepare) prepare(file);
      else fs.writeFileSync(file, typeof plan === 'string' ? plan : JSON.stringify(plan));
      const dest = path.join(dir, 'out');
      cases.push({ name, category: 'plan', argv: ['export', fixture(LLAMA), dest, '--plan', file], expect: 'error', mentions: ['plan.json', ...mentions], maxRssMiB, mustNotExist: dest });
    };
    const withPlan = (edit: (p: Record<string, Json>) => void) => {
      const p = structuredClone(validPlan) as unknown as Record<string, Json>;
      edit(p);
      return p;
    };
    const rawPlan = (key: string, rawJson: string) => JSON.stringify({ ...validPlan, [key]: '@@' }).replace('"@@"', rawJson);
    planCase('plan-not-json', ['not valid JSON'], '{"format":');
    planCase('plan-array', ['not a JSON object'], []);
    planCase('plan-wrong-format', ['format'], withPlan((p) => (p.format = 'gguf')));
    planCase('plan-deep-format', ['format'], rawPlan('format', deepArray(DEEP)));
    planCase('plan-deep-version', ['version'], rawPlan('version', deepArray(DEEP)));
    planCase('plan-deep-method', ['method'], rawPlan('method', deepArray(DEEP)));
    planCase('plan-version-99', ['version'], withPlan((p) => (p.version = 99)));
    planCase('plan-method-unknown', ['method'], withPlan((p) => (p.method = 'pca')));
    planCase('plan-model-missing', ['model'], withPlan((p) => delete p.model));
    planCase('plan-model-mismatch', ['layers'], withPlan((p) => ((p.model as Record<string, Json>).layers = 3)));
    planCase('plan-ranks-wrong-shape', ['ranks'], withPlan((p) => (p.ranks = [[8, 8]])));
    planCase('plan-rank-zero', ['rank'], withPlan((p) => (p.ranks = [[0, 8], [8, 8]])));
    planCase('plan-rank-too-big', ['rank'], withPlan((p) => (p.ranks = [[17, 8], [8, 8]])));
    planCase('plan-rank-float', ['rank'], withPlan((p) => (p.ranks = [[8.5, 8], [8, 8]])));
    planCase('plan-rank-string', ['rank'], withPlan((p) => (p.ranks = [['8', 8], [8, 8]])));
    planCase('plan-ranks-huge', ['ranks'], withPlan((p) => (p.ranks = Array.from({ length: 1_000_000 }, () => [8, 8]))), undefined, 512);
    planCase('plan-ranks-deep', ['ranks'], rawPlan('ranks', deepArray(DEEP)));
    planCase('plan-overrides-object', ['overrides'], withPlan((p) => (p.overrides = { layer: 0 })));
    planCase('plan-policy-deep', ['policy'], rawPlan('policy', deepArray(DEEP)));
    planCase('plan-is-fifo', ['cannot read'], undefined, (file) => execFileSync('mkfifo', [file]));
    planCase('plan-is-dev-zero', ['cannot read'], undefined, (file) => fs.symlinkSync('/dev/zero', file));
    planCase('plan-giant', ['cannot read'], undefined, (file) => {
      fs.writeFileSync(file, '{');
      fs.truncateSync(file, 65 * 1024 * 1024);
    });
  }

  // ---- factored checkpoints with a hostile factored_keys block, read by `eval` ----------------
  if (options.factoredBase) {
    const base = options.factoredBase;
    const text = path.join(outDir, 'eval-text.txt');
    fs.writeFileSync(text, fs.readFileSync(fixture('heldout.txt')).subarray(0, 2048));
    const baseConfig = JSON.parse(fs.readFileSync(path.join(base, 'config.json'), 'utf8')) as Record<string, Json>;
    const factoredCase = (name: string, mentions: string[], edit: (fk: Record<string, Json>) => void | string) => {
      const dir = caseDir(name);
      for (const f of fs.readdirSync(base)) fs.copyFileSync(path.join(base, f), path.join(dir, f));
      const config = structuredClone(baseConfig);
      const fk = config.factored_keys as Record<string, Json>;
      const raw = edit(fk);
      fs.writeFileSync(path.join(dir, 'config.json'), typeof raw === 'string' ? raw : JSON.stringify(config));
      cases.push({ name, category: 'factored', argv: ['eval', dir, '--text', text, '--tokenizer', 'bytes', '--seq', '64'], expect: 'error', mentions, maxRssMiB: DEFAULT_RSS_MIB });
    };
    const layer0 = (fk: Record<string, Json>) => (fk.layers as Record<string, Json>[])[0];
    const slice = (fk: Record<string, Json>, kind: 'query' | 'key' | 'value', i = 0) => (layer0(fk)[kind] as Record<string, Json>[])[i];
    const rawFk = (key: string, json: string) => {
      const c = structuredClone(baseConfig);
      (c.factored_keys as Record<string, Json>)[key] = '@@';
      return JSON.stringify(c).replace('"@@"', json);
    };
    factoredCase('factored-version-2', ['config.json', 'format_version'], (fk) => void (fk.format_version = 2));
    factoredCase('factored-version-deep', ['config.json', 'format_version'], () => rawFk('format_version', deepArray(DEEP)));
    factoredCase('factored-method-deep', ['config.json', 'method'], () => rawFk('method', deepArray(DEEP)));
    factoredCase('factored-rope-mode-deep', ['config.json', 'rope_mode'], () => rawFk('rope_mode', deepArray(DEEP)));
    factoredCase('factored-block-array', ['config.json', 'factored_keys'], () => rawFk('layers', '[]').replace(/"factored_keys":\{/, '"factored_keys":[{').replace(/\}\}$/, '}]}'));
    factoredCase('factored-layers-not-array', ['config.json', 'layers'], (fk) => void (fk.layers = { 0: 1 }));
    factoredCase('factored-layers-short', ['config.json', 'layers'], (fk) => void (fk.layers = [(fk.layers as Json[])[0]]));
    factoredCase('factored-architecture', ['config.json', 'architecture'], (fk) => void (fk.architecture = 'gpt2'));
    factoredCase('factored-head-dim', ['config.json', 'head_dim'], (fk) => void (fk.original_head_dim = 32));
    factoredCase('factored-softmax-scale', ['config.json', 'softmax_scale'], (fk) => void (fk.softmax_scale = -1));
    factoredCase('factored-query-to-kv', ['config.json', 'query_to_kv'], (fk) => void (fk.query_to_kv = [0, 0, 0, 0]));
    factoredCase('factored-layer-null', ['config.json', 'layers[0]'], (fk) => void ((fk.layers as Json[])[0] = null));
    factoredCase('factored-slice-null', ['config.json'], (fk) => void ((layer0(fk).key as Json[])[0] = null));
    factoredCase('factored-slice-string', ['config.json'], (fk) => void ((layer0(fk).key as Json[])[0] = 'k_proj'));
    factoredCase('factored-slice-missing-tensor', ['ghost.weight'], (fk) => void (slice(fk, 'key').tensor = 'ghost.weight'));
    factoredCase('factored-slice-offset-negative', ['k_proj'], (fk) => void (slice(fk, 'key').offset = -8));
    factoredCase('factored-slice-offset-float', ['k_proj'], (fk) => void (slice(fk, 'key').offset = 0.5));
    factoredCase('factored-slice-width-huge', ['k_proj'], (fk) => void (slice(fk, 'key').width = 1e12));
    factoredCase('factored-slice-orientation', ['config.json', 'orientation'], (fk) => void (slice(fk, 'query').orientation = 'diagonal'));
    factoredCase('factored-slice-bias-number', ['config.json', 'bias'], (fk) => void (slice(fk, 'key').bias = 7));
    factoredCase('factored-slice-bias-other-size', ['model.norm.weight', 'bias'], (fk) => void (slice(fk, 'value', 1).bias = 'model.norm.weight'));
    factoredCase('factored-slice-bias-2d', ['lm_head.weight', 'bias'], (fk) => void (slice(fk, 'key').bias = 'lm_head.weight'));
    factoredCase('factored-rank-mismatch', ['config.json', 'rank'], (fk) => void ((fk.ranks as Json[][])[0][0] = 9));
    factoredCase('factored-ranks-strings', ['config.json'], (fk) => void ((fk.ranks as Json[][])[0] = ['8', '8']));
    factoredCase('factored-ranks-null', ['config.json'], (fk) => void ((fk.ranks as Json[])[0] = null));
    factoredCase('factored-key-up-missing', ['config.json', 'key_up'], (fk) => void (layer0(fk).key_up = null));
    factoredCase('factored-key-up-ghost', ['ghost.key_up'], (fk) => void (layer0(fk).key_up = 'ghost.key_up'));
    factoredCase('factored-key-up-wrong-tensor', ['lm_head.weight'], (fk) => void (layer0(fk).key_up = 'lm_head.weight'));
  }

  // ---- NaN / Inf weights (analyze warns and names the heads) ---------------------------------
  if (options.withAnalyze) {
    const nanDir = caseDir('weights-nan-inf-f32', LLAMA);
    const list = entriesOf(llamaRaw).map((e) => ({ ...e, data: new Uint8Array(e.data) }));
    // layer 1 KV head 1 gets a NaN; layer 0 query head 2 gets +Inf (heads are 16 rows of 64).
    const k1 = list.find((e) => e.name === 'model.layers.1.self_attn.k_proj.weight')!;
    new DataView(k1.data.buffer).setFloat32((16 + 3) * 64 * 4, NaN, true);
    const q0 = list.find((e) => e.name === Q0)!;
    new DataView(q0.data.buffer).setFloat32((2 * 16 + 5) * 64 * 4 + 7 * 4, Infinity, true);
    fs.writeFileSync(path.join(nanDir, FILE), pack(list));
    add('weights-nan-inf-f32', 'weights', ['2 heads', 'layer 0 query head 2', Q0, 'layer 1 key head 1'], nanDir, { expect: 'warning', command: 'analyze', nonFiniteHeads: ['0/query/2', '1/key/1'] });

    // BF16 (Mistral, sharded): NaN in layer 2 KV head 0, -Inf in layer 3 query head 3 (64 rows of 256).
    const bfDir = caseDir('weights-nan-inf-bf16', 'mistral-bytes');
    const poke = (tensor: string, element: number, bits: number) => {
      const shard = path.join(bfDir, mistralIndex.weight_map[tensor] as string);
      const raw = readRaw(shard);
      const edited = entriesOf(raw).map((e) => ({ ...e, data: new Uint8Array(e.data) }));
      const t = edited.find((e) => e.name === tensor)!;
      new DataView(t.data.buffer).setUint16(element * 2, bits, true);
      fs.writeFileSync(shard, pack(edited));
    };
    poke('model.layers.2.self_attn.k_proj.weight', 10 * 256 + 3, 0x7fc0);
    poke('model.layers.3.self_attn.q_proj.weight', (3 * 64 + 1) * 256, 0xff80);
    add('weights-nan-inf-bf16', 'weights', ['2 heads', 'layer 2 key head 0', 'layer 3 query head 3'], bfDir, { expect: 'warning', command: 'analyze', nonFiniteHeads: ['2/key/0', '3/query/3'] });
  }
  return cases;
}

/** Exports layouts/llama (key-svd, rank 8) to `dest`: the base of the factored-checkpoint cases. */
export async function writeFactoredBase(dest: string, fixturesDir: string): Promise<string> {
  const { exportFactored } = await import('../src/core/export/export');
  await exportFactored({ source: path.join(fixturesDir, 'layouts/llama'), dest, method: 'key-svd', policy: { kind: 'uniform', rank: 8 } });
  return dest;
}

if (require.main === module) {
  const [out, fixtures = path.resolve(__dirname, '../../shared/fixtures')] = process.argv.slice(2);
  if (!out) {
    process.stderr.write('usage: node --import tsx scripts/corpus.ts <out-dir> [fixtures-dir]\n');
    process.exit(2);
  }
  void (async () => {
    const factoredBase = await writeFactoredBase(path.join(path.resolve(out), '.factored-base'), path.resolve(fixtures));
    const cases = writeCorpus(path.resolve(out), path.resolve(fixtures), { withAnalyze: true, factoredBase });
    fs.writeFileSync(path.join(out, 'cases.json'), JSON.stringify(cases, null, 1));
    process.stdout.write(`${cases.length} cases written to ${out} (manifest: cases.json)\n`);
  })();
}
