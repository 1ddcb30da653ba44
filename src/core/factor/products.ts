/**
 * Batched products for factoring: Grams X·Xᵀ and A·B, on onnxruntime's CPU provider (its
 * double-precision MatMul is ~10x faster than a JS loop at 7B sizes), with a plain-JS fallback
 * when onnxruntime cannot start. 16-bit weights are fed as their raw bits and widened exactly
 * in the graph, so they are never decoded in JS.
 */
import { decodeToFloat32 } from '../checkpoint/dtypes';
import { DataType, GraphBuilder } from '../compute/onnx';
import { createSession, Tensor, type ComputeSession } from '../compute/session';

/** Gram input: decoded float32 values, or the raw bits of 16-bit weights. */
export type GramFeed = { readonly kind: 'float32'; readonly data: Float32Array } | { readonly kind: 'bfloat16' | 'float16'; readonly data: Uint16Array };

/**
 * Accumulation precision of a Gram. `float64` for everything a factorization is computed from;
 * `float32` (relative error ~1e-6) only where the Gram feeds a reported metric.
 */
export type GramPrecision = 'float64' | 'float32';

const sessions = new Map<string, Promise<ComputeSession | null>>();

function gramModel(feed: GramFeed['kind'], precision: GramPrecision): { model: Uint8Array } {
  const g = new GraphBuilder(`factor_gram_${feed}_${precision}`);
  let x: string;
  let opset = 17;
  if (feed === 'float32') x = g.input('a', 'float32', ['batch', 'm', 'k']);
  else if (feed === 'float16') x = g.op('Cast', [g.input('a', 'float16', ['batch', 'm', 'k'])], { to: DataType.FLOAT });
  else {
    // bf16 bits << 16 are exactly the float32 bits of the same value (BitCast: opset 26)
    opset = 26;
    const bits = g.op('Cast', [g.input('a', 'uint16', ['batch', 'm', 'k'])], { to: DataType.UINT32 });
    x = g.op('BitCast', [g.op('BitShift', [bits, g.constant('uint32', [], [16])], { direction: 'LEFT' })], { to: DataType.FLOAT });
  }
  if (precision === 'float64') x = g.op('Cast', [x], { to: DataType.DOUBLE });
  const xt = g.op('Transpose', [x], { perm: [0, 2, 1] });
  g.output(g.op('MatMul', [x, xt], {}, { outputs: ['c'] }), precision, ['batch', 'm', 'm']);
  return { model: g.toModel({ opset }) };
}

function matmulModel(): Uint8Array {
  const g = new GraphBuilder('factor_matmul_f64');
  const a = g.input('a', 'float64', ['batch', 'm', 'k']);
  const b = g.input('b', 'float64', ['batch', 'k', 'n']);
  g.output(g.op('MatMul', [a, b], {}, { outputs: ['c'] }), 'float64', ['batch', 'm', 'n']);
  return g.toModel({ opset: 17 });
}

function session(key: string, build: () => Uint8Array): Promise<ComputeSession | null> {
  let s = sessions.get(key);
  if (!s) {
    s = Promise.resolve()
      // no spin-waiting: the export copies files while factoring, so idle ORT threads must yield the CPU
      .then(() => createSession(build(), { backend: 'cpu', spinning: false }))
      .catch(() => null);
    sessions.set(key, s);
  }
  return s;
}

function jsGram(x: Float32Array, batch: number, m: number, k: number): Float64Array {
  const c = new Float64Array(batch * m * m);
  for (let z = 0; z < batch; z++) {
    const o = z * m * k;
    for (let i = 0; i < m; i++) {
      for (let j = i; j < m; j++) {
        let s = 0;
        for (let t = 0; t < k; t++) s += x[o + i * k + t] * x[o + j * k + t];
        c[z * m * m + i * m + j] = s;
        c[z * m * m + j * m + i] = s;
      }
    }
  }
  return c;
}

function decodeFeed(feed: GramFeed): Float32Array {
  if (feed.kind === 'float32') return feed.data;
  const bytes = new Uint8Array(feed.data.buffer, feed.data.byteOffset, feed.data.byteLength);
  return decodeToFloat32(feed.kind === 'bfloat16' ? 'BF16' : 'F16', bytes);
}

/** G[z] = X[z]·X[z]ᵀ for `batch` row-major blocks X[z] (m x k); returns batch x m x m as float64. */
export async function batchedGram(feed: GramFeed, batch: number, m: number, k: number, precision: GramPrecision = 'float64'): Promise<Float64Array> {
  const s = await session(`gram:${feed.kind}:${precision}`, () => gramModel(feed.kind, precision).model);
  if (!s) return jsGram(decodeFeed(feed), batch, m, k);
  const dims = [batch, m, k];
  const input = feed.kind === 'float32' ? new Tensor('float32', feed.data, dims) : new Tensor(feed.kind === 'float16' ? 'float16' : 'uint16', feed.data, dims);
  const out = (await s.run({ a: input })).c.data as Float64Array | Float32Array;
  return out instanceof Float64Array ? out : Float64Array.from(out);
}

/** C[z] = A[z]·B[z] for blocks A (m x k), B (k x n), float64; returns batch x m x n. */
export async function batchedMatmul(a: Float64Array, b: Float64Array, batch: number, m: number, k: number, n: number): Promise<Float64Array> {
  const s = await session('matmul', matmulModel);
  if (!s) {
    const c = new Float64Array(batch * m * n);
    for (let z = 0; z < batch; z++) {
      for (let i = 0; i < m; i++) {
        for (let t = 0; t < k; t++) {
          const av = a[z * m * k + i * k + t];
          if (av === 0) continue;
          for (let j = 0; j < n; j++) c[z * m * n + i * n + j] += av * b[z * k * n + t * n + j];
        }
      }
    }
    return c;
  }
  const out = await s.run({ a: new Tensor('float64', a, [batch, m, k]), b: new Tensor('float64', b, [batch, k, n]) });
  return out.c.data as Float64Array;
}
