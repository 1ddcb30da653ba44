/**
 * Disk cache of calibration moments, keyed by content: sha256 over the checkpoint's bytes
 * (config.json and every weight file), the text's and the tokenizer's bytes, the token count and
 * the window length (./moments.ts builds the key). A sweep or a second export of the same
 * (checkpoint, text, tokenizer, N) reads the moments instead of running the model.
 *
 * Layout: `<cacheDir>/calibration/<key>.json` (shape and key fields) and `<key>.f64` (float64,
 * [layers][kvHeads][key, query][head_dim][head_dim], little-endian). Written to a temporary
 * name and renamed, so a reader never sees a partial file; any read problem is a cache miss.
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { cacheDir as userCacheDir } from '../compute/backendChoice';
import type { HeadMoments } from './moments';

/** Shape a cached entry must have. */
export interface MomentShape {
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
}

const contentHashes = new Map<string, Promise<string>>();

async function hashFile(file: string, h: ReturnType<typeof createHash>): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const s = createReadStream(file, { highWaterMark: 4 << 20 });
    s.on('data', (chunk) => h.update(chunk));
    s.on('end', () => resolve());
    s.on('error', reject);
  });
}

/**
 * sha256 over config.json and every weight file's name and bytes (memoised per process by path,
 * size and modification time). Costs one read of the checkpoint (~10 s for 14 GB).
 */
export async function checkpointContentHash(ckpt: Checkpoint): Promise<string> {
  const files = [path.join(ckpt.dir, 'config.json'), ...ckpt.files.map((f) => f.file)];
  const stats = await Promise.all(files.map((f) => fsp.stat(f).then((s) => `${f}:${s.size}:${s.mtimeMs}`, () => `${f}:missing`)));
  const memo = stats.join('|');
  let p = contentHashes.get(memo);
  if (!p) {
    p = (async () => {
      const h = createHash('sha256');
      for (const f of files) {
        h.update(`${path.basename(f)}\0`);
        await hashFile(f, h).catch(() => h.update('missing'));
      }
      return h.digest('hex');
    })();
    p.catch(() => contentHashes.delete(memo));
    contentHashes.set(memo, p);
  }
  return p;
}

function folder(dir: string | undefined): string {
  return path.join(dir ?? userCacheDir(), 'calibration');
}

/** The cached moments of `key`, or undefined (missing, wrong shape or unreadable). */
export async function readCachedMoments(dir: string | undefined, key: string, shape: MomentShape): Promise<HeadMoments[][] | undefined> {
  try {
    const base = path.join(folder(dir), key);
    const meta = JSON.parse(await fsp.readFile(`${base}.json`, 'utf8')) as Partial<MomentShape> & { key?: string };
    if (meta.key !== key || meta.layers !== shape.layers || meta.kvHeads !== shape.kvHeads || meta.headDim !== shape.headDim) return undefined;
    const raw = await fsp.readFile(`${base}.f64`);
    const n2 = shape.headDim * shape.headDim;
    const total = shape.layers * shape.kvHeads * 2 * n2;
    if (raw.byteLength !== total * 8) return undefined;
    const all = new Float64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    if (!all.every(Number.isFinite)) return undefined;
    const out: HeadMoments[][] = [];
    let off = 0;
    for (let l = 0; l < shape.layers; l++) {
      const row: HeadMoments[] = [];
      for (let g = 0; g < shape.kvHeads; g++) {
        row.push({ key: all.slice(off, off + n2), query: all.slice(off + n2, off + 2 * n2) });
        off += 2 * n2;
      }
      out.push(row);
    }
    return out;
  } catch {
    return undefined;
  }
}

/** Stores moments under `key`; failures are ignored (the cache is an optimisation). */
export async function writeCachedMoments(dir: string | undefined, key: string, shape: MomentShape, moments: readonly (readonly HeadMoments[])[], fields: Record<string, unknown>): Promise<void> {
  const base = path.join(folder(dir), key);
  const tmp = `${base}.tmp-${process.pid}-${Date.now()}`;
  try {
    await fsp.mkdir(folder(dir), { recursive: true });
    const n2 = shape.headDim * shape.headDim;
    const all = new Float64Array(shape.layers * shape.kvHeads * 2 * n2);
    let off = 0;
    for (const row of moments) {
      for (const m of row) {
        all.set(m.key, off);
        all.set(m.query, off + n2);
        off += 2 * n2;
      }
    }
    await fsp.writeFile(`${tmp}.f64`, new Uint8Array(all.buffer));
    await fsp.rename(`${tmp}.f64`, `${base}.f64`);
    // the metadata goes last: an entry is only read once its .json exists
    await fsp.writeFile(`${tmp}.json`, JSON.stringify({ key, ...shape, ...fields }) + '\n');
    await fsp.rename(`${tmp}.json`, `${base}.json`);
  } catch {
    await fsp.rm(`${tmp}.f64`, { force: true }).catch(() => undefined);
    await fsp.rm(`${tmp}.json`, { force: true }).catch(() => undefined);
  }
}
