/**
 * Streaming safetensors writer: header first (every size is known up front), then tensor data
 * in header order, either copied from a source file by byte range or supplied as bytes.
 * Memory use is one copy buffer pair plus whatever a supplied tensor holds.
 */
import { promises as fsp } from 'node:fs';
import type { Dtype } from '../checkpoint/dtypes';
import { throwIfCancelled, type CancelToken } from '../errors';

/** One tensor of an output file. */
export type OutputTensor =
  | { readonly kind: 'copy'; readonly name: string; readonly dtype: Dtype; readonly shape: readonly number[]; readonly file: string; readonly start: number; readonly end: number }
  | { readonly kind: 'bytes'; readonly name: string; readonly dtype: Dtype; readonly shape: readonly number[]; readonly byteLength: number; readonly produce: () => Promise<Uint8Array> };

/** Bytes of a tensor's data. */
export function tensorByteLength(t: OutputTensor): number {
  return t.kind === 'copy' ? t.end - t.start : t.byteLength;
}

/** Copy chunk size: large enough that syscall overhead vanishes, small enough for RSS. */
const CHUNK = 32 * 1024 * 1024;

/** Serialized safetensors header (length prefix + JSON padded with spaces to 8 bytes). */
export function encodeHeader(tensors: readonly OutputTensor[], metadata: Readonly<Record<string, string>>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const n = tensorByteLength(t);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const body = Buffer.from(json, 'utf8');
  const out = new Uint8Array(8 + body.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(body.byteLength), true);
  out.set(body, 8);
  return out;
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

async function writeFully(fh: fsp.FileHandle, buf: Uint8Array, length: number): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await fh.write(buf, done, length - done);
    done += bytesWritten;
  }
}

/**
 * Writes one safetensors file at `path` (must not exist). Consecutive copied tensors that are
 * contiguous in their source are merged into one range; reads of the next chunk overlap the
 * write of the current one.
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly OutputTensor[],
  metadata: Readonly<Record<string, string>>,
  sources: SourceFiles,
  cancel?: CancelToken,
  onBytes?: (n: number) => void,
): Promise<number> {
  const fh = await fsp.open(path, 'wx');
  let written = 0;
  try {
    const header = encodeHeader(tensors, metadata);
    await writeFully(fh, header, header.byteLength);
    written += header.byteLength;
    let bufs: [Uint8Array, Uint8Array] | undefined;
    let i = 0;
    while (i < tensors.length) {
      throwIfCancelled(cancel);
      const t = tensors[i];
      if (t.kind === 'bytes') {
        const bytes = await t.produce();
        if (bytes.byteLength !== t.byteLength) throw new Error(`tensor "${t.name}": produced ${bytes.byteLength} bytes, expected ${t.byteLength}`);
        await writeFully(fh, bytes, bytes.byteLength);
        written += bytes.byteLength;
        onBytes?.(bytes.byteLength);
        i++;
        continue;
      }
      // merge a run of contiguous copies from the same file
      let end = t.end;
      let j = i + 1;
      while (j < tensors.length) {
        const u = tensors[j];
        if (u.kind !== 'copy' || u.file !== t.file || u.start !== end) break;
        end = u.end;
        j++;
      }
      const src = await sources.handle(t.file);
      const size = Math.min(CHUNK, Math.max(1, end - t.start));
      if (!bufs || bufs[0].byteLength < size) bufs = [new Uint8Array(size), new Uint8Array(size)];
      let pos = t.start;
      let which = 0;
      let pending: { buf: Uint8Array; len: number } | undefined;
      while (pos < end || pending) {
        throwIfCancelled(cancel);
        const len = Math.min(bufs[which].byteLength, end - pos);
        const read = len > 0 ? readFully(src, bufs[which], len, pos, t.file) : Promise.resolve();
        const write = pending ? writeFully(fh, pending.buf, pending.len) : Promise.resolve();
        await Promise.all([read, write]);
        if (pending) {
          written += pending.len;
          onBytes?.(pending.len);
        }
        pending = len > 0 ? { buf: bufs[which], len } : undefined;
        pos += len;
        which ^= 1;
      }
      i = j;
    }
  } finally {
    await fh.close();
  }
  return written;
}
