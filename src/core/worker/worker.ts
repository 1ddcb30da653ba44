/**
 * Worker-thread entry (bundled to dist/worker.js). Handles the CPU-heavy per-head tasks the
 * main thread hands off; today the spectrum engine's eigensolves.
 */
import { parentPort } from 'node:worker_threads';
import { solveEigenTask, type EigenReply, type EigenTask } from '../spectrum/eigenPool';

parentPort?.on('message', (task: EigenTask) => {
  let reply: EigenReply;
  try {
    if (task.type !== 'eigenvalues') throw new Error(`unknown worker task "${String(task.type)}"`);
    reply = { id: task.id, values: solveEigenTask(task.grams, task.n, task.count) };
  } catch (e) {
    reply = { id: task.id, error: (e as Error)?.message ?? String(e) };
  }
  parentPort?.postMessage(reply, reply.values ? [reply.values.buffer as ArrayBuffer] : []);
});
