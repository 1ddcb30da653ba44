/**
 * The batched Gram product on onnxruntime: for a batch of heads given as W^T blocks
 * (b x head_dim x d_model, exactly the row blocks of a `[out, in]` projection), computes
 * G = W^T W per head (b x head_dim x head_dim) in float32.
 */
import { DataType, GraphBuilder } from '../compute/onnx';
import { createSession, type BackendName, type ComputeSession, Tensor } from '../compute/session';

/**
 * How the weights are fed. 16-bit weights travel as 16-bit (half the bytes of float32) and are
 * widened inside the graph: float16 by `Cast`; bfloat16 (which onnxruntime's JS API has no
 * tensor type for) as its uint16 bit patterns, reinterpreted by `BitCast` and widened by `Cast`.
 */
export type GramFeed = 'float32' | 'float16' | 'bfloat16';

/** The ONNX model computing the batched Gram product for one feed type. */
export function gramModel(feed: GramFeed, headDim: number, dModel: number): Uint8Array {
  const g = new GraphBuilder(`gram_${feed}`);
  let x: string;
  let opset = 17;
  if (feed === 'float32') {
    x = g.input('w', 'float32', ['batch', headDim, dModel]);
  } else if (feed === 'float16') {
    x = g.op('Cast', [g.input('w', 'float16', ['batch', headDim, dModel])], { to: DataType.FLOAT });
  } else {
    // reinterpret the uint16 bits as bfloat16 (BitCast, ai.onnx opset 26), then widen exactly;
    // measured faster on 16 cores than widening the bits by Cast + BitShift + BitCast
    opset = 26;
    const bits = g.input('w', 'uint16', ['batch', headDim, dModel]);
    x = g.op('Cast', [g.op('BitCast', [bits], { to: DataType.BFLOAT16 })], { to: DataType.FLOAT });
  }
  const xt = g.op('Transpose', [x], { perm: [0, 2, 1] });
  g.output(g.op('MatMul', [x, xt], {}, { outputs: ['gram'] }), 'float32', ['batch', headDim, headDim]);
  return g.toModel({ opset });
}

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

  private session(feed: GramFeed, headDim: number, dModel: number): Promise<ComputeSession> {
    const key = `${feed}:${headDim}:${dModel}`;
    let s = this.sessions.get(key);
    if (!s) {
      // no spinning: idle onnxruntime threads would otherwise busy-wait on the cores the
      // eigensolver workers need between Gram products
      s = createSession(gramModel(feed, headDim, dModel), { backend: this.requested, threads: this.threads, spinning: false });
      this.sessions.set(key, s);
    }
    return s;
  }

  /**
   * Runs the product. `data` holds `batch` blocks of headDim x dModel (Float32Array for
   * float32, Uint16Array bit patterns for float16/bfloat16).
   */
  async run(feed: GramFeed, data: Float32Array | Uint16Array, batch: number, headDim: number, dModel: number): Promise<Float32Array> {
    const s = await this.session(feed, headDim, dModel);
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
