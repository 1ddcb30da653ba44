/** Cholesky factorization for symmetric positive-definite Gram matrices (float64). */

/**
 * Upper-triangular R (n x n, row-major) with Rᵀ R = A and a positive diagonal, or undefined
 * when A is not numerically positive definite (a pivot at or below `relTol` x max diagonal).
 * For a Gram A = Wᵀ W this R equals the R of W's thin QR with non-negative diagonal.
 */
export function choleskyUpper(a: ArrayLike<number>, n: number, relTol = 1e-13): Float64Array | undefined {
  const r = new Float64Array(n * n);
  let maxDiag = 0;
  for (let i = 0; i < n; i++) maxDiag = Math.max(maxDiag, a[i * n + i]);
  if (!(maxDiag > 0)) return undefined;
  for (let i = 0; i < n; i++) {
    let s = a[i * n + i];
    for (let k = 0; k < i; k++) s -= r[k * n + i] * r[k * n + i];
    if (!(s > relTol * maxDiag)) return undefined;
    const d = Math.sqrt(s);
    r[i * n + i] = d;
    for (let j = i + 1; j < n; j++) {
      let t = a[i * n + j];
      for (let k = 0; k < i; k++) t -= r[k * n + i] * r[k * n + j];
      r[i * n + j] = t / d;
    }
  }
  return r;
}
