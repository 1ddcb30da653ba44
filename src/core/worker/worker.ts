/**
 * Worker-thread entry (bundled to dist/worker.js). Handles the CPU-heavy per-head tasks the
 * main thread hands off: the spectrum engine's eigensolves, the factorization's maps (the
 * export's eigensolves) and the export's byte-range copy of the untouched tensors.
 */
import { parentPort } from 'node:worker_threads';
import { FactoredKeysError } from '../errors';
import { runCopyTask, type CopyTask } from '../export/writer';
import { mapsTransferList, solveMapsTask, type MapsTask } from '../factor/maps';
import { solveEigenTask, warmUpEigen, type CloseTask, type EigenReply, type EigenTask, type SpectraTask } from '../spectrum/eigenPool';
import { sharedClock } from '../spectrum/trace';

/** When this worker's entry started (the spectrum trace's worker start-up). */
const booted = sharedClock();

/** The spectra tasks, run one after another (see below). */
let spectraQueue: Promise<unknown> = Promise.resolve();
/** Set by a {@link CloseTask}: the spectra tasks still queued are dropped. */
let closing = false;

parentPort?.on('message', (task: EigenTask | SpectraTask | MapsTask | CopyTask | CloseTask) => {
  if (task.type === 'close') {
    // leave once the task in progress has ended: terminating this thread inside onnxruntime's
    // run aborts the whole process (its binding cannot raise the error while the thread stops)
    closing = true;
    void spectraQueue.finally(() => process.exit(0));
    return;
  }
  if (task.type === 'maps') {
    const reply = solveMapsTask(task);
    parentPort?.postMessage(reply, mapsTransferList(reply.maps));
    return;
  }
  if (task.type === 'copy') {
    // synchronous reads and writes in this thread: the copy never waits for the main thread
    parentPort?.postMessage(runCopyTask(task, (bytes, job) => parentPort?.postMessage({ id: task.id, bytes, job })));
    return;
  }
  if (task.type === 'spectra') {
    // the spectrum engine's many-core path: read, Gram and eigensolves of a few heads (loads
    // onnxruntime). One task at a time: they share this worker's read buffer, and onnxruntime's
    // run starts only on a later turn of the event loop, when the next task's read would
    // already have overwritten it.
    spectraQueue = spectraQueue
      .then(() => (closing ? undefined : import('../spectrum/workerGram')))
      .then((module) => (module ? module.solveSpectraTask(task, booted) : undefined))
      .then(
        // the eigenvalues (a few KB) are copied: transferring so small a buffer costs more
        (reply) => reply && parentPort?.postMessage(reply),
        (e: unknown) => parentPort?.postMessage({ id: task.id, error: (e as Error)?.message ?? String(e), userError: e instanceof FactoredKeysError }),
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
