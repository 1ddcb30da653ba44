/**
 * Runs the per-head eigensolves either inline or on worker threads. On a 7B model the
 * eigensolves (1,280 heads x ~1.3 ms) cost more CPU than the Gram products, and
 * onnxruntime's `run` blocks the main thread, so workers let both proceed at once.
 */
import { Worker } from 'node:worker_threads';
import type { RowSource } from '../checkpoint/checkpoint';
import { FactoredKeysError } from '../errors';
import { mapsTaskGrams, type HeadGrams, type HeadMaps, type MapsReply, type MapsTask } from '../factor/maps';
import { workerScript } from '../worker/script';
import { EigenWorkspace } from './eigenvalues';
import type { TaskTiming } from './trace';

/**
 * Message to the worker: eigenvalues of `count` symmetric n x n matrices packed in `grams`;
 * or `warmup`: solve a few synthetic n x n problems so the JIT has optimised the solver
 * (WebAssembly starts on a baseline compiler) before real work is timed.
 */
export interface EigenTask {
  readonly id: number;
  readonly type: 'eigenvalues' | 'warmup';
  readonly n: number;
  readonly count: number;
  readonly grams: Float32Array;
}

/**
 * Message to the worker: the spectra of `count` heads whose W^T blocks (count x headDim x
 * dModel, in the stored 16- or 32-bit form) lie at `source`: the worker reads them itself
 * (a positional read on the checkpoint's descriptor into a buffer it keeps, so no layer bytes
 * cross threads), widens them and computes their Grams on its own single-threaded onnxruntime
 * session, then the eigenvalues. With `count` 0 it only prepares the session (warm-up).
 */
export interface SpectraTask {
  readonly id: number;
  readonly type: 'spectra';
  readonly feed: 'float32' | 'float16' | 'bfloat16';
  readonly count: number;
  readonly headDim: number;
  readonly dModel: number;
  /** Where the heads' rows lie (count x headDim rows back to back); absent for a warm-up. */
  readonly source?: RowSource;
  /** With `count` 0: the heads per task to prepare a session for. */
  readonly prepareCount?: number;
}

/** Message to the worker: stop after the task in progress (queued spectra tasks are dropped). */
export interface CloseTask {
  readonly type: 'close';
}

/** Worker reply to a {@link SpectraTask}: count x headDim eigenvalues. */
export interface SpectraReply {
  readonly id: number;
  /** Tells this reply from the other tasks' (its `values` may be empty: a warm-up). */
  readonly spectra: true;
  readonly values?: Float64Array;
  readonly error?: string;
  /** The error is the input's fault (a checkpoint changed while being read): a one-line user error. */
  readonly userError?: boolean;
  /** With FK_SPECTRUM_TRACE set: when the worker got the task and finished its steps. */
  readonly timing?: TaskTiming;
}

/** Solves a few synthetic problems of size n (the `warmup` task). */
export function warmUpEigen(n: number): Float64Array {
  const g = new Float32Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) g[i * n + j] = i === j ? n + i : 1 / (1 + i + j);
  let last: Float64Array = new Float64Array(0);
  for (let k = 0; k < 6; k++) last = solveEigenTask(g, n, 1);
  return last;
}

/** Worker reply: `values` holds count x n eigenvalues, each block descending; `error` on failure. */
export interface EigenReply {
  readonly id: number;
  readonly values?: Float64Array;
  readonly error?: string;
}

/**
 * This thread's workspace for n, kept: a fresh one per task means a fresh WebAssembly memory
 * (an address-space reservation the kernel maps and the collector later unmaps) every few heads.
 */
const workspaces = new Map<number, EigenWorkspace>();

