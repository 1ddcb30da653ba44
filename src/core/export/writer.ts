/**
 * Streaming safetensors writing in two phases, so copying can start before any factored
 * tensor's size is known:
 * 1. the data of every copied tensor is streamed (byte-range copy) to the file right after a
 *    header area reserved at its maximum possible size;
 * 2. factored tensors are appended after the copied ones, and the header (offsets now known)
 *    is written into the reserved area, padded with spaces as the safetensors format allows.
 * A file's data section is therefore: copied tensors in source order, then new tensors.
 */
import { promises as fsp } from 'node:fs';
import type { Dtype } from '../checkpoint/dtypes';
import { CancelledError, throwIfCancelled, type CancelToken } from '../errors';

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

/** Copy chunk size and how many chunks may be in flight (read-ahead while writing). */
const CHUNK = 32 * 1024 * 1024;
const DEPTH = 4;

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

/**
 * Copies the tensors' bytes, back to back, into `fh` from `position` on. Up to DEPTH chunks
 * are in flight, so reads run ahead of writes and the disk stays busy even while the main
 * thread computes. Returns the position after the last byte.
 */
export async function copyTensors(
  fh: fsp.FileHandle,
  position: number,
  tensors: readonly CopiedTensor[],
  sources: SourceFiles,
  cancel?: CancelToken,
  onBytes?: (n: number) => void,
): Promise<number> {
  const chunks: { file: string; src: number; dst: number; length: number }[] = [];
  let dst = position;
  for (const r of ranges(tensors)) {
    for (let off = 0; off < r.length; off += CHUNK) {
      const length = Math.min(CHUNK, r.length - off);
      chunks.push({ file: r.file, src: r.start + off, dst, length });
      dst += length;
    }
  }
  if (chunks.length === 0) return position;
  const free: Uint8Array[] = Array.from({ length: Math.min(DEPTH, chunks.length) }, () => new Uint8Array(Math.min(CHUNK, Math.max(...chunks.map((c) => c.length)))));
  const waiting: (() => void)[] = [];
  const acquire = async (): Promise<Uint8Array> => {
    while (free.length === 0) await new Promise<void>((resolve) => waiting.push(resolve));
    return free.pop()!;
  };
  const release = (b: Uint8Array) => {
    free.push(b);
    waiting.shift()?.();
  };
  // Writes are chained in order; each chunk's read starts as soon as a buffer is free.
  let writes: Promise<void> = Promise.resolve();
  let failure: unknown;
  for (const c of chunks) {
    if (cancel?.cancelled) failure ??= new CancelledError();
    if (failure) break;
    const buf = await acquire();
    if (failure) {
      release(buf);
      break;
    }
    const src = await sources.handle(c.file);
    const read = readFully(src, buf, c.length, c.src, c.file);
    writes = writes.then(async () => {
      await read;
      throwIfCancelled(cancel);
      await writeFullyAt(fh, buf, c.length, c.dst);
      onBytes?.(c.length);
      release(buf);
    });
    // keep the loop going, but remember the first failure (and never leave a rejection unobserved)
    writes.catch((e: unknown) => {
      failure ??= e;
      release(buf);
    });
    read.catch(() => undefined);
  }
  // wait for every in-flight write before reporting, so no write outlives this call
  try {
    await writes;
  } catch (e) {
    failure ??= e;
  }
  if (failure) throw failure;
  return dst;
}
