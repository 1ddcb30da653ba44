/**
 * A small, dependency-free ONNX model writer: a protobuf encoder for the handful of ONNX
 * messages a compute graph needs (ModelProto, GraphProto, NodeProto, AttributeProto,
 * TensorProto, ValueInfoProto) and a typed graph builder on top of it.
 *
 * Graphs are built in code at run time, so no opaque binary model is ever checked in, and
 * any operator onnxruntime knows can be used: an op is just its type string plus attributes.
 *
 * ```ts
 * const g = new GraphBuilder('gram');
 * const w = g.input('w', 'float16', ['batch', 4096, 128]);
 * const w32 = g.op('Cast', [w], { to: DataType.FLOAT });
 * const wt = g.op('Transpose', [w32], { perm: [0, 2, 1] });
 * g.output(g.op('MatMul', [wt, w32]), 'float32', ['batch', 128, 128]);
 * const bytes = g.toModel(); // Uint8Array, ready for InferenceSession.create
 * ```
 *
 * Field numbers follow onnx/onnx.proto3 (IR version 8+).
 */

/** ONNX TensorProto.DataType codes. */
export const DataType = {
  UNDEFINED: 0,
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const;

/** Element types the builder accepts, named like onnxruntime-common's tensor types. */
export type ElemType = 'float32' | 'float16' | 'bfloat16' | 'float64' | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64' | 'bool';

const ELEM_CODES: Record<ElemType, number> = {
  float32: DataType.FLOAT,
  float16: DataType.FLOAT16,
  bfloat16: DataType.BFLOAT16,
  float64: DataType.DOUBLE,
  int8: DataType.INT8,
  uint8: DataType.UINT8,
  int16: DataType.INT16,
  uint16: DataType.UINT16,
  int32: DataType.INT32,
  uint32: DataType.UINT32,
  int64: DataType.INT64,
  uint64: DataType.UINT64,
  bool: DataType.BOOL,
};

const ELEM_BYTES: Record<ElemType, number> = {
  float32: 4, float16: 2, bfloat16: 2, float64: 8, int8: 1, uint8: 1, int16: 2, uint16: 2,
  int32: 4, uint32: 4, int64: 8, uint64: 8, bool: 1,
};

/** Bytes of a dense tensor of `type` with `dims`. */
export function byteLengthOf(type: ElemType, dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1) * ELEM_BYTES[type];
}

/** The ONNX DataType code of an element type (for `Cast`'s `to` attribute, for instance). */
export function dataTypeCode(type: ElemType): number {
  return ELEM_CODES[type];
}

/** A dimension: a fixed size, or a symbolic name (e.g. `'batch'`) fixed at run time. */
export type Dim = number | string;

/**
 * Tensor contents. Typed arrays are written as their raw little-endian bytes, so 16-bit
 * floats (float16 / bfloat16) are given as their bit patterns in a Uint16Array or bytes.
 * Plain number arrays are converted to the element type (int64 via BigInt, float16/bfloat16
 * not accepted that way: pass bits).
 */
export type TensorData = ArrayBufferView | readonly number[] | readonly bigint[];

/** A constant tensor: an initializer, or the value of a `Constant` node / tensor attribute. */
export interface ConstTensor {
  readonly type: ElemType;
  readonly dims: readonly number[];
  readonly data: TensorData;
  /**
   * Where `data` lies verbatim in a file (absolute path and byte offset), when it does: such a
   * weight can be handed to onnxruntime in place instead of copied.
   */
  readonly origin?: { readonly file: string; readonly offset: number };
}

/** Explicitly typed attribute values, for cases the plain-value inference gets wrong. */
export type TypedAttribute =
  | { readonly kind: 'float'; readonly value: number }
  | { readonly kind: 'int'; readonly value: number | bigint }
  | { readonly kind: 'floats'; readonly value: readonly number[] }
  | { readonly kind: 'ints'; readonly value: readonly (number | bigint)[] }
  | { readonly kind: 'string'; readonly value: string }
  | { readonly kind: 'strings'; readonly value: readonly string[] }
  | { readonly kind: 'tensor'; readonly value: ConstTensor }
  | { readonly kind: 'graph'; readonly value: GraphBuilder };

