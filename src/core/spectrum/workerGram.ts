/**
 * The worker side of the many-core CPU path: a worker thread computes whole head spectra
 * (widening in the graph, Gram product on its own single-threaded onnxruntime session, then
 * the eigensolves), so that on a many-core host every core runs the whole pipeline for its own
 * heads, with no serial Gram step on the main thread and no oversubscribed thread pools.
 * Loaded lazily by the worker entry (onnxruntime loads only in workers that get such tasks).
 *
 * The Gram is the batched `MatMul(X, Transpose(X))` of the task's heads. FK_SPECTRUM_WORKER_GRAPH=half
 * instead assembles each head's G = W^T W, with W^T = [A; B] split into its top and bottom
 * halves of rows, from three `Gemm`s (transB, no transposed copy): A·Aᵀ, A·Bᵀ and B·Bᵀ, three
 * quarters of the arithmetic (B·Aᵀ = (A·Bᵀ)ᵀ), A and B fed as views of the transferred buffer.
 * It was 25 % faster per head on one thread of the 2-core dev machine, but slower end to end on
 * the H200's 16 vCPUs (0.85-0.95 s vs 0.81 s, docs/BENCHMARKS.md), so it is opt-in.
 */
import { DataType, GraphBuilder } from '../compute/onnx';
import { createSession, Tensor, type ComputeSession } from '../compute/session';
import { solveEigenTask, type SpectraReply, type SpectraTask } from './eigenPool';
import { gramModel } from './gram';

type Feed = SpectraTask['feed'];

const sessions = new Map<string, Promise<ComputeSession>>();

/** The three-`Gemm` half-split Gram of one head (inputs `a`: top rows, `b`: bottom rows). */
export function halfGramModel(feed: Feed, headDim: number, dModel: number): Uint8Array {
  const g = new GraphBuilder(`gram_half_${feed}`);
  const top = headDim >> 1;
  const bottom = headDim - top;
  const type = feed === 'bfloat16' ? 'uint16' : feed;
  const widen = (x: string): string => {
    if (feed === 'float32') return x;
    if (feed === 'float16') return g.op('Cast', [x], { to: DataType.FLOAT });
    return g.op('Cast', [g.op('BitCast', [x], { to: DataType.BFLOAT16 })], { to: DataType.FLOAT });
  };
  const a = widen(g.input('a', type, [top, dModel]));
  const b = widen(g.input('b', type, [bottom, dModel]));
  for (const [name, x, y, rows, cols] of [['aa', a, a, top, top], ['ab', a, b, top, bottom], ['bb', b, b, bottom, bottom]] as const) {
    g.op('Gemm', [x, y], { transB: 1 }, { outputs: [name] });
    g.output(name, 'float32', [rows, cols]);
  }
  return g.toModel({ opset: feed === 'bfloat16' ? 26 : 17 });
}

function useHalfGram(headDim: number): boolean {
  return process.env.FK_SPECTRUM_WORKER_GRAPH === 'half' && headDim >= 2;
}

function session(feed: Feed, headDim: number, dModel: number): Promise<ComputeSession> {
  const half = useHalfGram(headDim);
  const key = `${feed}:${headDim}:${dModel}:${half}`;
  let s = sessions.get(key);
  if (!s) {
    s = createSession(half ? halfGramModel(feed, headDim, dModel) : gramModel(feed, headDim, dModel), { backend: 'cpu', threads: 1, spinning: false });
    sessions.set(key, s);
  }
  return s;
}

function tensor(feed: Feed, buffer: ArrayBuffer, elementOffset: number, elements: number, dims: number[]): Tensor {
  if (feed === 'float32') return new Tensor('float32', new Float32Array(buffer, elementOffset * 4, elements), dims);
  return new Tensor(feed === 'float16' ? 'float16' : 'uint16', new Uint16Array(buffer, elementOffset * 2, elements), dims);
}

/** Runs one {@link SpectraTask}; the reply carries the buffer back (transfer it). */
export async function solveSpectraTask(task: SpectraTask): Promise<SpectraReply> {
  const { feed, headDim: n, dModel, count } = task;
  const s = await session(feed, n, dModel);
  if (count === 0) return { id: task.id, values: new Float64Array(0), buffer: task.buffer };
  let grams: Float32Array;
  if (useHalfGram(n)) {
    const top = n >> 1;
    const bottom = n - top;
    const block = n * dModel;
    grams = new Float32Array(count * n * n);
    for (let h = 0; h < count; h++) {
      const out = await s.run({ a: tensor(feed, task.buffer, h * block, top * dModel, [top, dModel]), b: tensor(feed, task.buffer, h * block + top * dModel, bottom * dModel, [bottom, dModel]) });
      const aa = out.aa.data as Float32Array;
      const ab = out.ab.data as Float32Array;
      const bb = out.bb.data as Float32Array;
      const g = grams.subarray(h * n * n, (h + 1) * n * n);
      for (let i = 0; i < top; i++) {
        for (let j = 0; j < top; j++) g[i * n + j] = aa[i * top + j];
        for (let j = 0; j < bottom; j++) g[i * n + top + j] = g[(top + j) * n + i] = ab[i * bottom + j];
      }
      for (let i = 0; i < bottom; i++) for (let j = 0; j < bottom; j++) g[(top + i) * n + top + j] = bb[i * bottom + j];
    }
  } else {
    const out = await s.run({ w: tensor(feed, task.buffer, 0, count * n * dModel, [count, n, dModel]) });
    grams = out.gram.data as Float32Array;
  }
  return { id: task.id, values: solveEigenTask(grams, n, count), buffer: task.buffer };
}
