/**
 * The batched Gram product on onnxruntime: for a batch of heads given as W^T blocks
 * (b x head_dim x d_model, exactly the row blocks of a `[out, in]` projection), computes
 * G = W^T W per head (b x head_dim x head_dim) in float32.
 */
import * as os from 'node:os';
import { decodeToFloat32 } from '../checkpoint/dtypes';
import { DataType, GraphBuilder } from '../compute/onnx';
import { createSession, type BackendName, type ComputeSession, Tensor } from '../compute/session';

/**
 * How the weights are fed. 16-bit weights travel as 16-bit (half the bytes of float32) and are
 * widened inside the graph: float16 by `Cast`; bfloat16 (which onnxruntime's JS API has no
 * tensor type for) as its uint16 bit patterns, reinterpreted by `BitCast` and widened by `Cast`.
 */
export type GramFeed = 'float32' | 'float16' | 'bfloat16';

/**
 * The ONNX model computing the batched Gram product for one feed type. With `branches` > 1
 * the batch is split into that many independent branches (widen + product each), which
 * onnxruntime's parallel executor runs at once: its bfloat16 -> float32 `Cast` is a serial loop
 * on CPUs without native bf16 conversion, and on a 16-core host it otherwise costs more than
 * the product itself.
 */
export function gramModel(feed: GramFeed, headDim: number, dModel: number, branches = 1, batch = branches, widening: Bf16Widening = 'bitcast'): Uint8Array {
  const g = new GraphBuilder(`gram_${feed}`);
  const input = g.input('w', feed === 'bfloat16' ? 'uint16' : feed, ['batch', headDim, dModel]);
  const widen = (x: string): string => widenToFloat32(g, x, feed, widening);
  const gram = (x: string, name?: string): string => g.op('MatMul', [x, g.op('Transpose', [x], { perm: [0, 2, 1] })], {}, name ? { outputs: [name] } : {});
  if (branches <= 1) {
    gram(widen(input), 'gram');
  } else {
    // explicit sizes, as even as possible (the batch is fixed per session when branching)
    const sizes = Array.from({ length: branches }, (_, i) => Math.floor(batch / branches) + (i < batch % branches ? 1 : 0));
    const parts = g.opMulti('Split', [input, g.int64s(sizes)], { axis: 0 }, { outputCount: branches });
    g.op('Concat', parts.map((p) => gram(widen(p))), { axis: 0 }, { outputs: ['gram'] });
  }
  g.output('gram', 'float32', ['batch', headDim, headDim]);
  return g.toModel({ opset: widenOpset(feed, widening) });
}

/**
 * The weights `x` (fed as `feed`) widened to float32 in graph `g`, exactly. bfloat16 bits are
 * reinterpreted by `BitCast` (ai.onnx opset 26, see {@link widenOpset}) and widened by `Cast`,
 * measured faster on 16 cores than Cast + BitShift + BitCast, or looked up in the value table.
 */
export function widenToFloat32(g: GraphBuilder, x: string, feed: GramFeed, widening: Bf16Widening = 'bitcast'): string {
  if (feed === 'float32') return x;
  if (feed === 'float16') return g.op('Cast', [x], { to: DataType.FLOAT });
  if (widening === 'table') return g.op('Gather', [g.initializer('bf16_values', 'float32', [65536], bf16Values()), g.op('Cast', [x], { to: DataType.INT32 })], { axis: 0 });
  return g.op('Cast', [g.op('BitCast', [x], { to: DataType.BFLOAT16 })], { to: DataType.FLOAT });
}

/** The opset a graph widening `feed` this way needs. */
export function widenOpset(feed: GramFeed, widening: Bf16Widening = 'bitcast'): number {
  return feed === 'bfloat16' && widening === 'bitcast' ? 26 : 17;
}

/**
 * How bfloat16 bit patterns become float32 in the graph: `bitcast` (BitCast to bfloat16, then
 * Cast; ai.onnx opset 26) or `table` (Gather from a table of all 65,536 values, each exact). GPU
 * providers get the table: one without a BitCast kernel would run that node on the CPU and copy
 * the layer up afterwards.
 */
export type Bf16Widening = 'bitcast' | 'table';

let bf16Table: Float32Array | undefined;

/** The float32 value of every bfloat16 bit pattern (the checkpoint decoder's, exact). */
export function bf16Values(): Float32Array {
  bf16Table ??= decodeToFloat32('BF16', new Uint8Array(Uint16Array.from({ length: 65536 }, (_, i) => i).buffer));
  return bf16Table;
}

