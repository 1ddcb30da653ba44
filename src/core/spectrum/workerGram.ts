/**
 * The worker side of the many-core CPU path: a worker thread computes whole head spectra
 * (widening in the graph, Gram product on its own single-threaded onnxruntime session, then
 * the eigensolves), so that on a many-core host every core runs the whole pipeline for its own
 * heads, with no serial Gram step on the main thread and no oversubscribed thread pools.
 * Loaded lazily by the worker entry (onnxruntime loads only in workers that get such tasks).
 */
import { createSession, Tensor, type ComputeSession } from '../compute/session';
import { solveEigenTask, type SpectraReply, type SpectraTask } from './eigenPool';
import { gramModel } from './gram';

const sessions = new Map<string, Promise<ComputeSession>>();

function session(feed: SpectraTask['feed'], headDim: number, dModel: number): Promise<ComputeSession> {
  const key = `${feed}:${headDim}:${dModel}`;
  let s = sessions.get(key);
  if (!s) {
    s = createSession(gramModel(feed, headDim, dModel), { backend: 'cpu', threads: 1, spinning: false });
    sessions.set(key, s);
  }
  return s;
}

/** Runs one {@link SpectraTask}; the reply carries the buffer back (transfer it). */
export async function solveSpectraTask(task: SpectraTask): Promise<SpectraReply> {
  const s = await session(task.feed, task.headDim, task.dModel);
  if (task.count === 0) return { id: task.id, values: new Float64Array(0), buffer: task.buffer };
  const dims = [task.count, task.headDim, task.dModel];
  const input = task.feed === 'float32' ? new Tensor('float32', new Float32Array(task.buffer), dims) : new Tensor(task.feed === 'float16' ? 'float16' : 'uint16', new Uint16Array(task.buffer), dims);
  const out = await s.run({ w: input });
  const grams = out.gram.data as Float32Array;
  return { id: task.id, values: solveEigenTask(grams, task.headDim, task.count), buffer: task.buffer };
}
