/**
 * ONNX forward graphs of decoder-only transformers (GPT-2 and the Llama family), original or
 * factored, built with the project's GraphBuilder. A model may be cut into segments of whole
 * layers (each one session) so that no single ONNX protobuf approaches its 2 GB limit; hidden
 * states pass between segments as float32 [batch·seq, hidden].
 *
 * Weights enter as initializers in their stored 16/32-bit type and are Cast to float32 in the
 * graph; all arithmetic is float32, as transformers' eager float32 reference does it.
 */
import { dataTypeCode, floatAttr, GraphBuilder, type ConstTensor } from '../compute/onnx';
import type { LayerWeights, Linear, ModelSpec, Norm, OuterWeights } from './model';

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
}

/** Graph input/output names shared by the builder and the runner. */
export const IO = { ids: 'ids', targets: 'targets', hiddenIn: 'hidden_in', hiddenOut: 'hidden_out', nll: 'nll', logits: 'logits' } as const;

/** Small helper over GraphBuilder: float32 views of weights, linears, norms. */
class Net {
  private readonly cache = new Map<ConstTensor, string>();
  constructor(readonly g: GraphBuilder) {}

  /** A weight as a float32 value (initializer in its own type, Cast in-graph when 16-bit). */
  weight(t: ConstTensor, name: string): string {
    const hit = this.cache.get(t);
    if (hit) return hit;
    const init = this.g.initializer(name, t.type, t.dims, t.data);
    const v = t.type === 'float32' ? init : this.g.op('Cast', [init], { to: dataTypeCode('float32') });
    this.cache.set(t, v);
    return v;
  }

  ints(values: readonly number[]): string {
    return this.g.int64s(values);
  }

  scalar(value: number): string {
    return this.g.constant('float32', [], Float32Array.of(value));
  }

  /** x2d [n, in] · W (+ b) → [n, out]. */
  linear(x: string, l: Linear, name: string): string {
    const w = this.weight(l.weight, `${name}_w`);
    const inputs = [x, w];
    if (l.bias) inputs.push(this.weight(l.bias, `${name}_b`));
    return this.g.op('Gemm', inputs, l.transposed ? { transB: 1 } : {});
  }

  layerNorm(x: string, n: Norm, eps: number, name: string): string {
    const inputs = [x, this.weight(n.weight, `${name}_w`)];
    if (n.bias) inputs.push(this.weight(n.bias, `${name}_b`));
    return this.g.op('LayerNormalization', inputs, { axis: -1, epsilon: floatAttr(eps) });
  }

  /** RMSNorm as Llama computes it: w · x / sqrt(mean(x²) + eps). */
  rmsNorm(x: string, n: Norm, eps: number, name: string): string {
    const g = this.g;
    const ms = g.op('ReduceMean', [g.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
    const inv = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [ms, this.scalar(eps)])])]);
    return g.op('Mul', [g.op('Mul', [x, inv]), this.weight(n.weight, `${name}_w`)]);
  }
}

/** RoPE tables as transformers computes them in float32: cos/sin of pos·θ^(−2i/d), [seq, 1, d]. */
export function ropeTables(seq: number, dim: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const f = Math.fround;
  const half = dim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = f(1 / f(Math.pow(theta, f(f(2 * i) / dim))));
  const cos = new Float32Array(seq * dim);
  const sin = new Float32Array(seq * dim);
  for (let p = 0; p < seq; p++) {
    for (let i = 0; i < half; i++) {
      const a = f(inv[i] * p);
      cos[p * dim + i] = cos[p * dim + half + i] = Math.cos(a);
      sin[p * dim + i] = sin[p * dim + half + i] = Math.sin(a);
    }
  }
  return { cos, sin };
}

/** Additive causal mask [seq, seq] (optionally limited to a sliding window). */
export function causalMask(seq: number, window: number | null): Float32Array {
  const m = new Float32Array(seq * seq);
  for (let i = 0; i < seq; i++) {
    for (let j = 0; j < seq; j++) if (j > i || (window !== null && i - j >= window)) m[i * seq + j] = MASKED;
  }
  return m;
}

