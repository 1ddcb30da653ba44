/**
 * Per-layer tensor rewrite: which projection tensors change shape, where every head's slice
 * lands in the new tensors, and the new tensors' bytes.
 *
 * A projection tensor keeps its name, orientation and the order of its head slices; only the
 * widths change (keys to rank r; queries to r when absorbed). Slices copied unchanged (values,
 * latent-mode queries, features no head owns) keep their raw bytes bit for bit. Fused layouts
 * (GPT-2 c_attn, Phi-3 qkv_proj, GPT-NeoX and Falcon query_key_value) are thus rewritten in
 * place rather than split, so their names stay the model's own.
 */
import type { AttentionLayout, HeadSlice, LayerAttention, WeightOrientation } from '../arch/layout';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { bytesPerElement, encodeFromFloat32, type Dtype } from '../checkpoint/dtypes';
import { FactoredKeysError } from '../errors';
import type { TruncatedMaps } from '../factor/basis';
import { batchedMatmul } from '../factor/products';
import type { FactoredLayer, RopeMode, SliceRef } from './format';

/** A tensor the export writes with new contents. */
export interface NewTensor {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  readonly byteLength: number;
}

type SegmentKind = 'q' | 'k' | 'v' | 'gap';

interface Segment {
  readonly kind: SegmentKind;
  /** Query head (q) or KV head (k, v); -1 for gaps. */
  readonly head: number;
  readonly srcOffset: number;
  readonly srcWidth: number;
  readonly dstOffset: number;
  readonly dstWidth: number;
  /** True when the features are recomputed (thin keys, absorbed queries). */
  readonly recompute: boolean;
}

interface TensorPlan {
  readonly name: string;
  readonly orientation: WeightOrientation;
  readonly bias?: string;
  readonly segments: readonly Segment[];
  readonly srcFeatures: number;
  readonly dstFeatures: number;
  readonly inFeatures: number;
}

/** The rewrite of one layer, computed from shapes alone (no tensor data read). */
export interface LayerRewrite {
  readonly layer: number;
  readonly entry: FactoredLayer;
  /** Original name -> new tensor under the same name. */
  readonly replaced: ReadonlyMap<string, NewTensor>;
  /** Brand-new tensors (latent key_up), each written right after `after` in its shard. */
  readonly added: readonly { readonly after: string; readonly tensor: NewTensor }[];
  readonly tensorPlans: readonly TensorPlan[];
  readonly ranks: readonly number[];
  readonly mode: RopeMode;
}

/** Name of the latent up-projection for a layer whose keys live in `keyTensor`. */
export function keyUpName(keyTensor: string): string {
  const parts = keyTensor.split('.');
  // "...self_attn.k_proj.weight" -> "...self_attn.k_up_proj.weight"
  return [...parts.slice(0, -2), 'k_up_proj', 'weight'].join('.');
}

