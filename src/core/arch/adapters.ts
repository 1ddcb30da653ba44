/**
 * Per-architecture adapters: config.json + tensor names -> AttentionLayout.
 * Each adapter only knows where its architecture keeps Q/K/V; validation is shared.
 */
import type { Checkpoint, ModelConfig } from '../checkpoint/checkpoint';
import { elementCount, previewJson } from '../checkpoint/safetensors';
import { FactoredKeysError } from '../errors';
import type { AttentionLayout, HeadSlice, LayerAttention, RopeInfo, WeightOrientation } from './layout';

interface Dims {
  layers: number;
  hidden: number;
  queryHeads: number;
  kvHeads: number;
  headDim: number;
}

interface Adapter {
  /** Reads dimensions from config.json. */
  dims(c: ConfigReader): Dims;
  rope(c: ConfigReader, headDim: number): RopeInfo | null;
  /** Where layer `i` keeps its projections. */
  layer(i: number, d: Dims, has: (name: string) => boolean): LayerAttention;
}

/** Typed access to config.json with errors that name the file and key. */
export class ConfigReader {
  constructor(readonly config: ModelConfig, readonly where: string) {}

  has(key: string): boolean {
    return this.config[key] !== undefined && this.config[key] !== null;
  }

  int(...keys: string[]): number {
    for (const k of keys) {
      const v = this.config[k];
      if (v === undefined || v === null) continue;
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
        throw new FactoredKeysError(`${this.where}: "${k}" must be a positive integer, got ${previewJson(v)}`);
      }
      return v;
    }
    throw new FactoredKeysError(`${this.where}: missing "${keys[0]}"`);
  }

  optionalInt(...keys: string[]): number | undefined {
    return keys.some((k) => this.has(k)) ? this.int(...keys) : undefined;
  }

  number(fallback: number, ...keys: string[]): number {
    for (const k of keys) {
      const parts = k.split('.');
      let v: unknown = this.config;
      for (const p of parts) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[p] : undefined;
      if (v === undefined || v === null) continue;
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw new FactoredKeysError(`${this.where}: "${k}" must be a number, got ${previewJson(v)}`);
      }
      return v;
    }
    return fallback;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.config[key];
    return typeof v === 'boolean' ? v : fallback;
  }
}

function slices(tensor: string, orientation: WeightOrientation, firstFeature: number, count: number, stride: number, bias?: string): HeadSlice[] {
  return Array.from({ length: count }, (_, h) => ({ tensor, orientation, offset: firstFeature + h * stride, bias }));
}

function ropeFromConfig(c: ConfigReader, headDim: number, defaultFactor = 1): RopeInfo {
  const factor = c.number(defaultFactor, 'rope_parameters.partial_rotary_factor', 'partial_rotary_factor', 'rotary_pct');
  const theta = c.number(10000, 'rope_parameters.rope_theta', 'rope_theta', 'rotary_emb_base');
  const rotaryDim = Math.floor(headDim * factor);
  if (rotaryDim <= 0 || rotaryDim > headDim || rotaryDim % 2 !== 0) {
    throw new FactoredKeysError(`${c.where}: partial rotary factor ${factor} gives ${rotaryDim} rotary dims of ${headDim}, which is not an even count`);
  }
  return { rotaryDim, partialRotaryFactor: factor, theta, style: 'rotate-half' };
}

/** Llama, Mistral, Qwen2, Gemma: separate q_proj/k_proj/v_proj. */
const llamaFamily: Adapter = {
  dims(c) {
    const hidden = c.int('hidden_size');
    const queryHeads = c.int('num_attention_heads');
    const kvHeads = c.optionalInt('num_key_value_heads') ?? queryHeads;
    const headDim = c.optionalInt('head_dim') ?? hidden / queryHeads;
    return { layers: c.int('num_hidden_layers'), hidden, queryHeads, kvHeads, headDim };
  },
  rope: (c, headDim) => ropeFromConfig(c, headDim),
  layer(i, d, has) {
    const p = `model.layers.${i}.self_attn.`;
    const bias = (n: string) => (has(`${p}${n}.bias`) ? `${p}${n}.bias` : undefined);
    return {
      layer: i,
      queryHeads: slices(`${p}q_proj.weight`, 'linear', 0, d.queryHeads, d.headDim, bias('q_proj')),
      keyHeads: slices(`${p}k_proj.weight`, 'linear', 0, d.kvHeads, d.headDim, bias('k_proj')),
      valueHeads: slices(`${p}v_proj.weight`, 'linear', 0, d.kvHeads, d.headDim, bias('v_proj')),
      projectionTensors: [`${p}q_proj.weight`, `${p}k_proj.weight`, `${p}v_proj.weight`],
      outputTensor: `${p}o_proj.weight`,
    };
  },
};