interface Shared {
  readonly mask: string;
  readonly rope?: { readonly cos: string; readonly sin: string };
}

/** Applies rotate-half RoPE to x [B, S, n, d]. */
function applyRope(net: Net, x: string, rope: NonNullable<Shared['rope']>, dim: number): string {
  const g = net.g;
  const [x1, x2] = g.opMulti('Split', [x, net.ints([dim / 2, dim / 2])], { axis: -1 }, { outputCount: 2 });
  const rotated = g.op('Concat', [g.op('Neg', [x2]), x1], { axis: -1 });
  return g.op('Add', [g.op('Mul', [x, rope.cos]), g.op('Mul', [rotated, rope.sin])]);
}

/** One attention block: x2d [B·S, hidden] → [B·S, hidden]. */
function attention(net: Net, x: string, w: LayerWeights, spec: ModelSpec, seq: number, layer: number, shared: Shared): string {
  const g = net.g;
  const H = spec.queryHeads;
  const KV = spec.kvHeads;
  const G = H / KV;
  const hd = spec.headDim;
  const dq = w.qkHeadDim;
  const name = `l${layer}`;
  let q: string;
  let k: string;
  let v: string;
  if (w.qkv.kind === 'fused') {
    const all = net.linear(x, w.qkv.proj, `${name}_qkv`);
    [q, k, v] = g.opMulti('Split', [all, net.ints(w.qkv.sizes)], { axis: 1 }, { outputCount: 3 });
  } else {
    q = net.linear(x, w.qkv.q, `${name}_q`);
    k = net.linear(x, w.qkv.k, `${name}_k`);
    v = net.linear(x, w.qkv.v, `${name}_v`);
  }
  if (w.keyUp) k = net.linear(k, w.keyUp, `${name}_kup`);
  // [B·S, n·d] → [B, S, n, d]
  let q4 = g.op('Reshape', [q, net.ints([-1, seq, H, dq])]);
  let k4 = g.op('Reshape', [k, net.ints([-1, seq, KV, dq])]);
  if (shared.rope) {
    q4 = applyRope(net, q4, shared.rope, dq);
    k4 = applyRope(net, k4, shared.rope, dq);
  }
  // GQA without copying keys: queries [B, KV, G, S, d] against keys [B, KV, 1, d, S].
  const q5 = g.op('Transpose', [g.op('Reshape', [q4, net.ints([-1, seq, KV, G, dq])])], { perm: [0, 2, 3, 1, 4] });
  const kT = g.op('Transpose', [g.op('Reshape', [k4, net.ints([-1, seq, KV, 1, dq])])], { perm: [0, 2, 3, 4, 1] });
  const v5 = g.op('Transpose', [g.op('Reshape', [v, net.ints([-1, seq, KV, 1, hd])])], { perm: [0, 2, 3, 1, 4] });
  const scale = spec.softmaxScale / (spec.scaleByInverseLayer ? layer + 1 : 1);
  const scores = g.op('Add', [g.op('Mul', [g.op('MatMul', [q5, kT]), net.scalar(scale)]), shared.mask]);
  const probs = g.op('Softmax', [scores], { axis: -1 });
  const o5 = g.op('MatMul', [probs, v5]); // [B, KV, G, S, hd]
  const o = g.op('Reshape', [g.op('Transpose', [o5], { perm: [0, 3, 1, 2, 4] }), net.ints([-1, H * hd])]);
  return net.linear(o, w.out, `${name}_o`);
}

