/**
 * Reading a factored-keys checkpoint back: the `factored_keys` block validated, and each
 * layer's query, key (thin or latent), value and key_up matrices as dense float32, in the
 * orientation docs/FORMAT.md uses (head output = x·W + b for a row vector x).
 */
import type { Checkpoint, ModelConfig } from '../checkpoint/checkpoint';
import { previewJson } from '../checkpoint/safetensors';
import { FactoredKeysError } from '../errors';
import { FACTOR_METHODS } from '../plan/types';
import { FACTORED_KEYS_FORMAT_VERSION, type FactoredKeysConfig, type SliceRef } from './format';

/** One head's projection: `weight` is in_features x width (row-major); output = x·weight + bias. */
export interface HeadWeights {
  readonly weight: Float32Array;
  readonly bias?: Float32Array;
  readonly width: number;
}

/** A layer of a factored checkpoint, decoded. */
export interface FactoredLayerWeights {
  readonly query: readonly HeadWeights[];
  /** Thin keys (absorbed) or the latent projection A (latent). */
  readonly key: readonly HeadWeights[];
  readonly value: readonly HeadWeights[];
  /** Latent mode: per KV head B (rank x head_dim, row-major) with k = c·B; null when absorbed. */
  readonly keyUp: readonly Float32Array[] | null;
}

/** Validates and returns the `factored_keys` block of a config.json (throws naming `where`). */
export function readFactoredKeysConfig(config: ModelConfig, where: string): FactoredKeysConfig {
  const fk = config.factored_keys as FactoredKeysConfig | undefined;
  if (fk === undefined || fk === null || typeof fk !== 'object') throw new FactoredKeysError(`${where}: no "factored_keys" block; not a factored-keys checkpoint`);
  if (fk.format_version !== FACTORED_KEYS_FORMAT_VERSION) throw new FactoredKeysError(`${where}: factored_keys.format_version ${previewJson(fk.format_version)} is not supported (expected ${FACTORED_KEYS_FORMAT_VERSION})`);
  if (!FACTOR_METHODS.includes(fk.method)) throw new FactoredKeysError(`${where}: factored_keys.method ${previewJson(fk.method)} is unknown`);
  if (fk.rope_mode !== 'absorbed' && fk.rope_mode !== 'latent') throw new FactoredKeysError(`${where}: factored_keys.rope_mode ${previewJson(fk.rope_mode)} is unknown`);
  if (!Array.isArray(fk.layers) || !Array.isArray(fk.ranks) || fk.layers.length !== fk.ranks.length) throw new FactoredKeysError(`${where}: factored_keys.layers and ranks must be arrays of equal length`);
  fk.layers.forEach((l, i) => {
    if (l && typeof l === 'object' && l.attention !== undefined) checkRuntime(l.attention, `${where}: factored_keys.layers[${i}].attention`);
  });
  return fk;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isPositiveInt = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) > 0;

/** Validates a layer's runtime block (docs/FORMAT.md section 3, `attention`) by type; throws naming `where`. */
function checkRuntime(a: unknown, where: string): void {
  const bad = (what: string): never => {
    throw new FactoredKeysError(`${where}.${what}`);
  };
  if (!isObject(a)) bad('must be an object');
  const r = a as Record<string, unknown>;
  if (!isObject(r.shapes)) bad('shapes must map tensor names to shapes');
  for (const [name, shape] of Object.entries(r.shapes as Record<string, unknown>)) {
    if (!Array.isArray(shape) || shape.length === 0 || !shape.every(isPositiveInt)) bad(`shapes[${previewJson(name)}] must be a list of positive integers`);
  }
  if (typeof r.output !== 'string') bad('output must be a tensor name');
  for (const k of ['q_norm', 'k_norm'] as const) {
    const n = r[k];
    if (n === null) continue;
    if (!isObject(n) || typeof n.weight !== 'string' || (n.scope !== 'head' && n.scope !== 'projection')) bad(`${k} must be null or {weight, scope: "head"|"projection"}`);
  }
  if (r.rotary_dim !== null && !isPositiveInt(r.rotary_dim)) bad('rotary_dim must be null or a positive integer');
  if (r.rope_style !== null && r.rope_style !== 'rotate-half' && r.rope_style !== 'interleaved') bad('rope_style must be null, "rotate-half" or "interleaved"');
  if (typeof r.scale !== 'number' || !Number.isFinite(r.scale) || r.scale <= 0) bad('scale must be a positive number');
  if (r.softcap !== null && (typeof r.softcap !== 'number' || !Number.isFinite(r.softcap) || r.softcap <= 0)) bad('softcap must be null or a positive number');
  if (r.sliding_window !== null && !isPositiveInt(r.sliding_window)) bad('sliding_window must be null or a positive integer');
  if (r.sinks !== null && typeof r.sinks !== 'string') bad('sinks must be null or a tensor name');
}

