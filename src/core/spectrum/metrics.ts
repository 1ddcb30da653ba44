/** Per-head summary numbers derived from a singular spectrum. */

/** Effective ranks at the energy levels the UI and planner use. */
export interface EffectiveRanks {
  /** Smallest r whose top-r singular values hold at least 90 % of the energy (sum of squares). */
  readonly p90: number;
  readonly p95: number;
  readonly p99: number;
}

/**
 * cumulative[k] = (σ_0² + … + σ_k²) / Σσ², so cumulative[n-1] = 1. All zeros for a zero matrix
 * (no energy to distribute).
 */
export function cumulativeEnergy(singularValues: ArrayLike<number>): number[] {
  const n = singularValues.length;
  let total = 0;
  for (let i = 0; i < n; i++) total += singularValues[i] * singularValues[i];
  const out = new Array<number>(n);
  if (!(total > 0)) return out.fill(0);
  let acc = 0;
  for (let i = 0; i < n; i++) {
    acc += singularValues[i] * singularValues[i];
    out[i] = Math.min(1, acc / total);
  }
  out[n - 1] = 1;
  return out;
}

/** Smallest r with cumulative[r-1] ≥ fraction (0 when there is no energy). */
export function rankForEnergy(cumulative: readonly number[], fraction: number): number {
  if (cumulative.length === 0 || !(cumulative[cumulative.length - 1] > 0)) return 0;
  // a tiny tolerance so that exactly-90 % spectra are not pushed one rank up by rounding
  const target = fraction - 1e-12;
  for (let i = 0; i < cumulative.length; i++) if (cumulative[i] >= target) return i + 1;
  return cumulative.length;
}

/** p90/p95/p99 effective ranks of a cumulative energy curve. */
export function effectiveRanks(cumulative: readonly number[]): EffectiveRanks {
  return { p90: rankForEnergy(cumulative, 0.9), p95: rankForEnergy(cumulative, 0.95), p99: rankForEnergy(cumulative, 0.99) };
}

/** Stable rank ‖W‖_F² / ‖W‖_2² = Σσ² / σ_max² (0 for a zero matrix). */
export function stableRank(singularValues: ArrayLike<number>): number {
  if (singularValues.length === 0 || !(singularValues[0] > 0)) return 0;
  let total = 0;
  for (let i = 0; i < singularValues.length; i++) total += singularValues[i] * singularValues[i];
  return total / (singularValues[0] * singularValues[0]);
}
