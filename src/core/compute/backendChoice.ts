/**
 * Remembers which provider `auto` measured fastest for a given problem shape on this machine,
 * so only the first analysis or evaluation pays for the trial (like FFTW's "wisdom"). One small
 * JSON file per task under the user's cache folder; any read/write problem just means measuring
 * again.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BackendName } from './session';

/** What was timed: the spectrum's Gram step, or an evaluation's forward pass. */
export type ChoiceTask = 'spectrum' | 'eval';

interface Entry {
  readonly backend: BackendName;
  readonly perLayerMs: Record<string, number>;
  /** Each candidate's start-up (session creation, a GPU's context), when the trial timed it. */
  readonly startUpMs?: Record<string, number>;
  readonly measured: string;
}

/** Folder of the cache file: $FACTORED_KEYS_CACHE_DIR, else $XDG_CACHE_HOME/factored-keys, else ~/.cache/factored-keys. */
export function cacheDir(): string {
  return process.env.FACTORED_KEYS_CACHE_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'factored-keys');
}

const file = (task: ChoiceTask): string => path.join(cacheDir(), `${task}-backend.json`);

function readAll(task: ChoiceTask): Record<string, Entry> {
  try {
    const data = JSON.parse(readFileSync(file(task), 'utf8')) as unknown;
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
export function recalledChoice(task: ChoiceTask, key: string, candidates: readonly BackendName[]): Entry | undefined {
  const e = readAll(task)[key];
  return e && candidates.includes(e.backend) ? e : undefined;
}

/** Stores a measured choice (best effort). */
export function rememberChoice(task: ChoiceTask, key: string, backend: BackendName, perLayerMs: Record<string, number>, startUpMs?: Record<string, number>): void {
  try {
    const all = readAll(task);
    all[key] = { backend, perLayerMs, ...(startUpMs ? { startUpMs } : {}), measured: new Date().toISOString() };
    mkdirSync(cacheDir(), { recursive: true });
    const tmp = `${file(task)}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(all, null, 2));
    renameSync(tmp, file(task));
  } catch {
    // a read-only home is fine: auto measures again next time
  }
}
