import { createWasmTridiagonalizer, type WasmTridiagonalizer } from './wasmTridiagonal';
import { tridiagonalEigenvalues, tridiagonalQl } from '../linalg/eigen';

/**
 * Eigenvalues only of a small dense symmetric matrix, specialised for the spectrum engine's
 * Gram matrices (n = head_dim, 8..256). The same Householder tridiagonalisation as linalg's
 * `symmetricEigen` (float64), then linalg's root-free QL sweep, which needs no eigenvectors.
 * The reduction touches only the upper triangle (half the arithmetic of the rank-2 updates)
 * with contiguous inner loops, and the work buffers are reused across calls.
 */

/** Reusable work buffers for one n; create one per thread and call {@link eigenvaluesInto}. */
export class EigenWorkspace {
  readonly a: Float64Array;
  readonly d: Float64Array;
  readonly e: Float64Array;
  private readonly v: Float64Array;
  private readonly p: Float64Array;
  private readonly keptD: Float64Array;
  private readonly keptE: Float64Array;
  private readonly wasm?: WasmTridiagonalizer;

  /** `useWasm: false` forces the JavaScript reduction (tests compare the two). */
  constructor(
    readonly n: number,
    useWasm = true,
  ) {
    this.wasm = useWasm ? createWasmTridiagonalizer(n) : undefined;
    this.a = this.wasm ? this.wasm.a : new Float64Array(n * n);
    this.d = new Float64Array(n);
    this.e = new Float64Array(n);
    this.v = new Float64Array(n);
    this.p = new Float64Array(n);
    this.keptD = new Float64Array(n);
    this.keptE = new Float64Array(n);
  }

  /**
   * Loads the upper triangle of symmetric `g` (n x n row-major, float32 or float64, starting at
   * `offset`) and computes its eigenvalues into `out` (descending). Returns false, leaving `out`
   * alone, when an entry is not finite (NaN or ±Inf: NaN/Inf weights). The lower triangle is
   * not read: in a Gram product it mirrors the upper one up to rounding, and reading it would
   * walk the matrix by columns (measured at ~0.4 ms a head on the H200's host, a tenth of a head's
   * whole cost there).
   */
  eigenvaluesInto(g: ArrayLike<number>, offset: number, out: Float64Array): boolean {
    const n = this.n;
    const a = this.a;
    // the float64 sum of the entries is finite exactly when every entry is (float32 entries
    // cannot overflow it), so the finiteness check costs no extra pass
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const ri = i * n;
      for (let j = i; j < n; j++) {
        const v = g[offset + ri + j];
        a[ri + j] = v;
        sum += v;
      }
    }
    if (!Number.isFinite(sum)) return false;
    if (this.wasm) this.wasm.run(this.d, this.e);
    else this.tridiagonalize();
    // the root-free sweep, or (entries beyond its squaring range, no convergence) the
    // sqrt-based one on the kept tridiagonal
    const { d, e, keptD, keptE } = this;
    keptD.set(d);
    keptE.set(e);
    if (!tridiagonalEigenvalues(d, e, n)) {
      d.set(keptD);
      e.set(keptE);
      tridiagonalQl(d, e, n);
    }
    out.set(d.subarray(0, n));
    out.sort();
    out.reverse();
    return true;
  }

  /** Householder reduction of the upper triangle of `a` to tridiagonal (d, e). */
  private tridiagonalize(): void {
    const { n, a, d, e, v, p } = this;
    for (let k = 0; k < n - 2; k++) {
      const r0 = k * n;
      let tail2 = 0;
      for (let j = k + 2; j < n; j++) tail2 += a[r0 + j] * a[r0 + j];
      const x0 = a[r0 + k + 1];
      if (tail2 === 0) {
        e[k] = x0; // column already tridiagonal
        continue;
      }
      const norm = Math.sqrt(tail2 + x0 * x0);
      const alpha = x0 > 0 ? -norm : norm;
      const k1 = k + 1;
      for (let j = k1; j < n; j++) v[j] = a[r0 + j];
      v[k1] = x0 - alpha;
      const beta = 2 / (tail2 + v[k1] * v[k1]);
      // p = beta * A22 v, reading A22 from its upper triangle only
      for (let j = k1; j < n; j++) p[j] = 0;
      for (let i = k1; i < n; i++) {
        const ri = i * n;
        const vi = v[i];
        let s = a[ri + i] * vi;
        for (let j = i + 1; j < n; j++) {
          const aij = a[ri + j];
          s += aij * v[j];
          p[j] += aij * vi;
        }
        p[i] += s;
      }
      let vp = 0;
      for (let j = k1; j < n; j++) {
        p[j] *= beta;
        vp += v[j] * p[j];
      }
      const half = 0.5 * beta * vp;
      for (let j = k1; j < n; j++) p[j] -= half * v[j]; // p is now w
      // A22 -= v w^T + w v^T (upper triangle)
      for (let i = k1; i < n; i++) {
        const ri = i * n;
        const vi = v[i];
        const wi = p[i];
        for (let j = i; j < n; j++) a[ri + j] -= vi * p[j] + wi * v[j];
      }
      e[k] = alpha;
    }
    for (let i = 0; i < n; i++) d[i] = a[i * n + i];
    if (n >= 2) e[n - 2] = a[(n - 2) * n + n - 1];
    e[n - 1] = 0;
  }
}

/** Eigenvalues (descending) of symmetric `g` (n x n row-major). Convenience wrapper. */
export function symmetricEigenvalues(g: ArrayLike<number>, n: number, useWasm = true): Float64Array {
  const out = new Float64Array(n);
  if (!new EigenWorkspace(n, useWasm).eigenvaluesInto(g, 0, out)) out.fill(Number.NaN);
  return out;
}
