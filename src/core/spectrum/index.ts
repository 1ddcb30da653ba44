/**
 * Spectrum analysis: every layer's key heads (W_K^g, one per KV head) and query heads (W_Q^h),
 * each a d_model x head_dim matrix, with all singular values and the summaries the rank
 * planner and the panel use.
 *
 * Public contract used by the VS Code panel, the rank planner and the `analyze` CLI; keep it
 * stable (add optional fields only).
 */
import type { AttentionLayout } from '../arch/layout';
import type { Checkpoint } from '../checkpoint/checkpoint';
import type { BackendChoice } from '../compute/session';
import type { CancelToken, ProgressFn } from '../errors';
import type { EffectiveRanks } from './metrics';
import { runSpectrumEngine } from './engine';

export type { EffectiveRanks } from './metrics';
export { cumulativeEnergy, effectiveRanks, rankForEnergy, stableRank } from './metrics';

/** Which projection a head spectrum belongs to. */
export type SpectrumKind = 'key' | 'query';

/** One head's spectrum. */
export interface HeadSpectrum {
  readonly layer: number;
  readonly kind: SpectrumKind;
  /** KV head index (0..kv_heads-1) for keys, query head index (0..query_heads-1) for queries. */
  readonly head: number;
  /** All head_dim singular values of W (d_model x head_dim), descending. Empty when `nonFinite`. */
  readonly singularValues: number[];
  /** cumulativeEnergy[k] = (σ_0² + … + σ_k²) / Σσ²; ends at 1 (all zeros for an all-zero head). */
  readonly cumulativeEnergy: number[];
  /** Smallest ranks keeping 90 / 95 / 99 % of the energy. */
  readonly effectiveRank: EffectiveRanks;
  /** ‖W‖_F² / ‖W‖_2² (0 for an all-zero head). */
  readonly stableRank: number;
  /**
   * Set when the head's weights contain NaN or ±Inf (or overflow float32 when squared): such a
   * head is skipped rather than given a meaningless spectrum; its arrays are empty and its
   * ranks 0.
   */
  readonly nonFinite?: boolean;
}

/** Options of {@link analyzeSpectra}. */
export interface SpectrumOptions {
  /**
   * Execution provider. Default `auto`: the provider remembered as fastest for this problem on
   * this machine, else cpu (GPU providers fed from host memory lost this step everywhere measured).
   */
  readonly backend?: BackendChoice;
  /**
   * With `auto`: time every usable provider on the first layers of this run (results kept),
   * use the fastest for the rest, and remember it for later runs.
   */
  readonly calibrate?: boolean;
  /** CPU threads for onnxruntime and the eigensolver workers (default: all cores). */
  readonly threads?: number;
  /** Which projections to analyse (default both, keys first). */
  readonly kinds?: readonly SpectrumKind[];
  readonly cancel?: CancelToken;
  /** Called after every layer: (layers done, layers, label). */
  readonly progress?: ProgressFn;
}

/** The result of one analysis. */
export interface SpectrumResult {
  /** The execution provider actually used for the Gram products (after any fallback). */
  readonly backend: string;
  /** Wall-clock seconds of the analysis. */
  readonly seconds: number;
  /** Every head, ordered by layer, then kind (as in `kinds`), then head index. */
  readonly heads: HeadSpectrum[];
  /** Why the requested provider was not used, or how `auto` chose (human-readable notes). */
  readonly notes?: string[];
}

/**
 * Computes every head's singular spectrum: per layer, one batched Gram product W^T W per head
 * on onnxruntime (16-bit weights fed as 16-bit and widened in the graph), then a float64
 * symmetric eigensolve per head (worker threads), σ = sqrt(max(λ, 0)). Layers are streamed
 * (read, compute, drop), so memory stays bounded by about two layers' Q/K weights.
 */
export function analyzeSpectra(ckpt: Checkpoint, layout: AttentionLayout, options: SpectrumOptions = {}): Promise<SpectrumResult> {
  return runSpectrumEngine(ckpt, layout, options);
}