/**
 * An attribute value. Plain values are inferred: an integer number is INT, any other number
 * FLOAT, a string STRING, a number array INTS when every element is an integer (else FLOATS),
 * a string array STRINGS. Use {@link floatAttr}/{@link floatsAttr} for float attributes whose
 * values happen to be whole numbers (e.g. `alpha: floatAttr(1)`).
 */
export type AttributeValue = number | bigint | string | readonly number[] | readonly string[] | TypedAttribute;

/** A FLOAT attribute, even when the value is a whole number. */
export function floatAttr(value: number): TypedAttribute {
  return { kind: 'float', value };
}
/** A FLOATS attribute, even when every value is a whole number. */
export function floatsAttr(value: readonly number[]): TypedAttribute {
  return { kind: 'floats', value };
}
/** A TENSOR attribute (e.g. `Constant`'s `value`). */
export function tensorAttr(value: ConstTensor): TypedAttribute {
  return { kind: 'tensor', value };
}
/** A GRAPH attribute (a subgraph body for `If`, `Loop`, `Scan`). */
export function graphAttr(value: GraphBuilder): TypedAttribute {
  return { kind: 'graph', value };
}

// ---------------------------------------------------------------------------------------------
// Protobuf wire encoding

const textEncoder = new TextEncoder();

/** Growable byte buffer with protobuf primitives. Nested messages are encoded separately. */
class ProtoWriter {
  private buf = new Uint8Array(256);
  private len = 0;

