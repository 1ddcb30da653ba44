/**
 * Worker-thread entry (bundled to dist/worker.js). Handles the CPU-heavy per-head tasks the
 * main thread hands off; today the spectrum engine's eigensolves.
 */
import { parentPort } from 'node:worker_threads';
import { solveEigenTask, warmUpEigen, type EigenReply, type EigenTask, type SpectraTask } from '../spectrum/eigenPool';

parentPort?.on('message', (task: EigenTask | SpectraTask) => {
  if (task.type === 'spectra') {
    // the spectrum engine's many-core path: Gram + eigensolves of a few heads (loads onnxruntime)
    import('../spectrum/workerGram')
      .then(({ solveSpectraTask }) => solveSpectraTask(task))
      .then(
        (reply) => parentPort?.postMessage(reply, [...(reply.buffer ? [reply.buffer] : []), ...(reply.values ? [reply.values.buffer as ArrayBuffer] : [])]),
        (e: unknown) => parentPort?.postMessage({ id: task.id, error: (e as Error)?.message ?? String(e) }),
      );
    return;
  }
  let reply: EigenReply;
  try {
    if (task.type === 'warmup') reply = { id: task.id, values: warmUpEigen(task.n) };
    else if (task.type === 'eigenvalues') reply = { id: task.id, values: solveEigenTask(task.grams, task.n, task.count) };
    else throw new Error(`unknown worker task "${String(task.type)}"`);
  } catch (e) {
    reply = { id: task.id, error: (e as Error)?.message ?? String(e) };
  }
  parentPort?.postMessage(reply, reply.values ? [reply.values.buffer as ArrayBuffer] : []);
});
