/**
 * Factored attention for the forward pass, from two sources that must agree:
 * - an exported checkpoint, read per docs/FORMAT.md (the `factored_keys` block of config.json:
 *   per-head slices of the rewritten projections, and `key_up` in latent mode), and
 * - an in-memory plan: the factor API's per-KV-head maps (T_q, T_k truncated to the plan's
 *   ranks) applied to the original weights here, rounded to the checkpoint dtype exactly as an
 *   export writes them, without writing anything.
 *
 * Absorbed mode (no RoPE): query head h uses q' = x·W_Qh·T_q + b_Qh·T_q and its KV head g
 * caches k' = x·W_Kg·T_k + b_Kg·T_k (rank r_g); scores q'·k'ᵀ·scale. Heads of one layer are
 * zero-padded to the layer's largest rank, which leaves every score unchanged.
 * Latent mode (RoPE): queries unchanged; the cache holds c_g = x·W_Kg·T_k (+ bias), and keys
 * are rebuilt as k_g = c_g·T_qᵀ before RoPE. The softmax scale stays 1/sqrt(original head_dim).
 */
import { buildLayout, keyModeOf } from '../arch';
import type { AttentionLayout } from '../arch/layout';
import type { Checkpoint } from '../checkpoint/checkpoint';
import type { Dtype } from '../checkpoint/dtypes';
import { previewJson } from '../checkpoint/safetensors';
import { FactoredKeysError, type CancelToken, type ProgressFn } from '../errors';
import type { FactoredKeysConfig, SliceRef } from '../export/format';
import { readFactoredKeysConfig } from '../export/load';
import { analyzeHeads, LayerTensorCache, readHeadFeatures, truncateBasis, type HeadBasis } from '../factor/basis';
import type { FactorMethod } from '../plan/types';
import type { CalibrationSpec } from '../calibration/moments';
import type { WeightSource } from './forward';
import { assembleHeads, CheckpointWeights, constFromFloat32, readConst, readModelSpec, type HeadFeatures, type LayerWeights, type Linear, type ModelSpec, type OuterWeights } from './model';

/** Features y_j = Σ_a map[a][j]·F[a] (map n x r row-major), accumulated in float64 like the exporter. */
function mapFeatures(f: Float32Array, d: number, map: Float64Array, n: number, r: number): Float32Array {
  const acc = new Float64Array(r * d);
  for (let a = 0; a < n; a++) {
    const fa = a * d;
    for (let j = 0; j < r; j++) {
      const t = map[a * r + j];
      if (t === 0) continue;
      const o = j * d;
      for (let x = 0; x < d; x++) acc[o + x] += t * f[fa + x];
    }
  }
  return Float32Array.from(acc);
}

function mapBias(b: Float32Array | undefined, map: Float64Array, n: number, r: number): Float32Array | undefined {
  if (!b) return undefined;
  const out = new Float32Array(r);
  for (let j = 0; j < r; j++) {
    let s = 0;
    for (let a = 0; a < n; a++) s += b[a] * map[a * r + j];
    out[j] = s;
  }
  return out;
}

/** Block-diagonal key up-projection [Σr, kv·hd] (k = c·B) from per-KV-head B_g (r_g x hd). */
function keyUpBlock(bs: readonly Float32Array[], ranks: readonly number[], hd: number, dtype: Dtype): Linear {
  const total = ranks.reduce((a, b) => a + b, 0);
  const out = ranks.length * hd;
  const w = new Float32Array(total * out);
  let off = 0;
  ranks.forEach((r, g) => {
    for (let j = 0; j < r; j++) for (let a = 0; a < hd; a++) w[(off + j) * out + g * hd + a] = bs[g][j * hd + a];
    off += r;
  });
  return { weight: constFromFloat32(w, [total, out], dtype), transposed: false };
}


/** Per-KV-head ranks of a plan: ranks[layer][kvHead]. */
export type Ranks = readonly (readonly number[])[];

/**
 * A model with its keys factored in memory from precomputed bases (see {@link analyzeHeads}),
 * one rank per layer and KV head.
 */
export class PlanWeights implements WeightSource {
  private readonly base: CheckpointWeights;
  constructor(
    readonly ckpt: Checkpoint,
    readonly spec: ModelSpec,
    readonly layout: AttentionLayout,
    readonly bases: readonly (readonly HeadBasis[])[],
    readonly ranks: Ranks,
    /**
     * Keep factored weights in float32 instead of rounding them to the checkpoint dtype as an
     * export would (isolates the factorization's own effect from 16-bit rounding).
     */
    readonly keepFloat32 = false,
  ) {
    this.base = new CheckpointWeights(ckpt, spec);
    if (ranks.length !== spec.layers || ranks.some((row) => row.length !== spec.kvHeads)) {
      throw new FactoredKeysError(`plan: ranks must list ${spec.kvHeads} KV heads for each of ${spec.layers} layers`);
    }
  }

