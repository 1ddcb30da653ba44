/**
 * safetensors header parsing and validation. The whole header is checked before any tensor
 * data is touched, so later byte-range reads can trust every offset.
 */
import { FactoredKeysError } from '../errors';
import { byteLengthOf, isDtype, type Dtype } from './dtypes';

/** Headers larger than this are refused (the reference implementation uses the same cap). */
export const MAX_HEADER_BYTES = 100_000_000;

/** One tensor as stored in one file; offsets are absolute byte positions in that file. */
export interface TensorInfo {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  /** Absolute offset of the first byte in `file`. */
  readonly start: number;
  /** Absolute offset one past the last byte in `file`. */
  readonly end: number;
  /** Path of the file holding the tensor. */
  readonly file: string;
}

export interface SafetensorsHeader {
  readonly file: string;
  readonly fileSize: number;
  /** Offset of the data section (8 + header length). */
  readonly dataStart: number;
  readonly headerLength: number;
  readonly metadata: Readonly<Record<string, string>>;
  /** Tensors in the order of their data offsets. */
  readonly tensors: readonly TensorInfo[];
}

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Reads the 8-byte little-endian header length and checks it against the file size. */
export function parseHeaderLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8) throw new FactoredKeysError(`${file}: file is ${fileSize} bytes, too short for a safetensors header`);
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const low = view.getUint32(0, true);
  const high = view.getUint32(4, true);
  const length = high * 2 ** 32 + low;
  if (length > MAX_HEADER_BYTES) {
    throw new FactoredKeysError(`${file}: header length ${length} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  if (8 + length > fileSize) {
    throw new FactoredKeysError(`${file}: header length ${length} runs past the end of the file (${fileSize} bytes)`);
  }
  if (length < 2) throw new FactoredKeysError(`${file}: header length ${length} is too small for a JSON object`);
  return length;
}

/**
 * Finds a repeated top-level key in a JSON object text. JSON.parse silently keeps the last
 * duplicate, which would let two headers disagree about the same tensor.
 */
export function findDuplicateTopLevelKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  let i = 0;
  let expectKey = false;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (c === '{' || c === '[') {
      depth++;
      if (depth === 1 && c === '{') expectKey = true;
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
    i++;
  }
  return undefined;
}

/**
 * A short JSON-like preview of a value from an untrusted file, for error messages.
 * JSON.stringify recurses (a deeply nested value overflows the stack) and has no size limit,
 * so this walks at most a few levels and stops after `budget` characters.
 */
export function previewJson(value: unknown, budget = 80): string {
  let out = '';
  const walk = (v: unknown, depth: number): void => {
    if (out.length > budget) return;
    if (typeof v === 'string') {
      out += JSON.stringify(v.length > budget ? v.slice(0, budget) : v);
    } else if (v === null || typeof v !== 'object') {
      out += String(JSON.stringify(v));
    } else if (depth >= 4) {
      out += Array.isArray(v) ? '[…]' : '{…}';
    } else {
      const isArray = Array.isArray(v);
      out += isArray ? '[' : '{';
      let first = true;
      for (const [k, item] of Object.entries(v)) {
        if (out.length > budget) break;
        if (!first) out += ',';
        first = false;
        if (!isArray) out += `${JSON.stringify(k.length > budget ? k.slice(0, budget) : k)}:`;
        walk(item, depth + 1);
      }
      out += isArray ? ']' : '}';
    }
  };
  walk(value, 0);
  return out.length > budget ? `${out.slice(0, budget)}…` : out;
}

function isSafeNonNegativeInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Validates a decoded header: known dtypes, shape x dtype size equals the byte span, spans
 * inside the data section and non-overlapping.
 */
export function parseHeaderJson(headerBytes: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  const headerLength = headerBytes.byteLength;
  const dataStart = 8 + headerLength;
  const dataSize = fileSize - dataStart;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new FactoredKeysError(`${file}: header is not valid UTF-8`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new FactoredKeysError(`${file}: header is not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new FactoredKeysError(`${file}: header is not a JSON object`);
  }
  const duplicate = findDuplicateTopLevelKey(text);
  if (duplicate !== undefined) throw new FactoredKeysError(`${file}: tensor "${duplicate}" appears twice in the header`);

  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
        throw new FactoredKeysError(`${file}: __metadata__ is not an object`);
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') throw new FactoredKeysError(`${file}: __metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `${file}: tensor "${name}"`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
      throw new FactoredKeysError(`${where} is not an object`);
    }
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (!isDtype(dtype)) throw new FactoredKeysError(`${where} has unknown dtype ${previewJson(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isSafeNonNegativeInt)) {
      throw new FactoredKeysError(`${where} has an invalid shape ${previewJson(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isSafeNonNegativeInt)) {
      throw new FactoredKeysError(`${where} has invalid data_offsets ${previewJson(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw new FactoredKeysError(`${where} has data_offsets [${begin}, ${end}] that end before they begin`);
    if (end > dataSize) {
      throw new FactoredKeysError(`${where} ends at data offset ${end}, past the data section (${dataSize} bytes)`);
    }
    const elements = elementCount(shape as number[]);
    const expected = Number.isSafeInteger(elements) ? byteLengthOf(dtype, elements) : undefined;
    if (expected === undefined || expected !== end - begin) {
      throw new FactoredKeysError(
        `${where}: shape [${(shape as number[]).join(', ')}] x ${dtype} needs ${expected ?? 'an impossible number of'} bytes but data_offsets span ${end - begin}`,
      );
    }
    tensors.push({ name, dtype, shape: shape as number[], start: dataStart + begin, end: dataStart + end, file });
  }
  tensors.sort((a, b) => a.start - b.start || a.end - b.end);
  for (let i = 1; i < tensors.length; i++) {
    const prev = tensors[i - 1];
    const cur = tensors[i];
    if (cur.start < prev.end) {
      throw new FactoredKeysError(`${file}: tensors "${prev.name}" and "${cur.name}" overlap in the data section`);
    }
  }
  return { file, fileSize, dataStart, headerLength, metadata, tensors };
}
