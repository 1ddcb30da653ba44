/**
 * What the evaluator needs to know about a checkpoint to run it: the architecture family and
 * its hyper-parameters (from config.json), and every weight resolved to a constant tensor in
 * its stored 16/32-bit form, so the graph can Cast in-graph instead of doubling bytes here.
 */
import { ConfigReader } from '../arch';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { decodeToFloat32, encodeFromFloat32, type Dtype } from '../checkpoint/dtypes';
import type { ConstTensor, ElemType } from '../compute/onnx';
import { FactoredKeysError } from '../errors';

/** Architectures the evaluator runs: GPT-2 and the Llama family (Llama, Mistral, Qwen2). */
export const EVAL_ARCHITECTURES = ['gpt2', 'llama', 'mistral', 'qwen2'] as const;

/** Hyper-parameters of a decoder-only model, as the forward graph uses them. */
export interface ModelSpec {
  readonly architecture: string;
  readonly family: 'gpt2' | 'llama';
  readonly layers: number;
  readonly hidden: number;
  readonly queryHeads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly vocab: number;
  readonly normEps: number;
  /** RoPE (rotate-half over the whole head) with this base, or null for learned positions. */
  readonly ropeTheta: number | null;
  /** Longest sequence the model's positions cover (GPT-2's n_positions); Infinity for RoPE. */
  readonly maxPositions: number;
  readonly activation: 'gelu_new' | 'gelu' | 'silu';
  /** Keys further back than this many positions are masked (Mistral sliding window). */
  readonly slidingWindow: number | null;
  /** Softmax scale of the original model (1/sqrt(head_dim), or as the config says). */
  readonly softmaxScale: number;
  /** GPT-2's scale_attn_by_inverse_layer_idx: layer l's scores are also divided by l+1. */
  readonly scaleByInverseLayer: boolean;
  /** dtype of the attention projection weights (factored weights are written in it). */
  readonly weightDtype: Dtype;
}

