/**
 * Synthetic checkpoints at real sizes, with Hugging Face's tensor names, config.json, dtype and
 * sharding (greedy `max_shard_size` split in state-dict order, `model.safetensors.index.json`),
 * filled with cheap pseudo-random weights. Used by the benchmarks; nothing here is product code.
 */
import { createHash } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';

/** Checkpoint shapes the benchmarks know. */
export type SyntheticKind = 'mistral-7b' | 'mistral-7b-2layers' | 'llama2-7b' | 'llama70b-2layers' | 'mistral-tiny';

interface Shape {
  readonly architecture: string;
  readonly modelType: string;
  readonly hidden: number;
  readonly intermediate: number;
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly vocab: number;
  readonly dtype: 'BF16' | 'F16';
  readonly maxShardBytes: number;
  readonly extraConfig: Record<string, unknown>;
}

const SHAPES: Record<SyntheticKind, Shape> = {
  // mistralai/Mistral-7B-Instruct-v0.2: bf16, 3 shards of at most 5 GB
  'mistral-7b': {
    architecture: 'MistralForCausalLM', modelType: 'mistral', hidden: 4096, intermediate: 14336, layers: 32, heads: 32, kvHeads: 8, headDim: 128, vocab: 32000, dtype: 'BF16', maxShardBytes: 5e9,
    extraConfig: { max_position_embeddings: 32768, rms_norm_eps: 1e-5, rope_theta: 1000000.0, sliding_window: null, torch_dtype: 'bfloat16', hidden_act: 'silu', bos_token_id: 1, eos_token_id: 2, tie_word_embeddings: false, attention_dropout: 0.0, initializer_range: 0.02, use_cache: true },
  },
  // the first two layers of the Mistral-7B shape (same widths, 1.4 GB): a cheap proxy for profiling per-layer work
  'mistral-7b-2layers': {
    architecture: 'MistralForCausalLM', modelType: 'mistral', hidden: 4096, intermediate: 14336, layers: 2, heads: 32, kvHeads: 8, headDim: 128, vocab: 32000, dtype: 'BF16', maxShardBytes: 5e9,
    extraConfig: { max_position_embeddings: 32768, rms_norm_eps: 1e-5, rope_theta: 1000000.0, sliding_window: null, torch_dtype: 'bfloat16', hidden_act: 'silu', tie_word_embeddings: false },
  },
  // meta-llama/Llama-2-7b-hf: fp16, MHA 32 x 32 heads, 2 shards of at most 10 GB
  'llama2-7b': {
    architecture: 'LlamaForCausalLM', modelType: 'llama', hidden: 4096, intermediate: 11008, layers: 32, heads: 32, kvHeads: 32, headDim: 128, vocab: 32000, dtype: 'F16', maxShardBytes: 10e9,
    extraConfig: { max_position_embeddings: 4096, rms_norm_eps: 1e-5, rope_theta: 10000.0, torch_dtype: 'float16', hidden_act: 'silu', bos_token_id: 1, eos_token_id: 2, tie_word_embeddings: false, attention_bias: false, pretraining_tp: 1, initializer_range: 0.02, use_cache: true },
  },
  // two layers of Llama-3-70B's shape (hidden 8192, 64 query / 8 KV heads x 128, BF16): the
  // per-layer memory of a 70B analysis without writing 140 GB
  'llama70b-2layers': {
    architecture: 'LlamaForCausalLM', modelType: 'llama', hidden: 8192, intermediate: 28672, layers: 2, heads: 64, kvHeads: 8, headDim: 128, vocab: 128256, dtype: 'BF16', maxShardBytes: 5e9,
    extraConfig: { max_position_embeddings: 8192, rms_norm_eps: 1e-5, rope_theta: 500000.0, torch_dtype: 'bfloat16', hidden_act: 'silu', tie_word_embeddings: false },
  },
  // a small Mistral-shaped model (same code paths, ~50 MB) for quick checks of the bench itself
  'mistral-tiny': {
    architecture: 'MistralForCausalLM', modelType: 'mistral', hidden: 512, intermediate: 1024, layers: 4, heads: 8, kvHeads: 2, headDim: 64, vocab: 32000, dtype: 'BF16', maxShardBytes: 20e6,
    extraConfig: { max_position_embeddings: 4096, rms_norm_eps: 1e-5, rope_theta: 10000.0, torch_dtype: 'bfloat16', hidden_act: 'silu', tie_word_embeddings: false },
  },
};