  outer(): Promise<OuterWeights> {
    return this.base.outer();
  }

  referInPlace(on: boolean): void {
    this.base.referInPlace(on);
  }

  async layer(i: number): Promise<LayerWeights> {
    const { spec, layout } = this;
    const d = spec.hidden;
    const hd = spec.headDim;
    const dtype = this.keepFloat32 ? 'F32' : layout.dtype;
    const lay = layout.layers[i];
    const ranks = this.ranks[i];
    const maps = ranks.map((r, g) => truncateBasis(this.bases[i][g], r));
    const cache = new LayerTensorCache(this.ckpt);
    const read = (slice: (typeof lay.queryHeads)[number]) => readHeadFeatures(this.ckpt, cache, slice, hd);
    const rest = await this.base.layerExceptQkv(i);
    const values: HeadFeatures[] = [];
    for (const s of lay.valueHeads) values.push({ ...(await read(s)), width: hd });
    const v = assembleHeads(values, hd, d, dtype);
    const keys: HeadFeatures[] = [];
    for (let g = 0; g < spec.kvHeads; g++) {
      const { features, bias } = await read(lay.keyHeads[g]);
      const m = maps[g];
      keys.push({ features: mapFeatures(features, d, m.keyMap, hd, m.rank), bias: mapBias(bias, m.keyMap, hd, m.rank), width: m.rank });
    }
    const queries: HeadFeatures[] = [];
    const absorbed = keyModeOf(spec) === 'absorbed';
    for (let h = 0; h < spec.queryHeads; h++) {
      const { features, bias } = await read(lay.queryHeads[h]);
      if (!absorbed) {
        queries.push({ features, bias, width: hd });
        continue;
      }
      const m = maps[layout.queryToKv[h]];
      queries.push({ features: mapFeatures(features, d, m.queryMap, hd, m.rank), bias: mapBias(bias, m.queryMap, hd, m.rank), width: m.rank });
    }
    cache.clear();
    if (absorbed) {
      const pad = Math.max(...ranks);
      return { ...rest, qkv: { q: assembleHeads(queries, pad, d, dtype), k: assembleHeads(keys, pad, d, dtype), v }, qkHeadDim: pad };
    }
    // latent: k = c·B with B = T_qᵀ (r x hd)
    const bs = maps.map((m) => {
      const b = new Float32Array(m.rank * hd);
      for (let a = 0; a < hd; a++) for (let j = 0; j < m.rank; j++) b[j * hd + a] = m.queryMap[a * m.rank + j];
      return b;
    });
    const k = assembleConcat(keys, d, dtype);
    return { ...rest, qkv: { q: assembleHeads(queries, hd, d, dtype), k, v }, qkHeadDim: hd, keyUp: keyUpBlock(bs, ranks, hd, dtype) };
  }
}

/** Heads of different widths side by side (no padding): the latent c of all KV heads. */
function assembleConcat(heads: readonly HeadFeatures[], d: number, dtype: Dtype): Linear {
  const total = heads.reduce((a, h) => a + h.width, 0);
  const w = new Float32Array(total * d);
  const anyBias = heads.some((h) => h.bias);
  const b = anyBias ? new Float32Array(total) : undefined;
  let off = 0;
  for (const h of heads) {
    w.set(h.features.subarray(0, h.width * d), off * d);
    if (b && h.bias) b.set(h.bias.subarray(0, h.width), off);
    off += h.width;
  }
  return { weight: constFromFloat32(w, [total, d], dtype), transposed: true, bias: b ? constFromFloat32(b, [total], dtype) : undefined };
}

