/**
 * What the evaluator runs: a model's description (src/core/arch) checked against the features
 * the forward graph implements, and every weight role resolved to a constant tensor in its
 * stored 16/32-bit form, so the graph can Cast in-graph instead of doubling bytes here.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { describeModel, requireFeatures, type ModelFeature } from '../arch';
import type { LinearRole, ModelDescription, NormRole } from '../arch/description';
import type { HeadSlice } from '../arch/layout';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { decodeToFloat32, encodeFromFloat32, type Dtype } from '../checkpoint/dtypes';
import type { ConstTensor, ElemType } from '../compute/onnx';
import { FactoredKeysError } from '../errors';
import { LayerTensorCache, readHeadFeatures } from '../factor/basis';

/** Every feature the forward graph implements (eval refuses the rest by name). */
export const EVAL_FEATURES: readonly ModelFeature[] = [
  'q-norm',
  'k-norm',
  'rope-interleaved',
  'partial-rotary',
  'rope-scaling',
  'nope-layers',
  'sliding-window',
  'attention-softcap',
  'final-softcap',
  'attention-sinks',
  'score-scale',
  'parallel-residual',
  'post-norms',
  'moe',
  'multipliers',
  'learned-positions',
];

/** A model's description plus the dtype its attention weights are stored (and factored) in. */
export interface ModelSpec extends ModelDescription {
  readonly weightDtype: Dtype;
}

/** Reads a checkpoint's description for evaluation; refuses features the graph lacks. */
export function readModelSpec(ckpt: Checkpoint): ModelSpec {
  const m = describeModel(ckpt, { factored: ckpt.config.factored_keys !== undefined, complete: true });
  if (m.latentAttention) throw new FactoredKeysError(`${ckpt.dir}/config.json: eval does not support multi-head latent attention (${m.architecture})`);
  requireFeatures(m, `${ckpt.dir}/config.json: eval`, EVAL_FEATURES);
  return { ...m, weightDtype: ckpt.tensor(m.blocks[0].attention.value[0].tensor).dtype };
}

/** y = x·W (+ b), with W given as stored: `[in, out]`, or `[out, in]` with `transposed`. */
export interface Linear {
  readonly weight: ConstTensor;
  /** True for nn.Linear's `[out, in]`: the graph multiplies by the transpose. */
  readonly transposed: boolean;
  readonly bias?: ConstTensor;
}

/** A norm's weights; its kind and epsilon come from the description. */
export interface Norm {
  readonly role: NormRole;
  readonly weight: ConstTensor;
  readonly bias?: ConstTensor;
}

/** Where a layer's attention gets q, k and v. */
export interface QkvWeights {
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
}

export type MlpWeights =
  | { readonly kind: 'dense'; readonly up: Linear; readonly down: Linear }
  | { readonly kind: 'gated'; readonly gate: Linear; readonly up: Linear; readonly down: Linear }
  | { readonly kind: 'moe'; readonly router: Linear; readonly experts: readonly { readonly gate: Linear; readonly up: Linear; readonly down: Linear }[] }
  | { readonly kind: 'gpt-oss-moe'; readonly router: Linear; readonly gateUp: ConstTensor; readonly gateUpBias: ConstTensor; readonly down: ConstTensor; readonly downBias: ConstTensor };

/** One transformer block's weights, original or factored. */
export interface LayerWeights {
  readonly attentionInputNorm?: Norm;
  readonly attentionOutputNorm?: Norm;
  readonly mlpInputNorm?: Norm;
  readonly mlpOutputNorm?: Norm;
  readonly qkv: QkvWeights;
  /**
   * Width of each head's q and k in the score product: head_dim, or the (padded) rank of
   * absorbed factored queries and keys.
   */
  readonly qkHeadDim: number;
  /**
   * Latent factored keys: the k projection yields the cached latent c, and the per-head keys
   * are k = c·keyUp (block-diagonal over KV heads), before any k-norm and RoPE.
   */
  readonly keyUp?: Linear;
  readonly qNorm?: Norm;
  readonly kNorm?: Norm;
  readonly sinks?: ConstTensor;
  readonly out: Linear;
  readonly mlp: MlpWeights;
}

/** Everything outside the blocks. */
export interface OuterWeights {
  readonly embed: ConstTensor;
  readonly positions?: ConstTensor;
  readonly finalNorm?: Norm;
  readonly head: Linear;
}

