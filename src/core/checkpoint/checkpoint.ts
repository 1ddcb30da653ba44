/**
 * A checkpoint: config.json plus one or more safetensors files, opened with every header
 * validated and tensors read only by byte range.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { FactoredKeysError } from '../errors';
import { jsonTooDeep, MAX_JSON_DEPTH } from './jsonDepth';
import { bytesPerElement, decodeToFloat32, isDecodable } from './dtypes';
import { FileReader, type ReadObserver } from './fileAccess';
import { parseHeaderJson, parseHeaderLength, previewJson, type SafetensorsHeader, type TensorInfo } from './safetensors';

export const INDEX_FILE = 'model.safetensors.index.json';
export const CONFIG_FILE = 'config.json';
/** index.json and config.json are small; anything larger is refused rather than parsed. */
const MAX_JSON_FILE_BYTES = 64 * 1024 * 1024;

export type ModelConfig = Readonly<Record<string, unknown>>;

export interface OpenOptions {
  /** Called for every data read (tests use it to prove reads stay inside tensors). */
  readonly observeRead?: ReadObserver;
}

/** Rows of a tensor, to be read by another thread (see {@link Checkpoint.rowSource}). */
export interface RowSource {
  readonly file: string;
  /** A descriptor of `file` open in this process. */
  readonly fd: number;
  readonly offset: number;
  readonly length: number;
}

export interface Checkpoint {
  /** Folder holding the checkpoint. */
  readonly dir: string;
  readonly config: ModelConfig;
  /** Shard files in index order (a single entry for unsharded checkpoints). */
  readonly files: readonly SafetensorsHeader[];
  /** Name -> tensor, across all files. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Path of the index file, when the checkpoint is sharded. */
  readonly indexFile?: string;
  /** The hub cache snapshot that was opened, when the input was a `models--org--name/` folder. */
  readonly hub?: HubRevision;
  tensor(name: string): TensorInfo;
  /** Where rows [rowStart, rowEnd) of a tensor (first axis) lie: file, absolute offset, length; checks the range. */
  rowSpan(name: string, rowStart?: number, rowEnd?: number): { readonly file: string; readonly offset: number; readonly length: number };
  /**
   * Rows [rowStart, rowEnd) of a tensor for a reader on a worker thread: where they lie and this
   * checkpoint's open descriptor of that file (positional reads only; it stays valid until
   * {@link close}). Checks the range and reports it to the read observer as read.
   */
  rowSource(name: string, rowStart?: number, rowEnd?: number): Promise<RowSource>;
  /** Raw little-endian bytes of rows [rowStart, rowEnd) of a tensor (first axis). */
  readRows(name: string, rowStart?: number, rowEnd?: number, target?: Uint8Array): Promise<Uint8Array>;
  /** Rows decoded to float32. */
  readRowsF32(name: string, rowStart?: number, rowEnd?: number): Promise<Float32Array>;
  close(): Promise<void>;
}

