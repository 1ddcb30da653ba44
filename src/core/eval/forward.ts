/**
 * Runnable forward passes: a model's weights turned into onnxruntime sessions, one per
 * segment of whole layers, on the chosen backend.
 *
 * Weights are converted once per load to the type the backend computes in (float32 on the CPU,
 * exactly as the in-graph Cast did it; float16 for 16-bit matrix weights on GPU providers, with
 * float32 everywhere else) and written, tensor by tensor, to a segment file beside a small
 * model file that refers to it as ONNX external data. onnxruntime memory-maps that file, so a
 * loaded segment costs its weights once (file-backed pages) instead of the three to four copies
 * of an in-memory protobuf, and no model approaches protobuf's 2 GB limit.
 *
 * Two ways to run:
 * - {@link streamNll} (evaluation): layer streaming. One segment is resident at a time; every
 *   window of the evaluation goes through it, the hidden states are kept (in memory, or in a
 *   spill file when even they do not fit) and passed to the next segment. The last segment
 *   (final norm, head, log-softmax, NLL) runs in chunks small enough that full-vocabulary
 *   logits never exist for more than a few thousand tokens at once. The memory needed is
 *   estimated first ({@link planStream}); a machine that cannot meet it gets one error naming
 *   the figure instead of an OOM kill.
 * - {@link loadForward} (tests, benchmarks): every segment resident, windows run through all of
 *   them, with logits on request.
 */
import { closeSync, linkSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, realpathSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as ort from 'onnxruntime-node';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { decodeToFloat32, encodeFromFloat32 } from '../checkpoint/dtypes';
import { byteLengthOf, type ConstTensor, type ElemType, type ExternalData } from '../compute/onnx';
import { createSession, Tensor, usableBackends, type BackendChoice, type BackendName, type ComputeSession } from '../compute/session';
import { FactoredKeysError, throwIfCancelled, type CancelToken } from '../errors';
import { chooseEvalBackend, TRIAL_LAYERS, TRIAL_WINDOWS, type TrialTiming } from './backendTrial';
import { buildSegment, IO, type WeightStore, type WeightUse } from './graph';
import type { LayerWeights, ModelSpec, OuterWeights } from './model';

/** Anything that can hand out a model's weights layer by layer (original, factored, exported). */
export interface WeightSource {
  readonly spec: ModelSpec;
  /** The checkpoint behind the weights, when there is one (sizes for the memory estimate). */
  readonly ckpt?: Checkpoint;
  outer(): Promise<OuterWeights>;
  layer(index: number): Promise<LayerWeights>;
  /** Leave stored bytes in their files from now on: the session references them in place (see {@link inPlaceFor}). */
  referInPlace?(on: boolean): void;
}

/**
 * Arithmetic of matrix products: `float32` everywhere (the CPU; exact as transformers' float32
 * reference), or `float16` products of 16-bit weights (GPU providers), accumulating as the
 * provider's kernels do. `auto`: float16 on GPU providers for 16-bit checkpoints, else float32.
 */
export type Precision = 'float32' | 'float16' | 'auto';

/** Options for {@link loadForward}. */
export interface ForwardOptions {
  readonly seq: number;
  readonly backend?: BackendChoice;
  readonly threads?: number;
  /** Also return logits (tests; costs batch·seq·vocab floats per run). */
  readonly logits?: boolean;
  /** Weight bytes (as loaded) per segment before a new session is started. */
  readonly segmentBytes?: number;
  readonly precision?: Precision;
  readonly cancel?: CancelToken;
}

/** Output of one batch of windows. */
export interface ForwardResult {
  /** NLL per predicted token, [windows, seq] row-major. */
  readonly nll: Float32Array;
  /** Logits [windows, seq, vocab] when requested. */
  readonly logits?: Float32Array;
}

/** A loaded model ready to run windows. */
export interface ForwardModel {
  readonly spec: ModelSpec;
  readonly seq: number;
  /** The execution provider the sessions actually run on (after any fallback). */
  readonly backend: BackendName;
  /** Why the requested backend was not used, when it was not. */
  readonly fallbackReason?: string;
  run(inputs: BigInt64Array, targets: BigInt64Array, windows: number): Promise<ForwardResult>;
  dispose(): Promise<void>;
}

const GiB = 2 ** 30;
const MiB = 2 ** 20;
/** Offsets in a segment file are multiples of this, so onnxruntime can map every tensor. */
const ALIGN = 64 * 1024;
/** Segment size on the CPU: large enough that session creation is amortised. */
const CPU_SEGMENT_BYTES = GiB;
/** Segment size on GPU providers: TinyLlama-1.1B in float16 is one segment, a 7B model four. */
const GPU_SEGMENT_BYTES = 4 * GiB;
/**
 * The same for weights in place, counted as stored: the device then holds a segment's 16-bit
 * weights and their float32 widenings, and measured about 5× its stored bytes at peak on the H200
 * (Mistral-7B shape, docs/BENCHMARKS.md).
 */
const GPU_IN_PLACE_SEGMENT_BYTES = 2.5 * GiB;
/** Node, onnxruntime and the tokenised text: what a process needs before any weight. */
const BASELINE_BYTES = 320 * MiB;
/** Full-vocabulary float32 values one run of the last segment may hold (logits, log-probabilities) in host memory. */
const LOGIT_BYTES = 256 * MiB;
/**
 * The same on a GPU provider, where they stay on the device (the run returns only the NLL): at
 * host memory's bound a 1.1B model ran 4 windows at a time, 64 small runs that each widen every
 * weight again, so the GPU gets the batch it was asked for up to this much.
 */
const GPU_LOGIT_BYTES = 2 * GiB;

const formatBytes = (b: number): string => (b >= GiB ? `${(b / GiB).toFixed(1)} GiB` : `${Math.max(1, Math.round(b / MiB))} MiB`);

// ---------------------------------------------------------------------------------------------
// Weights converted once and written as external data

/** The bytes of a typed-array constant. */
function bytesOf(t: ConstTensor): Uint8Array {
  const d = t.data;
  if (ArrayBuffer.isView(d)) return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  if (t.type === 'float32') return new Uint8Array(Float32Array.from(d as readonly number[]).buffer);
  throw new Error(`weight of type ${t.type} given as numbers`);
}

/** The 16-bit elements of a constant (copied when its bytes are not 2-aligned). */
function halves(t: ConstTensor): Uint16Array {
  const b = bytesOf(t);
  if (b.byteOffset % 2 === 0) return new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2);
  return new Uint16Array(b.slice().buffer);
}