async function readSlice(ckpt: Checkpoint, s: SliceRef): Promise<HeadWeights> {
  const t = ckpt.tensor(s.tensor);
  if (t.shape.length !== 2) throw new FactoredKeysError(`${t.file}: tensor "${s.tensor}" should be 2-D`);
  const linear = s.orientation === 'linear';
  const out = linear ? t.shape[0] : t.shape[1];
  const inF = linear ? t.shape[1] : t.shape[0];
  if (s.offset < 0 || s.offset + s.width > out) throw new FactoredKeysError(`${t.file}: slice [${s.offset}, ${s.offset + s.width}) is outside "${s.tensor}" (${out} output features)`);
  const w = new Float32Array(inF * s.width);
  if (linear) {
    const rows = await ckpt.readRowsF32(s.tensor, s.offset, s.offset + s.width);
    for (let j = 0; j < s.width; j++) for (let x = 0; x < inF; x++) w[x * s.width + j] = rows[j * inF + x];
  } else {
    const all = await ckpt.readRowsF32(s.tensor);
    for (let x = 0; x < inF; x++) for (let j = 0; j < s.width; j++) w[x * s.width + j] = all[x * out + s.offset + j];
  }
  const bias = s.bias ? await ckpt.readRowsF32(s.bias, s.offset, s.offset + s.width) : undefined;
  return { weight: w, bias, width: s.width };
}

/** Loads one layer of a factored checkpoint (decoded to float32). */
export async function loadFactoredLayer(ckpt: Checkpoint, fk: FactoredKeysConfig, layer: number): Promise<FactoredLayerWeights> {
  const entry = fk.layers[layer];
  if (!entry) throw new FactoredKeysError(`${ckpt.dir}: factored_keys has no layer ${layer}`);
  for (const [name, shape] of Object.entries(entry.attention?.shapes ?? {})) {
    const t = ckpt.tensor(name);
    if (t.shape.length !== shape.length || t.shape.some((x, i) => x !== shape[i])) {
      throw new FactoredKeysError(`${t.file}: "${name}" shape [${t.shape.join(', ')}] differs from factored_keys.layers[${layer}].attention.shapes [${shape.join(', ')}]`);
    }
  }
  const query = await Promise.all(entry.query.map((s) => readSlice(ckpt, s)));
  const key = await Promise.all(entry.key.map((s) => readSlice(ckpt, s)));
  const value = await Promise.all(entry.value.map((s) => readSlice(ckpt, s)));
  let keyUp: Float32Array[] | null = null;
  if (entry.key_up) {
    const t = ckpt.tensor(entry.key_up);
    const hd = fk.original_head_dim;
    const ranks = fk.ranks[layer];
    const total = ranks.reduce((a, b) => a + b, 0);
    if (t.shape.length !== 2 || t.shape[0] !== ranks.length * hd || t.shape[1] !== total) {
      throw new FactoredKeysError(`${t.file}: "${entry.key_up}" shape [${t.shape.join(', ')}] should be [${ranks.length * hd}, ${total}]`);
    }
    const all = await ckpt.readRowsF32(entry.key_up);
    keyUp = [];
    let off = 0;
    for (let g = 0; g < ranks.length; g++) {
      const r = ranks[g];
      const b = new Float32Array(r * hd);
      for (let a = 0; a < hd; a++) for (let j = 0; j < r; j++) b[j * hd + a] = all[(g * hd + a) * total + off + j];
      keyUp.push(b);
      off += r;
    }
  }
  return { query, key, value, keyUp };
}
