/**
 * ONNX forward graphs of decoder-only transformers, original or factored, built from a model
 * description (src/core/arch): the graph switches on each layer's features (norm kinds and
 * places, q/k norms, RoPE style/scaling/partial/NoPE, score scale, softcaps, sliding windows,
 * sinks, parallel residuals, dense/gated/MoE MLPs, multipliers), never on family names.
 *
 * A model may be cut into segments of whole layers (each one session) so that no single ONNX
 * protobuf approaches its 2 GB limit; hidden states pass between segments as float32
 * [batch·seq, hidden]. Weights enter as initializers in their stored 16/32-bit type and are Cast
 * to float32 in the graph; all arithmetic is float32, as transformers' float32 reference does it.
 */
import type { Activation, LayerDescription, RopeSpec } from '../arch/description';
import { ropeTables } from '../arch/rope';
import { dataTypeCode, floatAttr, GraphBuilder, type ConstTensor, type ElemType, type ExternalData } from '../compute/onnx';
import type { LayerWeights, Linear, MlpWeights, ModelSpec, Norm, OuterWeights } from './model';

/** float32's lowest value: what transformers adds for masked positions. */
const MASKED = -3.4028234663852886e38;

/** What one segment computes. */
export interface SegmentSpec {
  readonly spec: ModelSpec;
  /** Tokens per window (fixed in the graph; the batch of windows is dynamic). */
  readonly seq: number;
  /** Blocks of this segment, with their model-wide layer index. */
  readonly layers: readonly { readonly index: number; readonly weights: LayerWeights }[];
  /** Present on the first segment (embedding) and the last (final norm, head, NLL). */
  readonly outer?: OuterWeights;
  readonly first: boolean;
  readonly last: boolean;
  /** Also output logits [batch, seq, vocab] from the last segment (tests). */
  readonly logits?: boolean;
  /**
   * Also output each block's attention input — the tensor the q/k/v projections read, after the
   * block's input norm when it has one — as `attentionInputName(index)` [batch·seq, hidden]
   * (calibration, src/core/calibration).
   */
  readonly captureAttentionInput?: boolean;
  /**
   * Also output each block's query and key projections x·W + b, before any q/k norm and RoPE, as
   * `projectionName(index, 'query' | 'key')` [batch·seq, heads·head_dim] (calibration).
   */
  readonly captureProjections?: boolean;
  /**
   * RMSNorms as onnxruntime's one `SimplifiedLayerNormalization` node instead of seven
   * elementwise ones (GPU providers: fewer kernel launches and passes over the activations; the
   * CPU keeps the exact elementwise form its results were checked with).
   */
  readonly fusedNorms?: boolean;
  /**
   * Where the weights go: without one they are initializers in their stored type, Cast to
   * float32 in the graph; with one, each is converted once (per load) to the type the store
   * chooses and kept as external data (src/core/eval/forward.ts).
   */
  readonly weights?: WeightStore;
}

/** How a weight is used: matrix products and embedding lookups may run in 16 bits. */
export type WeightUse = 'matmul' | 'gather' | 'other';

/** Receives a segment's weights; returns the type each was stored as and where its bytes are. */
export interface WeightStore {
  put(name: string, t: ConstTensor, use: WeightUse): { readonly type: ElemType; readonly external: ExternalData };
  /** Whether float16 weights multiply float16 activations (else every weight is widened to float32). */
  readonly halfProducts: boolean;
}

/** Graph input/output names shared by the builder and the runner. */
export const IO = { ids: 'ids', targets: 'targets', hiddenIn: 'hidden_in', hiddenOut: 'hidden_out', nll: 'nll', logits: 'logits' } as const;

/** Output name of block `index`'s attention input (see SegmentSpec.captureAttentionInput). */
export const attentionInputName = (index: number): string => `attention_input_${index}`;

/** Output name of block `index`'s query or key projection (see SegmentSpec.captureProjections). */
export const projectionName = (index: number, which: 'query' | 'key'): string => `${which}_projection_${index}`;

/** Additive causal mask [seq, seq]; with a window, query i sees key j only when i − j < window. */
export function causalMask(seq: number, window: number | null): Float32Array {
  const m = new Float32Array(seq * seq);
  for (let i = 0; i < seq; i++) for (let j = 0; j < seq; j++) if (j > i || (window !== null && i - j >= window)) m[i * seq + j] = MASKED;
  return m;
}

