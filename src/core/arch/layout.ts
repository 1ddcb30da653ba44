/**
 * One architecture-independent description of a checkpoint's attention: for every layer,
 * exactly which bytes hold each query head's W_Q^h and each KV head's W_K^g.
 */
import type { Dtype } from '../checkpoint/dtypes';
import type { HeadSlice, ModelDescription } from './description';

export type { HeadSlice, WeightOrientation } from './description';

export interface RopeInfo {
  /** Rotated dimensions per head (head_dim x partial rotary factor). */
  readonly rotaryDim: number;
  readonly partialRotaryFactor: number;
  readonly theta: number;
  /** rotate-half pairs (i, i + rotaryDim/2); interleaved pairs (2i, 2i + 1). */
  readonly style: 'rotate-half' | 'interleaved';
}

export interface LayerAttention {
  readonly layer: number;
  /** W_Q^h for h = 0..queryHeads-1. */
  readonly queryHeads: readonly HeadSlice[];
  /** W_K^g for g = 0..kvHeads-1. */
  readonly keyHeads: readonly HeadSlice[];
  /** W_V^g for g = 0..kvHeads-1. */
  readonly valueHeads: readonly HeadSlice[];
  /** The tensors that hold Q, K and V of this layer (one name when fused). */
  readonly projectionTensors: readonly string[];
  /** Attention output projection (consumer of values). */
  readonly outputTensor: string;
}

export interface AttentionLayout {
  /** config.json `model_type`. */
  readonly architecture: string;
  readonly layers: readonly LayerAttention[];
  readonly hiddenSize: number;
  readonly queryHeads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  /** queryToKv[h] = the KV head that query head h attends with (GQA/MQA). */
  readonly queryToKv: readonly number[];
  /** RoPE of the first rotary layer (null when no layer rotates); per-layer truth is in `description`. */
  readonly rope: RopeInfo | null;
  /**
   * How factored keys are stored (docs/FORMAT.md): `absorbed` when nothing but a linear map sits
   * between every layer's projections and its scores (no RoPE, no q/k norm); else `latent`.
   */
  readonly keyMode: 'absorbed' | 'latent';
  readonly qkBias: boolean;
  /** Whether Q, K and V share one tensor per layer. */
  readonly fusedQkv: boolean;
  /** dtype of the Q/K weight tensors. */
  readonly dtype: Dtype;
  /** Softmax scale used by the model: 1/sqrt(head_dim) unless the config says otherwise. */
  readonly softmaxScale: number;
  /** Total parameter count of all tensors in the checkpoint. */
  readonly parameters: number;
  /** The full description this layout is a view of. */
  readonly description: ModelDescription;
}
