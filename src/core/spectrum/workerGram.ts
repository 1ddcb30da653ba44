/**
 * The worker side of the many-core CPU path: a worker thread computes whole head spectra
 * (widening in the graph, Gram product on its own single-threaded onnxruntime session, then
 * the eigensolves), so that on a many-core host every core runs the whole pipeline for its own
 * heads, with no serial Gram step on the main thread and no oversubscribed thread pools.
 * Loaded lazily by the worker entry (onnxruntime loads only in workers that get such tasks).
 *
 * One `run` per task, with one of three Gram graphs (FK_SPECTRUM_WORKER_GRAPH; benchmarks):
 * - `gemm` (the default): each head split off, widened and multiplied by one `Gemm` with
 *   transB (no transposed copy, and each head's float32 copy is small enough to stay in cache);
 * - `batched`: the batched `MatMul(X, Transpose(X))` of the task's heads (the same bits);
 * - `half`: as `gemm`, but each head's G = W^T W assembled from three `Gemm`s over the top
 *   and bottom halves A, B of W^T's rows (A·Aᵀ, A·Bᵀ, B·Bᵀ; B·Aᵀ = (A·Bᵀ)ᵀ): three quarters
 *   of the arithmetic.
 */
import { GraphBuilder } from '../compute/onnx';
import { createSession, Tensor, type ComputeSession } from '../compute/session';
import { solveEigenTask, type SpectraReply, type SpectraTask } from './eigenPool';
import { gramModel, widenOpset, widenToFloat32 } from './gram';
import { sharedClock, tracing } from './trace';

type Feed = SpectraTask['feed'];

const sessions = new Map<string, Promise<ComputeSession>>();
/** When this module (and onnxruntime with it) finished loading in this worker. */
const loaded = sharedClock();

/** The Gram graphs a worker can run (see the module comment). */
export type WorkerGramGraph = 'batched' | 'gemm' | 'half';

/** `gemm` unless FK_SPECTRUM_WORKER_GRAPH names another (same bits as `batched`, and faster on the H200: docs/BENCHMARKS.md). */
function workerGraph(headDim: number): WorkerGramGraph {
  const v = process.env.FK_SPECTRUM_WORKER_GRAPH;
  return v === 'batched' || (v === 'half' && headDim >= 2) ? v : 'gemm';
}

/** The per-head `gemm` or `half` Gram of `count` heads (input `w`: count x headDim x dModel; output `gram`: count x headDim x headDim). */
export function perHeadGramModel(graph: 'gemm' | 'half', feed: Feed, count: number, headDim: number, dModel: number): Uint8Array {
  const g = new GraphBuilder(`gram_${graph}_${feed}`);
  const w = g.input('w', feed === 'bfloat16' ? 'uint16' : feed, [count, headDim, dModel]);
  const heads = count === 1 ? [w] : g.opMulti('Split', [w, g.int64s(new Array<number>(count).fill(1))], { axis: 0 }, { outputCount: count });
  const grams = heads.map((h) => {
    // split and reshape the 16-bit rows first, so each head is widened just before its product
    const x = widenToFloat32(g, g.op('Reshape', [h, g.int64s([headDim, dModel])]), feed);
    if (graph === 'gemm') return g.op('Gemm', [x, x], { transB: 1 });
    const top = headDim >> 1;
    const [a, b] = g.opMulti('Split', [x, g.int64s([top, headDim - top])], { axis: 0 }, { outputCount: 2 });
    const ab = g.op('Gemm', [a, b], { transB: 1 });
    const upper = g.op('Concat', [g.op('Gemm', [a, a], { transB: 1 }), ab], { axis: 1 });
    const lower = g.op('Concat', [g.op('Transpose', [ab], { perm: [1, 0] }), g.op('Gemm', [b, b], { transB: 1 })], { axis: 1 });
    return g.op('Concat', [upper, lower], { axis: 0 });
  });
  const all = grams.length === 1 ? grams[0] : g.op('Concat', grams, { axis: 0 });
  g.op('Reshape', [all, g.int64s([count, headDim, headDim])], {}, { outputs: ['gram'] });
  g.output('gram', 'float32', [count, headDim, headDim]);
  return g.toModel({ opset: widenOpset(feed) });
}

function session(feed: Feed, count: number, headDim: number, dModel: number): Promise<ComputeSession> {
  const graph = workerGraph(headDim);
  // the per-head graphs split a fixed number of heads; the batched one takes any
  const key = graph === 'batched' ? `${feed}:${headDim}:${dModel}` : `${graph}:${feed}:${count}:${headDim}:${dModel}`;
  let s = sessions.get(key);
  if (!s) {
    const model = graph === 'batched' || count === 0 ? gramModel(feed, headDim, dModel) : perHeadGramModel(graph, feed, count, headDim, dModel);
    s = createSession(model, { backend: 'cpu', threads: 1, spinning: false });
    sessions.set(key, s);
  }
  return s;
}

function tensor(feed: Feed, buffer: ArrayBuffer, elementOffset: number, elements: number, dims: number[]): Tensor {
  if (feed === 'float32') return new Tensor('float32', new Float32Array(buffer, elementOffset * 4, elements), dims);
  return new Tensor(feed === 'float16' ? 'float16' : 'uint16', new Uint16Array(buffer, elementOffset * 2, elements), dims);
}

/** Runs one {@link SpectraTask}; the reply carries the buffer back (transfer it). */
export async function solveSpectraTask(task: SpectraTask, booted?: number): Promise<SpectraReply> {
  const { feed, headDim: n, dModel, count } = task;
  const received = sharedClock();
  const s = await session(feed, count || (task.prepareCount ?? 0), n, dModel);
  const ready = sharedClock();
  if (count === 0) return { id: task.id, values: new Float64Array(0), buffer: task.buffer, ...(tracing() ? { timing: { received, ready, gram: ready, eigen: ready, booted, loaded } } : {}) };
  const out = await s.run({ w: tensor(feed, task.buffer, 0, count * n * dModel, [count, n, dModel]) });
  const grams = out.gram.data as Float32Array;
  const gram = sharedClock();
  const values = solveEigenTask(grams, n, count);
  return { id: task.id, values, buffer: task.buffer, ...(tracing() ? { timing: { received, ready, gram, eigen: sharedClock() } } : {}) };
}