/** How many parallel branches a bf16 Gram on the CPU provider uses (1 on small machines). */
export function bf16Branches(backend: BackendName, threads: number, batch: number): number {
  if (backend !== 'cpu' || threads < 8) return 1;
  return Math.max(1, Math.min(8, Math.floor(threads / 2), batch));
}

/** Largest float32 size of one run's widened input (bigger layers are run in parts). */
const MAX_RUN_FLOAT32_BYTES = 256 * 1024 * 1024;

/** One Gram session per (feed, shape), on one provider. */
export class GramRunner {
  private readonly sessions = new Map<string, Promise<ComputeSession>>();
  /** Fallback notes from sessions that could not use the requested provider. */
  readonly notes: string[] = [];

  /** The provider actually running (the requested one unless a fallback happened). */
  backend: BackendName;

  constructor(
    readonly requested: BackendName,
    private readonly threads?: number,
  ) {
    this.backend = requested;
  }

  private session(feed: GramFeed, headDim: number, dModel: number, batch: number): Promise<ComputeSession> {
    const branches = feed === 'bfloat16' ? bf16Branches(this.requested, this.threads ?? os.availableParallelism(), batch) : 1;
    const key = `${feed}:${headDim}:${dModel}:${branches > 1 ? `${branches}/${batch}` : 1}`;
    let s = this.sessions.get(key);
    if (!s) {
      // no spinning: idle onnxruntime threads would otherwise busy-wait on the cores the
      // eigensolver workers need between Gram products
      if (this.requested === 'cuda' && process.env.NVIDIA_TF32_OVERRIDE === undefined) {
        // spectra are exact products: no TensorFloat-32 in cuBLAS (onnxruntime's CUDA provider
        // uses it for float32 by default, and the Node API cannot pass its use_tf32 option). The
        // variable is process-wide: a later CUDA evaluation in this process runs without TF32 too
        // (slower, never less exact); the CLI and the extension's jobs run one task per process.
        process.env.NVIDIA_TF32_OVERRIDE = '0';
      }
      // FK_SPECTRUM_GPU_WIDENING=bitcast: the BitCast graph on a GPU provider too (benchmarks)
      const widening = this.requested === 'cpu' || process.env.FK_SPECTRUM_GPU_WIDENING === 'bitcast' ? 'bitcast' : 'table';
      s = createSession(gramModel(feed, headDim, dModel, branches, batch, widening), { backend: this.requested, threads: this.threads, spinning: false, parallelBranches: branches });
      this.sessions.set(key, s);
    }
    return s;
  }

  /**
   * Runs the product. `data` holds `batch` blocks of headDim x dModel (Float32Array for
   * float32, Uint16Array bit patterns for float16/bfloat16).
   */
  async run(feed: GramFeed, data: Float32Array | Uint16Array, batch: number, headDim: number, dModel: number): Promise<Float32Array> {
    // bound onnxruntime's float32 intermediates (widened copy + transpose): a 70B layer's 72
    // heads x 128 x 8192 would otherwise hold ~0.6 GB of them; a 7B layer fits in one run
    const perRun = Math.max(1, Math.floor(MAX_RUN_FLOAT32_BYTES / (headDim * dModel * 4)));
    if (batch <= perRun) return this.runOnce(feed, data, batch, headDim, dModel);
    const runs = Math.ceil(batch / perRun);
    const size = Math.ceil(batch / runs);
    const block = headDim * dModel;
    const grams = new Float32Array(batch * headDim * headDim);
    for (let start = 0; start < batch; start += size) {
      const count = Math.min(size, batch - start);
      const part = await this.runOnce(feed, data.subarray(start * block, (start + count) * block), count, headDim, dModel);
      grams.set(part, start * headDim * headDim);
    }
    return grams;
  }

  private async runOnce(feed: GramFeed, data: Float32Array | Uint16Array, batch: number, headDim: number, dModel: number): Promise<Float32Array> {
    const s = await this.session(feed, headDim, dModel, batch);
    const dims = [batch, headDim, dModel];
    const tensor = feed === 'float32' ? new Tensor('float32', data as Float32Array, dims) : new Tensor(feed === 'float16' ? 'float16' : 'uint16', data as Uint16Array, dims);
    const out = await s.run({ w: tensor });
    if (s.backend !== this.backend || s.fallbackReason) {
      this.backend = s.backend;
      if (s.fallbackReason && !this.notes.includes(s.fallbackReason)) this.notes.push(s.fallbackReason);
    }
    return out.gram.data as Float32Array;
  }

  async dispose(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map(async (p) => (await p).dispose().catch(() => undefined)));
  }
}