async function readSmallJson(file: string, what: string): Promise<unknown> {
  let stat;
  try {
    stat = await fsp.stat(file);
  } catch {
    throw new FactoredKeysError(`${file}: ${what} not found`);
  }
  // A directory, FIFO or device (e.g. a link to /dev/zero) would fail oddly or never finish.
  if (!stat.isFile()) throw new FactoredKeysError(`${file}: ${what} is not a regular file`);
  if (stat.size > MAX_JSON_FILE_BYTES) throw new FactoredKeysError(`${file}: ${what} is ${stat.size} bytes, too large`);
  const text = await fsp.readFile(file, 'utf8');
  const deep = jsonTooDeep(text);
  if (deep !== undefined) throw new FactoredKeysError(`${file}: ${what} nests more than ${MAX_JSON_DEPTH} levels deep under "${deep}"`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FactoredKeysError(`${file}: ${what} is not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
}

async function readHeader(reader: FileReader, file: string): Promise<SafetensorsHeader> {
  let size: number;
  try {
    const st = await fsp.stat(file);
    if (!st.isFile()) throw new FactoredKeysError(`${file}: not a regular file`);
    size = st.size;
  } catch (e) {
    if (e instanceof FactoredKeysError) throw e;
    throw new FactoredKeysError(`${file}: cannot open (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const prefix = await reader.read(file, 0, Math.min(8, size));
  const length = parseHeaderLength(prefix, size, file);
  const headerBytes = await reader.read(file, 8, length);
  return parseHeaderJson(headerBytes, size, file);
}

/** A shard name from index.json must be a plain file name inside the checkpoint folder. */
export function checkShardName(name: unknown, indexFile: string): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new FactoredKeysError(`${indexFile}: weight_map holds a non-string file name ${previewJson(name)}`);
  }
  if (name !== path.basename(name) || name.includes('/') || name.includes('\\') || name === '.' || name === '..' || name.includes('\0')) {
    throw new FactoredKeysError(`${indexFile}: shard "${name}" is not a plain file name in the checkpoint folder`);
  }
  return name;
}

/** Which snapshot of a Hugging Face hub cache folder (`models--org--name/`) was opened. */
export interface HubRevision {
  /** The `models--org--name` folder given. */
  readonly repo: string;
  /** The snapshot folder's name (a commit hash). */
  readonly revision: string;
  /** The ref that named it (`main`), or undefined when the folder held a single snapshot and no ref. */
  readonly ref?: string;
}

/** A ref file's content or a snapshot folder's name: a plain name, never a path. */
const REVISION_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

async function isDirectory(p: string): Promise<boolean> {
  return fsp.stat(p).then((s) => s.isDirectory(), () => false);
}

/**
 * Resolves a Hugging Face hub cache folder (`models--org--name/` with `refs/` and `snapshots/`,
 * as `huggingface_hub` writes it) to the snapshot `refs/main` names, or to its only snapshot.
 * Returns undefined for any other folder.
 */
export async function resolveHubCache(dir: string): Promise<{ snapshot: string; hub: HubRevision } | undefined> {
  const snapshots = path.join(dir, 'snapshots');
  if (!(await isDirectory(snapshots))) return undefined;
  if (await fsp.stat(path.join(dir, CONFIG_FILE)).then(() => true, () => false)) return undefined;
  const refFile = path.join(dir, 'refs', 'main');
  const ref = await fsp.readFile(refFile, 'utf8').then((t) => t.trim(), () => undefined);
  if (ref !== undefined) {
    if (!REVISION_NAME.test(ref)) throw new FactoredKeysError(`${refFile}: does not hold a revision (got ${previewJson(ref.slice(0, 80))})`);
    const snapshot = path.join(snapshots, ref);
    if (!(await isDirectory(snapshot))) throw new FactoredKeysError(`${refFile}: names revision ${ref}, but ${snapshot} is missing (download it again)`);
    return { snapshot, hub: { repo: dir, revision: ref, ref: 'main' } };
  }
  const revisions: string[] = [];
  for (const e of (await fsp.readdir(snapshots)).sort()) if (REVISION_NAME.test(e) && (await isDirectory(path.join(snapshots, e)))) revisions.push(e);
  if (revisions.length === 1) return { snapshot: path.join(snapshots, revisions[0]), hub: { repo: dir, revision: revisions[0] } };
  if (revisions.length === 0) throw new FactoredKeysError(`${dir}: Hugging Face cache folder with no snapshot in snapshots/`);
  throw new FactoredKeysError(`${dir}: Hugging Face cache folder without refs/main and ${revisions.length} snapshots; give one of: ${revisions.map((r) => path.join(snapshots, r)).join(', ')}`);
}

interface Location {
  dir: string;
  files: string[];
  indexFile?: string;
  indexMap?: Record<string, string>;
  hub?: HubRevision;
}

async function resolveLocation(input: string): Promise<Location> {
  let stat;
  try {
    stat = await fsp.stat(input);
  } catch {
    throw new FactoredKeysError(`${input}: no such file or folder`);
  }
  if (stat.isFile()) {
    const dir = path.dirname(path.resolve(input));
    if (path.basename(input) === INDEX_FILE) return resolveLocation(dir);
    if (!input.endsWith('.safetensors')) throw new FactoredKeysError(`${input}: not a .safetensors file or a checkpoint folder`);
    return { dir, files: [path.resolve(input)] };
  }
  const dir = path.resolve(input);
  const hub = await resolveHubCache(dir);
  if (hub) {
    const loc = await resolveLocation(hub.snapshot);
    return { ...loc, hub: hub.hub };
  }
  const indexFile = path.join(dir, INDEX_FILE);
  const hasIndex = await fsp.stat(indexFile).then(() => true, () => false);
  if (hasIndex) {
    const index = await readSmallJson(indexFile, 'index');
    const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
    if (weightMap === null || typeof weightMap !== 'object' || Array.isArray(weightMap)) {
      throw new FactoredKeysError(`${indexFile}: has no "weight_map" object`);
    }
    // A Set keeps first-seen order without the quadratic cost of Array.includes on huge maps.
    const unique = new Set<string>();
    for (const shard of Object.values(weightMap as Record<string, unknown>)) {
      unique.add(path.join(dir, checkShardName(shard, indexFile)));
    }
    const files = [...unique];
    if (files.length === 0) throw new FactoredKeysError(`${indexFile}: weight_map is empty`);
    return { dir, files, indexFile, indexMap: weightMap as Record<string, string> };
  }
  const entries = (await fsp.readdir(dir)).filter((f) => f.endsWith('.safetensors')).sort();
  if (entries.length === 0) throw new FactoredKeysError(`${dir}: no .safetensors file in the folder`);
  if (entries.length > 1) {
    throw new FactoredKeysError(`${dir}: ${entries.length} .safetensors files but no ${INDEX_FILE} saying how they fit together`);
  }
  return { dir, files: [path.join(dir, entries[0])] };
}

class OpenCheckpoint implements Checkpoint {
  constructor(
    readonly dir: string,
    readonly config: ModelConfig,
    readonly files: readonly SafetensorsHeader[],
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    private readonly reader: FileReader,
    readonly indexFile?: string,
    readonly hub?: HubRevision,
  ) {}

  tensor(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new FactoredKeysError(`${this.dir}: tensor "${name}" not found in the checkpoint`);
    return t;
  }

  rowSpan(name: string, rowStart = 0, rowEnd?: number): { readonly file: string; readonly offset: number; readonly length: number } {
    const t = this.tensor(name);
    const rows = t.shape.length === 0 ? 1 : t.shape[0];
    const end = rowEnd ?? rows;
    // Ranges come from metadata (layouts, factored_keys slices) that a file may get wrong.
    if (!(Number.isSafeInteger(rowStart) && Number.isSafeInteger(end) && rowStart >= 0 && rowStart <= end && end <= rows)) {
      throw new FactoredKeysError(`${t.file}: rows [${rowStart}, ${end}) are outside tensor "${name}" with ${rows} rows`);
    }
    const rowBytes = rows === 0 ? 0 : (t.end - t.start) / rows;
    return { file: t.file, offset: t.start + rowStart * rowBytes, length: (end - rowStart) * rowBytes };
  }

  async readRows(name: string, rowStart = 0, rowEnd?: number, target?: Uint8Array): Promise<Uint8Array> {
    const span = this.rowSpan(name, rowStart, rowEnd);
    return this.reader.read(span.file, span.offset, span.length, target);
  }

  async rowSource(name: string, rowStart = 0, rowEnd?: number): Promise<RowSource> {
    const span = this.rowSpan(name, rowStart, rowEnd);
    return { ...span, fd: await this.reader.descriptor(span.file, span.offset, span.length) };
  }

  async readRowsF32(name: string, rowStart = 0, rowEnd?: number): Promise<Float32Array> {
    const t = this.tensor(name);
    if (!isDecodable(t.dtype)) throw new FactoredKeysError(`${t.file}: tensor "${name}" has dtype ${t.dtype}, which cannot be read as weights`);
    bytesPerElement(t.dtype);
    return decodeToFloat32(t.dtype, await this.readRows(name, rowStart, rowEnd));
  }

  close(): Promise<void> {
    return this.reader.close();
  }
}

/**
 * Opens a checkpoint from a folder (single file or sharded with index.json), an index.json,
 * or a lone .safetensors file with config.json beside it. Every header is validated here.
 */
export async function openCheckpoint(input: string, options: OpenOptions = {}): Promise<Checkpoint> {
  const loc = await resolveLocation(input);
  const configPath = path.join(loc.dir, CONFIG_FILE);
  const config = await readSmallJson(configPath, 'config.json');
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new FactoredKeysError(`${configPath}: is not a JSON object`);
  }
  const reader = new FileReader(options.observeRead);
  try {
    const headers: SafetensorsHeader[] = [];
    const tensors = new Map<string, TensorInfo>();
    for (const file of loc.files) {
      const header = await readHeader(reader, file);
      headers.push(header);
      for (const t of header.tensors) {
        const other = tensors.get(t.name);
        if (other) throw new FactoredKeysError(`${file}: tensor "${t.name}" is also in ${other.file}`);
        tensors.set(t.name, t);
      }
    }
    if (loc.indexMap && loc.indexFile) {
      for (const [name, shard] of Object.entries(loc.indexMap)) {
        const t = tensors.get(name);
        if (!t) throw new FactoredKeysError(`${loc.indexFile}: tensor "${name}" is listed in ${shard} but not stored there`);
        if (path.basename(t.file) !== shard) {
          throw new FactoredKeysError(`${loc.indexFile}: tensor "${name}" is listed in ${shard} but stored in ${path.basename(t.file)}`);
        }
      }
      for (const t of tensors.values()) {
        // hasOwn, not `in`: a tensor named "constructor" must not match Object.prototype.
        if (!Object.hasOwn(loc.indexMap, t.name)) throw new FactoredKeysError(`${t.file}: tensor "${t.name}" is not listed in ${INDEX_FILE}`);
      }
    }
    return new OpenCheckpoint(loc.dir, config as ModelConfig, headers, tensors, reader, loc.indexFile, loc.hub);
  } catch (e) {
    await reader.close();
    throw e;
  }
}
