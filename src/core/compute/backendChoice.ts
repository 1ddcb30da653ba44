/**
 * Remembers which provider `auto` measured fastest for a given problem shape on this machine,
 * so only the first analysis pays for the trial (like FFTW's "wisdom"). Stored as a small JSON
 * file under the user's cache folder; any read/write problem just means measuring again.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BackendName } from '../compute/session';

interface Entry {
  readonly backend: BackendName;
  readonly perLayerMs: Record<string, number>;
  readonly measured: string;
}

/** Folder of the cache file: $FACTORED_KEYS_CACHE_DIR, else $XDG_CACHE_HOME/factored-keys, else ~/.cache/factored-keys. */
export function cacheDir(): string {
  return process.env.FACTORED_KEYS_CACHE_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'factored-keys');
}

const file = (): string => path.join(cacheDir(), 'spectrum-backend.json');

function readAll(): Record<string, Entry> {
  try {
    const data = JSON.parse(readFileSync(file(), 'utf8')) as unknown;
    return data && typeof data === 'object' && !Array.isArray(data) ? (data as Record<string, Entry>) : {};
  } catch {
    return {};
  }
}

/** The key of a problem on this machine: shape, feed type, cores and the usable providers. */
export function choiceKey(shape: string, threads: number, candidates: readonly BackendName[]): string {
  return `${shape}|threads=${threads}|${os.cpus()[0]?.model ?? 'cpu'}|${candidates.join('+')}`;
}

/** A remembered choice, when it is still among the usable candidates. */
export function recalledChoice(key: string, candidates: readonly BackendName[]): Entry | undefined {
  const e = readAll()[key];
  return e && candidates.includes(e.backend) ? e : undefined;
}

/** Stores a measured choice (best effort). */
export function rememberChoice(key: string, backend: BackendName, perLayerMs: Record<string, number>): void {
  try {
    const all = readAll();
    all[key] = { backend, perLayerMs, measured: new Date().toISOString() };
    mkdirSync(cacheDir(), { recursive: true });
    const tmp = `${file()}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(all, null, 2));
    renameSync(tmp, file());
  } catch {
    // a read-only home is fine: auto measures again next time
  }
}