interface TensorSpec {
  readonly name: string;
  readonly shape: readonly number[];
}

/** Tensors in the order `model.state_dict()` lists them. */
function stateDict(s: Shape): TensorSpec[] {
  const t: TensorSpec[] = [{ name: 'model.embed_tokens.weight', shape: [s.vocab, s.hidden] }];
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    t.push(
      { name: `${p}self_attn.q_proj.weight`, shape: [s.heads * s.headDim, s.hidden] },
      { name: `${p}self_attn.k_proj.weight`, shape: [s.kvHeads * s.headDim, s.hidden] },
      { name: `${p}self_attn.v_proj.weight`, shape: [s.kvHeads * s.headDim, s.hidden] },
      { name: `${p}self_attn.o_proj.weight`, shape: [s.hidden, s.heads * s.headDim] },
      { name: `${p}mlp.gate_proj.weight`, shape: [s.intermediate, s.hidden] },
      { name: `${p}mlp.up_proj.weight`, shape: [s.intermediate, s.hidden] },
      { name: `${p}mlp.down_proj.weight`, shape: [s.hidden, s.intermediate] },
      { name: `${p}input_layernorm.weight`, shape: [s.hidden] },
      { name: `${p}post_attention_layernorm.weight`, shape: [s.hidden] },
    );
  }
  t.push({ name: 'model.norm.weight', shape: [s.hidden] }, { name: 'lm_head.weight', shape: [s.vocab, s.hidden] });
  return t;
}

const count = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Greedy sharding as transformers' `save_pretrained(max_shard_size=...)` does it. */
function shard(tensors: TensorSpec[], maxBytes: number): TensorSpec[][] {
  const shards: TensorSpec[][] = [[]];
  let size = 0;
  for (const t of tensors) {
    const bytes = count(t.shape) * 2;
    if (size + bytes > maxBytes && shards[shards.length - 1].length > 0) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(t);
    size += bytes;
  }
  return shards;
}

/**
 * A pool of pseudo-random 16-bit weights (xorshift32), finite, magnitudes about 2^-10..2^-3 with
 * random signs, like trained weights. Tensors are copied out of it at varying offsets, so
 * writing 14 GB costs disk time, not PRNG time.
 */
function weightPool(dtype: 'BF16' | 'F16', bytes: number): Uint8Array {
  const words = new Uint32Array(bytes / 4);
  let x = 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  const h = new Uint16Array(words.buffer);
  for (let i = 0; i < h.length; i++) {
    const r = h[i];
    if (dtype === 'BF16') h[i] = (r & 0x807f) | ((117 + ((r >>> 7) & 7)) << 7); // exponent 2^-10..2^-3
    else h[i] = (r & 0x83ff) | ((5 + ((r >>> 10) & 7)) << 10); // f16 exponent 2^-10..2^-3
  }
  return new Uint8Array(words.buffer);
}

/** Result of {@link generateSyntheticCheckpoint}. */
export interface SyntheticCheckpoint {
  readonly dir: string;
  readonly kind: SyntheticKind;
  readonly bytes: number;
  readonly shards: number;
  /** Seconds spent writing (0 when an existing complete copy was reused). */
  readonly seconds: number;
  readonly reused: boolean;
}

/**
 * Writes a synthetic `kind` checkpoint into `dir` (created), or reuses a complete one already
 * there (a `.complete` marker is written last). Real HF names, config.json, dtype, sharding and
 * index; 8-byte aligned safetensors headers with `{"format": "pt"}` metadata.
 */
