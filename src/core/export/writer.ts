/**
 * Streaming safetensors writing in two phases, so copying can start before any factored
 * tensor's size is known:
 * 1. the data of every copied tensor is streamed (byte-range copy) to the file right after a
 *    header area reserved at its maximum possible size;
 * 2. factored tensors are appended after the copied ones, and the header (offsets now known)
 *    is written into the reserved area, padded with spaces as the safetensors format allows.
 * A file's data section is therefore: copied tensors in source order, then new tensors.
 */
import { promises as fsp, readSync, writeSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { Dtype } from '../checkpoint/dtypes';
import { CancelledError, type CancelToken } from '../errors';
import { workerScript } from '../worker/script';

/** A tensor's header entry. */
export interface HeaderEntry {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  readonly byteLength: number;
}

/** A tensor copied by byte range from a source file. */
export interface CopiedTensor extends HeaderEntry {
  readonly file: string;
  readonly start: number;
}

/**
 * Copy chunk size and how many read-then-write loops run at once (LANES x CHUNK of RSS).
 * Chunks of a few MiB stay cache-resident between the read and the write; 1-32 MiB and 1-4
 * lanes measured within noise of each other on the 7B benchmark.
 */
const CHUNK = 8 * 1024 * 1024;
const LANES = 3;

/**
 * The JSON header for `entries` laid out back to back in this order, as bytes (without the
 * 8-byte length prefix), padded with spaces to a multiple of 8 or to exactly `padTo` bytes.
 */
export function headerJson(entries: readonly HeaderEntry[], metadata: Readonly<Record<string, string>>, padTo?: number): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of entries) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.byteLength] };
    offset += t.byteLength;
  }
  const body = Buffer.from(JSON.stringify(header), 'utf8');
  const length = padTo ?? body.byteLength + ((8 - (body.byteLength % 8)) % 8);
  if (body.byteLength > length) throw new Error(`safetensors header needs ${body.byteLength} bytes but only ${length} were reserved`);
  const out = Buffer.alloc(length, 0x20);
  body.copy(out);
  return out;
}

/** The 8-byte little-endian header length prefix. */
export function headerPrefix(length: number): Uint8Array {
  const p = new Uint8Array(8);
  new DataView(p.buffer).setBigUint64(0, BigInt(length), true);
  return p;
}

/** Source file handles shared across output files, closed together. */
export class SourceFiles {
  private readonly handles = new Map<string, Promise<fsp.FileHandle>>();

  handle(file: string): Promise<fsp.FileHandle> {
    let h = this.handles.get(file);
    if (!h) {
      h = fsp.open(file, 'r');
      this.handles.set(file, h);
    }
    return h;
  }

  async close(): Promise<void> {
    const all = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(all.map(async (h) => (await h.catch(() => undefined))?.close().catch(() => undefined)));
  }
}

async function readFully(fh: fsp.FileHandle, buf: Uint8Array, length: number, position: number, file: string): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw new Error(`${file}: unexpected end of file at byte ${position + done}`);
    done += bytesRead;
  }
}

/** Writes all of `buf[0, length)` at `position`. */
export async function writeFullyAt(fh: fsp.FileHandle, buf: Uint8Array, length: number, position: number): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await fh.write(buf, done, length - done, position + done);
    done += bytesWritten;
  }
}

interface Range {
  readonly file: string;
  readonly start: number;
  readonly length: number;
}

/** Merges tensors that are contiguous in the same source file into single ranges. */
function ranges(tensors: readonly CopiedTensor[]): Range[] {
  const out: { file: string; start: number; length: number }[] = [];
  for (const t of tensors) {
    const last = out[out.length - 1];
    if (last && last.file === t.file && last.start + last.length === t.start) last.length += t.byteLength;
    else out.push({ file: t.file, start: t.start, length: t.byteLength });
  }
  return out;
}

interface Chunk {
  readonly file: string;
  readonly src: number;
  readonly dst: number;
  readonly length: number;
}

/** The copy of `tensors` to `position` on, in chunks of at most CHUNK bytes; `end` is the position after the last byte. */
function planChunks(position: number, tensors: readonly CopiedTensor[]): { chunks: Chunk[]; end: number } {
  const chunks: Chunk[] = [];
  let dst = position;
  for (const r of ranges(tensors)) {
    for (let off = 0; off < r.length; off += CHUNK) {
      const length = Math.min(CHUNK, r.length - off);
      chunks.push({ file: r.file, src: r.start + off, dst, length });
      dst += length;
    }
  }
  return { chunks, end: dst };
}

/** Where {@link copyTensors} of `tensors` to `position` ends (known before any byte is copied). */
export function copiedEnd(position: number, tensors: readonly CopiedTensor[]): number {
  return tensors.reduce((a, t) => a + t.byteLength, position);
}

/**
 * Copies the tensors' bytes, back to back, into `fh` from `position` on. LANES independent
 * read-then-write loops share the chunks (positional writes, so order does not matter): the
 * disk stays busy even while the main thread computes. Returns the position after the last
 * byte; on failure or cancellation waits for every in-flight operation, then throws.
 */
