/**
 * Building blocks of family descriptions: config dimensions, head slices of separate or fused
 * projections, norms, linears, activations and per-layer attention types. Family files combine
 * them as data; nothing here knows a family's name.
 */
import { FactoredKeysError } from '../../errors';
import type { ConfigReader } from '../config';
import { NO_POSITION_LIMIT, type Activation, type HeadSlice, type LinearRole, type MlpRole, type ModelDescription, type NormKind, type NormRole, type PositionLimit, type WeightOrientation } from '../description';

/** What a family description is given. */
export interface DescribeContext {
  readonly config: ConfigReader;
  readonly modelType: string;
  /** Whether the checkpoint holds a tensor of this name. */
  readonly has: (tensor: string) => boolean;
}

/** Normalised dimensions of a decoder. */
export interface Dims {
  readonly layers: number;
  readonly hidden: number;
  readonly queryHeads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly vocab: number;
}

/** Dimensions under the usual Hugging Face keys (`alt` adds a family's own names first). */
export function readDims(c: ConfigReader, alt: { layers?: string[]; hidden?: string[]; heads?: string[]; kvHeads?: string[] } = {}): Dims {
  const hidden = c.int(...(alt.hidden ?? []), 'hidden_size');
  const queryHeads = c.int(...(alt.heads ?? []), 'num_attention_heads');
  const kvHeads = c.optionalInt(...(alt.kvHeads ?? []), 'num_key_value_heads') ?? queryHeads;
  const headDim = c.optionalInt('head_dim') ?? hidden / queryHeads;
  if (!Number.isInteger(headDim)) throw new FactoredKeysError(`${c.where}: hidden size ${hidden} is not divisible by ${queryHeads} attention heads`);
  return { layers: c.int(...(alt.layers ?? []), 'num_hidden_layers'), hidden, queryHeads, kvHeads, headDim, vocab: c.int('vocab_size') };
}

/**
 * Dimensions under GPT-2's keys (n_embd, n_head, n_layer), multi-head unless `kvHeads` says
 * otherwise; these models never read num_key_value_heads.
 */
export function readGpt2Dims(c: ConfigReader, kvHeads?: (heads: number) => number): Dims {
  const hidden = c.int('n_embd', 'hidden_size');
  const heads = c.int('n_head', 'num_attention_heads');
  const headDim = hidden / heads;
  if (!Number.isInteger(headDim)) throw new FactoredKeysError(`${c.where}: n_embd ${hidden} is not divisible by n_head ${heads}`);
  return { layers: c.int('n_layer', 'num_hidden_layers'), hidden, queryHeads: heads, kvHeads: kvHeads?.(heads) ?? heads, headDim, vocab: c.int('vocab_size') };
}

/** `count` head slices of one tensor, `stride` output features apart. */
export function headSlices(tensor: string, orientation: WeightOrientation, first: number, count: number, stride: number, bias?: string): HeadSlice[] {
  return Array.from({ length: count }, (_, h) => ({ tensor, orientation, offset: first + h * stride, bias }));
}

/** A linear layer `<prefix>.weight`, with `<prefix>.bias` when the checkpoint has it. */
export function linear(ctx: DescribeContext, prefix: string, orientation: WeightOrientation = 'linear'): LinearRole {
  const bias = ctx.has(`${prefix}.bias`) ? `${prefix}.bias` : undefined;
  return { weight: `${prefix}.weight`, orientation, bias };
}

/** A norm `<prefix>.weight` (+ `.bias` when present). */
export function norm(ctx: DescribeContext, prefix: string, kind: NormKind, eps: number): NormRole {
  const bias = ctx.has(`${prefix}.bias`) ? `${prefix}.bias` : undefined;
  return { kind, weight: `${prefix}.weight`, bias, eps };
}

/** Separate q/k/v projections `<prefix>{q,k,v}_proj` (Llama and most others). */
export function separateQkv(ctx: DescribeContext, prefix: string, d: Dims, names: [string, string, string] = ['q_proj', 'k_proj', 'v_proj']) {
  const [q, k, v] = names.map((n) => linear(ctx, `${prefix}${n}`));
  return {
    query: headSlices(q.weight, 'linear', 0, d.queryHeads, d.headDim, q.bias),
    key: headSlices(k.weight, 'linear', 0, d.kvHeads, d.headDim, k.bias),
    value: headSlices(v.weight, 'linear', 0, d.kvHeads, d.headDim, v.bias),
    projectionTensors: [q.weight, k.weight, v.weight],
  };
}

/** One fused projection holding all query rows, then key rows, then value rows. */
export function stackedQkv(tensor: string, orientation: WeightOrientation, d: Dims, bias?: string) {
  const k0 = d.queryHeads * d.headDim;
  const v0 = k0 + d.kvHeads * d.headDim;
  return {
    query: headSlices(tensor, orientation, 0, d.queryHeads, d.headDim, bias),
    key: headSlices(tensor, orientation, k0, d.kvHeads, d.headDim, bias),
    value: headSlices(tensor, orientation, v0, d.kvHeads, d.headDim, bias),
    projectionTensors: [tensor],
  };
}

