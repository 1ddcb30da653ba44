/**
 * `inspect` of an exported factored-keys checkpoint: the `factored_keys` block checked against
 * the tensors it names (shapes only, no weight data read), summarised next to the model.
 */
import { describeModel, featureSummary } from '../core/arch';
import type { Checkpoint } from '../core/checkpoint/checkpoint';
import { elementCount, previewJson } from '../core/checkpoint/safetensors';
import { FactoredKeysError } from '../core/errors';
import type { FactoredKeysConfig, SliceRef } from '../core/export/format';
import { readFactoredKeysConfig } from '../core/export/load';
import type { InspectSummary } from './inspect';

/** What `inspect --json` adds for a factored checkpoint. */
export interface FactoredSummary {
  method: string;
  rope_mode: string;
  original_head_dim: number;
  softmax_scale: number;
  ranks: number[][];
  /** Key values cached per token, all layers and KV heads (before: kv_heads x head_dim per layer). */
  key_dims_per_token: { before: number; after: number };
}

function checkSlice(ckpt: Checkpoint, s: SliceRef, hidden: number, where: string): void {
  if (s === null || typeof s !== 'object' || typeof s.tensor !== 'string' || !Number.isSafeInteger(s.offset) || !Number.isSafeInteger(s.width) || s.offset < 0 || s.width < 1) {
    throw new FactoredKeysError(`${where}: factored_keys slice ${previewJson(s)} is not {tensor, orientation, offset, width, bias}`);
  }
  const t = ckpt.tensors.get(s.tensor);
  if (!t) throw new FactoredKeysError(`${where}: factored_keys names tensor "${s.tensor}", which is not in the checkpoint`);
  if (t.shape.length !== 2 || (s.orientation !== 'linear' && s.orientation !== 'conv1d')) {
    throw new FactoredKeysError(`${t.file}: tensor "${s.tensor}" [${t.shape.join(', ')}] cannot hold a ${previewJson(s.orientation)} slice`);
  }
  const [out, inF] = s.orientation === 'linear' ? [t.shape[0], t.shape[1]] : [t.shape[1], t.shape[0]];
  if (inF !== hidden) throw new FactoredKeysError(`${t.file}: tensor "${s.tensor}" has ${inF} input features but hidden_size is ${hidden}`);
  if (s.offset + s.width > out) throw new FactoredKeysError(`${t.file}: factored_keys slice [${s.offset}, ${s.offset + s.width}) is outside "${s.tensor}" (${out} output features)`);
  if (s.bias !== null && s.bias !== undefined) {
    const b = ckpt.tensors.get(s.bias);
    if (!b || b.shape.length !== 1 || b.shape[0] !== out) throw new FactoredKeysError(`${where}: bias "${s.bias}" of "${s.tensor}" is missing or not ${out} long`);
  }
}

function checkBlock(ckpt: Checkpoint, fk: FactoredKeysConfig, hidden: number, layers: number, where: string): void {
  if (fk.layers.length !== layers) throw new FactoredKeysError(`${where}: factored_keys lists ${fk.layers.length} layers, the model has ${layers}`);
  const d = fk.original_head_dim;
  fk.layers.forEach((layer, i) => {
    const ranks = fk.ranks[i];
    if (!Array.isArray(layer.key) || !Array.isArray(ranks) || layer.key.length !== fk.num_kv_heads || ranks.length !== fk.num_kv_heads) {
      throw new FactoredKeysError(`${where}: factored_keys layer ${i} must list ${fk.num_kv_heads} key slices and ranks`);
    }
    if (!Array.isArray(layer.query) || layer.query.length !== fk.num_query_heads) throw new FactoredKeysError(`${where}: factored_keys layer ${i} must list ${fk.num_query_heads} query slices`);
    for (const s of [...layer.query, ...layer.key, ...(Array.isArray(layer.value) ? layer.value : [])]) checkSlice(ckpt, s, hidden, where);
    layer.key.forEach((s, g) => {
      if (s.width !== ranks[g] || ranks[g] > d) throw new FactoredKeysError(`${where}: factored_keys layer ${i} KV head ${g}: key width ${s.width} differs from rank ${previewJson(ranks[g])}`);
    });
    if (fk.rope_mode === 'latent') {
      const up = typeof layer.key_up === 'string' ? ckpt.tensors.get(layer.key_up) : undefined;
      const total = ranks.reduce((a, b) => a + b, 0);
      if (!up || up.shape.length !== 2 || up.shape[0] !== fk.num_kv_heads * d || up.shape[1] !== total) {
        throw new FactoredKeysError(`${where}: factored_keys layer ${i}: key_up ${previewJson(layer.key_up)} must be a [${fk.num_kv_heads * d}, ${total}] tensor`);
      }
    }
  });
}

/** Summarises a factored checkpoint, validating its block against the tensors. */
export function summarizeFactored(ckpt: Checkpoint): InspectSummary & { factored: FactoredSummary } {
  const where = `${ckpt.dir}/config.json`;
  const fk = readFactoredKeysConfig(ckpt.config, where);
  const modelType = ckpt.config.model_type;
  if (typeof modelType !== 'string') throw new FactoredKeysError(`${where}: model_type ${previewJson(modelType)} is not supported`);
  if (fk.architecture !== modelType) throw new FactoredKeysError(`${where}: factored_keys.architecture ${previewJson(fk.architecture)} differs from model_type "${modelType}"`);
  const model = describeModel(ckpt, { factored: true });
  const dims = { headDim: model.headDim, queryHeads: model.queryHeads, kvHeads: model.kvHeads, hidden: model.hidden, layers: model.layers };
  if (fk.original_head_dim !== dims.headDim || fk.num_query_heads !== dims.queryHeads || fk.num_kv_heads !== dims.kvHeads) {
    throw new FactoredKeysError(`${where}: factored_keys heads (${previewJson(fk.num_query_heads)} / ${previewJson(fk.num_kv_heads)} x ${previewJson(fk.original_head_dim)}) differ from the model's (${dims.queryHeads} / ${dims.kvHeads} x ${dims.headDim})`);
  }
  checkBlock(ckpt, fk, dims.hidden, dims.layers, where);
  const firstKey = ckpt.tensor(fk.layers[0].key[0].tensor);
  let parameters = 0;
  for (const t of ckpt.tensors.values()) parameters += elementCount(t.shape);
  const after = fk.ranks.reduce((s, layer) => s + layer.reduce((a, b) => a + b, 0), 0);
  return {
    architecture: modelType,
    layers: dims.layers,
    hidden_size: dims.hidden,
    query_heads: dims.queryHeads,
    kv_heads: dims.kvHeads,
    head_dim: dims.headDim,
    rope: fk.rope !== null,
    rotary_dim: fk.rope?.rotary_dim ?? null,
    rope_theta: fk.rope?.theta ?? null,
    qk_bias: fk.layers.some((l) => [...l.query, ...l.key].some((s) => s.bias !== null && s.bias !== undefined)),
    fused_qkv: new Set([...fk.layers[0].query, ...fk.layers[0].key].map((s) => s.tensor)).size === 1,
    dtype: firstKey.dtype,
    parameters,
    files: ckpt.files.length,
    query_to_kv: [...fk.query_to_kv],
    features: featureSummary(model),
    factored: {
      method: fk.method,
      rope_mode: fk.rope_mode,
      original_head_dim: fk.original_head_dim,
      softmax_scale: fk.softmax_scale,
      ranks: fk.ranks.map((r) => [...r]),
      key_dims_per_token: { before: dims.layers * dims.kvHeads * dims.headDim, after },
    },
  };
}