/** Phi-3: fused qkv_proj, all query rows, then key rows, then value rows. */
const phi3: Adapter = {
  dims: llamaFamily.dims,
  rope: (c, headDim) => ropeFromConfig(c, headDim),
  layer(i, d) {
    const p = `model.layers.${i}.self_attn.`;
    const t = `${p}qkv_proj.weight`;
    const kStart = d.queryHeads * d.headDim;
    return {
      layer: i,
      queryHeads: slices(t, 'linear', 0, d.queryHeads, d.headDim),
      keyHeads: slices(t, 'linear', kStart, d.kvHeads, d.headDim),
      valueHeads: slices(t, 'linear', kStart + d.kvHeads * d.headDim, d.kvHeads, d.headDim),
      projectionTensors: [t],
      outputTensor: `${p}o_proj.weight`,
    };
  },
};

/** GPT-2: Conv1D c_attn `[in, 3*hidden]`, columns q | k | v, with biases; learned positions. */
const gpt2: Adapter = {
  dims(c) {
    const hidden = c.int('n_embd', 'hidden_size');
    const heads = c.int('n_head', 'num_attention_heads');
    return { layers: c.int('n_layer', 'num_hidden_layers'), hidden, queryHeads: heads, kvHeads: heads, headDim: hidden / heads };
  },
  rope: () => null,
  layer(i, d, has) {
    const p = `transformer.h.${i}.attn.`;
    const t = `${p}c_attn.weight`;
    const b = has(`${p}c_attn.bias`) ? `${p}c_attn.bias` : undefined;
    return {
      layer: i,
      queryHeads: slices(t, 'conv1d', 0, d.queryHeads, d.headDim, b),
      keyHeads: slices(t, 'conv1d', d.hidden, d.kvHeads, d.headDim, b),
      valueHeads: slices(t, 'conv1d', 2 * d.hidden, d.kvHeads, d.headDim, b),
      projectionTensors: [t],
      outputTensor: `${p}c_proj.weight`,
    };
  },
};

/** GPT-NeoX: fused query_key_value, interleaved per head as [q_h | k_h | v_h] blocks. */
const gptNeox: Adapter = {
  dims(c) {
    const hidden = c.int('hidden_size');
    const heads = c.int('num_attention_heads');
    return { layers: c.int('num_hidden_layers'), hidden, queryHeads: heads, kvHeads: heads, headDim: hidden / heads };
  },
  rope: (c, headDim) => ropeFromConfig(c, headDim, 0.25),
  layer(i, d, has) {
    const p = `gpt_neox.layers.${i}.attention.`;
    const t = `${p}query_key_value.weight`;
    const b = has(`${p}query_key_value.bias`) ? `${p}query_key_value.bias` : undefined;
    const stride = 3 * d.headDim;
    return {
      layer: i,
      queryHeads: slices(t, 'linear', 0, d.queryHeads, stride, b),
      keyHeads: slices(t, 'linear', d.headDim, d.kvHeads, stride, b),
      valueHeads: slices(t, 'linear', 2 * d.headDim, d.kvHeads, stride, b),
      projectionTensors: [t],
      outputTensor: `${p}dense.weight`,
    };
  },
};

/**
 * Falcon: fused query_key_value. Old decoder with multi_query: [q heads | k | v] (one KV head).
 * New decoder architecture: grouped per KV head as [q x (H/KV) | k | v] blocks.
 */