const ACTIVATIONS: Record<string, Activation> = {
  silu: 'silu',
  swish: 'silu',
  gelu: 'gelu',
  gelu_new: 'gelu-tanh',
  gelu_pytorch_tanh: 'gelu-tanh',
  gelu_fast: 'gelu-tanh',
  relu: 'relu',
};

/** The activation named by the first present key (default `fallback`); unknown names are refused. */
export function activation(c: ConfigReader, fallback: string, ...keys: string[]): Activation {
  const key = keys.find((k) => c.has(k));
  const name = key ? c.string(key, fallback) : fallback;
  const act = Object.hasOwn(ACTIVATIONS, name) ? ACTIVATIONS[name] : undefined;
  if (!act) throw new FactoredKeysError(`${c.where}: activation "${name}" is not supported (supported: ${Object.keys(ACTIVATIONS).join(', ')})`);
  return act;
}

/** Gated MLP `<prefix>{gate,up,down}_proj`. */
export function gatedMlp(ctx: DescribeContext, prefix: string, act: Activation, names: [string, string, string] = ['gate_proj', 'up_proj', 'down_proj']): MlpRole {
  const [gate, up, down] = names.map((n) => linear(ctx, `${prefix}${n}`));
  return { kind: 'gated', gate, up, down, activation: act };
}

/** Dense MLP `<prefix>{up,down}`. */
export function denseMlp(ctx: DescribeContext, prefix: string, up: string, down: string, act: Activation, orientation: WeightOrientation = 'linear'): MlpRole {
  return { kind: 'dense', up: linear(ctx, `${prefix}${up}`, orientation), down: linear(ctx, `${prefix}${down}`, orientation), activation: act };
}

/** The logits projection: `lm_head` when stored, else the tied embedding. */
export function lmHead(ctx: DescribeContext, embedding: string, name = 'lm_head'): LinearRole {
  return ctx.has(`${name}.weight`) ? linear(ctx, name) : { weight: embedding, orientation: 'linear' };
}

/**
 * Per layer: whether it uses sliding-window attention. `layer_types` (transformers 5) decides
 * when present; else `fallback(i)`.
 */
export function slidingLayers(c: ConfigReader, layers: number, fallback: (i: number) => boolean): boolean[] {
  const types = c.strings('layer_types');
  if (types) {
    if (types.length !== layers) throw new FactoredKeysError(`${c.where}: "layer_types" lists ${types.length} layers, the model has ${layers}`);
    return types.map((t, i) => {
      if (t === 'sliding_attention') return true;
      if (t === 'full_attention') return false;
      throw new FactoredKeysError(`${c.where}: layer_types[${i}] "${t}" is not supported (sliding_attention, full_attention)`);
    });
  }
  return Array.from({ length: layers }, (_, i) => fallback(i));
}

/** The sliding window size, required when any layer slides. */
export function slidingWindow(c: ConfigReader, sliding: readonly boolean[]): number | null {
  if (!sliding.some(Boolean)) return null;
  const w = c.optionalInt('sliding_window');
  if (w === undefined) throw new FactoredKeysError(`${c.where}: layers use sliding-window attention but "sliding_window" is not set`);
  return w;
}

/** The number of query heads per KV head, checked. */
export function queryToKv(c: ConfigReader, d: Dims): number[] {
  if (d.queryHeads % d.kvHeads !== 0) throw new FactoredKeysError(`${c.where}: ${d.queryHeads} attention heads are not divisible by ${d.kvHeads} key/value heads`);
  const perKv = d.queryHeads / d.kvHeads;
  return Array.from({ length: d.queryHeads }, (_, h) => Math.floor(h / perKv));
}

/** One architecture family: the config.json model types it reads, and how. */
export interface Family {
  readonly name: string;
  readonly modelTypes: readonly string[];
  describe(ctx: DescribeContext): ModelDescription;
}

/** The first of `keys` (then max_position_embeddings) the config states; no limit for RoPE models that state none. */
export function maxPositions(c: ConfigReader, ...keys: string[]): PositionLimit {
  const key = [...keys, 'max_position_embeddings'].find((k) => c.has(k));
  return key ? { tokens: c.int(key), source: key } : { tokens: NO_POSITION_LIMIT, source: 'no max_position_embeddings' };
}

/** Like {@link maxPositions}, for learned positions (and GPT-J): the config must state it. */
export function statedMaxPositions(c: ConfigReader, ...keys: string[]): PositionLimit {
  const key = keys.find((k) => c.has(k)) ?? keys[0];
  return { tokens: c.int(key), source: key };
}
