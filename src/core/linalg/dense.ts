/** Small dense float64 helpers (row-major), for per-head factorization math. */

/** C (m x p) = A (m x k) . B (k x p). */
export function matmul(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, p: number): Float64Array {
  const c = new Float64Array(m * p);
  for (let i = 0; i < m; i++) {
    const ci = i * p;
    for (let t = 0; t < k; t++) {
      const av = a[i * k + t];
      if (av === 0) continue;
      const bt = t * p;
      for (let j = 0; j < p; j++) c[ci + j] += av * b[bt + j];
    }
  }
  return c;
}

/** Aᵀ (n x m) of A (m x n). */
export function transpose(a: ArrayLike<number>, m: number, n: number): Float64Array {
  const t = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a[i * n + j];
  return t;
}

/** G (n x n) = Aᵀ A for A (m x n). */
export function gram(a: ArrayLike<number>, m: number, n: number): Float64Array {
  const g = new Float64Array(n * n);
  for (let r = 0; r < m; r++) {
    const row = r * n;
    for (let i = 0; i < n; i++) {
      const ai = a[row + i];
      if (ai === 0) continue;
      const gi = i * n;
      for (let j = i; j < n; j++) g[gi + j] += ai * a[row + j];
    }
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) g[i * n + j] = g[j * n + i];
  return g;
}

/**
 * Thin QR of a tall A (m x n, m >= n) by Householder reflections: A = Q R with Q (m x n)
 * orthonormal columns and R (n x n) upper triangular with a non-negative diagonal.
 */
export function qrThin(a: ArrayLike<number>, m: number, n: number): { q: Float64Array; r: Float64Array } {
  if (m < n) throw new Error(`qrThin: need rows >= columns, got ${m} x ${n}`);
  const w = Float64Array.from({ length: m * n }, (_, i) => a[i]);
  const vs: Float64Array[] = [];
  const betas: number[] = [];
  for (let k = 0; k < n; k++) {
    let norm2 = 0;
    for (let i = k; i < m; i++) norm2 += w[i * n + k] ** 2;
    const norm = Math.sqrt(norm2);
    const x0 = w[k * n + k];
    const alpha = x0 > 0 ? -norm : norm;
    const v = new Float64Array(m - k);
    for (let i = k; i < m; i++) v[i - k] = w[i * n + k];
    v[0] -= alpha;
    let vv = 0;
    for (let i = 0; i < v.length; i++) vv += v[i] * v[i];
    const beta = vv === 0 ? 0 : 2 / vv;
    if (beta !== 0) {
      for (let j = k; j < n; j++) {
        let s = 0;
        for (let i = k; i < m; i++) s += v[i - k] * w[i * n + j];
        s *= beta;
        for (let i = k; i < m; i++) w[i * n + j] -= s * v[i - k];
      }
    }
    vs.push(v);
    betas.push(beta);
  }
  const r = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) r[i * n + j] = w[i * n + j];
  // Q = H_0 ... H_{n-1} applied to the first n columns of I.
  const q = new Float64Array(m * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  for (let k = n - 1; k >= 0; k--) {
    const v = vs[k];
    const beta = betas[k];
    if (beta === 0) continue;
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let i = k; i < m; i++) s += v[i - k] * q[i * n + j];
      s *= beta;
      for (let i = k; i < m; i++) q[i * n + j] -= s * v[i - k];
    }
  }
  // Make R's diagonal non-negative so the factorization is unique.
  for (let i = 0; i < n; i++) {
    if (r[i * n + i] < 0) {
      for (let j = i; j < n; j++) r[i * n + j] = -r[i * n + j];
      for (let t = 0; t < m; t++) q[t * n + i] = -q[t * n + i];
    }
  }
  return { q, r };
}

/** Solves R X = B for upper-triangular R (n x n) and B (n x p); returns X. */
export function solveUpper(r: ArrayLike<number>, b: ArrayLike<number>, n: number, p: number): Float64Array {
  const x = Float64Array.from({ length: n * p }, (_, i) => b[i]);
  for (let i = n - 1; i >= 0; i--) {
    const diag = r[i * n + i];
    for (let j = 0; j < p; j++) {
      let s = x[i * p + j];
      for (let t = i + 1; t < n; t++) s -= r[i * n + t] * x[t * p + j];
      x[i * p + j] = s / diag;
    }
  }
  return x;
}