/** Small helper over GraphBuilder: float32 views of weights, linears, norms, shared tables. */
class Net {
  private readonly cache = new Map<ConstTensor, string>();
  private readonly inits = new Map<ConstTensor, { name: string; type: ElemType }>();
  /** One mask per window size and one cos/sin pair per distinct RoPE, shared by the segment's layers. */
  private readonly masks = new Map<number | null, string>();
  private readonly ropes = new Map<string, { cos: string; sin: string }>();
  constructor(
    readonly g: GraphBuilder,
    readonly seq: number,
    readonly store?: WeightStore,
    private readonly fusedNorms = false,
  ) {}

  /** The initializer of a weight, in the type it is kept in (stored type, or the store's choice). */
  private init(t: ConstTensor, name: string, use: WeightUse): { name: string; type: ElemType } {
    let hit = this.inits.get(t);
    if (!hit) {
      if (this.store) {
        const r = this.store.put(name, t, use);
        hit = { name: this.g.externalInitializer(name, r.type, t.dims, r.external), type: r.type };
      } else {
        hit = { name: this.g.initializer(name, t.type, t.dims, t.data), type: t.type };
      }
      this.inits.set(t, hit);
    }
    return hit;
  }

  /** A weight as a float32 value (Cast in-graph when kept in 16 bits). */
  weight(t: ConstTensor, name: string, use: WeightUse = 'other'): string {
    const hit = this.cache.get(t);
    if (hit) return hit;
    const init = this.init(t, name, use);
    const v = init.type === 'float32' ? init.name : this.g.op('Cast', [init.name], { to: dataTypeCode('float32') });
    this.cache.set(t, v);
    return v;
  }

  /** The float16 initializer of a weight the store keeps in float16 for 16-bit products, else undefined. */
  half(t: ConstTensor, name: string, use: WeightUse): string | undefined {
    if (!this.store?.halfProducts) return undefined;
    const init = this.init(t, name, use);
    return init.type === 'float16' ? init.name : undefined;
  }

  /**
   * Rows `ids` of a table as float32: gathered in the type the table is kept in, then only those
   * rows widened (a 16-bit table in place is never widened whole for a lookup). Same values as
   * gathering from the widened table.
   */
  rows(t: ConstTensor, name: string, ids: string): string {
    const init = this.init(t, name, 'gather');
    const picked = this.g.op('Gather', [init.name, ids], { axis: 0 });
    return init.type === 'float32' ? picked : this.g.op('Cast', [picked], { to: dataTypeCode('float32') });
  }

  ints(values: readonly number[]): string {
    return this.g.int64s(values);
  }

  scalar(value: number): string {
    return this.g.constant('float32', [], Float32Array.of(value));
  }

  /** x2d [n, in] · W (+ b) → [n, out]; a float16 W multiplies float16 activations, result float32. */
  linear(x: string, l: Linear, name: string): string {
    const w16 = this.half(l.weight, `${name}_w`, 'matmul');
    if (w16) {
      const xh = this.g.op('Cast', [x], { to: dataTypeCode('float16') });
      const y = this.g.op('Cast', [this.g.op('Gemm', [xh, w16], l.transposed ? { transB: 1 } : {})], { to: dataTypeCode('float32') });
      return l.bias ? this.g.op('Add', [y, this.weight(l.bias, `${name}_b`)]) : y;
    }
    const w = this.weight(l.weight, `${name}_w`, 'matmul');
    const inputs = [x, w];
    if (l.bias) inputs.push(this.weight(l.bias, `${name}_b`));
    return this.g.op('Gemm', inputs, l.transposed ? { transB: 1 } : {});
  }