  private ensure(extra: number): void {
    if (this.len + extra <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + extra) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  /** Unsigned varint of a non-negative number or bigint; negative int64 as 10-byte two's complement. */
  varint(value: number | bigint): void {
    let v = typeof value === 'bigint' ? value : BigInt(Math.trunc(value));
    if (v < 0n) v = BigInt.asUintN(64, v);
    this.ensure(10);
    if (v < 0x80000000n) {
      let n = Number(v);
      while (n >= 0x80) {
        this.buf[this.len++] = (n & 0x7f) | 0x80;
        n >>>= 7;
      }
      this.buf[this.len++] = n;
      return;
    }
    while (v >= 0x80n) {
      this.buf[this.len++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.len++] = Number(v);
  }

  private tag(field: number, wireType: number): void {
    this.varint(field * 8 + wireType);
  }

  int(field: number, value: number | bigint): void {
    this.tag(field, 0);
    this.varint(value);
  }

  float(field: number, value: number): void {
    this.tag(field, 5);
    this.ensure(4);
    new DataView(this.buf.buffer, this.buf.byteOffset + this.len, 4).setFloat32(0, value, true);
    this.len += 4;
  }

  bytes(field: number, data: Uint8Array): void {
    this.tag(field, 2);
    this.varint(data.length);
    this.ensure(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
  }

  string(field: number, value: string): void {
    this.bytes(field, textEncoder.encode(value));
  }

  message(field: number, inner: ProtoWriter): void {
    this.bytes(field, inner.finish());
  }

  /** Packed repeated varints (proto3 default for repeated scalars). */
  packedInts(field: number, values: readonly (number | bigint)[]): void {
    const inner = new ProtoWriter();
    for (const v of values) inner.varint(v);
    this.bytes(field, inner.finish());
  }

  packedFloats(field: number, values: readonly number[]): void {
    const data = new Uint8Array(values.length * 4);
    const view = new DataView(data.buffer);
    values.forEach((v, i) => view.setFloat32(i * 4, v, true));
    this.bytes(field, data);
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

// ---------------------------------------------------------------------------------------------
// ONNX messages

function rawBytes(t: ConstTensor, what: string): Uint8Array {
  const count = t.dims.reduce((a, b) => a * b, 1);
  const expected = byteLengthOf(t.type, t.dims);
  let bytes: Uint8Array;
  if (ArrayBuffer.isView(t.data)) {
    bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  } else {
    const values = t.data as readonly (number | bigint)[];
    bytes = new Uint8Array(expected);
    const view = new DataView(bytes.buffer);
    if (values.length !== count) throw new Error(`${what}: ${values.length} values for dims [${t.dims.join(', ')}]`);
    values.forEach((raw, i) => {
      const v = Number(raw);
      switch (t.type) {
        case 'float32': view.setFloat32(i * 4, v, true); break;
        case 'float64': view.setFloat64(i * 8, v, true); break;
        case 'int64': view.setBigInt64(i * 8, BigInt(raw), true); break;
        case 'uint64': view.setBigUint64(i * 8, BigInt(raw), true); break;
        case 'int32': view.setInt32(i * 4, v, true); break;
        case 'uint32': view.setUint32(i * 4, v, true); break;
        case 'int16': view.setInt16(i * 2, v, true); break;
        case 'uint16': view.setUint16(i * 2, v, true); break;
        case 'int8': view.setInt8(i, v); break;
        case 'uint8': case 'bool': view.setUint8(i, v); break;
        default: throw new Error(`${what}: ${t.type} values must be given as raw bits (typed array), not numbers`);
      }
    });
  }
  if (bytes.length !== expected) {
    throw new Error(`${what}: ${bytes.length} bytes of data for ${t.type}[${t.dims.join(', ')}] (expected ${expected})`);
  }
  return bytes;
}

function encodeTensor(name: string, t: ConstTensor, external?: ExternalData): ProtoWriter {
  const w = new ProtoWriter();
  if (t.dims.length > 0) w.packedInts(1, t.dims);
  w.int(2, ELEM_CODES[t.type]);
  if (name) w.string(8, name);
  if (external) {
    // TensorProto.external_data (13) entries and data_location (14) = EXTERNAL
    for (const [k, v] of [['location', external.location], ['offset', String(external.offset)], ['length', String(external.length)]]) {
      const e = new ProtoWriter();
      e.string(1, k);
      e.string(2, v);
      w.message(13, e);
    }
    w.int(14, 1);
  } else {
    w.bytes(9, rawBytes(t, name || 'tensor'));
  }
  return w;
}

/** Where an initializer's bytes live outside the model (ONNX external data). */
export interface ExternalData {
  /** File name as given to onnxruntime (`externalData[].path`, or a file beside the model). */
  readonly location: string;
  readonly offset: number;
  readonly length: number;
}

function encodeValueInfo(name: string, type: ElemType, dims: readonly Dim[] | undefined): ProtoWriter {
  const tensorType = new ProtoWriter();
  tensorType.int(1, ELEM_CODES[type]);
  if (dims) {
    const shape = new ProtoWriter();
    for (const d of dims) {
      const dim = new ProtoWriter();
      if (typeof d === 'number') dim.int(1, d);
      else dim.string(2, d);
      shape.message(1, dim);
    }
    tensorType.message(2, shape);
  }
  const typeProto = new ProtoWriter();
  typeProto.message(1, tensorType);
  const w = new ProtoWriter();
  w.string(1, name);
  w.message(2, typeProto);
  return w;
}

/** AttributeProto.AttributeType codes. */
const ATTR = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, FLOATS: 6, INTS: 7, STRINGS: 8 } as const;

function typedAttribute(value: AttributeValue): TypedAttribute {
  if (typeof value === 'object' && value !== null && 'kind' in value) return value;
  if (typeof value === 'bigint') return { kind: 'int', value };
  if (typeof value === 'number') return Number.isInteger(value) ? { kind: 'int', value } : { kind: 'float', value };
  if (typeof value === 'string') return { kind: 'string', value };
  const arr = value as readonly (number | string)[];
  if (arr.length > 0 && typeof arr[0] === 'string') return { kind: 'strings', value: arr as readonly string[] };
  const nums = arr as readonly number[];
  return nums.every((v) => Number.isInteger(v)) ? { kind: 'ints', value: nums } : { kind: 'floats', value: nums };
}

function encodeAttribute(name: string, value: AttributeValue): ProtoWriter {
  const a = typedAttribute(value);
  const w = new ProtoWriter();
  w.string(1, name);
  switch (a.kind) {
    case 'float': w.float(2, a.value); w.int(20, ATTR.FLOAT); break;
    case 'int': w.int(3, a.value); w.int(20, ATTR.INT); break;
    case 'string': w.string(4, a.value); w.int(20, ATTR.STRING); break;
    case 'tensor': w.message(5, encodeTensor('', a.value)); w.int(20, ATTR.TENSOR); break;
    case 'graph': w.message(6, a.value.encodeGraph()); w.int(20, ATTR.GRAPH); break;
    case 'floats': w.packedFloats(7, a.value); w.int(20, ATTR.FLOATS); break;
    case 'ints': w.packedInts(8, a.value); w.int(20, ATTR.INTS); break;
    case 'strings': for (const s of a.value) w.string(9, s); w.int(20, ATTR.STRINGS); break;
  }
  return w;
}

// ---------------------------------------------------------------------------------------------
// Graph builder

/** Options of one node. */
export interface NodeOptions {
  /** Output names; by default fresh unique names are generated. */
  readonly outputs?: readonly string[];
  /** Number of outputs when names are generated (default 1). */
  readonly outputCount?: number;
  /** Node name (default: generated). */
  readonly name?: string;
  /** Operator domain ('' = the default ai.onnx domain; 'com.microsoft' for ORT contrib ops). */
  readonly domain?: string;
}

interface NodeRecord {
  readonly opType: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attributes: Readonly<Record<string, AttributeValue>>;
  readonly name: string;
  readonly domain: string;
}

interface ValueRecord {
  readonly name: string;
  readonly type: ElemType;
  readonly dims?: readonly Dim[];
}

/** Model-level options for {@link GraphBuilder.toModel}. */
export interface ModelOptions {
  /** Default-domain opset version (default 17). */
  readonly opset?: number;
  /** IR version; default derived from the opset (8 for opset ≤ 18, 9 for 19-20, 10 for 21-22, 11 above). */
  readonly irVersion?: number;
  /** Extra operator sets, e.g. `{ 'com.microsoft': 1 }`. */
  readonly extraOpsets?: Readonly<Record<string, number>>;
  readonly producerName?: string;
}

/**
 * Builds one ONNX graph. Values are referred to by name (strings); `op` returns the name of
 * the node's output so calls can be chained. Names must be unique within the graph; the
 * builder generates unique names where none is given.
 */
export class GraphBuilder {
  private readonly nodes: NodeRecord[] = [];
  private readonly inputs: ValueRecord[] = [];
  private readonly outputs: ValueRecord[] = [];
  private readonly valueInfos: ValueRecord[] = [];
  private readonly initializers: { name: string; tensor: ConstTensor; external?: ExternalData }[] = [];
  private readonly usedNames = new Set<string>();
  private counter = 0;

  constructor(readonly name = 'graph') {}

  /** A fresh value name starting with `prefix`. */
  fresh(prefix = 'v'): string {
    let n: string;
    do n = `${prefix}_${this.counter++}`;
    while (this.usedNames.has(n));
    this.usedNames.add(n);
    return n;
  }

  private claim(name: string): string {
    if (this.usedNames.has(name)) throw new Error(`ONNX graph "${this.name}": value name "${name}" used twice`);
    this.usedNames.add(name);
    return name;
  }

  /** Declares a graph input. `dims` may use symbolic names; omit for unknown rank. */
  input(name: string, type: ElemType, dims?: readonly Dim[]): string {
    this.inputs.push({ name: this.claim(name), type, dims });
    return name;
  }

  /** Adds a constant weight (stored in the model as raw data). */
  initializer(name: string, type: ElemType, dims: readonly number[], data: TensorData): string {
    rawBytes({ type, dims, data }, name); // size/type errors surface here, not at toModel()
    this.initializers.push({ name: this.claim(name), tensor: { type, dims, data } });
    return name;
  }

  /**
   * Adds a constant weight whose bytes live outside the model (ONNX external data): the model
   * stays small and the weights travel as one buffer (`SessionOptions.externalData`).
   */
  externalInitializer(name: string, type: ElemType, dims: readonly number[], external: ExternalData): string {
    const expected = byteLengthOf(type, dims);
    if (expected !== external.length) throw new Error(`${name}: ${external.length} external bytes for ${type} [${dims.join(', ')}]`);
    this.initializers.push({ name: this.claim(name), tensor: { type, dims, data: new Uint8Array(0) }, external });
    return name;
  }

  /** Adds a constant via a `Constant` node (for small values like shapes and axes). */
  constant(type: ElemType, dims: readonly number[], data: TensorData, name?: string): string {
    rawBytes({ type, dims, data }, name ?? 'constant');
    return this.op('Constant', [], { value: tensorAttr({ type, dims, data }) }, name ? { outputs: [name] } : {});
  }

  /** An int64 1-D constant, the usual form of shapes, axes, starts/ends. */
  int64s(values: readonly number[], name?: string): string {
    return this.constant('int64', [values.length], values, name);
  }

  /**
   * Appends a node with one output and returns that output's name. Pass `''` for an omitted
   * optional input.
   */
  op(opType: string, inputs: readonly string[], attributes: Readonly<Record<string, AttributeValue>> = {}, options: NodeOptions = {}): string {
    return this.opMulti(opType, inputs, attributes, options)[0];
  }

  /** Appends a node and returns all its output names (e.g. `Split`, `TopK`). */
  opMulti(opType: string, inputs: readonly string[], attributes: Readonly<Record<string, AttributeValue>> = {}, options: NodeOptions = {}): string[] {
    const outputs = options.outputs
      ? options.outputs.map((o) => this.claim(o))
      : Array.from({ length: options.outputCount ?? 1 }, () => this.fresh(opType.toLowerCase()));
    this.nodes.push({
      opType,
      inputs: [...inputs],
      outputs,
      attributes: { ...attributes },
      name: options.name ?? `${opType}_${this.nodes.length}`,
      domain: options.domain ?? '',
    });
    return outputs;
  }

  /** Declares `value` a graph output with its type and (optionally) shape. */
  output(value: string, type: ElemType, dims?: readonly Dim[]): string {
    this.outputs.push({ name: value, type, dims });
    return value;
  }

  /** Optional type/shape annotation of an intermediate value. */
  annotate(value: string, type: ElemType, dims?: readonly Dim[]): void {
    this.valueInfos.push({ name: value, type, dims });
  }

  /** The GraphProto bytes (used for subgraph attributes and by {@link toModel}). */
  encodeGraph(): ProtoWriter {
    const g = new ProtoWriter();
    for (const n of this.nodes) {
      const w = new ProtoWriter();
      for (const i of n.inputs) w.string(1, i);
      for (const o of n.outputs) w.string(2, o);
      w.string(3, n.name);
      w.string(4, n.opType);
      for (const [k, v] of Object.entries(n.attributes)) w.message(5, encodeAttribute(k, v));
      if (n.domain) w.string(7, n.domain);
      g.message(1, w);
    }
    g.string(2, this.name);
    for (const init of this.initializers) g.message(5, encodeTensor(init.name, init.tensor, init.external));
    for (const v of this.inputs) g.message(11, encodeValueInfo(v.name, v.type, v.dims));
    for (const v of this.outputs) g.message(12, encodeValueInfo(v.name, v.type, v.dims));
    for (const v of this.valueInfos) g.message(13, encodeValueInfo(v.name, v.type, v.dims));
    return g;
  }

  /** Serializes a ModelProto holding this graph, ready for `InferenceSession.create`. */
  toModel(options: ModelOptions = {}): Uint8Array {
    if (this.outputs.length === 0) throw new Error(`ONNX graph "${this.name}" has no outputs`);
    const opset = options.opset ?? 17;
    const ir = options.irVersion ?? (opset <= 18 ? 8 : opset <= 20 ? 9 : opset <= 22 ? 10 : 11);
    const m = new ProtoWriter();
    m.int(1, ir);
    m.string(2, options.producerName ?? 'factored-keys');
    m.message(7, this.encodeGraph());
    const opsets: [string, number][] = [['', opset], ...Object.entries(options.extraOpsets ?? {})];
    for (const [domain, version] of opsets) {
      const o = new ProtoWriter();
      if (domain) o.string(1, domain);
      o.int(2, version);
      m.message(8, o);
    }
    return m.finish().slice();
  }
}
