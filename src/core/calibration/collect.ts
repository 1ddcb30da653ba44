/**
 * Runs the original model over calibration windows one layer at a time and hands each layer's
 * second moments to a callback: either per head those of its query and key projections
 * ({@link collectHeadMoments}, what calibration uses) or the matrix of its attention input
 * ({@link collectAttentionMoments}, the reference they are checked against):
 *
 *   C = Σ_t [x_t, 1]ᵀ [x_t, 1]     ((hidden+1) x (hidden+1), float64),
 *
 * x_t being exactly the tensor the block's q/k/v projections read (after the block's input norm
 * when it has one; the raw residual stream when it has none, as in OLMo-2). The forward graph
 * is the evaluator's (src/core/eval/graph.ts) with its attention-input capture switched on.
 *
 * Memory: one layer's weights and session at a time, the hidden states of all calibration
 * tokens (tokens x hidden float32), one batch's attention inputs, and one C.
 */
import type * as ort from 'onnxruntime-node';
import { DataType, GraphBuilder } from '../compute/onnx';
import { createSession, Tensor, type BackendChoice, type BackendName, type ComputeSession } from '../compute/session';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { throwIfCancelled, type CancelToken, type ProgressFn } from '../errors';
import { attentionInputName, buildSegment, IO, projectionName } from '../eval/graph';
import { CheckpointWeights, type ModelSpec } from '../eval/model';

/** Options of {@link collectAttentionMoments}. */
export interface CollectOptions {
  /** Tokens per window (windows start from empty context, like the evaluation protocol). */
  readonly seq: number;
  /** Windows per onnxruntime run (default: about 4096 tokens). */
  readonly batch?: number;
  readonly backend?: BackendChoice;
  readonly threads?: number;
  readonly cancel?: CancelToken;
  readonly progress?: ProgressFn;
}

/** What a collection ran on. */
export interface CollectResult {
  readonly backend: BackendName;
  readonly windows: number;
  readonly tokens: number;
}

const cpuSessions = new Map<() => Uint8Array, Map<number, Promise<ComputeSession>>>();

/** x [n, d] float32 → (xᵀx [d, d], Σ_t x_t [d]) in float64. */
function momentGraph(): Uint8Array {
  const g = new GraphBuilder('calibration_moments');
  const x = g.op('Cast', [g.input('x', 'float32', ['n', 'd'])], { to: DataType.DOUBLE });
  g.output(g.op('MatMul', [g.op('Transpose', [x], { perm: [1, 0] }), x], {}, { outputs: ['xtx'] }), 'float64', ['d', 'd']);
  g.output(g.op('ReduceSum', [x, g.int64s([0])], { keepdims: 0 }, { outputs: ['sum'] }), 'float64', ['d']);
  return g.toModel({ opset: 17 });
}

/** One CPU session per (graph, thread count), made on first use; a failed creation is forgotten. */
function cachedCpuSession(graph: () => Uint8Array, threads?: number): Promise<ComputeSession> {
  let byThreads = cpuSessions.get(graph);
  if (!byThreads) cpuSessions.set(graph, (byThreads = new Map()));
  const key = threads ?? 0;
  let s = byThreads.get(key);
  if (!s) {
    s = createSession(graph(), { backend: 'cpu', threads });
    s.catch(() => byThreads.delete(key));
    byThreads.set(key, s);
  }
  return s;
}

/** Adds one batch of attention inputs to C (augmented with the constant 1). */
async function accumulate(c: Float64Array, x: ort.Tensor, d: number, threads?: number): Promise<void> {
  const n = x.dims[0];
  const s = await cachedCpuSession(momentGraph, threads);
  const out = await s.run({ x });
  const xtx = out.xtx.data as Float64Array;
  const sum = out.sum.data as Float64Array;
  const w = d + 1;
  for (let a = 0; a < d; a++) {
    const row = a * w;
    for (let b = 0; b < d; b++) c[row + b] += xtx[a * d + b];
    c[row + d] += sum[a];
    c[d * w + a] += sum[a];
  }
  c[d * w + d] += n;
}