/** Reads one head's slice of a rewritten projection, feature-major, per docs/FORMAT.md. */
async function readSliceFeatures(ckpt: Checkpoint, s: SliceRef, d: number): Promise<HeadFeatures> {
  // The block comes from the checkpoint's config.json: check the slice's own shape first.
  if (s === null || typeof s !== 'object' || typeof s.tensor !== 'string' || (s.orientation !== 'linear' && s.orientation !== 'conv1d') || (s.bias !== null && s.bias !== undefined && typeof s.bias !== 'string')) {
    throw new FactoredKeysError(`${ckpt.dir}/config.json: factored_keys slice ${previewJson(s)} is not {tensor, orientation: linear|conv1d, offset, width, bias}`);
  }
  const t = ckpt.tensor(s.tensor);
  const linear = s.orientation === 'linear';
  if (t.shape.length !== 2 || (linear ? t.shape[1] : t.shape[0]) !== d) {
    throw new FactoredKeysError(`${t.file}: tensor "${s.tensor}" shape [${t.shape.join(', ')}] does not take ${d} input features`);
  }
  const out = linear ? t.shape[0] : t.shape[1];
  if (!Number.isSafeInteger(s.offset) || !Number.isSafeInteger(s.width) || s.offset < 0 || s.width < 1 || s.offset + s.width > out) {
    throw new FactoredKeysError(`${t.file}: factored_keys slice [${s.offset}, ${s.offset + s.width}) is outside "${s.tensor}" (${out} output features)`);
  }
  let features: Float32Array;
  if (linear) {
    features = await ckpt.readRowsF32(s.tensor, s.offset, s.offset + s.width);
  } else {
    const all = await ckpt.readRowsF32(s.tensor);
    features = new Float32Array(s.width * d);
    for (let x = 0; x < d; x++) for (let j = 0; j < s.width; j++) features[j * d + x] = all[x * out + s.offset + j];
  }
  if (s.bias) {
    const bt = ckpt.tensor(s.bias);
    if (bt.shape.length !== 1 || bt.shape[0] !== out) throw new FactoredKeysError(`${bt.file}: bias "${s.bias}" shape [${bt.shape.join(', ')}] does not match "${s.tensor}" (${out} output features)`);
  }
  const bias = s.bias ? await ckpt.readRowsF32(s.bias, s.offset, s.offset + s.width) : undefined;
  return { features, bias, width: s.width };
}

/** A factored checkpoint as written by `export`, read through its `factored_keys` block. */
export class ExportedWeights implements WeightSource {
  private readonly base: CheckpointWeights;
  readonly spec: ModelSpec;
  constructor(
    readonly ckpt: Checkpoint,
    spec: ModelSpec,
    readonly fk: FactoredKeysConfig,
  ) {
    const where = `${ckpt.dir}/config.json`;
    if (fk.architecture !== spec.architecture) throw new FactoredKeysError(`${where}: factored_keys.architecture "${fk.architecture}" differs from model_type "${spec.architecture}"`);
    if (fk.original_head_dim !== spec.headDim) throw new FactoredKeysError(`${where}: factored_keys.original_head_dim ${fk.original_head_dim} differs from the model's head_dim ${spec.headDim}`);
    if (fk.num_query_heads !== spec.queryHeads || fk.num_kv_heads !== spec.kvHeads) throw new FactoredKeysError(`${where}: factored_keys head counts differ from the model's`);
    if (fk.layers.length !== spec.layers) throw new FactoredKeysError(`${where}: factored_keys lists ${fk.layers.length} layers, the model has ${spec.layers}`);
    if (fk.rope_mode !== keyModeOf(spec)) throw new FactoredKeysError(`${where}: factored_keys.rope_mode "${fk.rope_mode}" does not fit this ${spec.architecture} model, whose keys are stored ${keyModeOf(spec)}`);
    const scale = spec.blocks[0].attention.scale;
    // the scale is the source model's (the config still says how it is computed); a block that disagrees was edited
    if (!(typeof fk.softmax_scale === 'number' && Math.abs(fk.softmax_scale - scale) <= 1e-6 * scale)) throw new FactoredKeysError(`${where}: factored_keys.softmax_scale ${previewJson(fk.softmax_scale)} is not the model's score scale ${scale}`);
    const perKv = spec.queryHeads / spec.kvHeads;
    if (!Array.isArray(fk.query_to_kv) || fk.query_to_kv.some((g, h) => g !== Math.floor(h / perKv))) throw new FactoredKeysError(`${where}: factored_keys.query_to_kv is not the grouping eval supports (query head h uses KV head floor(h / ${perKv}))`);
    this.spec = spec;
    this.base = new CheckpointWeights(ckpt, this.spec);
  }

  outer(): Promise<OuterWeights> {
    return this.base.outer();
  }

  referInPlace(on: boolean): void {
    this.base.referInPlace(on);
  }