export async function copyTensors(
  fh: fsp.FileHandle,
  position: number,
  tensors: readonly CopiedTensor[],
  sources: SourceFiles,
  cancel?: CancelToken,
  onBytes?: (n: number) => void,
): Promise<number> {
  const { chunks, end: dst } = planChunks(position, tensors);
  if (chunks.length === 0) return position;
  const size = Math.max(...chunks.map((c) => c.length));
  let next = 0;
  let stop = false;
  const lane = async (): Promise<void> => {
    const buf = new Uint8Array(size);
    for (;;) {
      if (stop) return;
      if (cancel?.cancelled) throw new CancelledError();
      const i = next++;
      if (i >= chunks.length) return;
      const c = chunks[i];
      await readFully(await sources.handle(c.file), buf, c.length, c.src, c.file);
      await writeFullyAt(fh, buf, c.length, c.dst);
      onBytes?.(c.length);
    }
  };
  const results = await Promise.allSettled(
    Array.from({ length: Math.min(LANES, chunks.length) }, () =>
      lane().catch((e: unknown) => {
        stop = true;
        throw e;
      }),
    ),
  );
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return dst;
}

/** One output file's part of {@link copyTensorsInWorker}: `tensors` back to back from `position` on. */
export interface CopyJob {
  readonly fh: fsp.FileHandle;
  readonly position: number;
  readonly tensors: readonly CopiedTensor[];
}

/**
 * Message to a worker thread: copy every chunk from file descriptor `in` to `out` (descriptors
 * of this process, opened and closed by the main thread). `stop` (an Int32Array on a
 * SharedArrayBuffer) is set to 1 by the main thread to cancel between chunks.
 */
export interface CopyTask {
  readonly id: number;
  readonly type: 'copy';
  readonly chunks: readonly { readonly job: number; readonly in: number; readonly out: number; readonly file: string; readonly src: number; readonly dst: number; readonly length: number }[];
  readonly stop: Int32Array;
}

/** Worker messages of a {@link CopyTask}: `bytes` copied for `job` (progress), then one of done / cancelled / error. */
export interface CopyReply {
  readonly id: number;
  readonly job?: number;
  readonly bytes?: number;
  readonly done?: boolean;
  readonly cancelled?: boolean;
  readonly error?: { readonly message: string; readonly code?: string; readonly errno?: number; readonly syscall?: string; readonly path?: string };
}

/** Runs a {@link CopyTask} with synchronous reads and writes (what the worker does); never throws. */
export function runCopyTask(task: CopyTask, onBytes: (bytes: number, job: number) => void): CopyReply {
  const id = task.id;
  try {
    const size = task.chunks.reduce((a, c) => Math.max(a, c.length), 0);
    const buf = new Uint8Array(size);
    for (const c of task.chunks) {
      if (Atomics.load(task.stop, 0) !== 0) return { id, cancelled: true };
      let done = 0;
      while (done < c.length) {
        const n = readSync(c.in, buf, done, c.length - done, c.src + done);
        if (n === 0) throw new Error(`${c.file}: unexpected end of file at byte ${c.src + done}`);
        done += n;
      }
      for (let w = 0; w < c.length; ) w += writeSync(c.out, buf, w, c.length - w, c.dst + w);
      onBytes(c.length, c.job);
    }
    return { id, done: true };
  } catch (e) {
    const x = e as NodeJS.ErrnoException;
    return { id, error: { message: x?.message ?? String(e), code: x?.code, errno: x?.errno, syscall: x?.syscall, path: x?.path } };
  }
}

let nextCopyId = 0;

/**
 * {@link copyTensors} for several output files, on a worker thread with synchronous I/O, so the
 * copy never waits for the main thread (onnxruntime runs and eigensolves block it for tens of
 * milliseconds, during which the main-thread copy's next reads could not be issued). Returns
 * each job's end position, or undefined when no worker entry exists (then use copyTensors). On
 * failure or cancellation the worker has stopped touching the files when this rejects.
 */
export async function copyTensorsInWorker(jobs: readonly CopyJob[], sources: SourceFiles, cancel?: CancelToken, onBytes?: (n: number, job: number) => void): Promise<number[] | undefined> {
  const script = workerScript();
  if (!script) return undefined;
  const chunks: CopyTask['chunks'][number][] = [];
  const ends: number[] = [];
  for (let j = 0; j < jobs.length; j++) {
    const plan = planChunks(jobs[j].position, jobs[j].tensors);
    for (const c of plan.chunks) chunks.push({ job: j, in: (await sources.handle(c.file)).fd, out: jobs[j].fh.fd, ...c });
    ends.push(plan.end);
  }
  if (chunks.length === 0) return ends;
  if (cancel?.cancelled) throw new CancelledError();
  const stop = new Int32Array(new SharedArrayBuffer(4));
  const id = nextCopyId++;
  const worker = new Worker(script);
  try {
    await new Promise<void>((resolve, reject) => {
      worker.on('message', (m: CopyReply) => {
        if (m.id !== id) return;
        if (m.bytes !== undefined) {
          if (cancel?.cancelled) Atomics.store(stop, 0, 1);
          onBytes?.(m.bytes, m.job ?? 0);
        } else if (m.done) resolve();
        else if (m.cancelled) reject(new CancelledError());
        else if (m.error) reject(Object.assign(new Error(m.error.message), { ...m.error }));
      });
      worker.on('error', reject);
      worker.on('exit', (code) => reject(new Error(`copy worker exited (code ${code})`)));
      const task: CopyTask = { id, type: 'copy', chunks, stop };
      worker.postMessage(task);
    });
  } finally {
    await worker.terminate();
  }
  return ends;
}