let f16Table: Float32Array | undefined;
let bf16ToF16Table: Uint16Array | undefined;

/**
 * bfloat16/float16 bits → float32 values, exactly as decodeToFloat32 (and an in-graph Cast)
 * gives them: bfloat16 by a shift, float16 by a table of all 65,536 values.
 */
function widen(t: ConstTensor): Float32Array {
  const h = halves(t);
  const out = new Float32Array(h.length);
  if (t.type === 'bfloat16') {
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < h.length; i++) u[i] = h[i] << 16;
    return out;
  }
  f16Table ??= decodeToFloat32('F16', new Uint8Array(Uint16Array.from({ length: 65536 }, (_, i) => i).buffer));
  const table = f16Table;
  for (let i = 0; i < h.length; i++) out[i] = table[h[i]];
  return out;
}

/** bfloat16 bits → float16 bits (round to nearest even, as encodeFromFloat32), or undefined when a value overflows float16. */
function bf16ToF16(t: ConstTensor): Uint16Array | undefined {
  if (!bf16ToF16Table) {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    bf16ToF16Table = new Uint16Array(encodeFromFloat32('F16', decodeToFloat32('BF16', new Uint8Array(all.buffer))).buffer);
  }
  const table = bf16ToF16Table;
  const h = halves(t);
  const out = new Uint16Array(h.length);
  for (let i = 0; i < h.length; i++) {
    const v = table[h[i]];
    // ±inf from a finite bfloat16: beyond float16's range
    if ((v & 0x7fff) === 0x7c00 && (h[i] & 0x7f80) !== 0x7f80) return undefined;
    out[i] = v;
  }
  return out;
}

/** A weight in the type it is computed in: `{ type, bytes }`. */
export function convertWeight(t: ConstTensor, half: boolean): { type: ElemType; bytes: Uint8Array } {
  if (t.type !== 'float16' && t.type !== 'bfloat16') {
    if (t.type === 'float32') return { type: 'float32', bytes: bytesOf(t) };
    return { type: t.type, bytes: bytesOf(t) };
  }
  if (half) {
    if (t.type === 'float16') return { type: 'float16', bytes: bytesOf(t) };
    // bfloat16 → float16 (every GPU provider multiplies float16; few take bfloat16); a tensor
    // with values beyond float16's range stays float32
    const h = bf16ToF16(t);
    if (h) return { type: 'float16', bytes: new Uint8Array(h.buffer) };
    return { type: 'float32', bytes: new Uint8Array(widen(t).buffer) };
  }
  return { type: 'float32', bytes: new Uint8Array(widen(t).buffer) };
}

/** One segment's weights in a file: model `seg-N.onnx`, data `seg-N.bin`. */
class SegmentFile implements WeightStore {
  private fd: number;
  private offset = 0;
  readonly dataName: string;
  readonly modelPath: string;
  /** Bytes written (the segment's weights as loaded). */
  bytes = 0;
  /** Bytes referenced in the checkpoint's own files (in-place mode). */
  linkedBytes = 0;
  private readonly written = new Map<ConstTensor, { type: ElemType; external: ExternalData }>();

  /** Links to checkpoint files (in-place mode), by source path; null where a link failed. */
  private readonly links = new Map<string, string | null>();

  constructor(
    private readonly dir: string,
    index: number,
    private readonly half: boolean,
    /** Stored 16/32-bit weights keep their type and, where a hard link allows, stay in their file. */
    private readonly inPlace = false,
  ) {
    this.dataName = `seg-${index}.bin`;
    this.modelPath = path.join(dir, `seg-${index}.onnx`);
    this.fd = openSync(path.join(dir, this.dataName), 'w');
  }