/** Default windows per run: about 4096 tokens. */
export function calibrationBatch(seq: number): number {
  return Math.max(1, Math.min(64, Math.floor(4096 / seq)));
}

/**
 * What one layer's pass gathers: the forward graph's capture (attention input or projections), a
 * fresh accumulator per layer, and how one batch's outputs are added to it.
 */
interface LayerCapture<T> {
  readonly capture: 'attentionInput' | 'projections';
  start(layer: number): T;
  add(state: T, out: Record<string, ort.Tensor>, layer: number): Promise<void>;
}

/**
 * Runs `windows` windows of `seq` tokens starting at token 0 of `ids` through the model, layer by
 * layer (one layer's weights and session at a time, every batch's hidden states kept for the
 * next), and calls `onLayer(layer, state)` once per layer in order. Cancelling stops between
 * batches.
 */
async function runLayers<T>(
  ckpt: Checkpoint,
  spec: ModelSpec,
  ids: Int32Array,
  windows: number,
  options: CollectOptions,
  what: LayerCapture<T>,
  onLayer: (layer: number, state: T) => Promise<void> | void,
): Promise<CollectResult> {
  const { seq } = options;
  const batch = options.batch ?? calibrationBatch(seq);
  const source = new CheckpointWeights(ckpt, spec);
  const outer = await source.outer();
  const batches = Math.ceil(windows / batch);
  // hidden states of every batch after the layers run so far
  let hidden: (ort.Tensor | undefined)[] = [];
  let backend: BackendName = 'cpu';
  for (let layer = 0; layer < spec.layers; layer++) {
    throwIfCancelled(options.cancel);
    const weights = await source.layer(layer);
    if (what.capture === 'projections' && weights.qkHeadDim !== spec.headDim) throw new Error(`layer ${layer}: projections of head_dim ${weights.qkHeadDim}, expected ${spec.headDim}`);
    const first = layer === 0;
    const model = buildSegment({
      spec,
      seq,
      layers: [{ index: layer, weights }],
      outer: first ? outer : undefined,
      first,
      last: false,
      ...(what.capture === 'projections' ? { captureProjections: true } : { captureAttentionInput: true }),
    });
    const session = await createSession(model, { backend: options.backend ?? 'cpu', threads: options.threads });
    backend = session.backend;
    const state = what.start(layer);
    const next: ort.Tensor[] = [];
    try {
      for (let b = 0; b < batches; b++) {
        throwIfCancelled(options.cancel);
        const start = b * batch;
        const count = Math.min(batch, windows - start);
        let feeds: Record<string, ort.Tensor>;
        if (first) {
          const input = new BigInt64Array(count * seq);
          for (let i = 0; i < count * seq; i++) input[i] = BigInt(ids[start * seq + i]);
          feeds = { [IO.ids]: new Tensor('int64', input, [count, seq]) };
        } else {
          feeds = { [IO.hiddenIn]: hidden[b]! };
          hidden[b] = undefined; // this batch's input is no longer needed
        }
        const out = await session.run(feeds);
        await what.add(state, out, layer);
        // the last layer's output is not needed
        if (layer < spec.layers - 1) next.push(out[IO.hiddenOut]);
        options.progress?.(layer * batches + b + 1, spec.layers * batches, `calibrating layer ${layer}`);
      }
    } finally {
      await session.dispose().catch(() => undefined);
    }
    hidden = next;
    await onLayer(layer, state);
  }
  return { backend, windows, tokens: windows * seq };
}

/**
 * The reference route: per layer C = Σ_t [x_t, 1]ᵀ [x_t, 1] of the attention input (fresh per
 * layer; the callback may keep it).
 */