const falcon: Adapter = {
  dims(c) {
    const hidden = c.int('hidden_size');
    const queryHeads = c.int('num_attention_heads', 'n_head');
    const newArch = c.bool('new_decoder_architecture', false);
    const kvHeads = newArch ? c.int('num_kv_heads', 'n_head_kv') : c.bool('multi_query', true) ? 1 : queryHeads;
    return { layers: c.int('num_hidden_layers', 'n_layer'), hidden, queryHeads, kvHeads, headDim: hidden / queryHeads };
  },
  rope: (c, headDim) => (c.bool('alibi', false) ? null : ropeFromConfig(c, headDim)),
  layer(i, d, has) {
    const p = `transformer.h.${i}.self_attention.`;
    const t = `${p}query_key_value.weight`;
    const b = has(`${p}query_key_value.bias`) ? `${p}query_key_value.bias` : undefined;
    const hd = d.headDim;
    const grouped = d.kvHeads > 1 && d.kvHeads < d.queryHeads;
    let q: HeadSlice[];
    let k: HeadSlice[];
    let v: HeadSlice[];
    if (grouped) {
      const perKv = d.queryHeads / d.kvHeads;
      const block = (perKv + 2) * hd;
      q = Array.from({ length: d.queryHeads }, (_, h) => ({ tensor: t, orientation: 'linear' as const, offset: Math.floor(h / perKv) * block + (h % perKv) * hd, bias: b }));
      k = slices(t, 'linear', perKv * hd, d.kvHeads, block, b);
      v = slices(t, 'linear', (perKv + 1) * hd, d.kvHeads, block, b);
    } else if (d.kvHeads === d.queryHeads) {
      // multi-head Falcon-RW style: interleaved per head like GPT-NeoX
      q = slices(t, 'linear', 0, d.queryHeads, 3 * hd, b);
      k = slices(t, 'linear', hd, d.kvHeads, 3 * hd, b);
      v = slices(t, 'linear', 2 * hd, d.kvHeads, 3 * hd, b);
    } else {
      q = slices(t, 'linear', 0, d.queryHeads, hd, b);
      k = slices(t, 'linear', d.queryHeads * hd, d.kvHeads, hd, b);
      v = slices(t, 'linear', (d.queryHeads + d.kvHeads) * hd, d.kvHeads, hd, b);
    }
    return { layer: i, queryHeads: q, keyHeads: k, valueHeads: v, projectionTensors: [t], outputTensor: `${p}dense.weight` };
  },
};

export const ADAPTERS: Readonly<Record<string, Adapter>> = {
  llama: llamaFamily,
  mistral: llamaFamily,
  qwen2: llamaFamily,
  gemma: llamaFamily,
  phi3: phi3,
  gpt2: gpt2,
  gpt_neox: gptNeox,
  falcon: falcon,
};

export const SUPPORTED_ARCHITECTURES = Object.keys(ADAPTERS).sort();

/** Output-feature count of a projection tensor, by orientation. */
function outFeatures(shape: readonly number[], orientation: WeightOrientation): number {
  return orientation === 'linear' ? shape[0] : shape[1];
}

function inFeatures(shape: readonly number[], orientation: WeightOrientation): number {
  return orientation === 'linear' ? shape[1] : shape[0];
}

/** Upper bound on query or KV heads per layer accepted from config.json. */
export const MAX_HEADS = 65536;