/** Computes a task's eigenvalues in this thread (also what the worker runs). */
export function solveEigenTask(grams: Float32Array, n: number, count: number): Float64Array {
  let ws = workspaces.get(n);
  if (!ws) {
    ws = new EigenWorkspace(n);
    workspaces.set(n, ws);
  }
  const values = new Float64Array(count * n);
  const out = new Float64Array(n);
  for (let h = 0; h < count; h++) {
    // a non-finite Gram (NaN/Inf weights) gives NaN eigenvalues: the head is flagged, not solved
    if (ws.eigenvaluesInto(grams, h * n * n, out)) values.set(out, h * n);
    else values.fill(Number.NaN, h * n, (h + 1) * n);
  }
  return values;
}

/** How long {@link EigenPool.close} waits for a worker to leave by itself. */
const CLOSE_GRACE_MS = 10_000;

/** Spectra tasks a worker holds at most (one running, one ready to start the moment it ends). */
const MAX_QUEUED_SPECTRA = 2;

/** A fixed set of eigensolver workers; tasks are split evenly and answered in order. */
export class EigenPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, { resolve: (v: never) => void; reject: (e: Error) => void }>();
  /** Tasks posted to each worker and not answered yet (spectra tasks go to the least loaded). */
  private readonly queued: number[] = [];
  private nextId = 0;
  private next = 0;
  private failed?: Error;
  /**
   * Spectra tasks waiting for a worker with room (fewer than {@link MAX_QUEUED_SPECTRA} tasks
   * queued): a worker gets the next one as it answers, so a worker that starts or runs slower
   * gets less work instead of holding up the tasks already assigned to it.
   */
  private readonly backlog: ((worker: number) => void)[] = [];
  /** Workers whose thread has ended (a crash, or {@link close}). */
  private readonly exited = new Set<Worker>();

  private constructor(script: string, size: number) {
    for (let i = 0; i < size; i++) {
      const w = new Worker(script);
      w.unref();
      this.queued.push(0);
      w.on('message', (reply: EigenReply & SpectraReply & MapsReply) => {
        const p = this.pending.get(reply.id);
        if (!p) return;
        this.pending.delete(reply.id);
        this.queued[i]--;
        if (this.backlog.length > 0 && this.queued[i] < MAX_QUEUED_SPECTRA) this.backlog.shift()!(i);
        if (reply.error !== undefined) p.reject(reply.userError ? new FactoredKeysError(reply.error) : new Error(reply.error));
        else if (reply.maps) p.resolve(reply.maps as never);
        else if (reply.spectra) p.resolve({ values: reply.values ?? new Float64Array(0), timing: reply.timing } as never);
        else if (reply.values) p.resolve(reply.values as never);
        else p.reject(new Error('eigen worker failed'));
      });
      w.on('error', (e) => this.fail(e));
      w.once('exit', () => this.exited.add(w));
      this.workers.push(w);
    }
  }

  /**
   * Starts `size` workers, or returns undefined when no worker entry can be found. With
   * `warmUpN`, each worker first solves a few n x n problems (in the background).
   */
  static create(size: number, warmUpN?: number): EigenPool | undefined {
    const script = workerScript();
    if (!script || size < 1) return undefined;
    const pool = new EigenPool(script, size);
    if (warmUpN) {
      for (const w of pool.workers) {
        const task: EigenTask = { id: -1, type: 'warmup', n: warmUpN, count: 0, grams: new Float32Array(0) };
        w.postMessage(task);
      }
    }
    return pool;
  }

  get size(): number {
    return this.workers.length;
  }

  private fail(e: Error): void {
    this.failed = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    for (const task of this.backlog.splice(0)) task(0);
  }

  /**
   * The spectra of `count` heads read from `source` (see {@link SpectraTask}), on the least
   * loaded worker (or `worker`); without `source`, only a warm-up of that worker's session.
   */
  spectra(feed: SpectraTask['feed'], source: RowSource | undefined, count: number, headDim: number, dModel: number, worker?: number, prepareCount?: number): Promise<{ values: Float64Array; timing?: TaskTiming }> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      const post = (w: number): void => {
        const id = this.nextId++;
        this.queued[w]++;
        this.pending.set(id, { resolve: resolve as (v: never) => void, reject });
        const task: SpectraTask = { id, type: 'spectra', feed, count, headDim, dModel, ...(source ? { source } : {}), ...(prepareCount ? { prepareCount } : {}) };
        this.workers[w].postMessage(task);
      };
      if (worker !== undefined) return post(worker);
      let w = 0;
      for (let i = 1; i < this.workers.length; i++) if (this.queued[i] < this.queued[w]) w = i;
      if (this.queued[w] < MAX_QUEUED_SPECTRA && this.backlog.length === 0) post(w);
      else this.backlog.push((free) => (this.failed ? reject(this.failed) : post(free)));
    });
  }

  /**
   * The maps and energies of one layer's heads (key-svd or qk-svd), on the least loaded worker:
   * the worker runs factor/maps.ts's `mapsFromGrams`, the code the main thread would run, so the
   * result is bit-identical. The Grams are copied, not transferred (the caller still needs them).
   */
  maps(method: 'key-svd' | 'qk-svd', grams: readonly HeadGrams[], n: number, layer: number, keyTensors: readonly string[]): Promise<HeadMaps[]> {
    if (this.failed) return Promise.reject(this.failed);
    let w = 0;
    for (let i = 1; i < this.workers.length; i++) if (this.queued[i] < this.queued[w]) w = i;
    const id = this.nextId++;
    this.queued[w]++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: never) => void, reject });
      const task: MapsTask = { id, type: 'maps', method, n, layer, keyTensors: [...keyTensors], grams: mapsTaskGrams(method, grams) };
      this.workers[w].postMessage(task);
    });
  }

  /** Prepares every worker's Gram session for this shape and tasks of `count` heads (in the background; errors ignored): one promise per worker. */
  warmUpSpectra(feed: SpectraTask['feed'], headDim: number, dModel: number, count: number): Promise<TaskTiming | undefined>[] {
    return this.workers.map((_, i) => this.spectra(feed, undefined, 0, headDim, dModel, i, count).then((r) => r.timing, () => undefined));
  }

  /** Eigenvalues of `count` n x n matrices, spread over the workers. */
  async eigenvalues(grams: Float32Array, n: number, count: number): Promise<Float64Array> {
    if (this.failed) throw this.failed;
    const parts = Math.min(this.workers.length, count);
    const per = Math.ceil(count / parts);
    const jobs: Promise<Float64Array>[] = [];
    for (let start = 0; start < count; start += per) {
      const c = Math.min(per, count - start);
      const chunk = grams.slice(start * n * n, (start + c) * n * n);
      const id = this.nextId++;
      const at = this.next++ % this.workers.length;
      const worker = this.workers[at];
      this.queued[at]++;
      jobs.push(
        new Promise<Float64Array>((resolve, reject) => {
          this.pending.set(id, { resolve: resolve as (v: never) => void, reject });
          const task: EigenTask = { id, type: 'eigenvalues', n, count: c, grams: chunk };
          worker.postMessage(task, [chunk.buffer as ArrayBuffer]);
        }),
      );
    }
    const results = await Promise.all(jobs);
    if (results.length === 1) return results[0];
    const all = new Float64Array(count * n);
    let at = 0;
    for (const r of results) {
      all.set(r, at);
      at += r.length;
    }
    return all;
  }

  /**
   * Stops the workers. Each leaves once its task in progress has ended (onnxruntime aborts the
   * process when a thread is terminated inside a run); one that has not left after
   * {@link CLOSE_GRACE_MS} is terminated.
   */
  async close(): Promise<void> {
    if (!this.failed) this.fail(new Error('eigen pool closed'));
    const workers = this.workers.splice(0).filter((w) => !this.exited.has(w));
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => void w.terminate().then(() => resolve(), () => resolve()), CLOSE_GRACE_MS);
            w.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            const task: CloseTask = { type: 'close' };
            try {
              w.postMessage(task);
            } catch {
              clearTimeout(timer);
              void w.terminate().then(() => resolve(), () => resolve());
            }
          }),
      ),
    );
  }
}