  /** The norm of x over its last axis, as its kind says. */
  norm(x: string, n: Norm, name: string): string {
    const g = this.g;
    const { kind, eps } = n.role;
    if (kind === 'layer') {
      const inputs = [x, this.weight(n.weight, `${name}_w`)];
      if (n.bias) inputs.push(this.weight(n.bias, `${name}_b`));
      return g.op('LayerNormalization', inputs, { axis: -1, epsilon: floatAttr(eps) });
    }
    // RMSNorm: x / sqrt(mean(x²) + eps), times w (Llama) or (1 + w) (Gemma)
    let w = this.weight(n.weight, `${name}_w`);
    if (kind === 'rms-offset') w = g.op('Add', [w, this.scalar(1)]);
    // float32 statistics either way (stash_type 1)
    if (this.fusedNorms) return g.op('SimplifiedLayerNormalization', [x, w], { axis: -1, epsilon: floatAttr(eps), stash_type: 1 });
    const ms = g.op('ReduceMean', [g.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
    const inv = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [ms, this.scalar(eps)])])]);
    return g.op('Mul', [g.op('Mul', [x, inv]), w]);
  }

  /** Additive causal mask [seq, seq], optionally limited to a sliding window (one per window size). */
  mask(window: number | null): string {
    let v = this.masks.get(window);
    if (!v) {
      v = this.g.initializer(`mask_${window ?? 'causal'}`, 'float32', [this.seq, this.seq], causalMask(this.seq, window));
      this.masks.set(window, v);
    }
    return v;
  }

  /** cos/sin tables [seq, 1, rotaryDim] of a RoPE (one pair per distinct RoPE). */
  rope(r: RopeSpec): { cos: string; sin: string } {
    const key = JSON.stringify(r);
    const hit = this.ropes.get(key);
    if (hit) return hit;
    const t = ropeTables(r, this.seq);
    const id = this.ropes.size;
    const v = { cos: this.g.initializer(`rope_cos_${id}`, 'float32', [this.seq, 1, r.rotaryDim], t.cos), sin: this.g.initializer(`rope_sin_${id}`, 'float32', [this.seq, 1, r.rotaryDim], t.sin) };
    this.ropes.set(key, v);
    return v;
  }
}

/** Applies RoPE to x [B, S, n, d]: the first rotaryDim features rotate, the rest pass through. */
function applyRope(net: Net, x: string, r: RopeSpec, heads: number, dim: number): string {
  const g = net.g;
  const { cos, sin } = net.rope(r);
  const rot = r.rotaryDim;
  let xr = x;
  let pass: string | undefined;
  if (rot < dim) [xr, pass] = g.opMulti('Split', [x, net.ints([rot, dim - rot])], { axis: -1 }, { outputCount: 2 });
  let rotated: string;
  if (r.style === 'rotate-half') {
    const [x1, x2] = g.opMulti('Split', [xr, net.ints([rot / 2, rot / 2])], { axis: -1 }, { outputCount: 2 });
    rotated = g.op('Concat', [g.op('Neg', [x2]), x1], { axis: -1 });
  } else {
    // pairs (2i, 2i+1) → (−x[2i+1], x[2i])
    const pairs = g.op('Reshape', [xr, net.ints([-1, net.seq, heads, rot / 2, 2])]);
    const [even, odd] = g.opMulti('Split', [pairs, net.ints([1, 1])], { axis: -1 }, { outputCount: 2 });
    rotated = g.op('Reshape', [g.op('Concat', [g.op('Neg', [odd]), even], { axis: -1 }), net.ints([-1, net.seq, heads, rot])]);
  }
  const out = g.op('Add', [g.op('Mul', [xr, cos]), g.op('Mul', [rotated, sin])]);
  return pass ? g.op('Concat', [out, pass], { axis: -1 }) : out;
}