/** Reads a ModelSpec from a checkpoint's config.json; refuses architectures it cannot run. */
export function readModelSpec(ckpt: Checkpoint): ModelSpec {
  const where = `${ckpt.dir}/config.json`;
  const c = new ConfigReader(ckpt.config, where);
  const arch = ckpt.config.model_type;
  if (typeof arch !== 'string' || !(EVAL_ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new FactoredKeysError(`${where}: eval runs ${EVAL_ARCHITECTURES.join(', ')} models; model_type is ${JSON.stringify(arch)}`);
  }
  if (arch === 'gpt2') {
    const hidden = c.int('n_embd', 'hidden_size');
    const heads = c.int('n_head', 'num_attention_heads');
    const act = String(ckpt.config.activation_function ?? 'gelu_new');
    if (act !== 'gelu_new' && act !== 'gelu' && act !== 'gelu_pytorch_tanh') {
      throw new FactoredKeysError(`${where}: activation_function "${act}" is not supported by eval (gelu_new, gelu)`);
    }
    if (ckpt.config.scale_attn_weights === false) throw new FactoredKeysError(`${where}: scale_attn_weights false is not supported by eval`);
    const headDim = hidden / heads;
    if (!Number.isInteger(headDim)) throw new FactoredKeysError(`${where}: n_embd ${hidden} is not divisible by n_head ${heads}`);
    return {
      architecture: arch,
      family: 'gpt2',
      layers: c.int('n_layer', 'num_hidden_layers'),
      hidden,
      queryHeads: heads,
      kvHeads: heads,
      headDim,
      vocab: c.int('vocab_size'),
      normEps: c.number(1e-5, 'layer_norm_epsilon'),
      ropeTheta: null,
      maxPositions: c.int('n_positions', 'max_position_embeddings'),
      activation: act === 'gelu' ? 'gelu' : 'gelu_new',
      slidingWindow: null,
      softmaxScale: 1 / Math.sqrt(headDim),
      scaleByInverseLayer: ckpt.config.scale_attn_by_inverse_layer_idx === true,
      weightDtype: dtypeOf(ckpt, 'transformer.h.0.attn.c_attn.weight', 'transformer.h.0.mlp.c_fc.weight'),
    };
  }
  const hidden = c.int('hidden_size');
  const queryHeads = c.int('num_attention_heads');
  const kvHeads = c.optionalInt('num_key_value_heads') ?? queryHeads;
  const headDim = c.optionalInt('head_dim') ?? hidden / queryHeads;
  if (!Number.isInteger(headDim)) throw new FactoredKeysError(`${where}: hidden_size ${hidden} is not divisible by num_attention_heads ${queryHeads}`);
  if (queryHeads % kvHeads !== 0) throw new FactoredKeysError(`${where}: ${queryHeads} attention heads are not divisible by ${kvHeads} key/value heads`);
  const act = String(ckpt.config.hidden_act ?? 'silu');
  if (act !== 'silu') throw new FactoredKeysError(`${where}: hidden_act "${act}" is not supported by eval (silu)`);
  const partial = c.number(1, 'rope_parameters.partial_rotary_factor', 'partial_rotary_factor');
  if (partial !== 1) throw new FactoredKeysError(`${where}: partial rotary factor ${partial} is not supported by eval`);
  const ropeType = (ckpt.config.rope_parameters as { rope_type?: unknown } | undefined)?.rope_type ?? (ckpt.config.rope_scaling as { rope_type?: unknown; type?: unknown } | undefined)?.rope_type;
  if (ropeType !== undefined && ropeType !== null && ropeType !== 'default') {
    throw new FactoredKeysError(`${where}: rope_type "${String(ropeType)}" is not supported by eval (default RoPE only)`);
  }
  const useWindow = arch === 'mistral' || ckpt.config.use_sliding_window === true;
  const window = useWindow && typeof ckpt.config.sliding_window === 'number' ? ckpt.config.sliding_window : null;
  return {
    architecture: arch,
    family: 'llama',
    layers: c.int('num_hidden_layers'),
    hidden,
    queryHeads,
    kvHeads,
    headDim,
    vocab: c.int('vocab_size'),
    normEps: c.number(1e-6, 'rms_norm_eps'),
    ropeTheta: c.number(10000, 'rope_parameters.rope_theta', 'rope_theta'),
    maxPositions: Infinity,
    activation: 'silu',
    slidingWindow: window,
    softmaxScale: 1 / Math.sqrt(headDim),
    scaleByInverseLayer: false,
    weightDtype: dtypeOf(ckpt, 'model.layers.0.self_attn.q_proj.weight', 'model.layers.0.mlp.up_proj.weight'),
  };
}

function dtypeOf(ckpt: Checkpoint, ...names: string[]): Dtype {
  for (const n of names) {
    const t = ckpt.tensors.get(n);
    if (t) return t.dtype;
  }
  throw new FactoredKeysError(`${ckpt.dir}: tensor "${names[0]}" not found in the checkpoint`);
}

/** y = x·W (+ b), with W given as stored: `[in, out]`, or `[out, in]` with `transposed`. */
export interface Linear {
  readonly weight: ConstTensor;
  /** True for nn.Linear's `[out, in]`: the graph multiplies by the transpose. */
  readonly transposed: boolean;
  readonly bias?: ConstTensor;
}

/** LayerNorm (weight and bias) or RMSNorm (weight only). */
export interface Norm {
  readonly weight: ConstTensor;
  readonly bias?: ConstTensor;
}

/** Where a layer's attention gets q, k and v. */
export type QkvWeights =
  /** One product, then split into [q, k, v] output features (GPT-2's c_attn). */
  | { readonly kind: 'fused'; readonly proj: Linear; readonly sizes: readonly [number, number, number] }
  | { readonly kind: 'separate'; readonly q: Linear; readonly k: Linear; readonly v: Linear };

/** One transformer block's weights, original or factored. */
export interface LayerWeights {
  readonly norm1: Norm;
  readonly norm2: Norm;
  readonly qkv: QkvWeights;
  /**
   * Width of each head's q and k in the score product: head_dim, or the (padded) rank of
   * absorbed factored queries and keys.
   */
  readonly qkHeadDim: number;
  /**
   * Latent factored keys (RoPE models): the k projection yields the cached latent c, and the
   * per-head keys are k = c·keyUp (block-diagonal over KV heads), before RoPE.
   */
  readonly keyUp?: Linear;
  readonly out: Linear;
  readonly mlp:
    | { readonly kind: 'gelu'; readonly fc: Linear; readonly proj: Linear }
    | { readonly kind: 'swiglu'; readonly gate: Linear; readonly up: Linear; readonly down: Linear };
}

/** Everything outside the blocks. */
export interface OuterWeights {
  /** Token embedding [vocab, hidden]. */
  readonly embed: ConstTensor;
  /** Learned positions [n_positions, hidden] (GPT-2). */
  readonly positions?: ConstTensor;
  readonly finalNorm: Norm;
  /** Output projection to logits (tied: the embedding, transposed). */
  readonly head: Linear;
}

const ORT_TYPE: Partial<Record<Dtype, ElemType>> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/** The ONNX element type a checkpoint dtype is fed as (others are decoded to float32). */
export function feedType(dtype: Dtype): ElemType {
  return ORT_TYPE[dtype] ?? 'float32';
}

/** Reads a whole tensor as a constant: F32/F16/BF16 as stored, other float types decoded to float32. */
export async function readConst(ckpt: Checkpoint, name: string): Promise<ConstTensor> {
  const t = ckpt.tensor(name);
  const type = ORT_TYPE[t.dtype];
  if (type) return { type, dims: t.shape, data: await ckpt.readRows(name) };
  return { type: 'float32', dims: t.shape, data: await ckpt.readRowsF32(name) };
}

/** A float32 matrix as a constant in `dtype` (rounded like the exporter writes it). */
export function constFromFloat32(values: Float32Array, dims: readonly number[], dtype: Dtype): ConstTensor {
  const type = ORT_TYPE[dtype];
  if (!type || type === 'float32') return { type: 'float32', dims, data: values };
  return { type, dims, data: encodeFromFloat32(dtype, values) };
}

/** Decodes a constant back to float32 (for building factored weights from originals). */
export function constToFloat32(t: ConstTensor): Float32Array {
  const data = t.data as Uint8Array | Float32Array;
  if (t.type === 'float32') return data instanceof Float32Array ? data : new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return decodeToFloat32(t.type === 'bfloat16' ? 'BF16' : 'F16', bytes);
}

/** Reads the blocks' and outer weights of an unfactored checkpoint. */
export class CheckpointWeights {
  constructor(
    readonly ckpt: Checkpoint,
    readonly spec: ModelSpec,
  ) {}

  private has(name: string): boolean {
    return this.ckpt.tensors.has(name);
  }

  /** A linear layer from `<prefix>.weight` (+ `.bias` when present). */
  async linear(prefix: string, transposed: boolean): Promise<Linear> {
    const weight = await readConst(this.ckpt, `${prefix}.weight`);
    const bias = this.has(`${prefix}.bias`) ? await readConst(this.ckpt, `${prefix}.bias`) : undefined;
    return { weight, transposed, bias };
  }

  async norm(prefix: string): Promise<Norm> {
    const weight = await readConst(this.ckpt, `${prefix}.weight`);
    const bias = this.has(`${prefix}.bias`) ? await readConst(this.ckpt, `${prefix}.bias`) : undefined;
    return { weight, bias };
  }

  async outer(): Promise<OuterWeights> {
    if (this.spec.family === 'gpt2') {
      const embed = await readConst(this.ckpt, 'transformer.wte.weight');
      const head = this.has('lm_head.weight') ? await this.linear('lm_head', true) : { weight: embed, transposed: true };
      return { embed, positions: await readConst(this.ckpt, 'transformer.wpe.weight'), finalNorm: await this.norm('transformer.ln_f'), head };
    }
    const embed = await readConst(this.ckpt, 'model.embed_tokens.weight');
    const head = this.has('lm_head.weight') ? await this.linear('lm_head', true) : { weight: embed, transposed: true };
    return { embed, finalNorm: await this.norm('model.norm'), head };
  }

  /** Layer `i` exactly as stored. */
  async layer(i: number): Promise<LayerWeights> {
    return { ...(await this.layerExceptQkv(i)), qkv: await this.qkv(i), qkHeadDim: this.spec.headDim };
  }

  /** The q/k/v projections of layer `i` as stored. */
  async qkv(i: number): Promise<QkvWeights> {
    const s = this.spec;
    if (s.family === 'gpt2') return { kind: 'fused', proj: await this.linear(`transformer.h.${i}.attn.c_attn`, false), sizes: [s.hidden, s.hidden, s.hidden] };
    const p = `model.layers.${i}.self_attn`;
    return { kind: 'separate', q: await this.linear(`${p}.q_proj`, true), k: await this.linear(`${p}.k_proj`, true), v: await this.linear(`${p}.v_proj`, true) };
  }

  /** Everything of layer `i` but its q/k/v projections (which factoring replaces). */
  async layerExceptQkv(i: number): Promise<Omit<LayerWeights, 'qkv' | 'qkHeadDim' | 'keyUp'>> {
    if (this.spec.family === 'gpt2') {
      const p = `transformer.h.${i}`;
      return {
        norm1: await this.norm(`${p}.ln_1`),
        norm2: await this.norm(`${p}.ln_2`),
        out: await this.linear(`${p}.attn.c_proj`, false),
        mlp: { kind: 'gelu', fc: await this.linear(`${p}.mlp.c_fc`, false), proj: await this.linear(`${p}.mlp.c_proj`, false) },
      };
    }
    const p = `model.layers.${i}`;
    return {
      norm1: await this.norm(`${p}.input_layernorm`),
      norm2: await this.norm(`${p}.post_attention_layernorm`),
      out: await this.linear(`${p}.self_attn.o_proj`, true),
      mlp: {
        kind: 'swiglu',
        gate: await this.linear(`${p}.mlp.gate_proj`, true),
        up: await this.linear(`${p}.mlp.up_proj`, true),
        down: await this.linear(`${p}.mlp.down_proj`, true),
      },
    };
  }
}