const ORT_TYPE: Partial<Record<Dtype, ElemType>> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/** The ONNX element type a checkpoint dtype is fed as (others are decoded to float32). */
export function feedType(dtype: Dtype): ElemType {
  return ORT_TYPE[dtype] ?? 'float32';
}

/**
 * Reads rows [start, end) of a tensor (all when omitted) as a constant: F32/F16/BF16 as stored,
 * with its `origin`, other float types decoded. `inPlace`: F32/F16/BF16 bytes are read only when
 * something asks for `data` (a consumer that references the file in place never does).
 */
export async function readConst(ckpt: Checkpoint, name: string, rows?: { start: number; count: number }, inPlace = false): Promise<ConstTensor> {
  const t = ckpt.tensor(name);
  const type = ORT_TYPE[t.dtype];
  const dims = rows ? [rows.count, ...t.shape.slice(1)] : t.shape;
  const [a, b] = rows ? [rows.start, rows.start + rows.count] : [0, undefined];
  if (!type) return { type: 'float32', dims, data: await ckpt.readRowsF32(name, a, b) };
  const span = ckpt.rowSpan(name, a, b);
  const origin = { file: span.file, offset: span.offset };
  if (!inPlace) return { type, dims, data: await ckpt.readRows(name, a, b), origin };
  let data: Uint8Array | undefined;
  return {
    type,
    dims,
    origin,
    get data(): Uint8Array {
      return (data ??= readBytesSync(span.file, span.offset, span.length, name));
    },
  };
}

