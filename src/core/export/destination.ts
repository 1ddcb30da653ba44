/**
 * Export destination safety. These rules are part of the documented contract (docs/FORMAT.md,
 * "Export safety"):
 * 1. The destination is never the source folder, inside it, or a folder containing it
 *    (compared after resolving symbolic links), so an export can never overwrite its input.
 * 2. A destination that exists must be a real folder (not a file, not a symbolic link).
 * 3. A non-empty destination folder is refused unless `force` is set.
 * 4. Everything is written to a temporary sibling folder `.<name>.fk-partial-<pid>-<hex>` and
 *    renamed into place only when complete; on error or cancel the temporary folder is deleted.
 *    A process killed outright leaves at most that hidden temporary folder, never a partial
 *    destination; the next export to the same destination removes such leftovers when the
 *    process that made them is gone.
 * 5. With `force`, the old destination is first renamed to `.<name>.fk-old-<pid>-<hex>`, the
 *    new folder renamed into place, and then the old one deleted.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { FactoredKeysError } from '../errors';

/** A checked destination. */
export interface Destination {
  /** Absolute destination path (parent resolved through symlinks). */
  readonly dest: string;
  readonly parent: string;
  /** Whether the destination exists now (an empty folder, or a non-empty one with force). */
  readonly exists: boolean;
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

async function realpathOrNull(p: string): Promise<string | null> {
  try {
    return await fsp.realpath(p);
  } catch {
    return null;
  }
}

/**
 * Checks the destination against the source. `sourceFiles` are the checkpoint's own files
 * (followed through symlinks, as in a Hugging Face cache) so none can end up inside it.
 */
export async function checkDestination(sourceDir: string, sourceFiles: readonly string[], dest: string, force: boolean): Promise<Destination> {
  if (dest.trim() === '') throw new FactoredKeysError('export: the output folder path is empty');
  const abs = path.resolve(dest);
  const name = path.basename(abs);
  if (name === '' || name === '.' || name === '..') throw new FactoredKeysError(`${dest}: not a usable output folder name`);
  // Resolve the nearest existing ancestor so a missing parent still compares correctly.
  let parent = path.dirname(abs);
  const missing: string[] = [];
  let real = await realpathOrNull(parent);
  while (real === null) {
    missing.unshift(path.basename(parent));
    const up = path.dirname(parent);
    if (up === parent) throw new FactoredKeysError(`${dest}: cannot resolve the output folder's parent`);
    parent = up;
    real = await realpathOrNull(parent);
  }
  const parentReal = path.join(real, ...missing);
  const destReal = path.join(parentReal, name);
  const sourceReal = (await realpathOrNull(sourceDir)) ?? path.resolve(sourceDir);
  const sources = [sourceReal];
  for (const f of sourceFiles) {
    const r = await realpathOrNull(f);
    if (r) sources.push(path.dirname(r));
  }
  for (const s of sources) {
    if (isInside(destReal, s)) throw new FactoredKeysError(`${dest}: the output folder is inside the source checkpoint folder ${s}; choose a folder outside it`);
    if (isInside(s, destReal)) throw new FactoredKeysError(`${dest}: the output folder contains the source checkpoint ${s}; choose another folder`);
  }
  let exists = false;
  let st;
  try {
    st = await fsp.lstat(destReal);
  } catch {
    st = undefined;
  }
  if (st) {
    if (st.isSymbolicLink()) throw new FactoredKeysError(`${dest}: is a symbolic link; give the real output folder`);
    if (!st.isDirectory()) throw new FactoredKeysError(`${dest}: exists and is not a folder`);
    const entries = await fsp.readdir(destReal);
    if (entries.length > 0 && !force) throw new FactoredKeysError(`${dest}: output folder is not empty (use --force to replace it)`);
    exists = true;
  }
  return { dest: destReal, parent: parentReal, exists };
}

const TEMP_RE = /^\.(.+)\.fk-(partial|old)-(\d+)-[0-9a-f]+$/;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes temporary folders of earlier exports to the same destination whose process is gone. */
export async function removeStaleTemps(d: Destination): Promise<string[]> {
  const removed: string[] = [];
  let entries: string[];
  try {
    entries = await fsp.readdir(d.parent);
  } catch {
    return removed;
  }
  const name = path.basename(d.dest);
  for (const e of entries) {
    const m = TEMP_RE.exec(e);
    if (!m || m[1] !== name) continue;
    const pid = Number(m[3]);
    if (pid === process.pid || processAlive(pid)) continue;
    await fsp.rm(path.join(d.parent, e), { recursive: true, force: true });
    removed.push(e);
  }
  return removed;
}

/** Creates the hidden temporary sibling folder the export writes into. */
export async function makeTempFolder(d: Destination): Promise<string> {
  await fsp.mkdir(d.parent, { recursive: true });
  const temp = path.join(d.parent, `.${path.basename(d.dest)}.fk-partial-${process.pid}-${randomBytes(4).toString('hex')}`);
  await fsp.mkdir(temp);
  return temp;
}

/** Moves the finished temporary folder into place (rule 4/5 above). */
export async function commitTempFolder(temp: string, d: Destination, force: boolean): Promise<void> {
  let st;
  try {
    st = await fsp.lstat(d.dest);
  } catch {
    st = undefined;
  }
  if (!st) {
    await fsp.rename(temp, d.dest);
    return;
  }
  if (!st.isDirectory() || st.isSymbolicLink()) throw new FactoredKeysError(`${d.dest}: appeared during the export and is not a folder`);
  if (!force && (await fsp.readdir(d.dest)).length > 0) throw new FactoredKeysError(`${d.dest}: output folder was filled during the export (use --force to replace it)`);
  const old = path.join(d.parent, `.${path.basename(d.dest)}.fk-old-${process.pid}-${randomBytes(4).toString('hex')}`);
  await fsp.rename(d.dest, old);
  try {
    await fsp.rename(temp, d.dest);
  } catch (e) {
    await fsp.rename(old, d.dest).catch(() => undefined);
    throw e;
  }
  await fsp.rm(old, { recursive: true, force: true });
}