export async function generateSyntheticCheckpoint(kind: SyntheticKind, dir: string, options: { qkOnly?: boolean } = {}): Promise<SyntheticCheckpoint> {
  const s = SHAPES[kind];
  const tensors = stateDict(s);
  const shards = shard(tensors, s.maxShardBytes);
  const total = tensors.reduce((a, t) => a + count(t.shape) * 2, 0);
  const marker = path.join(dir, '.complete');
  // qkOnly: same files, headers and offsets, but only the q_proj/k_proj data is written; every
  // other tensor is a hole (reads as zeros). For spectrum timing on machines where writing 14 GB
  // costs scarce time: the analysis reads exactly the Q/K bytes either way.
  const qkOnly = options.qkOnly === true;
  const isQk = (name: string): boolean => name.endsWith('self_attn.q_proj.weight') || name.endsWith('self_attn.k_proj.weight');
  const signature = createHash('sha256').update(JSON.stringify([kind, s, shards.map((x) => x.length), ...(qkOnly ? ['qk-only'] : [])])).digest('hex');
  if (existsSync(marker) && (await fsp.readFile(marker, 'utf8')) === signature) {
    return { dir, kind, bytes: total, shards: shards.length, seconds: 0, reused: true };
  }
  const started = performance.now();
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const pool = weightPool(s.dtype, 64 << 20);
  const names = shards.map((_, i) => (shards.length === 1 ? 'model.safetensors' : `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`));
  const weightMap: Record<string, string> = {};
  let poolAt = 0;
  for (let i = 0; i < shards.length; i++) {
    // safetensors lays data out in name order
    const sorted = [...shards[i]].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    let offset = 0;
    for (const t of sorted) {
      const bytes = count(t.shape) * 2;
      header[t.name] = { dtype: s.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
      offset += bytes;
      weightMap[t.name] = names[i];
    }
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
    const fh = await fsp.open(path.join(dir, names[i]), 'w');
    try {
      const prefix = Buffer.alloc(8 + json.length);
      prefix.writeBigUInt64LE(BigInt(json.length), 0);
      prefix.write(json, 8, 'latin1');
      await fh.write(prefix);
      const chunk = 32 << 20;
      if (qkOnly) {
        let at = prefix.length;
        for (const t of sorted) {
          const bytes = count(t.shape) * 2;
          if (isQk(t.name)) {
            for (let done = 0; done < bytes; ) {
              const n = Math.min(chunk, bytes - done);
              poolAt = (poolAt + 7919 * 2) % (pool.length - chunk);
              await fh.write(pool, poolAt, n, at + done);
              done += n;
            }
          }
          at += bytes;
        }
        await fh.truncate(prefix.length + offset);
      }
      for (let left = qkOnly ? 0 : offset; left > 0; ) {
        const n = Math.min(chunk, left);
        poolAt = (poolAt + 7919 * 2) % (pool.length - chunk);
        await fh.write(pool, poolAt, n);
        left -= n;
      }
    } finally {
      await fh.close();
    }
  }
  const config = {
    architectures: [s.architecture], model_type: s.modelType, hidden_size: s.hidden, intermediate_size: s.intermediate, num_hidden_layers: s.layers,
    num_attention_heads: s.heads, num_key_value_heads: s.kvHeads, head_dim: s.headDim, vocab_size: s.vocab, transformers_version: '4.44.0', ...s.extraConfig,
  };
  await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  if (shards.length > 1) await fsp.writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
  await fsp.writeFile(marker, signature);
  return { dir, kind, bytes: total, shards: shards.length, seconds: (performance.now() - started) / 1000, reused: false };
}

/** Q/K bytes of a synthetic kind (what the spectrum analysis must read). */
export function syntheticQkBytes(kind: SyntheticKind): number {
  const s = SHAPES[kind];
  return s.layers * (s.heads + s.kvHeads) * s.headDim * s.hidden * 2;
}