  async layer(i: number): Promise<LayerWeights> {
    const { spec, fk, ckpt } = this;
    const d = spec.hidden;
    const hd = spec.headDim;
    const where = `${ckpt.dir}/config.json`;
    const entry = fk.layers[i];
    const ranks = fk.ranks[i];
    if (entry && entry.layer !== i) throw new FactoredKeysError(`${where}: factored_keys.layers[${i}] describes layer ${previewJson(entry.layer)}; entry i must describe layer i`);
    if (!entry || entry.query?.length !== spec.queryHeads || entry.key?.length !== spec.kvHeads || entry.value?.length !== spec.kvHeads || ranks?.length !== spec.kvHeads) {
      throw new FactoredKeysError(`${where}: factored_keys.layers[${i}] must list ${spec.queryHeads} query, ${spec.kvHeads} key and value slices and ranks`);
    }
    const rest = await this.base.layerExceptQkv(i);
    const read = (s: SliceRef) => readSliceFeatures(ckpt, s, d);
    const keys = await Promise.all(entry.key.map(read));
    const dtype = ckpt.tensor(entry.key[0].tensor).dtype; // after the slices were validated
    const queries = await Promise.all(entry.query.map(read));
    const values = await Promise.all(entry.value.map(read));
    keys.forEach((k, g) => {
      if (k.width !== ranks[g]) throw new FactoredKeysError(`${where}: layer ${i} KV head ${g} key slice is ${k.width} wide but its rank is ${ranks[g]}`);
    });
    values.forEach((v, g) => {
      if (v.width !== hd) throw new FactoredKeysError(`${where}: layer ${i} value slice ${g} is ${v.width} wide, not head_dim ${hd}`);
    });
    const v = assembleHeads(values, hd, d, dtype);
    if (fk.rope_mode === 'absorbed') {
      queries.forEach((q, h) => {
        if (q.width !== ranks[fk.query_to_kv[h]]) throw new FactoredKeysError(`${where}: layer ${i} query slice ${h} is ${q.width} wide but its KV head's rank is ${ranks[fk.query_to_kv[h]]}`);
      });
      const pad = Math.max(...ranks);
      return { ...rest, qkv: { q: assembleHeads(queries, pad, d, dtype), k: assembleHeads(keys, pad, d, dtype), v }, qkHeadDim: pad };
    }
    queries.forEach((q, h) => {
      if (q.width !== hd) throw new FactoredKeysError(`${where}: layer ${i} query slice ${h} is ${q.width} wide, not head_dim ${hd} (latent mode keeps queries)`);
    });
    if (!entry.key_up) throw new FactoredKeysError(`${where}: factored_keys.layers[${i}].key_up is missing (latent mode)`);
    const total = ranks.reduce((a, b) => a + b, 0);
    const up = ckpt.tensor(entry.key_up);
    if (up.shape.length !== 2 || up.shape[0] !== spec.kvHeads * hd || up.shape[1] !== total) {
      throw new FactoredKeysError(`${up.file}: "${entry.key_up}" shape [${up.shape.join(', ')}] should be [${spec.kvHeads * hd}, ${total}]`);
    }
    // k_full = c_all · key_upᵀ
    const keyUp: Linear = { weight: await readConst(ckpt, entry.key_up), transposed: true };
    return { ...rest, qkv: { q: assembleHeads(queries, hd, d, dtype), k: assembleConcat(keys, d, dtype), v }, qkHeadDim: hd, keyUp };
  }
}

/** Options for computing factorization bases once (then many rank choices reuse them). */
export interface BasisOptions {
  readonly cancel?: CancelToken;
  readonly progress?: ProgressFn;
  /** Statistics source of method `calibrated`. */
  readonly calibration?: CalibrationSpec;
}

/** Full-rank bases of every KV head for `method` (the expensive step of a sweep). */
export async function computeBases(ckpt: Checkpoint, method: FactorMethod, options: BasisOptions = {}): Promise<{ layout: AttentionLayout; bases: HeadBasis[][] }> {
  const layout = buildLayout(ckpt);
  const bases = await analyzeHeads(ckpt, layout, method, options);
  return { layout, bases };
}

/**
 * The weights of a checkpoint as it should be evaluated: factored per its `factored_keys`
 * block when it has one, else as stored.
 */
export function checkpointSource(ckpt: Checkpoint): WeightSource {
  const spec = readModelSpec(ckpt);
  if (ckpt.config.factored_keys !== undefined) return new ExportedWeights(ckpt, spec, readFactoredKeysConfig(ckpt.config, `${ckpt.dir}/config.json`));
  return new CheckpointWeights(ckpt, spec);
}
