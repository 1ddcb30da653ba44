/**
 * The worker side of the many-core CPU path: a worker thread computes whole head spectra
 * (widening in the graph, Gram product on its own single-threaded onnxruntime session, then
 * the eigensolves), so that on a many-core host every core runs the whole pipeline for its own
 * heads, with no serial Gram step on the main thread and no oversubscribed thread pools.
 * Loaded lazily by the worker entry (onnxruntime loads only in workers that get such tasks).
 *
 * One `run` per task, with one of three Gram graphs (FK_SPECTRUM_WORKER_GRAPH; benchmarks):
 * - `half` (the default): each head split off in its stored form, its top and bottom halves A
 *   and B of W^T's rows widened apart and G = W^T W assembled from three `Gemm`s with transB
 *   (A·Aᵀ, A·Bᵀ, B·Bᵀ; B·Aᵀ = (A·Bᵀ)ᵀ): three quarters of the arithmetic, no transposed copy;
 * - `gemm`: each head widened whole and multiplied by one `Gemm` with transB;
 * - `batched`: the batched `MatMul(X, Transpose(X))` of the task's heads (the same bits as `gemm`).
 */
import type { RowSource } from '../checkpoint/checkpoint';
import { readExactlySync } from '../checkpoint/fileAccess';
import { GraphBuilder } from '../compute/onnx';
import { createSession, Tensor, type ComputeSession } from '../compute/session';
import { solveEigenTask, type SpectraReply, type SpectraTask } from './eigenPool';
import { gramModel, widenOpset, widenToFloat32 } from './gram';
import { sharedClock, tracing } from './trace';

type Feed = SpectraTask['feed'];

const sessions = new Map<string, Promise<ComputeSession>>();
/** When this module (and onnxruntime with it) finished loading in this worker. */
const loaded = sharedClock();
/** Whether to time the tasks, read once (an environment lookup per task costs more than it seems). */
const traced = tracing();

/** The Gram graphs a worker can run (see the module comment). */
export type WorkerGramGraph = 'batched' | 'gemm' | 'half';

/** `half` unless FK_SPECTRUM_WORKER_GRAPH names another (faster on the H200 and on 2 cores: docs/BENCHMARKS.md); `gemm` for a 1-wide head. */
export function workerGraph(headDim: number): WorkerGramGraph {
  const v = process.env.FK_SPECTRUM_WORKER_GRAPH;
  if (v === 'batched' || v === 'gemm') return v;
  return headDim >= 2 ? 'half' : 'gemm';
}

/** The per-head `gemm` or `half` Gram of `count` heads (input `w`: count x headDim x dModel; output `gram`: count x headDim x headDim). */
export function perHeadGramModel(graph: 'gemm' | 'half', feed: Feed, count: number, headDim: number, dModel: number): Uint8Array {
  const g = new GraphBuilder(`gram_${graph}_${feed}`);
  const w = g.input('w', feed === 'bfloat16' ? 'uint16' : feed, [count, headDim, dModel]);
  const heads = count === 1 ? [w] : g.opMulti('Split', [w, g.int64s(new Array<number>(count).fill(1))], { axis: 0 }, { outputCount: count });
  const grams = heads.map((h) => {
    // split and reshape the 16-bit rows first, so each head is widened just before its product
    const rows = g.op('Reshape', [h, g.int64s([headDim, dModel])]);
    if (graph === 'gemm') {
      const x = widenToFloat32(g, rows, feed);
      return g.op('Gemm', [x, x], { transB: 1 });
    }
    // the halves split off in the stored form and widened apart (no float32 copy to split)
    const top = headDim >> 1;
    const [a, b] = g.opMulti('Split', [rows, g.int64s([top, headDim - top])], { axis: 0 }, { outputCount: 2 }).map((x) => widenToFloat32(g, x, feed));
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

/** onnxruntime threads per worker session: 1 (one worker per core) unless FK_SPECTRUM_WORKER_THREADS says otherwise (benchmarks). */
function workerThreads(): number {
  const v = Number(process.env.FK_SPECTRUM_WORKER_THREADS);
  return Number.isInteger(v) && v >= 1 && v <= 64 ? v : 1;
}

function session(feed: Feed, count: number, headDim: number, dModel: number): Promise<ComputeSession> {
  const graph = workerGraph(headDim);
  // the per-head graphs split a fixed number of heads; the batched one takes any
  const key = graph === 'batched' ? `${feed}:${headDim}:${dModel}` : `${graph}:${feed}:${count}:${headDim}:${dModel}`;
  let s = sessions.get(key);
  if (!s) {
    const model = graph === 'batched' || count === 0 ? gramModel(feed, headDim, dModel) : perHeadGramModel(graph, feed, count, headDim, dModel);
    // basic optimisation: the same kernels and bits as `all` for these graphs (measured), and
    // each worker's first run is ~5 ms sooner
    s = createSession(model, { backend: 'cpu', threads: workerThreads(), spinning: false, optimization: 'basic' });
    sessions.set(key, s);
  }
  return s;
}

/** This worker's read buffer, kept across tasks (grown when a part is larger). */
let scratch = new ArrayBuffer(0);

/** Reads a task's rows into the kept buffer with positional reads (this thread's own I/O). */
function readSource(source: RowSource): ArrayBuffer {
  if (scratch.byteLength < source.length) scratch = new ArrayBuffer(source.length);
  readExactlySync(source.fd, source.file, new Uint8Array(scratch, 0, source.length), source.offset);
  return scratch;
}

function tensor(feed: Feed, buffer: ArrayBuffer, elements: number, dims: number[]): Tensor {
  if (feed === 'float32') return new Tensor('float32', new Float32Array(buffer, 0, elements), dims);
  return new Tensor(feed === 'float16' ? 'float16' : 'uint16', new Uint16Array(buffer, 0, elements), dims);
}

/** Runs one {@link SpectraTask}. */
export async function solveSpectraTask(task: SpectraTask, booted?: number): Promise<SpectraReply> {
  const { feed, headDim: n, dModel, count } = task;
  const received = sharedClock();
  const s = await session(feed, count || (task.prepareCount ?? 0), n, dModel);
  const ready = sharedClock();
  if (count === 0 || !task.source) return { id: task.id, spectra: true, values: new Float64Array(0), ...(traced ? { timing: { received, ready, read: ready, gram: ready, eigen: ready, booted, loaded } } : {}) };
  const elements = count * n * dModel;
  if (task.source.length !== elements * (feed === 'float32' ? 4 : 2)) throw new Error(`spectra task: ${task.source.length} bytes for ${elements} ${feed} values`);
  const buffer = readSource(task.source);
  const read = sharedClock();
  const out = await s.run({ w: tensor(feed, buffer, elements, [count, n, dModel]) });
  const grams = out.gram.data as Float32Array;
  const gram = sharedClock();
  const values = solveEigenTask(grams, n, count);
  return { id: task.id, spectra: true, values, ...(traced ? { timing: { received, ready, read, gram, eigen: sharedClock() } } : {}) };
}