/** `length` bytes at `offset` of `file`, read now (the in-place path's rare fallback). */
function readBytesSync(file: string, offset: number, length: number, tensor: string): Uint8Array {
  const out = new Uint8Array(length);
  let fd = -1;
  try {
    fd = openSync(file, 'r');
    for (let done = 0; done < length; ) {
      const n = readSync(fd, out, done, length - done, offset + done);
      if (n <= 0) throw new Error('file ends early');
      done += n;
    }
  } catch (e) {
    throw new FactoredKeysError(`${file}: tensor "${tensor}" could not be read: ${(e as Error).message}`);
  } finally {
    if (fd >= 0) closeSync(fd);
  }
  return out;
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

/** One head's projection, feature-major: row j (of `width`) holds output feature j's input weights. */
export interface HeadFeatures {
  readonly features: Float32Array;
  readonly bias?: Float32Array;
  readonly width: number;
}

/**
 * Concatenates heads into one nn.Linear-shaped projection [n·pad, d], each head zero-padded to
 * `pad` output features, rounded to `dtype` (what an export stores).
 */
export function assembleHeads(heads: readonly HeadFeatures[], pad: number, d: number, dtype: Dtype): Linear {
  const w = new Float32Array(heads.length * pad * d);
  const anyBias = heads.some((h) => h.bias);
  const b = anyBias ? new Float32Array(heads.length * pad) : undefined;
  heads.forEach((h, i) => {
    w.set(h.features.subarray(0, h.width * d), i * pad * d);
    if (b && h.bias) b.set(h.bias.subarray(0, h.width), i * pad);
  });
  return { weight: constFromFloat32(w, [heads.length * pad, d], dtype), transposed: true, bias: b ? constFromFloat32(b, [b.length], dtype) : undefined };
}

/** Reads the weights of an unfactored checkpoint by the roles of its description. */
export class CheckpointWeights {
  /** Weights keep their file origin and are read only on demand (see {@link readConst}). */
  private inPlace = false;
  constructor(
    readonly ckpt: Checkpoint,
    readonly spec: ModelSpec,
  ) {}

  /** Whether later reads leave stored bytes in the file for a consumer that references them in place. */
  referInPlace(on: boolean): void {
    this.inPlace = on;
  }

  private read(name: string, rows?: { start: number; count: number }): Promise<ConstTensor> {
    return readConst(this.ckpt, name, rows, this.inPlace);
  }

  async linear(l: LinearRole): Promise<Linear> {
    const transposed = l.orientation === 'linear';
    if (l.rows && !transposed) throw new FactoredKeysError(`${this.ckpt.dir}: row slices of Conv1D tensor "${l.weight}" are not supported`);
    const weight = await this.read(l.weight, l.rows);
    const bias = l.bias ? await this.read(l.bias, l.rows) : undefined;
    return { weight, transposed, bias };
  }

  async norm(n: NormRole | null): Promise<Norm | undefined> {
    if (!n) return undefined;
    return { role: n, weight: await this.read(n.weight), bias: n.bias ? await this.read(n.bias) : undefined };
  }

  async outer(): Promise<OuterWeights> {
    const s = this.spec;
    const embed = await this.read(s.embedding.tokens);
    const head = s.head.weight === s.embedding.tokens && !s.head.bias ? { weight: embed, transposed: true } : await this.linear(s.head);
    return { embed, positions: s.embedding.positions ? await this.read(s.embedding.positions) : undefined, finalNorm: await this.norm(s.finalNorm), head };
  }

  /** Layer `i` exactly as stored. */
  async layer(i: number): Promise<LayerWeights> {
    return { ...(await this.layerExceptQkv(i)), qkv: await this.qkv(i), qkHeadDim: this.spec.headDim };
  }

  /**
   * One projection from its head slices: a row range read as stored when the heads are
   * consecutive rows of one nn.Linear tensor, else gathered head by head (fused and
   * interleaved layouts, Conv1D) and re-encoded losslessly in the stored dtype.
   */
  private async projection(slices: readonly HeadSlice[]): Promise<Linear> {
    const hd = this.spec.headDim;
    const s0 = slices[0];
    const consecutive = slices.every((s, h) => s.tensor === s0.tensor && s.orientation === 'linear' && s.offset === s0.offset + h * hd && s.bias === s0.bias);
    if (consecutive) return this.linear({ weight: s0.tensor, orientation: 'linear', bias: s0.bias, rows: { start: s0.offset, count: slices.length * hd } });
    const cache = new LayerTensorCache(this.ckpt);
    const heads: HeadFeatures[] = [];
    for (const s of slices) heads.push({ ...(await readHeadFeatures(this.ckpt, cache, s, hd)), width: hd });
    cache.clear();
    return assembleHeads(heads, hd, this.spec.hidden, this.spec.weightDtype);
  }

  /** The q/k/v projections of layer `i` as stored. */
  async qkv(i: number): Promise<QkvWeights> {
    const a = this.spec.blocks[i].attention;
    return { q: await this.projection(a.query), k: await this.projection(a.key), v: await this.projection(a.value) };
  }

  /** Everything of layer `i` but its q/k/v projections (which factoring replaces). */
  async layerExceptQkv(i: number): Promise<Omit<LayerWeights, 'qkv' | 'qkHeadDim' | 'keyUp'>> {
    const b = this.spec.blocks[i];
    const a = b.attention;
    return {
      attentionInputNorm: await this.norm(b.attentionInputNorm),
      attentionOutputNorm: await this.norm(b.attentionOutputNorm),
      mlpInputNorm: await this.norm(b.mlpInputNorm),
      mlpOutputNorm: await this.norm(b.mlpOutputNorm),
      qNorm: await this.norm(a.qNorm?.norm ?? null),
      kNorm: await this.norm(a.kNorm?.norm ?? null),
      sinks: a.sinks ? await this.read(a.sinks) : undefined,
      out: await this.linear(a.output),
      mlp: await this.mlp(i),
    };
  }

  private async mlp(i: number): Promise<MlpWeights> {
    const m = this.spec.blocks[i].mlp;
    switch (m.kind) {
      case 'dense':
        return { kind: 'dense', up: await this.linear(m.up), down: await this.linear(m.down) };
      case 'gated':
        return { kind: 'gated', gate: await this.linear(m.gate), up: await this.linear(m.up), down: await this.linear(m.down) };
      case 'moe': {
        const experts = [];
        for (const e of m.experts) experts.push({ gate: await this.linear(e.gate), up: await this.linear(e.up), down: await this.linear(e.down) });
        return { kind: 'moe', router: await this.linear(m.router), experts };
      }
      case 'gpt-oss-moe':
        return {
          kind: 'gpt-oss-moe',
          router: await this.linear(m.router),
          gateUp: await this.read(m.gateUp.weight),
          gateUpBias: await this.read(m.gateUp.bias),
          down: await this.read(m.down.weight),
          downBias: await this.read(m.down.bias),
        };
    }
  }
}