/** One attention block: x2d [B·S, hidden] → [B·S, hidden]. */
function attention(net: Net, x: string, w: LayerWeights, block: LayerDescription, spec: ModelSpec, captureProjections = false): string {
  const g = net.g;
  const seq = net.seq;
  const a = block.attention;
  const H = spec.queryHeads;
  const KV = spec.kvHeads;
  const G = H / KV;
  const hd = spec.headDim;
  const dq = w.qkHeadDim;
  const name = `l${block.index}`;
  let q = net.linear(x, w.qkv.q, `${name}_q`);
  let k = net.linear(x, w.qkv.k, `${name}_k`);
  const v = net.linear(x, w.qkv.v, `${name}_v`);
  // latent keys are rebuilt before any k-norm and RoPE, so the result is the full-shape model's
  if (w.keyUp) k = net.linear(k, w.keyUp, `${name}_kup`);
  if (captureProjections) {
    g.output(g.op('Identity', [q], {}, { outputs: [projectionName(block.index, 'query')] }), 'float32', ['tokens', H * dq]);
    g.output(g.op('Identity', [k], {}, { outputs: [projectionName(block.index, 'key')] }), 'float32', ['tokens', KV * dq]);
  }
  if (a.qNorm?.scope === 'projection' && w.qNorm) q = net.norm(q, w.qNorm, `${name}_qn`);
  if (a.kNorm?.scope === 'projection' && w.kNorm) k = net.norm(k, w.kNorm, `${name}_kn`);
  // [B·S, n·d] → [B, S, n, d]
  let q4 = g.op('Reshape', [q, net.ints([-1, seq, H, dq])]);
  let k4 = g.op('Reshape', [k, net.ints([-1, seq, KV, dq])]);
  if (a.qNorm?.scope === 'head' && w.qNorm) q4 = net.norm(q4, w.qNorm, `${name}_qn`);
  if (a.kNorm?.scope === 'head' && w.kNorm) k4 = net.norm(k4, w.kNorm, `${name}_kn`);
  if (a.rope) {
    q4 = applyRope(net, q4, a.rope, H, dq);
    k4 = applyRope(net, k4, a.rope, KV, dq);
  }
  // GQA without copying keys: queries [B, KV, G, S, d] against keys [B, KV, 1, d, S].
  const q5 = g.op('Transpose', [g.op('Reshape', [q4, net.ints([-1, seq, KV, G, dq])])], { perm: [0, 2, 3, 1, 4] });
  const kT = g.op('Transpose', [g.op('Reshape', [k4, net.ints([-1, seq, KV, 1, dq])])], { perm: [0, 2, 3, 4, 1] });
  const v5 = g.op('Transpose', [g.op('Reshape', [v, net.ints([-1, seq, KV, 1, hd])])], { perm: [0, 2, 3, 1, 4] });
  let scores = g.op('Mul', [g.op('MatMul', [q5, kT]), net.scalar(a.scale)]);
  if (a.softcap !== null) scores = g.op('Mul', [g.op('Tanh', [g.op('Mul', [scores, net.scalar(1 / a.softcap)])]), net.scalar(a.softcap)]);
  scores = g.op('Add', [scores, net.mask(a.slidingWindow)]);
  let probs: string;
  if (w.sinks) {
    // one extra logit per query head joins the softmax, then its column is dropped
    const sinks = g.op('Reshape', [net.weight(w.sinks, `${name}_sinks`), net.ints([1, KV, G, 1, 1])]);
    const column = g.op('Add', [g.op('Mul', [g.op('Slice', [scores, net.ints([0]), net.ints([1]), net.ints([-1])]), net.scalar(0)]), sinks]);
    const all = g.op('Softmax', [g.op('Concat', [scores, column], { axis: -1 })], { axis: -1 });
    probs = g.op('Slice', [all, net.ints([0]), net.ints([seq]), net.ints([-1])]);
  } else {
    probs = g.op('Softmax', [scores], { axis: -1 });
  }
  const o5 = g.op('MatMul', [probs, v5]); // [B, KV, G, S, hd]
  // heads concatenate in query-head order h = g·G + j into the output projection
  const o = g.op('Reshape', [g.op('Transpose', [o5], { perm: [0, 3, 1, 2, 4] }), net.ints([-1, H * hd])]);
  return net.linear(o, w.out, `${name}_o`);
}

function activate(net: Net, h: string, act: Activation): string {
  const g = net.g;
  switch (act) {
    case 'silu':
      return g.op('Mul', [h, g.op('Sigmoid', [h])]);
    case 'relu':
      return g.op('Relu', [h]);
    case 'gelu':
      return g.op('Mul', [g.op('Mul', [h, net.scalar(0.5)]), g.op('Add', [g.op('Erf', [g.op('Mul', [h, net.scalar(Math.SQRT1_2)])]), net.scalar(1)])]);
    case 'gelu-tanh': {
      const cube = g.op('Mul', [g.op('Mul', [h, h]), h]);
      const inner = g.op('Mul', [g.op('Add', [h, g.op('Mul', [cube, net.scalar(0.044715)])]), net.scalar(Math.sqrt(2 / Math.PI))]);
      return g.op('Mul', [g.op('Mul', [h, net.scalar(0.5)]), g.op('Add', [g.op('Tanh', [inner]), net.scalar(1)])]);
    }
  }
}

