/**
 * safetensors element types: sizes and decoding to float32.
 * Bit widths rather than byte sizes so the sub-byte float types validate too.
 */
export const DTYPE_BITS = {
  BOOL: 8,
  U8: 8,
  I8: 8,
  F8_E4M3: 8,
  F8_E5M2: 8,
  F8_E8M0: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  I64: 64,
  U64: 64,
  F64: 64,
  C64: 64,
} as const;

export type Dtype = keyof typeof DTYPE_BITS;

/** The dtypes this tool can turn into float32 weights. */
export const DECODABLE_DTYPES: readonly Dtype[] = ['F32', 'F16', 'BF16', 'F64', 'F8_E4M3', 'F8_E5M2'];

export function isDtype(name: unknown): name is Dtype {
  return typeof name === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BITS, name);
}

export function isDecodable(dtype: Dtype): boolean {
  return DECODABLE_DTYPES.includes(dtype);
}

/** Byte size of one element; only defined for whole-byte dtypes. */
export function bytesPerElement(dtype: Dtype): number {
  const bits = DTYPE_BITS[dtype];
  if (bits % 8 !== 0) throw new Error(`${dtype} has no whole-byte element size`);
  return bits / 8;
}

/** Bytes needed for `elements` values, or undefined when they do not fill whole bytes. */
export function byteLengthOf(dtype: Dtype, elements: number): number | undefined {
  const bits = DTYPE_BITS[dtype] * elements;
  return bits % 8 === 0 ? bits / 8 : undefined;
}

function halfToFloatTable(): Float32Array {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    let v: number;
    if (exp === 0) v = frac * 2 ** -24;
    else if (exp === 31) v = frac ? NaN : Infinity;
    else v = (1 + frac / 1024) * 2 ** (exp - 15);
    table[h] = sign * v;
  }
  return table;
}

function fp8Table(expBits: number, manBits: number, bias: number, finiteOnly: boolean): Float32Array {
  const table = new Float32Array(256);
  const expMax = (1 << expBits) - 1;
  for (let b = 0; b < 256; b++) {
    const sign = b & 0x80 ? -1 : 1;
    const exp = (b >> manBits) & expMax;
    const man = b & ((1 << manBits) - 1);
    let v: number;
    if (finiteOnly) {
      // E4M3FN: no infinities, only S.1111.111 is NaN
      if (exp === expMax && man === (1 << manBits) - 1) v = NaN;
      else if (exp === 0) v = (man / (1 << manBits)) * 2 ** (1 - bias);
      else v = (1 + man / (1 << manBits)) * 2 ** (exp - bias);
    } else if (exp === expMax) v = man ? NaN : Infinity;
    else if (exp === 0) v = (man / (1 << manBits)) * 2 ** (1 - bias);
    else v = (1 + man / (1 << manBits)) * 2 ** (exp - bias);
    table[b] = sign * v;
  }
  return table;
}

let f16Table: Float32Array | undefined;
let e4m3Table: Float32Array | undefined;
let e5m2Table: Float32Array | undefined;

/**
 * Decodes little-endian `bytes` of `dtype` into float32.
 * `bytes` may start at any offset; `out` (if given) must hold the element count.
 */
export function decodeToFloat32(dtype: Dtype, bytes: Uint8Array, out?: Float32Array): Float32Array {
  const width = bytesPerElement(dtype);
  const n = bytes.byteLength / width;
  if (!Number.isInteger(n)) throw new Error(`byte length ${bytes.byteLength} is not a multiple of ${width} (${dtype})`);
  const result = out ?? new Float32Array(n);
  if (result.length < n) throw new Error('output buffer too small');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32': {
      if (bytes.byteOffset % 4 === 0) result.set(new Float32Array(bytes.buffer, bytes.byteOffset, n));
      else for (let i = 0; i < n; i++) result[i] = view.getFloat32(i * 4, true);
      break;
    }
    case 'F64':
      for (let i = 0; i < n; i++) result[i] = view.getFloat64(i * 8, true);
      break;
    case 'BF16': {
      // bf16 is the top half of a float32: widen by shifting into the high 16 bits
      const bits = new Uint32Array(result.buffer, result.byteOffset, n);
      if (bytes.byteOffset % 2 === 0) {
        const src = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
        for (let i = 0; i < n; i++) bits[i] = src[i] << 16;
      } else {
        for (let i = 0; i < n; i++) bits[i] = (bytes[2 * i] | (bytes[2 * i + 1] << 8)) << 16;
      }
      break;
    }
    case 'F16': {
      f16Table ??= halfToFloatTable();
      const t = f16Table;
      if (bytes.byteOffset % 2 === 0) {
        const src = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
        for (let i = 0; i < n; i++) result[i] = t[src[i]];
      } else {
        for (let i = 0; i < n; i++) result[i] = t[bytes[2 * i] | (bytes[2 * i + 1] << 8)];
      }
      break;
    }
    case 'F8_E4M3': {
      e4m3Table ??= fp8Table(4, 3, 7, true);
      for (let i = 0; i < n; i++) result[i] = e4m3Table[bytes[i]];
      break;
    }
    case 'F8_E5M2': {
      e5m2Table ??= fp8Table(5, 2, 15, false);
      for (let i = 0; i < n; i++) result[i] = e5m2Table[bytes[i]];
      break;
    }
    default:
      throw new Error(`cannot decode ${dtype} to float32`);
  }
  return result;
}

/** Round-to-nearest-even float32 -> bf16 bits. */
export function float32ToBf16Bits(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const x = bits[i];
    if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) {
      out[i] = (x >>> 16) | 0x40; // keep NaN a NaN
    } else {
      out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    }
  }
  return out;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Round-to-nearest-even float32 -> IEEE half bits (overflow to inf, subnormals kept). */
export function float32ToF16Bits(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    f32Scratch[0] = values[i];
    const x = u32Scratch[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let man = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (man ? 0x200 : 0);
      continue;
    }
    let e = exp - 127 + 15;
    if (e >= 31) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      man |= 0x800000;
      const shift = 14 - e;
      const half = 1 << (shift - 1);
      const rest = man & ((1 << shift) - 1);
      let h = man >>> shift;
      if (rest > half || (rest === half && h & 1)) h++;
      out[i] = sign | h;
      continue;
    }
    const rest = man & 0x1fff;
    let h = (e << 10) | (man >>> 13);
    if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++;
    e = h;
    out[i] = sign | e;
  }
  return out;
}

/** Encodes float32 values as little-endian bytes of `dtype` (F32, F16, BF16, F64). */
export function encodeFromFloat32(dtype: Dtype, values: Float32Array): Uint8Array {
  switch (dtype) {
    case 'F32':
      return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
    case 'BF16':
      return new Uint8Array(float32ToBf16Bits(values).buffer);
    case 'F16':
      return new Uint8Array(float32ToF16Bits(values).buffer);
    case 'F64': {
      const f = Float64Array.from(values);
      return new Uint8Array(f.buffer);
    }
    default:
      throw new Error(`cannot encode ${dtype} from float32`);
  }
}
