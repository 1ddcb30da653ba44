/**
 * Rank plans: which rank each KV head's keys are factored to. A plan is plain JSON (saveable,
 * diffable, hand-editable) and drives both the VS Code panel and `export --plan`.
 * Field names are snake_case because the object is written to disk as-is.
 */

/** `format` tag of a plan file. */
export const PLAN_FORMAT = 'factored-keys-plan';
/** Current plan format version; bumped on any incompatible change. */
export const PLAN_FORMAT_VERSION = 1;

/**
 * Factorization method.
 * - `key-svd`: truncated SVD of each KV head's W_K (the paper).
 * - `qk-svd`: the rank-r key map that best preserves the query-key scores of the query heads
 *   sharing the KV head (see docs/QK_SVD.md).
 * - `calibrated`: the rank-r key map minimising the expected score error under the second
 *   moments of the attention inputs over a calibration text (see docs/CALIBRATED.md).
 */
export type FactorMethod = 'key-svd' | 'qk-svd' | 'calibrated';

/** All methods, for flag validation and UI pickers. */
export const FACTOR_METHODS: readonly FactorMethod[] = ['key-svd', 'qk-svd', 'calibrated'];

/** How ranks were chosen. */
export type RankPolicy =
  /** The same rank for every head. */
  | { readonly kind: 'uniform'; readonly rank: number }
  /** rank = round(fraction x head_dim), at least 1 (0.25 = the paper's 75 % key saving). */
  | { readonly kind: 'fraction'; readonly fraction: number }
  /** Per head, the smallest rank whose retained energy is at least `threshold` (0..1]. */
  | { readonly kind: 'energy'; readonly threshold: number }
  /**
   * Maximise the summed per-head retained-energy fraction subject to total cached key bytes
   * per token (all layers, batch 1) <= key_bytes_per_token. Every head keeps rank >= 1.
   */
  | { readonly kind: 'budget'; readonly key_bytes_per_token: number }
  /** Ranks given explicitly (hand-edited plan). */
  | { readonly kind: 'manual' };

/** A per-head rank that replaces the policy's choice. */
export interface RankOverride {
  readonly layer: number;
  readonly kv_head: number;
  readonly rank: number;
}

/** The model shape a plan was made for; checked against the checkpoint on export. */
export interface PlanModel {
  readonly architecture: string;
  readonly layers: number;
  readonly kv_heads: number;
  readonly head_dim: number;
  /** Bytes per cached key element (the chosen cache dtype's width), for budget arithmetic. */
  readonly key_bytes_per_value: number;
  /** The cache dtype the bytes were priced at (`bf16`, ...), when one was named. */
  readonly cache_dtype?: string;
  /**
   * Hash of the checkpoint's attention geometry and Q/K tensor names and shapes
   * (see ./fingerprint.ts). Plans written by the tool carry it; a plan whose fingerprint differs
   * from the checkpoint's is refused. Hand-written plans may leave it out.
   */
  readonly fingerprint?: string;
}

/** A rank plan (plain JSON). */
export interface RankPlan {
  readonly format: typeof PLAN_FORMAT;
  readonly version: number;
  readonly method: FactorMethod;
  readonly policy: RankPolicy;
  readonly model: PlanModel;
  /** Final ranks[layer][kvHead], overrides already applied. */
  readonly ranks: number[][];
  /** Overrides applied on top of the policy (kept so the plan can be recomputed). */
  readonly overrides: RankOverride[];
  /**
   * Retained energy fraction per head at its rank for the plan's method (informational;
   * present when the plan was built from spectra).
   */
  readonly retained_energy?: number[][];
}

/**
 * Per-head energy spectra a policy works on: energies[layer][kvHead] = non-negative values,
 * descending; keeping rank r retains sum(energies[0..r)).
 * For key-svd these are squared singular values of W_K; for qk-svd the eigenvalues of
 * R (sum_i W_Qi^T W_Qi) R^T (see docs/QK_SVD.md). Any source works.
 */
export type HeadEnergies = readonly (readonly (readonly number[])[])[];
