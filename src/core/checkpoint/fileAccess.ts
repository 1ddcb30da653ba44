/**
 * Positional reads from checkpoint files. Every byte the tool reads from a checkpoint goes
 * through here, so tests can observe exactly which ranges were touched.
 */
import { promises as fsp, readSync } from 'node:fs';
import { FactoredKeysError } from '../errors';

export type ReadObserver = (file: string, position: number, length: number) => void;

/** Headers were checked against the size at open time: a read that ends early means the file shrank while open. */
function shrank(file: string, at: number): FactoredKeysError {
  return new FactoredKeysError(`${file}: unexpected end of file at byte ${at} (was it changed while being read?)`);
}

/**
 * Reads exactly `target.length` bytes at `position` of open descriptor `fd` (of `file`) with
 * positional synchronous reads: a worker thread's own I/O on a descriptor this process opened
 * (see {@link FileReader.descriptor}).
 */
export function readExactlySync(fd: number, file: string, target: Uint8Array, position: number): void {
  for (let done = 0; done < target.length; ) {
    const n = readSync(fd, target, done, target.length - done, position + done);
    if (n === 0) throw shrank(file, position + done);
    done += n;
  }
}

/** A pool of open read-only file handles, closed together. */
export class FileReader {
  private readonly handles = new Map<string, Promise<fsp.FileHandle>>();
  private closed = false;

  constructor(private readonly observer?: ReadObserver) {}

  private handle(file: string): Promise<fsp.FileHandle> {
    // A read still in flight when a sibling read failed and the checkpoint was closed must not
    // reopen the file: that handle would never be closed.
    if (this.closed) return Promise.reject(new Error(`${file}: read after the checkpoint was closed`));
    let h = this.handles.get(file);
    if (!h) {
      h = fsp.open(file, 'r');
      this.handles.set(file, h);
    }
    return h;
  }

  /** Reads exactly `length` bytes at `position` into `target` (or a fresh aligned buffer). */
  async read(file: string, position: number, length: number, target?: Uint8Array): Promise<Uint8Array> {
    this.observer?.(file, position, length);
    const out = target ?? new Uint8Array(new ArrayBuffer(length));
    const fh = await this.handle(file);
    let done = 0;
    while (done < length) {
      const chunk = Math.min(length - done, 1 << 30);
      const { bytesRead } = await fh.read(out, done, chunk, position + done);
      if (bytesRead === 0) throw shrank(file, position + done);
      done += bytesRead;
    }
    return out;
  }

  /**
   * The open descriptor of `file`, for another thread of this process to read `length` bytes at
   * `position` (a worker's positional `readSync`), reported to the observer as read here. It
   * stays open until {@link close}.
   */
  async descriptor(file: string, position: number, length: number): Promise<number> {
    this.observer?.(file, position, length);
    return (await this.handle(file)).fd;
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(all.map(async (h) => (await h).close().catch(() => undefined)));
  }
}
