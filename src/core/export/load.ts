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
  return fk;
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
