/**
 * The on-disk description of a factored-keys checkpoint: the `factored_keys` block added to
 * config.json and the `factored_keys_report.json` file. docs/FORMAT.md is the normative spec;
 * these types mirror it field by field.
 */
import type { WeightOrientation } from '../arch/layout';
import type { CalibrationInfo } from '../calibration/moments';
import type { FactorMethod, RankPlan } from '../plan/types';

/** Version of the `factored_keys` config block. */
export const FACTORED_KEYS_FORMAT_VERSION = 1;
/** Name of the report file written next to config.json. */
export const REPORT_FILE = 'factored_keys_report.json';
/**
 * The fixed Hugging Face modelling file copied, byte for byte, from `python/` of this project
 * into every export (docs/FORMAT.md section 9). It is never generated: no checkpoint text
 * becomes code.
 */
export const RUNTIME_FILE = 'modeling_factored_keys.py';
/** The class of {@link RUNTIME_FILE} that `AutoModelForCausalLM` loads with trust_remote_code. */
export const RUNTIME_CLASS = 'FactoredKeysForCausalLM';
/** config.json `auto_map` of an export. */
export const AUTO_MAP: Readonly<Record<string, string>> = { AutoModelForCausalLM: `modeling_factored_keys.${RUNTIME_CLASS}` };

/** A q or k norm of the source layer (module path = its weight tensor's name without `.weight`). */
export interface RuntimeNorm {
  readonly weight: string;
  /** `head`: over each head's head_dim features; `projection`: over all heads' features at once (OLMo-2). */
  readonly scope: 'head' | 'projection';
}

/**
 * What a runtime needs beyond the slices to run one layer's attention exactly as the source
 * (docs/FORMAT.md section 3, `attention`). Written by every export since the runtime was added;
 * readers of older exports treat it as absent.
 */
export interface LayerRuntime {
  /** Shape of every tensor the export rewrote or added in this layer (weights, biases, key_up). */
  readonly shapes: Readonly<Record<string, readonly number[]>>;
  /** The attention output projection's weight tensor. */
  readonly output: string;
  readonly q_norm: RuntimeNorm | null;
  readonly k_norm: RuntimeNorm | null;
  /** Rotated leading dims of each head; null for a layer without RoPE (NoPE layers, absorbed mode). */
  readonly rotary_dim: number | null;
  readonly rope_style: 'rotate-half' | 'interleaved' | null;
  /** Multiplies q·kᵀ (the source's own scale: query_pre_attn_scalar, attention_multiplier, ...). */
  readonly scale: number;
  /** scores = cap·tanh(scores/cap) before the mask, when set. */
  readonly softcap: number | null;
  /** Keys further back than this many positions are masked (informational: the source config's mask decides). */
  readonly sliding_window: number | null;
  /** Per-query-head sink logits tensor (GPT-OSS), or null. */
  readonly sinks: string | null;
}

/**
 * - `absorbed` (no RoPE): the key map is folded into the queries; the cache holds r-dim keys
 *   and scores are q'·k'ᵀ directly.
 * - `latent` (RoPE): the cache holds the r-dim pre-RoPE latent c; keys are rebuilt as k = c·B
 *   (the `key_up` tensor) before RoPE; queries are unchanged.
 */
export type RopeMode = 'absorbed' | 'latent';

/**
 * Output features [offset, offset + width) of a projection tensor: rows for `linear`
 * ([out, in]) tensors, columns for `conv1d` ([in, out]) tensors. The head's projection of a
 * hidden-state row vector x is x·W + b with W (in x width) read from those features.
 */
export interface SliceRef {
  readonly tensor: string;
  readonly orientation: WeightOrientation;
  readonly offset: number;
  readonly width: number;
  /** 1-D bias tensor over the same output features (same offset/width), or null. */
  readonly bias: string | null;
}

/** Where one layer's attention projections live after export. */
export interface FactoredLayer {
  readonly layer: number;
  /** One entry per query head (width = rank of its KV head when absorbed, head_dim when latent). */
  readonly query: readonly SliceRef[];
  /** One entry per KV head: thin keys (absorbed) or the latent c = x·A (latent); width = rank. */
  readonly key: readonly SliceRef[];
  /** One entry per KV head; width = head_dim (values are never factored). */
  readonly value: readonly SliceRef[];
  /**
   * Latent mode only: a `linear` tensor [kv_heads x head_dim, Σ_g rank_g], block-diagonal,
   * with k_full = c_all · key_upᵀ where c_all concatenates the KV heads' latents in order.
   * Null in absorbed mode.
   */
  readonly key_up: string | null;
  /** Runtime description of the layer (absent in exports written before the runtime existed). */
  readonly attention?: LayerRuntime;
}

/** The `factored_keys` block of config.json. */
export interface FactoredKeysConfig {
  readonly format_version: number;
  readonly method: FactorMethod;
  readonly rope_mode: RopeMode;
  readonly architecture: string;
  readonly original_head_dim: number;
  /** Multiply q·kᵀ by this (1/sqrt(original head_dim)), never 1/sqrt(rank). */
  readonly softmax_scale: number;
  readonly num_query_heads: number;
  readonly num_kv_heads: number;
  /** query_to_kv[h] = KV head used by query head h. */
  readonly query_to_kv: readonly number[];
  /** RoPE as the original model applies it (latent mode), or null. */
  readonly rope: { readonly rotary_dim: number; readonly theta: number; readonly style: 'rotate-half' | 'interleaved' } | null;
  /** ranks[layer][kvHead]. */
  readonly ranks: readonly (readonly number[])[];
  readonly layers: readonly FactoredLayer[];
}

/** One head's quality numbers in the report. */
export interface HeadReport {
  readonly layer: number;
  readonly kv_head: number;
  readonly rank: number;
  /** Fraction of the method's energy kept (σ² for key-svd, λ for qk-svd). */
  readonly retained_energy: number;
  /**
   * Relative Frobenius error of the query-key bilinear form over the query heads sharing the
   * KV head, biases included, computed in float64 before rounding to the checkpoint dtype.
   */
  readonly score_error: number;
}

/** The report's name for the source checkpoint (never an absolute path). */
export interface ExportSource {
  /** The source folder's name (`org/name` for a Hugging Face cache folder). */
  readonly name: string;
  /** The hub snapshot revision, when the source was a Hugging Face cache folder. */
  readonly revision?: string;
  /** SHA-256 (hex) over config.json and each shard's name, size and safetensors header. */
  readonly manifest_sha256: string;
}

/** `factored_keys_report.json`. */
export interface ExportReport {
  readonly format_version: number;
  readonly source: ExportSource;
  readonly method: FactorMethod;
  readonly rope_mode: RopeMode;
  readonly plan: RankPlan;
  readonly heads: readonly HeadReport[];
  readonly cache: {
    /** The cache dtype priced (`bf16`, ...), when one was named. */
    readonly dtype?: string;
    /** Bytes per cached element (the chosen cache dtype). */
    readonly bytes_per_value: number;
    readonly key_bytes_per_token: { readonly before: number; readonly after: number };
    readonly value_bytes_per_token: number;
    readonly kv_bytes_per_token: { readonly before: number; readonly after: number };
    readonly capacity_multiplier: number;
  };
  /**
   * Method `calibrated` only: the calibration text by file name and SHA-256 (never its path),
   * the tokenizer, the tokens and window length used, and the statistics' cache key.
   */
  readonly calibration?: CalibrationInfo;
}