export async function collectAttentionMoments(
  ckpt: Checkpoint,
  spec: ModelSpec,
  ids: Int32Array,
  windows: number,
  options: CollectOptions,
  onLayer: (layer: number, c: Float64Array) => Promise<void> | void,
): Promise<CollectResult> {
  const d = spec.hidden;
  return runLayers(ckpt, spec, ids, windows, options, {
    capture: 'attentionInput',
    start: () => new Float64Array((d + 1) * (d + 1)),
    add: (c, out, layer) => accumulate(c, out[attentionInputName(layer)], d, options.threads),
  }, onLayer);
}

/** Per-head second moments of one layer's projections, Σ_t p_tᵀ p_t (head_dim x head_dim, float64, row-major). */
export interface ProjectionMoments {
  /** One per query head, in the model's head order. */
  readonly query: Float64Array[];
  /** One per KV head. */
  readonly key: Float64Array[];
}

/** p [n, heads, hd] float32 → Σ_t p_t,hᵀ p_t,h [heads, hd, hd] in float64. */
function headGramGraph(): Uint8Array {
  const g = new GraphBuilder('calibration_head_moments');
  const p = g.op('Cast', [g.input('p', 'float32', ['n', 'heads', 'hd'])], { to: DataType.DOUBLE });
  const left = g.op('Transpose', [p], { perm: [1, 2, 0] }); // [heads, hd, n]
  const right = g.op('Transpose', [p], { perm: [1, 0, 2] }); // [heads, n, hd]
  g.output(g.op('MatMul', [left, right], {}, { outputs: ['s'] }), 'float64', ['heads', 'hd', 'hd']);
  return g.toModel({ opset: 17 });
}

/** Adds one batch of projections [n, heads·hd] to the per-head sums. */
async function accumulateHeads(sums: Float64Array[], p: ort.Tensor, hd: number, threads?: number): Promise<void> {
  const heads = sums.length;
  const n = p.dims[0];
  if (p.dims[1] !== heads * hd) throw new Error(`projection of width ${p.dims[1]}, expected ${heads} heads of ${hd}`);
  const s = await cachedCpuSession(headGramGraph, threads);
  const out = (await s.run({ p: new Tensor('float32', p.data as Float32Array, [n, heads, hd]) })).s.data as Float64Array;
  const n2 = hd * hd;
  for (let h = 0; h < heads; h++) {
    const sum = sums[h];
    const o = h * n2;
    for (let i = 0; i < n2; i++) sum[i] += out[o + i];
  }
}

/**
 * Like {@link collectAttentionMoments}, but per layer the moments of the projections the forward
 * pass computes, q_t,h = x_t W_Qh + b_Qh and k_t,g (before any q/k norm and RoPE):
 * Σ_t q_t,hᵀ q_t,h = W̃_Qhᵀ C W̃_Qh up to float32 rounding of the projections, without forming C.
 * That is ~1 MFLOP per token and layer in float64 instead of ~2·hidden² for C and 2·hidden²·
 * (heads·head_dim) per layer to reduce it. Calls `onLayer(layer, moments)` once per layer in order.
 */
export async function collectHeadMoments(
  ckpt: Checkpoint,
  spec: ModelSpec,
  ids: Int32Array,
  windows: number,
  options: CollectOptions,
  onLayer: (layer: number, moments: ProjectionMoments) => Promise<void> | void,
): Promise<CollectResult> {
  const hd = spec.headDim;
  return runLayers<ProjectionMoments>(ckpt, spec, ids, windows, options, {
    capture: 'projections',
    start: () => ({
      query: Array.from({ length: spec.queryHeads }, () => new Float64Array(hd * hd)),
      key: Array.from({ length: spec.kvHeads }, () => new Float64Array(hd * hd)),
    }),
    add: async (moments, out, layer) => {
      await accumulateHeads(moments.query, out[projectionName(layer, 'query')], hd, options.threads);
      await accumulateHeads(moments.key, out[projectionName(layer, 'key')], hd, options.threads);
    },
  }, onLayer);
}