/** Expert weights [N, E] from router logits: zero except the chosen top-k. */
function routingWeights(net: Net, logits: string, routing: { order: 'softmax-topk' | 'topk-softmax'; topK: number; renormalize: boolean }): string {
  const g = net.g;
  const k = net.ints([routing.topK]);
  const source = routing.order === 'softmax-topk' ? g.op('Softmax', [logits], { axis: -1 }) : logits;
  const [top, indices] = g.opMulti('TopK', [source, k], { axis: -1, largest: 1, sorted: 1 }, { outputCount: 2 });
  let values = top;
  if (routing.order === 'topk-softmax') values = g.op('Softmax', [values], { axis: -1 });
  else if (routing.renormalize) values = g.op('Div', [values, g.op('ReduceSum', [values, net.ints([-1])], { keepdims: 1 })]);
  const zeros = g.op('Mul', [logits, net.scalar(0)]);
  return g.op('ScatterElements', [zeros, indices, values], { axis: 1 });
}

function mlp(net: Net, x: string, w: MlpWeights, block: LayerDescription): string {
  const g = net.g;
  const name = `l${block.index}`;
  const role = block.mlp;
  const act = role.kind === 'gpt-oss-moe' ? 'silu' : role.activation;
  switch (w.kind) {
    case 'dense':
      return net.linear(activate(net, net.linear(x, w.up, `${name}_up`), act), w.down, `${name}_down`);
    case 'gated': {
      const gate = activate(net, net.linear(x, w.gate, `${name}_gate`), act);
      return net.linear(g.op('Mul', [gate, net.linear(x, w.up, `${name}_up`)]), w.down, `${name}_down`);
    }
    case 'moe': {
      if (role.kind !== 'moe') throw new Error('MoE weights for a non-MoE block');
      // every expert runs on every token; the router's weights are zero outside each token's top-k
      const weights = routingWeights(net, net.linear(x, w.router, `${name}_router`), role.routing);
      let sum: string | undefined;
      w.experts.forEach((e, i) => {
        const gate = activate(net, net.linear(x, e.gate, `${name}_e${i}_gate`), act);
        const y = net.linear(g.op('Mul', [gate, net.linear(x, e.up, `${name}_e${i}_up`)]), e.down, `${name}_e${i}_down`);
        const wi = g.op('Slice', [weights, net.ints([i]), net.ints([i + 1]), net.ints([1])]);
        const term = g.op('Mul', [y, wi]);
        sum = sum ? g.op('Add', [sum, term]) : term;
      });
      return sum!;
    }
    case 'gpt-oss-moe': {
      if (role.kind !== 'gpt-oss-moe') throw new Error('GPT-OSS expert weights for another block');
      const weights = routingWeights(net, net.linear(x, w.router, `${name}_router`), role.routing); // [N, E]
      const inter = w.down.dims[1];
      const gu = g.op('Add', [g.op('MatMul', [g.op('Unsqueeze', [x, net.ints([0])]), net.weight(w.gateUp, `${name}_gu_w`)]), g.op('Unsqueeze', [net.weight(w.gateUpBias, `${name}_gu_b`), net.ints([1])])]); // [E, N, 2I]
      const gate = g.op('Min', [g.op('Slice', [gu, net.ints([0]), net.ints([2 * inter]), net.ints([2]), net.ints([2])]), net.scalar(role.limit)]);
      const up = g.op('Clip', [g.op('Slice', [gu, net.ints([1]), net.ints([2 * inter]), net.ints([2]), net.ints([2])]), net.scalar(-role.limit), net.scalar(role.limit)]);
      const glu = g.op('Mul', [gate, g.op('Sigmoid', [g.op('Mul', [gate, net.scalar(role.alpha)])])]);
      const h = g.op('Mul', [g.op('Add', [up, net.scalar(1)]), glu]);
      const y = g.op('Add', [g.op('MatMul', [h, net.weight(w.down, `${name}_dn_w`)]), g.op('Unsqueeze', [net.weight(w.downBias, `${name}_dn_b`), net.ints([1])])]); // [E, N, d]
      const we = g.op('Unsqueeze', [g.op('Transpose', [weights], { perm: [1, 0] }), net.ints([2])]); // [E, N, 1]
      return g.op('ReduceSum', [g.op('Mul', [y, we]), net.ints([0])], { keepdims: 0 });
    }
  }
}

