/**
 * Dense symmetric eigen-decomposition in float64: Householder reduction to tridiagonal form,
 * then implicit-shift QL. Sized for per-head problems (n = head_dim, typically 64-256).
 */

export interface SymmetricEigen {
  /** Eigenvalues, descending. */
  readonly values: Float64Array;
  /** n x n row-major; column j is the unit eigenvector of values[j]. Present when requested. */
  readonly vectors?: Float64Array;
}

/**
 * Reduces symmetric `a` (n x n row-major, overwritten) to tridiagonal form.
 * Returns diagonal `d`, off-diagonal `e` (e[i] couples i and i+1; e[n-1] = 0) and, when
 * `wantQ`, the orthogonal Q with A = Q T Q^T (row-major).
 */
function tridiagonalize(a: Float64Array, n: number, wantQ: boolean): { d: Float64Array; e: Float64Array; q?: Float64Array } {
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  const vs: (Float64Array | null)[] = [];
  const betas: number[] = [];
  const p = new Float64Array(n);
  for (let k = 0; k < n - 2; k++) {
    // Householder vector from row k (== column k) below the diagonal.
    const row = k * n;
    let norm2 = 0;
    for (let i = k + 1; i < n; i++) norm2 += a[row + i] * a[row + i];
    const x0 = a[row + k + 1];
    const norm = Math.sqrt(norm2);
    if (norm === 0 || norm2 === x0 * x0) {
      // already tridiagonal in this column
      e[k] = x0;
      vs.push(null);
      betas.push(0);
      continue;
    }
    const alpha = x0 > 0 ? -norm : norm;
    const m = n - k - 1;
    const v = new Float64Array(m);
    for (let i = 0; i < m; i++) v[i] = a[row + k + 1 + i];
    v[0] -= alpha;
    let vv = 0;
    for (let i = 0; i < m; i++) vv += v[i] * v[i];
    const beta = 2 / vv;
    // p = beta * A22 v
    for (let i = 0; i < m; i++) {
      const r = (k + 1 + i) * n + k + 1;
      let s = 0;
      for (let j = 0; j < m; j++) s += a[r + j] * v[j];
      p[i] = beta * s;
    }
    let vp = 0;
    for (let i = 0; i < m; i++) vp += v[i] * p[i];
    const half = (beta * vp) / 2;
    for (let i = 0; i < m; i++) p[i] -= half * v[i]; // p is now w
    for (let i = 0; i < m; i++) {
      const r = (k + 1 + i) * n + k + 1;
      const vi = v[i];
      const wi = p[i];
      for (let j = 0; j < m; j++) a[r + j] -= vi * p[j] + wi * v[j];
    }
    e[k] = alpha;
    vs.push(v);
    betas.push(beta);
  }
  for (let k = 0; k < n; k++) d[k] = a[k * n + k];
  if (n >= 2) e[n - 2] = a[(n - 2) * n + n - 1];
  e[n - 1] = 0;
  if (!wantQ) return { d, e };
  // Q = H_0 H_1 ... H_{n-3}, accumulated backwards so each H touches only its trailing block.
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  const t = new Float64Array(n);
  for (let k = vs.length - 1; k >= 0; k--) {
    const v = vs[k];
    if (!v) continue;
    const beta = betas[k];
    const off = k + 1;
    const m = n - off;
    // Q[off:, off:] -= beta * v (v^T Q[off:, off:])
    t.fill(0, 0, m);
    for (let i = 0; i < m; i++) {
      const r = (off + i) * n + off;
      const vi = v[i];
      if (vi === 0) continue;
      for (let j = 0; j < m; j++) t[j] += vi * q[r + j];
    }
    for (let i = 0; i < m; i++) {
      const r = (off + i) * n + off;
      const s = beta * v[i];
      if (s === 0) continue;
      for (let j = 0; j < m; j++) q[r + j] -= s * t[j];
    }
  }
  return { d, e, q };
}

/**
 * The coupling below which an off-diagonal entry counts as zero whatever its neighbours: the
 * rounding level of the whole matrix (eps times its largest row sum), the size of the errors
 * the reduction to tridiagonal form already made. Without it, a cluster of eigenvalues at zero
 * (a rank-deficient Gram matrix, such as a factored checkpoint's rank-r key map) asks for
 * couplings far below rounding relative to their tiny diagonal and never converges.
 */
function negligibleCoupling(d: Float64Array, e: Float64Array, n: number): number {
  let norm = 0;
  for (let i = 0; i < n; i++) norm = Math.max(norm, Math.abs(d[i]) + (i > 0 ? Math.abs(e[i - 1]) : 0) + (i < n - 1 ? Math.abs(e[i]) : 0));
  return Number.EPSILON * norm;
}

/**
 * Implicit-shift QL on a symmetric tridiagonal matrix (diagonal d, off-diagonal e with e[i]
 * coupling i and i+1). Eigenvalues land in `d`, unordered; `e` is destroyed. When `z` (n x n
 * row-major) is given its columns are rotated along, turning Q into the eigenvectors.
 */