  get halfProducts(): boolean {
    return this.half;
  }

  /**
   * A hard link to `file` inside the segment folder: onnxruntime reads external data only from
   * its model's folder, and refuses symbolic links that lead out of it. None across file systems.
   */
  private linkTo(file: string): string | null {
    let name = this.links.get(file);
    if (name === undefined) {
      name = `src-${this.links.size}.safetensors`;
      try {
        linkSync(realpathSync(file), path.join(this.dir, name));
      } catch {
        name = null;
      }
      this.links.set(file, name);
    }
    return name;
  }

  put(_name: string, t: ConstTensor, use: WeightUse): { type: ElemType; external: ExternalData } {
    const hit = this.written.get(t);
    if (hit) return hit;
    const asStored = this.inPlace && STORED_TYPES.has(t.type);
    const link = asStored && t.origin ? this.linkTo(t.origin.file) : null;
    if (link !== null && t.origin) {
      const r = { type: t.type, external: { location: link, offset: t.origin.offset, length: byteLengthOf(t.type, t.dims) } };
      this.linkedBytes += r.external.length;
      this.written.set(t, r);
      return r;
    }
    // no link (another file system, or a tensor assembled in memory): the bytes as stored, or converted
    const { type, bytes } = asStored ? { type: t.type, bytes: bytesOf(t) } : convertWeight(t, this.half && use !== 'other');
    const at = Math.ceil(this.offset / ALIGN) * ALIGN;
    for (let done = 0; done < bytes.byteLength; ) done += writeSync(this.fd, bytes, done, bytes.byteLength - done, at + done);
    this.offset = at + bytes.byteLength;
    this.bytes += bytes.byteLength;
    const r = { type, external: { location: this.dataName, offset: at, length: bytes.byteLength } };
    this.written.set(t, r);
    return r;
  }

  /** Writes the model file; the segment is then ready for a session. */
  finish(model: Uint8Array): string {
    closeSync(this.fd);
    this.fd = -1;
    this.written.clear();
    writeFileSync(this.modelPath, model);
    return this.modelPath;
  }

  remove(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    rmSync(this.modelPath, { force: true });
    rmSync(path.join(this.dir, this.dataName), { force: true });
    for (const name of this.links.values()) if (name) rmSync(path.join(this.dir, name), { force: true });
  }
}

/** Weight types the in-place path hands to onnxruntime as stored. */
const STORED_TYPES: ReadonlySet<ElemType> = new Set(['float32', 'float16', 'bfloat16']);

/**
 * Whether weights go to `backend` in place: referenced in their checkpoint files in their stored
 * type and widened to float32 on the device at each run. On CUDA this skips reading, converting
 * and rewriting every weight (most of an evaluation's time there, docs/BENCHMARKS.md) at no cost
 * in the runs; products are float32. Explicit float16 keeps the converted float16 path.
 */
export function inPlaceFor(backend: BackendChoice, precision: Precision = 'auto'): boolean {
  return forwardInternals.inPlaceBackends.has(backend) && precision !== 'float16';
}

/** Test hooks: the providers that get weights in place (tests add the CPU, which has no CUDA here). */
export const forwardInternals: { inPlaceBackends: Set<BackendChoice>; fusedNormBackends: Set<BackendChoice> } = { inPlaceBackends: new Set(['cuda']), fusedNormBackends: new Set(['cuda', 'webgpu']) };

/** Whether a segment's RMSNorms are one fused node ({@link SegmentSpec.fusedNorms}); FK_EVAL_FUSED=0 turns it off (benchmarks). */
function fusedNormsFor(backend: BackendChoice): boolean {
  return forwardInternals.fusedNormBackends.has(backend) && process.env.FK_EVAL_FUSED !== '0';
}

/** Whether `backend` computes 16-bit products for a model stored as `spec.weightDtype` (`auto` unresolved: no). */
function halfFor(spec: ModelSpec, backend: BackendChoice, precision: Precision = 'auto'): boolean {
  if (precision === 'float32' || inPlaceFor(backend, precision)) return false;
  const sixteen = spec.weightDtype === 'BF16' || spec.weightDtype === 'F16';
  if (precision === 'float16') return sixteen;
  return sixteen && backend !== 'cpu' && backend !== 'auto';
}

/** `auto` resolved to the provider it will use here (so that the CPU keeps float32 arithmetic). */
async function resolveBackend(backend: BackendChoice | undefined): Promise<BackendChoice> {
  if (backend !== 'auto') return backend ?? 'cpu';
  return (await usableBackends())[0];
}

interface BuiltSegment {
  readonly first: number;
  readonly end: number;
  readonly session: ComputeSession;
  readonly file: SegmentFile;
}

