/**
 * Builds safetensors files in code, valid or deliberately malformed, for tests.
 * Nothing binary is checked in: every malformed case is constructed here.
 */
import { writeFileSync } from 'node:fs';

export interface RawTensor {
  dtype: string;
  shape: number[];
  /** Raw little-endian bytes. */
  data: Uint8Array;
}

/** Header entries may be overridden wholesale to produce inconsistent files. */
export type HeaderEntry = { dtype: unknown; shape: unknown; data_offsets: unknown };

export function f32Bytes(values: number[] | Float32Array): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

/** Lays tensors out back to back and returns header + data, before serialization. */
export function layout(tensors: Record<string, RawTensor>): { header: Record<string, HeaderEntry | Record<string, string>>; data: Uint8Array } {
  const header: Record<string, HeaderEntry | Record<string, string>> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  const parts: Uint8Array[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    parts.push(t.data);
    offset += t.data.byteLength;
  }
  const data = new Uint8Array(offset);
  let at = 0;
  for (const p of parts) {
    data.set(p, at);
    at += p.byteLength;
  }
  return { header, data };
}

/** Serializes a header object (or raw header text) and data into safetensors bytes. */
export function serialize(header: object | string, data: Uint8Array, declaredLength?: number): Uint8Array {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const json = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + json.byteLength + data.byteLength);
  const view = new DataView(out.buffer);
  const len = declaredLength ?? json.byteLength;
  view.setUint32(0, len % 2 ** 32, true);
  view.setUint32(4, Math.floor(len / 2 ** 32), true);
  out.set(json, 8);
  out.set(data, 8 + json.byteLength);
  return out;
}

export function writeSafetensors(file: string, tensors: Record<string, RawTensor>): void {
  const { header, data } = layout(tensors);
  writeFileSync(file, serialize(header, data));
}