/** Builds and validates the attention layout of an open checkpoint. */
export function buildLayout(ckpt: Checkpoint): AttentionLayout {
  const where = `${ckpt.dir}/config.json`;
  const c = new ConfigReader(ckpt.config, where);
  const modelType = ckpt.config.model_type;
  if (typeof modelType !== 'string') throw new FactoredKeysError(`${where}: missing "model_type"`);
  // A factored checkpoint's key tensors are thinner than the config implies; say so plainly.
  if (ckpt.config.factored_keys !== undefined) {
    throw new FactoredKeysError(`${where}: this checkpoint is already factored (factored_keys block); analyze, plan and export take the original checkpoint`);
  }
  // hasOwn: "constructor" or "__proto__" must not resolve to Object.prototype members.
  const adapter = Object.hasOwn(ADAPTERS, modelType) ? ADAPTERS[modelType] : undefined;
  if (!adapter) {
    throw new FactoredKeysError(`${where}: model_type "${modelType}" is not supported (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`);
  }
  const d = adapter.dims(c);
  // Head slices are materialised per layer before shapes are compared, so absurd head counts
  // from a hostile config.json must be refused first (no real model comes near this).
  if (d.queryHeads > MAX_HEADS || d.kvHeads > MAX_HEADS) {
    throw new FactoredKeysError(`${where}: ${d.queryHeads} attention heads / ${d.kvHeads} key/value heads is more than the ${MAX_HEADS} heads per layer this tool accepts`);
  }
  if (!Number.isInteger(d.headDim) || d.headDim <= 0) {
    throw new FactoredKeysError(`${where}: hidden size ${d.hidden} is not divisible by ${d.queryHeads} attention heads`);
  }
  if (d.queryHeads % d.kvHeads !== 0) {
    throw new FactoredKeysError(`${where}: ${d.queryHeads} attention heads are not divisible by ${d.kvHeads} key/value heads`);
  }
  const has = (n: string) => ckpt.tensors.has(n);
  const layers: LayerAttention[] = [];
  let dtype: AttentionLayout['dtype'] | undefined;
  let qkBias = false;
  for (let i = 0; i < d.layers; i++) {
    const layer = adapter.layer(i, d, has);
    for (const group of [layer.queryHeads, layer.keyHeads, layer.valueHeads]) {
      for (const head of group) {
        const t = ckpt.tensors.get(head.tensor);
        if (!t) throw new FactoredKeysError(`${ckpt.dir}: layer ${i}: tensor "${head.tensor}" is missing`);
        if (t.shape.length !== 2) throw new FactoredKeysError(`${t.file}: tensor "${t.name}" should be 2-D but has shape [${t.shape.join(', ')}]`);
        if (inFeatures(t.shape, head.orientation) !== d.hidden) {
          throw new FactoredKeysError(`${t.file}: tensor "${t.name}" has ${inFeatures(t.shape, head.orientation)} input features but hidden_size is ${d.hidden}`);
        }
        if (head.offset + d.headDim > outFeatures(t.shape, head.orientation)) {
          throw new FactoredKeysError(
            `${t.file}: tensor "${t.name}" shape [${t.shape.join(', ')}] is too small for ${d.queryHeads} query / ${d.kvHeads} KV heads of dim ${d.headDim}`,
          );
        }
        if (head.bias) {
          const bt = ckpt.tensor(head.bias);
          if (bt.shape.length !== 1 || bt.shape[0] !== outFeatures(t.shape, head.orientation)) {
            throw new FactoredKeysError(`${bt.file}: bias "${bt.name}" shape [${bt.shape.join(', ')}] does not match "${t.name}"`);
          }
        }
      }
    }
    // The projections must be exactly the heads' size (e.g. head_dim in config matching shapes).
    const qT = ckpt.tensor(layer.queryHeads[0].tensor);
    const expectedOut = layer.projectionTensors.length === 1 ? (d.queryHeads + 2 * d.kvHeads) * d.headDim : d.queryHeads * d.headDim;
    if (outFeatures(qT.shape, layer.queryHeads[0].orientation) !== expectedOut) {
      throw new FactoredKeysError(
        `${qT.file}: tensor "${qT.name}" has ${outFeatures(qT.shape, layer.queryHeads[0].orientation)} output features but the config implies ${expectedOut} (${d.queryHeads} query / ${d.kvHeads} KV heads x ${d.headDim})`,
      );
    }
    const kT = ckpt.tensor(layer.keyHeads[0].tensor);
    if (layer.projectionTensors.length > 1 && outFeatures(kT.shape, 'linear') !== d.kvHeads * d.headDim) {
      throw new FactoredKeysError(
        `${kT.file}: tensor "${kT.name}" has ${kT.shape[0]} output features but the config implies ${d.kvHeads * d.headDim} (${d.kvHeads} KV heads x ${d.headDim})`,
      );
    }
    if (qT.dtype !== kT.dtype) throw new FactoredKeysError(`${kT.file}: "${qT.name}" is ${qT.dtype} but "${kT.name}" is ${kT.dtype}`);
    if (dtype !== undefined && dtype !== qT.dtype) throw new FactoredKeysError(`${qT.file}: "${qT.name}" is ${qT.dtype} but earlier layers are ${dtype}`);
    dtype = qT.dtype;
    if (!['F32', 'F16', 'BF16', 'F64', 'F8_E4M3', 'F8_E5M2'].includes(dtype)) {
      throw new FactoredKeysError(`${qT.file}: tensor "${qT.name}" has dtype ${dtype}, which is not a float weight type this tool reads`);
    }
    qkBias ||= layer.queryHeads[0].bias !== undefined || layer.keyHeads[0].bias !== undefined;
    layers.push(layer);
  }
  if (dtype === undefined) throw new FactoredKeysError(`${where}: the model has no layers`);
  const perKv = d.queryHeads / d.kvHeads;
  let parameters = 0;
  for (const t of ckpt.tensors.values()) parameters += elementCount(t.shape);
  return {
    architecture: modelType,
    layers,
    hiddenSize: d.hidden,
    queryHeads: d.queryHeads,
    kvHeads: d.kvHeads,
    headDim: d.headDim,
    queryToKv: Array.from({ length: d.queryHeads }, (_, h) => Math.floor(h / perKv)),
    rope: adapter.rope(c, d.headDim),
    qkBias,
    fusedQkv: layers[0].projectionTensors.length === 1,
    dtype,
    softmaxScale: 1 / Math.sqrt(d.headDim),
    parameters,
  };
}