/** Builds the session of layers [first, end) (with the embedding and/or head when first/last). */
async function buildSession(
  source: WeightSource,
  outer: OuterWeights | undefined,
  dir: string,
  index: number,
  first: number,
  end: number,
  options: { seq: number; backend: BackendChoice; threads?: number; logits?: boolean; half: boolean; inPlace?: boolean; cancel?: CancelToken },
  timings?: EvalTimings,
): Promise<BuiltSegment> {
  const spec = source.spec;
  const file = new SegmentFile(dir, index, options.half, options.inPlace);
  try {
    let t = performance.now();
    const layers: { index: number; weights: LayerWeights }[] = [];
    for (let i = first; i < end; i++) {
      throwIfCancelled(options.cancel);
      layers.push({ index: i, weights: await source.layer(i) });
    }
    const isFirst = first === 0;
    const isLast = end === spec.layers;
    const lap = (key: 'readMs' | 'graphMs' | 'sessionMs') => {
      const now = performance.now();
      if (timings) timings[key] += now - t;
      t = now;
    };
    lap('readMs');
    const model = buildSegment({ spec, seq: options.seq, layers, outer: isFirst || isLast ? outer : undefined, first: isFirst, last: isLast, logits: options.logits, weights: file, fusedNorms: fusedNormsFor(options.backend) });
    layers.length = 0;
    const modelPath = file.finish(model);
    lap('graphMs');
    const session = await createSession(modelPath, { backend: options.backend, threads: options.threads, memoryArena: true, prepacking: true, ...(options.inPlace ? { foldConstants: false } : {}) });
    lap('sessionMs');
    if (timings) {
      timings.writtenBytes += file.bytes;
      timings.linkedBytes += file.linkedBytes;
    }
    return { first, end, session, file };
  } catch (e) {
    file.remove();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Sizes, segments and the memory estimate

/** Every tensor name a description object mentions (that the checkpoint has). */
function tensorNames(ckpt: Checkpoint, value: unknown, out: Set<string>): Set<string> {
  if (typeof value === 'string') {
    if (ckpt.tensors.has(value)) out.add(value);
  } else if (value && typeof value === 'object') {
    for (const v of Object.values(value)) tensorNames(ckpt, v, out);
  }
  return out;
}

/** Per-layer and outer weight sizes, as stored and as loaded, and the widest activation. */
export interface WeightSizes {
  /** Bytes per layer as loaded (after conversion). */
  readonly layers: readonly number[];
  /** Bytes per layer as stored (what reading one layer costs in memory). */
  readonly storedLayers: readonly number[];
  /** Embedding (+ positions) and head (+ final norm), as loaded. */
  readonly embed: number;
  readonly head: number;
  /** Largest single tensor as loaded (the conversion's staging buffer). */
  readonly largestTensor: number;
  /** Widest weight dimension (the MLP's intermediate size in most models). */
  readonly widest: number;
}

/** Sizes of a source's weights from its checkpoint's headers (no weight is read). */
export function weightSizes(source: WeightSource, half: boolean, inPlace = false): WeightSizes | undefined {
  const ckpt = source.ckpt;
  if (!ckpt) return undefined;
  const spec = source.spec;
  let largestTensor = 0;
  let widest = spec.hidden;
  const loaded = (names: Set<string>) => {
    let bytes = 0;
    let stored = 0;
    for (const n of names) {
      const t = ckpt.tensors.get(n)!;
      const count = t.shape.reduce((a, b) => a * b, 1);
      const s = t.end - t.start;
      const sixteen = t.dtype === 'BF16' || t.dtype === 'F16';
      const b = (inPlace && (sixteen || t.dtype === 'F32')) || (half && t.shape.length >= 2 && sixteen) ? s : Math.max(4 * count, s);
      bytes += b;
      stored += s;
      largestTensor = Math.max(largestTensor, 4 * count);
      if (t.shape.length >= 2) widest = Math.max(widest, ...t.shape.filter((d) => d !== spec.vocab));
    }
    return { bytes, stored };
  };
  const layers: number[] = [];
  const storedLayers: number[] = [];
  for (let i = 0; i < spec.layers; i++) {
    const r = loaded(tensorNames(ckpt, spec.blocks[i], new Set()));
    layers.push(r.bytes);
    storedLayers.push(r.stored);
  }
  const embedNames = tensorNames(ckpt, spec.embedding, new Set());
  const headNames = tensorNames(ckpt, [spec.head, spec.finalNorm], new Set());
  return { layers, storedLayers, embed: loaded(embedNames).bytes, head: loaded(headNames).bytes, largestTensor, widest };
}

/** Segments [first, end) of layers, greedy up to `budget` bytes each (at least one layer). */
function segmentsOf(sizes: WeightSizes, layers: number, budget: number): [number, number][] {
  const out: [number, number][] = [];
  let start = 0;
  let bytes = sizes.embed;
  for (let i = 0; i < layers; i++) {
    const b = sizes.layers[i] + (i === layers - 1 ? sizes.head : 0);
    if (i > start && bytes + b > budget) {
      out.push([start, i]);
      start = i;
      bytes = 0;
    }
    bytes += b;
  }
  out.push([start, layers]);
  return out;
}

/** Memory the host can give this process: MemAvailable, a cgroup limit, or FK_MEMORY_LIMIT (bytes, or with a K/M/G suffix). */
export function availableMemory(): number {
  const env = process.env.FK_MEMORY_LIMIT;
  if (env) {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$/i.exec(env);
    if (m) return Number(m[1]) * 1024 ** ' kmgt'.indexOf((m[2] || ' ').toLowerCase());
  }
  let avail = os.freemem();
  try {
    const info = readFileSync('/proc/meminfo', 'utf8');
    const m = /MemAvailable:\s+(\d+) kB/.exec(info);
    if (m) avail = Number(m[1]) * 1024;
  } catch {
    // not Linux: os.freemem()
  }
  try {
    const max = readFileSync('/sys/fs/cgroup/memory.max', 'utf8').trim();
    if (max !== 'max') {
      const used = Number(readFileSync('/sys/fs/cgroup/memory.current', 'utf8').trim());
      avail = Math.min(avail, Number(max) - used);
    }
  } catch {
    // no cgroup v2 limit
  }
  return avail + process.memoryUsage().rss - BASELINE_BYTES / 2;
}

/** What {@link streamNll} will do, and the memory it needs. */
export interface StreamPlan {
  readonly segments: readonly (readonly [number, number])[];
  /** Windows per run of the inner segments and of the last one. */
  readonly batch: number;
  readonly lastBatch: number;
  /** Whether the hidden states between segments go to a spill file. */
  readonly spill: boolean;
  readonly half: boolean;
  /** Whether the weights are referenced in their files, in their stored type ({@link inPlaceFor}). */
  readonly inPlace: boolean;
  /** Estimated peak memory of the process, and its parts. */
  readonly peakBytes: number;
  readonly weightBytes: number;
  readonly activationBytes: number;
  readonly hiddenBytes: number;
  readonly availableBytes: number;
}

/** Options for {@link streamNll}. */
export interface StreamOptions {
  readonly seq: number;
  readonly backend?: BackendChoice;
  readonly threads?: number;
  /** Windows per run (default: from the memory left after the weights, at most 64). */
  readonly batch?: number;
  /** Weight bytes (as loaded) per segment; default from the backend and free memory. */
  readonly segmentBytes?: number;
  readonly precision?: Precision;
  /** Bytes this evaluation may use (default {@link availableMemory}). */
  readonly memoryBytes?: number;
  /** Always spill hidden states to disk (tests). */
  readonly spill?: boolean;
  readonly cancel?: CancelToken;
  /** Called after every run: windows done over windows × segments. */
  readonly progress?: (done: number, total: number) => void;
}

/** Activation bytes of one token inside a block (float32), a generous bound of onnxruntime's peak. */
function activationPerToken(spec: ModelSpec, sizes: WeightSizes | undefined, seq: number): number {
  const widest = sizes?.widest ?? 4 * spec.hidden;
  const heads = spec.queryHeads;
  const moe = spec.blocks.some((b) => b.mlp.kind === 'moe' || b.mlp.kind === 'gpt-oss-moe') ? 2 : 1;
  return 4 * (10 * spec.hidden + 4 * widest * moe + 3 * heads * seq);
}

/** Windows per run of the last segment: full-vocabulary values of at most LOGIT_BYTES in host memory, GPU_LOGIT_BYTES on a device. */
function logitWindows(spec: ModelSpec, seq: number, onHost: boolean): number {
  return Math.max(1, Math.floor((onHost ? LOGIT_BYTES : GPU_LOGIT_BYTES) / (2 * 4 * spec.vocab * seq)));
}

/**
 * Plans a streamed evaluation of `windows` windows: segments, batch sizes, spilling, and the
 * peak memory. Throws one FactoredKeysError naming the figure when even one layer at a time,
 * one window per run and spilled hidden states need more than is available.
 */
export function planStream(source: WeightSource, windows: number, options: StreamOptions): StreamPlan {
  const spec = source.spec;
  const seq = options.seq;
  const backend = options.backend ?? 'cpu';
  const half = halfFor(spec, backend, options.precision);
  const inPlace = inPlaceFor(backend, options.precision);
  const sizes = weightSizes(source, half, inPlace);
  const available = options.memoryBytes ?? availableMemory();
  const perToken = activationPerToken(spec, sizes, seq);
  const hiddenAll = windows * seq * spec.hidden * 4;
  // about 4096 tokens per run on the CPU and 16 windows on GPU providers unless asked, fewer
  // when memory is short; the last segment's runs also keep full-vocabulary values small
  const preferred = options.batch ?? (backend === 'cpu' ? Math.max(1, Math.floor(4096 / seq)) : 16);
  let batch = Math.max(1, Math.min(64, preferred, windows));
  // a GPU provider keeps the full-vocabulary values on the device: not in host memory
  const logitsOnHost = backend === 'cpu';
  const lastOf = (b: number) => Math.max(1, Math.min(b, logitWindows(spec, seq, logitsOnHost)));
  const lastActivation = (b: number) => lastOf(b) * seq * (perToken + (logitsOnHost ? 2 * 4 * spec.vocab : 0));
  if (!sizes) {
    return { segments: [[0, spec.layers]], batch, lastBatch: lastOf(batch), spill: false, half, inPlace, peakBytes: NaN, weightBytes: NaN, activationBytes: NaN, hiddenBytes: hiddenAll, availableBytes: available };
  }
  // weights resident while a segment runs: the segment (file-backed), plus, while it loads,
  // one layer as stored and one tensor's conversion
  const staging = Math.max(...sizes.storedLayers, sizes.embed / 2, sizes.head / 2) + sizes.largestTensor;
  const minimalSegment = Math.max(sizes.embed + sizes.layers[0], sizes.layers[spec.layers - 1] + sizes.head, ...sizes.layers);
  const runBytes = (b: number) => Math.max(b * seq * perToken, lastActivation(b));
  const hiddenBytes = (spill: boolean, batch: number) => (spill ? 2 * batch * seq * spec.hidden * 4 : hiddenAll);
  const fixed = BASELINE_BYTES + staging;
  let spill = options.spill === true;
  // on the CPU a loading segment briefly holds its mapped weights and their packed copy
  const resident = backend === 'cpu' ? 2 : 1;
  const need = (segment: number, b: number, s: boolean) => fixed + resident * segment + runBytes(b) + hiddenBytes(s, b);
  if (!spill && need(minimalSegment, batch, false) > available) spill = true;
  while (batch > 1 && need(minimalSegment, batch, spill) > available) batch = Math.max(1, Math.floor(batch / 2));
  if (need(minimalSegment, 1, true) > available) {
    throw new FactoredKeysError(
      `not enough memory to evaluate: needs about ${formatBytes(need(minimalSegment, 1, true))} (${formatBytes(minimalSegment)} of ${half ? 'float16' : 'float32'} weights in its smallest possible largest segment, ` +
        `${formatBytes(runBytes(1) + staging)} of activations and loading), ${formatBytes(available)} available`,
    );
  }
  const left = (available - need(0, batch, spill)) / resident;
  const wanted = options.segmentBytes ?? (backend === 'cpu' ? CPU_SEGMENT_BYTES : inPlace ? GPU_IN_PLACE_SEGMENT_BYTES : GPU_SEGMENT_BYTES);
  const segments = segmentsOf(sizes, spec.layers, Math.max(1, Math.min(wanted, left)));
  let largest = 0;
  for (const [a, b] of segments) {
    let bytes = 0;
    for (let i = a; i < b; i++) bytes += sizes.layers[i];
    if (a === 0) bytes += sizes.embed;
    if (b === spec.layers) bytes += sizes.head;
    largest = Math.max(largest, bytes);
  }
  const activationBytes = runBytes(batch);
  return {
    segments,
    batch,
    lastBatch: lastOf(batch),
    spill,
    half,
    inPlace,
    peakBytes: need(largest, batch, spill),
    weightBytes: largest,
    activationBytes,
    hiddenBytes: hiddenBytes(spill, batch),
    availableBytes: available,
  };
}

// ---------------------------------------------------------------------------------------------
// Hidden states between segments

/** Hidden states of every window, [windows·seq, hidden] float32, in memory or in a spill file. */
class HiddenStore {
  private data?: Float32Array;
  private fd = -1;
  private readonly rowFloats: number;

  constructor(
    private readonly windows: number,
    seq: number,
    hidden: number,
    private readonly spillPath?: string,
  ) {
    this.rowFloats = seq * hidden;
    if (spillPath) this.fd = openSync(spillPath, 'w+');
  }

  write(first: number, values: Float32Array): void {
    if (this.fd >= 0) {
      const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      const at = first * this.rowFloats * 4;
      for (let done = 0; done < bytes.byteLength; ) done += writeSync(this.fd, bytes, done, bytes.byteLength - done, at + done);
      return;
    }
    this.data ??= new Float32Array(this.windows * this.rowFloats);
    this.data.set(values, first * this.rowFloats);
  }

  read(first: number, count: number): Float32Array {
    if (this.fd >= 0) {
      const out = new Float32Array(count * this.rowFloats);
      const bytes = new Uint8Array(out.buffer);
      const at = first * this.rowFloats * 4;
      for (let done = 0; done < bytes.byteLength; ) {
        const n = readSync(this.fd, bytes, done, bytes.byteLength - done, at + done);
        if (n <= 0) throw new Error('hidden-state spill file is short');
        done += n;
      }
      return out;
    }
    return this.data!.subarray(first * this.rowFloats, (first + count) * this.rowFloats);
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    this.data = undefined;
    if (this.spillPath) rmSync(this.spillPath, { force: true });
  }
}

/** Inputs and targets of windows [first, first + count) as int64 data ([count, seq]). */
function windowIds(ids: Int32Array, seq: number, first: number, count: number, shift: number): BigInt64Array {
  const out = new BigInt64Array(count * seq);
  for (let w = 0; w < count; w++) {
    const start = (first + w) * seq + shift;
    for (let t = 0; t < seq; t++) out[w * seq + t] = BigInt(ids[start + t]);
  }
  return out;
}

/** Result of {@link streamNll}. */
export interface StreamResult {
  /** NLL per predicted token, [windows, seq] row-major. */
  readonly nll: Float32Array;
  readonly backend: BackendName;
  readonly fallbackReason?: string;
  readonly plan: StreamPlan;
  /** How `auto` chose the provider, when there was a choice. */
  readonly backendNote?: string;
  /** Where the wall time went, in milliseconds. */
  readonly timings: EvalTimings;
}

/**
 * Wall time of an evaluation's phases (ms): `auto`'s trial, reading the weights, converting and
 * writing them with the graphs, creating sessions (onnxruntime's load and the upload to a device),
 * and the runs themselves (the throughput a warm engine would give); and where the weights went.
 */
export interface EvalTimings {
  trialMs: number;
  readMs: number;
  graphMs: number;
  sessionMs: number;
  runMs: number;
  /** Weight bytes written to segment files, and referenced in place in the checkpoint's files. */
  writtenBytes: number;
  linkedBytes: number;
}

let swept = false;

/**
 * A fresh folder for segment files, named after this process (`fk-eval-<pid>-…`). The folders of
 * processes that no longer exist (a job process killed mid-run) are removed first, once per process.
 */
function tempDir(): string {
  const root = process.env.FK_EVAL_TMPDIR ?? os.tmpdir();
  if (!swept) {
    swept = true;
    try {
      for (const name of readdirSync(root)) {
        const m = /^fk-eval-(\d+)-/.exec(name);
        if (!m || Number(m[1]) === process.pid) continue;
        try {
          process.kill(Number(m[1]), 0);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ESRCH') rmSync(path.join(root, name), { recursive: true, force: true });
        }
      }
    } catch {
      // an unreadable temp folder: nothing to sweep
    }
  }
  return mkdtempSync(path.join(root, `fk-eval-${process.pid}-`));
}

/**
 * Per-token NLL of the first `windows` windows of `ids` (the protocol's windows), streaming one
 * segment at a time (see the module comment). Checks memory first ({@link planStream}).
 */
export async function streamNll(source: WeightSource, ids: Int32Array, windows: number, options: StreamOptions): Promise<StreamResult> {
  const spec = source.spec;
  const seq = options.seq;
  const dir = tempDir();
  let backend: BackendName;
  let backendNote: string | undefined;
  // the embedding and head, read once for every trial candidate and kept for the first segment
  let outer: OuterWeights | undefined;
  const timings: EvalTimings = { trialMs: 0, readMs: 0, graphMs: 0, sessionMs: 0, runMs: 0, writtenBytes: 0, linkedBytes: 0 };
  try {
    if (options.backend === 'auto') {
      const trialStarted = performance.now();
      ({ backend, note: backendNote } = await chooseEvalBackend(spec, windows, options, async (b) => timeTrial(source, (outer ??= await source.outer()), ids, windows, dir, options, b)));
      timings.trialMs = performance.now() - trialStarted;
    } else {
      backend = options.backend ?? 'cpu';
    }
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const plan = planStream(source, windows, { ...options, backend });
  const hidden = new HiddenStore(windows, seq, spec.hidden, plan.spill ? path.join(dir, 'hidden.bin') : undefined);
  const nll = new Float32Array(windows * seq);
  const backends: BackendName[] = [];
  let fallbackReason: string | undefined;
  const total = windows * plan.segments.length;
  if (plan.inPlace) source.referInPlace?.(true);
  try {
    for (let k = 0; k < plan.segments.length; k++) {
      const [a, b] = plan.segments[k];
      const isFirst = a === 0;
      const isLast = b === spec.layers;
      if (isFirst || isLast) {
        const t = performance.now();
        outer ??= await source.outer();
        timings.readMs += performance.now() - t;
      }
      const seg = await buildSession(source, isFirst || isLast ? outer : undefined, dir, k, a, b, { seq, backend, threads: options.threads, half: plan.half, inPlace: plan.inPlace, cancel: options.cancel }, timings);
      // the embedding is not needed after the first segment unless the head shares it
      if (isFirst && !isLast && outer && outer.head.weight !== outer.embed) outer = { ...outer, embed: { type: outer.embed.type, dims: [0], data: new Uint8Array(0) } };
      try {
        const step = isLast ? plan.lastBatch : plan.batch;
        for (let first = 0; first < windows; first += step) {
          throwIfCancelled(options.cancel);
          const count = Math.min(step, windows - first);
          const feeds: Record<string, ort.Tensor> = {};
          if (isFirst) feeds[IO.ids] = new Tensor('int64', windowIds(ids, seq, first, count, 0), [count, seq]);
          else feeds[IO.hiddenIn] = new Tensor('float32', hidden.read(first, count), [count * seq, spec.hidden]);
          if (isLast) feeds[IO.targets] = new Tensor('int64', windowIds(ids, seq, first, count, 1), [count, seq]);
          const ran = performance.now();
          const out = await seg.session.run(feeds);
          timings.runMs += performance.now() - ran;
          if (isLast) nll.set(out[IO.nll].data as Float32Array, first * seq);
          else hidden.write(first, out[IO.hiddenOut].data as Float32Array);
          options.progress?.(k * windows + first + count, total);
        }
        backends.push(seg.session.backend);
        fallbackReason ??= seg.session.fallbackReason;
      } finally {
        await seg.session.dispose().catch(() => undefined);
        seg.file.remove();
      }
    }
  } finally {
    if (plan.inPlace) source.referInPlace?.(false);
    hidden.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const used = backends.every((x) => x === backends[0]) ? backends[0] : 'cpu';
  return { nll, backend: used, fallbackReason, plan, timings, ...(backendNote ? { backendNote } : {}) };
}

/**
 * `auto`'s trial on `backend`: builds the first layers with the embedding (the head too when the
 * model has no more layers) and times a warm-up and a second run of the first windows.
 */
async function timeTrial(source: WeightSource, outer: OuterWeights, ids: Int32Array, windows: number, dir: string, options: StreamOptions, backend: BackendName): Promise<TrialTiming> {
  const spec = source.spec;
  const seq = options.seq;
  const end = Math.min(TRIAL_LAYERS, spec.layers);
  const count = Math.min(TRIAL_WINDOWS, windows);
  const started = performance.now();
  const seg = await buildSession(source, outer, dir, -1, 0, end, { seq, backend, threads: options.threads, half: halfFor(spec, backend, options.precision), inPlace: inPlaceFor(backend, options.precision), cancel: options.cancel });
  try {
    const buildMs = performance.now() - started;
    const feeds: Record<string, ort.Tensor> = { [IO.ids]: new Tensor('int64', windowIds(ids, seq, 0, count, 0), [count, seq]) };
    if (end === spec.layers) feeds[IO.targets] = new Tensor('int64', windowIds(ids, seq, 0, count, 1), [count, seq]);
    await seg.session.run(feeds);
    const timed = performance.now();
    await seg.session.run(feeds);
    const runMs = performance.now() - timed;
    if (seg.session.backend !== backend) throw new Error(seg.session.fallbackReason ?? `ran on ${seg.session.backend}`);
    return { buildMs, runMs, layers: end, windows: count };
  } finally {
    await seg.session.dispose().catch(() => undefined);
    seg.file.remove();
  }
}

// ---------------------------------------------------------------------------------------------
// Everything resident (tests, benchmarks)

/** Builds the graphs and sessions of a model, every segment resident. */
export async function loadForward(source: WeightSource, options: ForwardOptions): Promise<ForwardModel> {
  const spec = source.spec;
  const backend = await resolveBackend(options.backend);
  const half = halfFor(spec, backend, options.precision);
  const inPlace = inPlaceFor(backend, options.precision);
  const sizes = weightSizes(source, half, inPlace);
  const budget = options.segmentBytes ?? (backend === 'cpu' ? CPU_SEGMENT_BYTES : GPU_SEGMENT_BYTES);
  const ranges: [number, number][] = sizes ? segmentsOf(sizes, spec.layers, budget) : [[0, spec.layers]];
  const dir = tempDir();
  const segments: BuiltSegment[] = [];
  const release = async () => {
    await Promise.all(segments.map((s) => s.session.dispose().catch(() => undefined)));
    for (const s of segments) s.file.remove();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const outer = await source.outer();
    for (let k = 0; k < ranges.length; k++) {
      const [a, b] = ranges[k];
      segments.push(await buildSession(source, outer, dir, k, a, b, { seq: options.seq, backend, threads: options.threads, logits: options.logits, half, cancel: options.cancel }));
    }
  } catch (e) {
    await release();
    throw e;
  }
  const sessions = segments.map((s) => s.session);
  const backendOf = () => (sessions.every((s) => s.backend === sessions[0].backend) ? sessions[0].backend : 'cpu');
  return {
    spec,
    seq: options.seq,
    get backend() {
      return backendOf();
    },
    get fallbackReason() {
      return sessions.find((s) => s.fallbackReason)?.fallbackReason;
    },
    async run(inputs, targets, windows) {
      const seq = options.seq;
      let hidden: ort.Tensor | undefined;
      for (let i = 0; i < sessions.length; i++) {
        const s = sessions[i];
        const feeds: Record<string, ort.Tensor> = {};
        if (i === 0) feeds[IO.ids] = new Tensor('int64', inputs, [windows, seq]);
        else feeds[IO.hiddenIn] = hidden!;
        if (i === sessions.length - 1) feeds[IO.targets] = new Tensor('int64', targets, [windows, seq]);
        const out = await s.run(feeds);
        if (i < sessions.length - 1) {
          hidden = out[IO.hiddenOut];
          continue;
        }
        const nll = out[IO.nll].data as Float32Array;
        const logits = options.logits ? (out[IO.logits].data as Float32Array) : undefined;
        return { nll, logits };
      }
      throw new Error('model has no segments');
    },
    async dispose() {
      await release();
    },
  };
}