function mlp(net: Net, x: string, w: LayerWeights, spec: ModelSpec, layer: number): string {
  const g = net.g;
  const name = `l${layer}`;
  if (w.mlp.kind === 'swiglu') {
    const gate = net.linear(x, w.mlp.gate, `${name}_gate`);
    const up = net.linear(x, w.mlp.up, `${name}_up`);
    const act = g.op('Mul', [gate, g.op('Sigmoid', [gate])]);
    return net.linear(g.op('Mul', [act, up]), w.mlp.down, `${name}_down`);
  }
  const h = net.linear(x, w.mlp.fc, `${name}_fc`);
  let act: string;
  if (spec.activation === 'gelu') {
    // 0.5·x·(1 + erf(x/√2))
    act = g.op('Mul', [g.op('Mul', [h, net.scalar(0.5)]), g.op('Add', [g.op('Erf', [g.op('Mul', [h, net.scalar(Math.SQRT1_2)])]), net.scalar(1)])]);
  } else {
    // gelu_new: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
    const cube = g.op('Mul', [g.op('Mul', [h, h]), h]);
    const inner = g.op('Mul', [g.op('Add', [h, g.op('Mul', [cube, net.scalar(0.044715)])]), net.scalar(Math.sqrt(2 / Math.PI))]);
    act = g.op('Mul', [g.op('Mul', [h, net.scalar(0.5)]), g.op('Add', [g.op('Tanh', [inner]), net.scalar(1)])]);
  }
  return net.linear(act, w.mlp.proj, `${name}_proj`);
}

/** Builds one segment's ONNX model (bytes for InferenceSession.create). */
export function buildSegment(s: SegmentSpec): Uint8Array {
  const { spec, seq } = s;
  const g = new GraphBuilder(`forward_${s.layers[0]?.index ?? 'head'}`);
  const net = new Net(g);
  const d = spec.hidden;
  const norm = (x: string, n: Norm, name: string) => (spec.family === 'gpt2' ? net.layerNorm(x, n, spec.normEps, name) : net.rmsNorm(x, n, spec.normEps, name));
  let x: string;
  if (s.first) {
    if (!s.outer) throw new Error('first segment needs the outer weights');
    const ids = g.input(IO.ids, 'int64', ['batch', seq]);
    let e = g.op('Gather', [net.weight(s.outer.embed, 'embed'), ids], { axis: 0 }); // [B, S, d]
    if (s.outer.positions) {
      const pos = g.op('Slice', [net.weight(s.outer.positions, 'positions'), net.ints([0]), net.ints([seq]), net.ints([0])]);
      e = g.op('Add', [e, pos]);
    }
    x = g.op('Reshape', [e, net.ints([-1, d])]);
  } else {
    x = g.input(IO.hiddenIn, 'float32', ['tokens', d]);
  }
  if (s.layers.length > 0) {
    const shared: Shared = {
      mask: g.initializer('causal_mask', 'float32', [seq, seq], causalMask(seq, spec.slidingWindow)),
      rope: spec.ropeTheta === null ? undefined : (() => {
        const t = ropeTables(seq, spec.headDim, spec.ropeTheta);
        return { cos: g.initializer('rope_cos', 'float32', [seq, 1, spec.headDim], t.cos), sin: g.initializer('rope_sin', 'float32', [seq, 1, spec.headDim], t.sin) };
      })(),
    };
    for (const { index, weights } of s.layers) {
      x = g.op('Add', [x, attention(net, norm(x, weights.norm1, `l${index}_n1`), weights, spec, seq, index, shared)]);
      x = g.op('Add', [x, mlp(net, norm(x, weights.norm2, `l${index}_n2`), weights, spec, index)]);
    }
  }
  if (!s.last) {
    g.output(g.op('Identity', [x], {}, { outputs: [IO.hiddenOut] }), 'float32', ['tokens', d]);
    return g.toModel();
  }
  if (!s.outer) throw new Error('last segment needs the outer weights');
  const targets = g.input(IO.targets, 'int64', ['batch', seq]);
  const logits2d = net.linear(norm(x, s.outer.finalNorm, 'final'), s.outer.head, 'head'); // [B·S, V]
  const logp = g.op('LogSoftmax', [logits2d], { axis: 1 });
  const picked = g.op('GatherElements', [logp, g.op('Reshape', [targets, net.ints([-1, 1])])], { axis: 1 });
  g.output(g.op('Reshape', [g.op('Neg', [picked]), net.ints([-1, seq])], {}, { outputs: [IO.nll] }), 'float32', ['batch', seq]);
  if (s.logits) g.output(g.op('Reshape', [logits2d, net.ints([-1, seq, spec.vocab])], {}, { outputs: [IO.logits] }), 'float32', ['batch', seq, spec.vocab]);
  return g.toModel();
}