/** Plans one layer's rewrite; `ranks` has one rank per KV head. */
export function planLayerRewrite(ckpt: Checkpoint, layout: AttentionLayout, layer: LayerAttention, ranks: readonly number[], mode: RopeMode): LayerRewrite {
  const hd = layout.headDim;
  const dtype = layout.dtype;
  if (!['F32', 'F16', 'BF16', 'F64'].includes(dtype)) {
    throw new FactoredKeysError(`${ckpt.tensor(layer.keyHeads[0].tensor).file}: export writes factored tensors in the checkpoint dtype, and ${dtype} is not supported (F32, F16, BF16, F64)`);
  }
  const all: { kind: SegmentKind; head: number; slice: HeadSlice }[] = [
    ...layer.queryHeads.map((slice, head) => ({ kind: 'q' as const, head, slice })),
    ...layer.keyHeads.map((slice, head) => ({ kind: 'k' as const, head, slice })),
    ...layer.valueHeads.map((slice, head) => ({ kind: 'v' as const, head, slice })),
  ];
  const widthOf = (kind: SegmentKind, head: number): { width: number; recompute: boolean } => {
    if (kind === 'k') return { width: ranks[head], recompute: true };
    if (kind === 'q' && mode === 'absorbed') return { width: ranks[layout.queryToKv[head]], recompute: true };
    return { width: hd, recompute: false };
  };
  const tensorPlans: TensorPlan[] = [];
  const placed = new Map<string, SliceRef>();
  const replaced = new Map<string, NewTensor>();
  for (const name of layer.projectionTensors) {
    const info = ckpt.tensor(name);
    const mine = all.filter((s) => s.slice.tensor === name).sort((a, b) => a.slice.offset - b.slice.offset);
    if (mine.length === 0) continue;
    const orientation = mine[0].slice.orientation;
    const bias = mine[0].slice.bias;
    const srcFeatures = orientation === 'linear' ? info.shape[0] : info.shape[1];
    const inFeatures = orientation === 'linear' ? info.shape[1] : info.shape[0];
    const segments: Segment[] = [];
    let src = 0;
    let dst = 0;
    const gap = (until: number) => {
      if (until > src) {
        segments.push({ kind: 'gap', head: -1, srcOffset: src, srcWidth: until - src, dstOffset: dst, dstWidth: until - src, recompute: false });
        dst += until - src;
        src = until;
      }
    };
    for (const s of mine) {
      if (s.slice.offset < src) throw new FactoredKeysError(`${info.file}: head slices of "${name}" overlap; cannot rewrite it`);
      gap(s.slice.offset);
      const { width, recompute } = widthOf(s.kind, s.head);
      segments.push({ kind: s.kind, head: s.head, srcOffset: src, srcWidth: hd, dstOffset: dst, dstWidth: width, recompute });
      placed.set(`${s.kind}:${s.head}`, { tensor: name, orientation, offset: dst, width, bias: bias ?? null });
      src += hd;
      dst += width;
    }
    gap(srcFeatures);
    const plan: TensorPlan = { name, orientation, bias, segments, srcFeatures, dstFeatures: dst, inFeatures };
    if (segments.some((s) => s.recompute)) {
      tensorPlans.push(plan);
      const shape = orientation === 'linear' ? [dst, inFeatures] : [inFeatures, dst];
      replaced.set(name, { name, dtype: info.dtype, shape, byteLength: dst * inFeatures * bytesPerElement(info.dtype) });
      if (bias) {
        const b = ckpt.tensor(bias);
        if (b.shape.length !== 1 || b.shape[0] !== srcFeatures) throw new FactoredKeysError(`${b.file}: bias "${bias}" shape [${b.shape.join(', ')}] does not match "${name}"`);
        replaced.set(bias, { name: bias, dtype: b.dtype, shape: [dst], byteLength: dst * bytesPerElement(b.dtype) });
      }
    }
  }
  const added: { after: string; tensor: NewTensor }[] = [];
  let keyUp: string | null = null;
  if (mode === 'latent') {
    keyUp = keyUpName(layer.keyHeads[0].tensor);
    if (ckpt.tensors.has(keyUp)) throw new FactoredKeysError(`${ckpt.tensor(keyUp).file}: tensor "${keyUp}" already exists; is this checkpoint already factored?`);
    const total = ranks.reduce((a, b) => a + b, 0);
    added.push({ after: layer.keyHeads[0].tensor, tensor: { name: keyUp, dtype, shape: [layout.kvHeads * hd, total], byteLength: layout.kvHeads * hd * total * bytesPerElement(dtype) } });
  }
  const ref = (kind: SegmentKind, head: number) => placed.get(`${kind}:${head}`)!;
  const entry: FactoredLayer = {
    layer: layer.layer,
    query: layer.queryHeads.map((_, h) => ref('q', h)),
    key: layer.keyHeads.map((_, g) => ref('k', g)),
    value: layer.valueHeads.map((_, g) => ref('v', g)),
    key_up: keyUp,
  };
  return { layer: layer.layer, entry, replaced, added, tensorPlans, ranks, mode };
}

/** Transposes a row-major rows x cols matrix of `width`-byte elements. */
function transposeBytes(src: Uint8Array, rows: number, cols: number, width: number): Uint8Array {
  const out = new Uint8Array(src.byteLength);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const s = (i * cols + j) * width;
      const d = (j * rows + i) * width;
      for (let b = 0; b < width; b++) out[d + b] = src[s + b];
    }
  }
  return out;
}

/** New feature rows (r x d) = Tᵀ·F for a map T (n x r) and feature rows F (n x d), in float64. */
async function mapFeatures(features: Float32Array, d: number, map: Float64Array, n: number, r: number): Promise<Float32Array> {
  const tT = new Float64Array(r * n);
  for (let a = 0; a < n; a++) for (let j = 0; j < r; j++) tT[j * n + a] = map[a * r + j];
  return Float32Array.from(await batchedMatmul(tT, Float64Array.from(features), 1, r, n, d));
}

