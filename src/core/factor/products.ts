/**
 * Float64 batched products for factoring: Grams X·Xᵀ and A·B, on onnxruntime's CPU provider
 * (double-precision MatMul, ~10x faster than a JS loop at 7B sizes), with a plain-JS fallback
 * when onnxruntime cannot start. Everything stays float64 end to end.
 */
import { DataType, GraphBuilder } from '../compute/onnx';
import { createSession, Tensor, type ComputeSession } from '../compute/session';

let gramSession: Promise<ComputeSession | null> | undefined;
let matmulSession: Promise<ComputeSession | null> | undefined;

function build(kind: 'gram' | 'matmul'): Uint8Array {
  const g = new GraphBuilder(`factor_${kind}_f64`);
  // Grams take the decoded float32 weights and widen them in the graph (exact), saving a JS copy.
  const a = kind === 'gram' ? g.op('Cast', [g.input('a', 'float32', ['batch', 'm', 'k'])], { to: DataType.DOUBLE }) : g.input('a', 'float64', ['batch', 'm', 'k']);
  const b = kind === 'gram' ? g.op('Transpose', [a], { perm: [0, 2, 1] }) : g.input('b', 'float64', ['batch', 'k', 'n']);
  g.output(g.op('MatMul', [a, b], {}, { outputs: ['c'] }), 'float64', ['batch', 'm', kind === 'gram' ? 'm' : 'n']);
  return g.toModel({ opset: 17 });
}

function session(kind: 'gram' | 'matmul'): Promise<ComputeSession | null> {
  const make = () => createSession(build(kind), { backend: 'cpu' }).catch(() => null);
  if (kind === 'gram') return (gramSession ??= make());
  return (matmulSession ??= make());
}

function jsMatmul(a: ArrayLike<number>, b: ArrayLike<number>, batch: number, m: number, k: number, n: number, transposeB: boolean): Float64Array {
  const c = new Float64Array(batch * m * n);
  for (let z = 0; z < batch; z++) {
    const ao = z * m * k;
    const bo = z * k * n;
    const co = z * m * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        if (transposeB) for (let t = 0; t < k; t++) s += a[ao + i * k + t] * a[ao + j * k + t];
        else for (let t = 0; t < k; t++) s += a[ao + i * k + t] * b[bo + t * n + j];
        c[co + i * n + j] = s;
      }
    }
  }
  return c;
}

/** G[z] = X[z]·X[z]ᵀ in float64 for `batch` row-major float32 blocks X[z] (m x k); returns batch x m x m. */
export async function batchedGram(x: Float32Array, batch: number, m: number, k: number): Promise<Float64Array> {
  const s = await session('gram');
  if (!s) return jsMatmul(x, x, batch, m, k, m, true);
  const out = await s.run({ a: new Tensor('float32', x, [batch, m, k]) });
  return out.c.data as Float64Array;
}

/** C[z] = A[z]·B[z] for blocks A (m x k), B (k x n); returns batch x m x n. */
export async function batchedMatmul(a: Float64Array, b: Float64Array, batch: number, m: number, k: number, n: number): Promise<Float64Array> {
  const s = await session('matmul');
  if (!s) return jsMatmul(a, b, batch, m, k, n, false);
  const out = await s.run({ a: new Tensor('float64', a, [batch, m, k]), b: new Tensor('float64', b, [batch, k, n]) });
  return out.c.data as Float64Array;
}