/** One block: norms where the description puts them, sequential or parallel residual. */
function block(net: Net, x: string, w: LayerWeights, b: LayerDescription, spec: ModelSpec, capture?: (attnIn: string) => void, captureProjections = false): string {
  const g = net.g;
  const i = b.index;
  const normed = (v: string, n: Norm | undefined, tag: string) => (n ? net.norm(v, n, `l${i}_${tag}`) : v);
  const scaled = (v: string) => (b.residualMultiplier === 1 ? v : g.op('Mul', [v, net.scalar(b.residualMultiplier)]));
  const attnIn = normed(x, w.attentionInputNorm, 'ain');
  capture?.(attnIn);
  const attn = normed(attention(net, attnIn, w, b, spec, captureProjections), w.attentionOutputNorm, 'aout');
  if (b.parallel) {
    const mlpIn = w.mlpInputNorm ? normed(x, w.mlpInputNorm, 'min') : attnIn;
    const m = normed(mlp(net, mlpIn, w.mlp, b), w.mlpOutputNorm, 'mout');
    return g.op('Add', [x, scaled(g.op('Add', [attn, m]))]);
  }
  const mid = g.op('Add', [x, scaled(attn)]);
  const m = normed(mlp(net, normed(mid, w.mlpInputNorm, 'min'), w.mlp, b), w.mlpOutputNorm, 'mout');
  return g.op('Add', [mid, scaled(m)]);
}

/** Builds one segment's ONNX model (bytes for InferenceSession.create). */
export function buildSegment(s: SegmentSpec): Uint8Array {
  const { spec, seq } = s;
  const g = new GraphBuilder(`forward_${s.layers[0]?.index ?? 'head'}`);
  const net = new Net(g, seq, s.weights, s.fusedNorms === true);
  const d = spec.hidden;
  let x: string;
  if (s.first) {
    if (!s.outer) throw new Error('first segment needs the outer weights');
    const ids = g.input(IO.ids, 'int64', ['batch', seq]);
    let e = net.rows(s.outer.embed, 'embed', ids); // [B, S, d]
    if (spec.embedding.multiplier !== 1) e = g.op('Mul', [e, net.scalar(spec.embedding.multiplier)]);
    if (s.outer.positions) {
      const pos = g.op('Slice', [net.weight(s.outer.positions, 'positions'), net.ints([0]), net.ints([seq]), net.ints([0])]);
      e = g.op('Add', [e, pos]);
    }
    x = g.op('Reshape', [e, net.ints([-1, d])]);
  } else {
    x = g.input(IO.hiddenIn, 'float32', ['tokens', d]);
  }
  const capture = (index: number) => (s.captureAttentionInput ? (a: string) => void g.output(g.op('Identity', [a], {}, { outputs: [attentionInputName(index)] }), 'float32', ['tokens', d]) : undefined);
  for (const { index, weights } of s.layers) x = block(net, x, weights, spec.blocks[index], spec, capture(index), s.captureProjections === true);
  if (!s.last) {
    g.output(g.op('Identity', [x], {}, { outputs: [IO.hiddenOut] }), 'float32', ['tokens', d]);
    return g.toModel();
  }
  if (!s.outer) throw new Error('last segment needs the outer weights');
  const targets = g.input(IO.targets, 'int64', ['batch', seq]);
  const final = s.outer.finalNorm ? net.norm(x, s.outer.finalNorm, 'final') : x;
  let logits2d = net.linear(final, s.outer.head, 'head'); // [B·S, V]
  if (spec.logitMultiplier !== 1) logits2d = g.op('Mul', [logits2d, net.scalar(spec.logitMultiplier)]);
  if (spec.finalSoftcap !== null) logits2d = g.op('Mul', [g.op('Tanh', [g.op('Mul', [logits2d, net.scalar(1 / spec.finalSoftcap)])]), net.scalar(spec.finalSoftcap)]);
  const logp = g.op('LogSoftmax', [logits2d], { axis: 1 });
  const picked = g.op('GatherElements', [logp, g.op('Reshape', [targets, net.ints([-1, 1])])], { axis: 1 });
  g.output(g.op('Reshape', [g.op('Neg', [picked]), net.ints([-1, seq])], {}, { outputs: [IO.nll] }), 'float32', ['batch', seq]);
  if (s.logits) g.output(g.op('Reshape', [logits2d, net.ints([-1, seq, spec.vocab])], {}, { outputs: [IO.logits] }), 'float32', ['batch', seq, spec.vocab]);
  return g.toModel();
}