export function tridiagonalQl(d: Float64Array, e: Float64Array, n: number, z?: Float64Array): void {
  const floor = negligibleCoupling(d, e, n);
  for (let l = 0; l < n; l++) {
    let iterations = 0;
    for (;;) {
      let m = l;
      for (; m < n - 1; m++) {
        const dd = Math.abs(d[m]) + Math.abs(d[m + 1]);
        if (Math.abs(e[m]) <= Math.max(Number.EPSILON * dd, floor)) break;
      }
      if (m === l) break;
      if (++iterations > 64) throw new Error('symmetric eigensolver did not converge');
      let g = (d[l + 1] - d[l]) / (2 * e[l]);
      // sqrt rather than Math.hypot: several times faster in V8, and Gram entries never near 1e154
      let r = Math.sqrt(g * g + 1);
      g = d[m] - d[l] + e[l] / (g + (g >= 0 ? r : -r));
      let s = 1;
      let c = 1;
      let p = 0;
      let i = m - 1;
      let underflow = false;
      for (; i >= l; i--) {
        const f = s * e[i];
        const b = c * e[i];
        r = Math.sqrt(f * f + g * g);
        e[i + 1] = r;
        if (r === 0) {
          d[i + 1] -= p;
          e[m] = 0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1] - p;
        r = (d[i] - g) * s + 2 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
        if (z) {
          for (let k = 0; k < n; k++) {
            const row = k * n;
            const zf = z[row + i + 1];
            const zi = z[row + i];
            z[row + i + 1] = s * zi + c * zf;
            z[row + i] = c * zi - s * zf;
          }
        }
      }
      if (underflow) continue;
      d[l] -= p;
      e[l] = g;
      e[m] = 0;
    }
  }
}

/**
 * Eigenvalues (descending) and optionally eigenvectors of the symmetric n x n matrix `a`
 * (row-major; only read, never modified).
 */
export function symmetricEigen(a: Float64Array, n: number, wantVectors = false): SymmetricEigen {
  if (a.length < n * n) throw new Error(`symmetricEigen: expected ${n * n} values, got ${a.length}`);
  if (n === 0) return { values: new Float64Array(0), vectors: wantVectors ? new Float64Array(0) : undefined };
  const work = Float64Array.from(a.subarray(0, n * n));
  const { d, e, q } = tridiagonalize(work, n, wantVectors);
  tridiagonalQl(d, e, n, q);
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => d[y] - d[x]);
  const values = Float64Array.from(order, (i) => d[i]);
  if (!wantVectors || !q) return { values };
  const vectors = new Float64Array(n * n);
  for (let r = 0; r < n; r++) for (let j = 0; j < n; j++) vectors[r * n + j] = q[r * n + order[j]];
  return { values, vectors };
}

/**
 * Eigenvalues only of a symmetric tridiagonal matrix (diagonal `d`, off-diagonal `e` as in
 * {@link tridiagonalQl}) by the root-free QL iteration of Pal, Walker and Kahan: the sweep
 * carries squared off-diagonals and squared cosines and sines, so a rotation costs two
 * divisions and no square root. Its serial chain is about half the sqrt-based sweep's, and the
 * per-head eigensolve of a 7B analysis spends most of its time in this sweep.
 *
 * Eigenvalues land in `d`, unordered; `e` is destroyed. Returns false, with `d` and `e`
 * unspecified, when the matrix is too large or too small for squaring (entries outside
 * 1e-100..1e100) or a block fails to converge; the caller then runs {@link tridiagonalQl} on a
 * copy of its input.
 */
export function tridiagonalEigenvalues(d: Float64Array, e: Float64Array, n: number): boolean {
  let norm = 0;
  for (let i = 0; i < n; i++) norm = Math.max(norm, Math.abs(d[i]), i < n - 1 ? Math.abs(e[i]) : 0);
  if (!Number.isFinite(norm) || norm > 1e100 || (norm > 0 && norm < 1e-100)) return false;
  if (norm === 0) return true;
  const floor = negligibleCoupling(d, e, n);
  const floor2 = floor * floor;
  const e2 = e;
  for (let i = 0; i < n - 1; i++) e2[i] *= e2[i];
  if (n > 0) e2[n - 1] = 0;
  const eps2 = Number.EPSILON * Number.EPSILON;
  let iterations = 0;
  for (let l = 0; l < n; ) {
    // the unreduced block l..m: tridiagonalQl's negligibility test, squared
    let m = l;
    for (; m < n - 1; m++) {
      const dd = Math.abs(d[m]) + Math.abs(d[m + 1]);
      if (e2[m] <= Math.max(eps2 * dd * dd, floor2)) break;
    }
    if (m === l) {
      l++;
      iterations = 0;
      continue;
    }
    if (m === l + 1) {
      // a 2 x 2 block, closed form: mean ± sqrt(half-difference² + off-diagonal²)
      const mean = 0.5 * (d[l] + d[l + 1]);
      const half = 0.5 * (d[l] - d[l + 1]);
      const radius = Math.sqrt(half * half + e2[l]);
      d[l] = mean + radius;
      d[l + 1] = mean - radius;
      e2[l] = 0;
      l += 2;
      iterations = 0;
      continue;
    }
    if (++iterations > 64) return false;
    // Wilkinson-type shift from the block's leading 2 x 2, as tridiagonalQl
    const offDiagonal = Math.sqrt(e2[l]);
    const g = (d[l + 1] - d[l]) / (2 * offDiagonal);
    const root = Math.sqrt(g * g + 1);
    const shift = d[l] - offDiagonal / (g + (g >= 0 ? root : -root));
    let c = 1;
    let s = 0;
    let gamma = d[m] - shift;
    let p = gamma * gamma;
    for (let i = m - 1; i >= l; i--) {
      const bb = e2[i];
      const r = p + bb;
      if (i !== m - 1) e2[i + 1] = s * r;
      const previousC = c;
      // 1/r and r/p (the next step's 1/c) are independent divisions, so they overlap
      const inverse = 1 / r;
      const inverseC = r / p;
      c = p * inverse;
      s = bb * inverse;
      const previousGamma = gamma;
      const alpha = d[i];
      gamma = c * (alpha - shift) - s * previousGamma;
      d[i + 1] = previousGamma + (alpha - gamma);
      p = c !== 0 ? gamma * gamma * inverseC : previousC * bb;
    }
    e2[l] = s * p;
    d[l] = shift + gamma;
  }
  return true;
}