/**
 * Computes the bytes of every new tensor of a layer. `maps[g]` are the KV head's truncated
 * maps (rank = ranks[g]). Reads each rewritten projection tensor once, as raw bytes.
 */
export async function produceLayer(ckpt: Checkpoint, layout: AttentionLayout, rw: LayerRewrite, maps: readonly TruncatedMaps[]): Promise<Map<string, Uint8Array>> {
  const hd = layout.headDim;
  const out = new Map<string, Uint8Array>();
  for (const p of rw.tensorPlans) {
    const info = ckpt.tensor(p.name);
    const width = bytesPerElement(info.dtype);
    const d = p.inFeatures;
    let raw = await ckpt.readRows(p.name);
    // Work feature-major: row f = all input weights of output feature f.
    if (p.orientation === 'conv1d') raw = transposeBytes(raw, d, p.srcFeatures, width);
    const rowBytes = d * width;
    const dst = new Uint8Array(p.dstFeatures * rowBytes);
    const rawF32 = await ckpt.readRowsF32(p.name);
    const decodedFeatures = (offset: number) =>
      p.orientation === 'linear' ? rawF32.subarray(offset * d, (offset + hd) * d) : featuresOfConv(rawF32, d, p.srcFeatures, offset, hd);
    let biasRaw: Uint8Array | undefined;
    let biasF32: Float32Array | undefined;
    let biasDst: Uint8Array | undefined;
    let biasWidth = 0;
    if (p.bias) {
      const bi = ckpt.tensor(p.bias);
      biasWidth = bytesPerElement(bi.dtype);
      biasRaw = await ckpt.readRows(p.bias);
      biasF32 = await ckpt.readRowsF32(p.bias);
      biasDst = new Uint8Array(p.dstFeatures * biasWidth);
    }
    for (const s of p.segments) {
      if (!s.recompute) {
        dst.set(raw.subarray(s.srcOffset * rowBytes, (s.srcOffset + s.srcWidth) * rowBytes), s.dstOffset * rowBytes);
        if (biasDst && biasRaw) biasDst.set(biasRaw.subarray(s.srcOffset * biasWidth, (s.srcOffset + s.srcWidth) * biasWidth), s.dstOffset * biasWidth);
        continue;
      }
      const g = s.kind === 'k' ? s.head : layout.queryToKv[s.head];
      const m = maps[g];
      const map = s.kind === 'k' ? m.keyMap : m.queryMap;
      const features = decodedFeatures(s.srcOffset);
      dst.set(encodeFromFloat32(info.dtype, await mapFeatures(features, d, map, hd, m.rank)), s.dstOffset * rowBytes);
      if (biasDst && biasF32) {
        const b = biasF32.subarray(s.srcOffset, s.srcOffset + hd);
        const nb = new Float32Array(m.rank);
        for (let j = 0; j < m.rank; j++) {
          let acc = 0;
          for (let a = 0; a < hd; a++) acc += b[a] * map[a * m.rank + j];
          nb[j] = acc;
        }
        biasDst.set(encodeFromFloat32(ckpt.tensor(p.bias!).dtype, nb), s.dstOffset * biasWidth);
      }
    }
    out.set(p.name, p.orientation === 'conv1d' ? transposeBytes(dst, p.dstFeatures, d, width) : dst);
    if (p.bias && biasDst) out.set(p.bias, biasDst);
  }
  for (const { tensor } of rw.added) {
    // key_up [kv*hd, Σr] block-diagonal: row g*hd + a, column off_g + j holds B[j][a] = T_q[a][j].
    const total = tensor.shape[1];
    const up = new Float32Array(tensor.shape[0] * total);
    let off = 0;
    for (let g = 0; g < rw.ranks.length; g++) {
      const m = maps[g];
      for (let a = 0; a < hd; a++) for (let j = 0; j < m.rank; j++) up[(g * hd + a) * total + off + j] = m.queryMap[a * m.rank + j];
      off += m.rank;
    }
    out.set(tensor.name, encodeFromFloat32(tensor.dtype, up));
  }
  return out;
}

function featuresOfConv(all: Float32Array, d: number, cols: number, offset: number, count: number): Float32Array {
  const f = new Float32Array(count * d);
  for (let x = 0; x < d; x++) for (let j = 0; j < count; j++) f[j * d + x] = all[x * cols + offset + j];
  return f;
}
