/**
 * The one description of a checkpoint's architecture: normalised dimensions, the tensor role of
 * every weight per layer, and the features that change the forward pass. Each family in
 * ./models writes one (mostly data); analysis (`AttentionLayout`, ./layout.ts) and the
 * evaluator's graph are views of it. Consumers check {@link ModelFeature}s they do not support
 * and refuse them (./features.ts), so a feature is never silently ignored.
 */

/**
 * How a projection's output features are stored in a weight tensor.
 * - `linear`: PyTorch nn.Linear, tensor `[out_features, in_features]`: a head is a block of rows.
 * - `conv1d`: GPT-2 Conv1D, tensor `[in_features, out_features]`: a head is a block of columns.
 */
export type WeightOrientation = 'linear' | 'conv1d';

/** A head's slice of one projection: features [offset, offset + headDim) of `tensor`'s output axis. */
export interface HeadSlice {
  readonly tensor: string;
  readonly orientation: WeightOrientation;
  /** First output feature of the head in the tensor. */
  readonly offset: number;
  /** Bias tensor (1-D over the same output features), when the projection has one. */
  readonly bias?: string;
}

/**
 * - `rms`: w · x / sqrt(mean(x²) + eps) (Llama).
 * - `rms-offset`: (1 + w) · x / sqrt(mean(x²) + eps) (Gemma).
 * - `layer`: LayerNorm, mean-centred, with bias when `bias` is given.
 */
export type NormKind = 'rms' | 'rms-offset' | 'layer';

export interface NormRole {
  readonly kind: NormKind;
  readonly weight: string;
  readonly bias?: string;
  readonly eps: number;
}

/** y = x·W (+ b) from a stored tensor; `rows` selects output features [start, start + count). */
export interface LinearRole {
  readonly weight: string;
  readonly orientation: WeightOrientation;
  readonly bias?: string;
  readonly rows?: { readonly start: number; readonly count: number };
}

/** Activation of an MLP, by its exact formula. */
export type Activation =
  /** x · sigmoid(x) */
  | 'silu'
  /** 0.5·x·(1 + erf(x/√2)) */
  | 'gelu'
  /** 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))): gelu_new, gelu_pytorch_tanh */
  | 'gelu-tanh'
  | 'relu';

export interface GatedExpert {
  readonly gate: LinearRole;
  readonly up: LinearRole;
  readonly down: LinearRole;
}

/**
 * How a router turns logits into expert weights.
 * - `softmax-topk`: softmax over all experts, keep the top k (renormalised to sum 1 when `renormalize`).
 * - `topk-softmax`: keep the top-k logits, softmax over those.
 */
export interface Routing {
  readonly order: 'softmax-topk' | 'topk-softmax';
  readonly topK: number;
  readonly renormalize: boolean;
}

export type MlpRole =
  | { readonly kind: 'dense'; readonly up: LinearRole; readonly down: LinearRole; readonly activation: Activation }
  | { readonly kind: 'gated'; readonly gate: LinearRole; readonly up: LinearRole; readonly down: LinearRole; readonly activation: Activation }
  | { readonly kind: 'moe'; readonly router: LinearRole; readonly routing: Routing; readonly experts: readonly GatedExpert[]; readonly activation: Activation }
  /**
   * GPT-OSS experts: stacked `gate_up` [E, in, 2I] (gate = even columns, up = odd) and `down`
   * [E, I, out], each with a bias [E, ·]; glu = clamp(gate, max=limit)·sigmoid(alpha·gate),
   * out = ((clamp(up, ±limit) + 1)·glu)·down + b.
   */
  | {
      readonly kind: 'gpt-oss-moe';
      readonly router: LinearRole;
      readonly routing: Routing;
      readonly gateUp: { readonly weight: string; readonly bias: string };
      readonly down: { readonly weight: string; readonly bias: string };
      readonly experts: number;
      readonly limit: number;
      readonly alpha: number;
    };

/** The longest sequence a model runs, and what in config.json says so. */
export interface PositionLimit {
  readonly tokens: number;
  /** A config key ("max_position_embeddings"), or the RoPE scaling that sets the limit. */
  readonly source: string;
}

/** maxPositions of a model without a limit (RoPE without a stated maximum, dynamic NTK scaling). */
export const NO_POSITION_LIMIT = Number.MAX_SAFE_INTEGER;

/** RoPE frequency scaling, as config.json's rope_parameters / rope_scaling says. */
export type RopeScaling =
  | { readonly type: 'default' }
  | { readonly type: 'linear'; readonly factor: number }
  | { readonly type: 'dynamic'; readonly factor: number; readonly originalMaxPositions: number }
  | {
      readonly type: 'yarn';
      readonly factor: number;
      readonly originalMaxPositions: number;
      readonly betaFast: number;
      readonly betaSlow: number;
      readonly mscale: number | null;
      readonly mscaleAllDim: number | null;
      readonly attentionFactor: number | null;
      readonly truncate: boolean;
    }
  | {
      readonly type: 'longrope';
      readonly shortFactor: readonly number[];
      readonly longFactor: readonly number[];
      readonly originalMaxPositions: number;
      readonly maxPositions: number;
      readonly attentionFactor: number | null;
      readonly factor: number | null;
    }
  | { readonly type: 'llama3'; readonly factor: number; readonly lowFreqFactor: number; readonly highFreqFactor: number; readonly originalMaxPositions: number };

export interface RopeSpec {
  /** `rotate-half`: pairs (i, i + d/2); `interleaved`: pairs (2i, 2i + 1) (GPT-J, Cohere). */
  readonly style: 'rotate-half' | 'interleaved';
  /** Leading dimensions of each head that rotate; the rest pass through. */
  readonly rotaryDim: number;
  readonly theta: number;
  readonly scaling: RopeScaling;
}

/** A q or k norm: over each head's head_dim features, or over the whole projection (OLMo-2). */
export interface QkNorm {
  readonly norm: NormRole;
  readonly scope: 'head' | 'projection';
}

export interface AttentionRole {
  /** W_Q^h for h = 0..queryHeads-1. */
  readonly query: readonly HeadSlice[];
  /** W_K^g for g = 0..kvHeads-1. */
  readonly key: readonly HeadSlice[];
  /** W_V^g for g = 0..kvHeads-1. */
  readonly value: readonly HeadSlice[];
  /** The tensors that hold Q, K and V (one name when fused). */
  readonly projectionTensors: readonly string[];
  readonly output: LinearRole;
  /** Applied to q and k after the projection and before RoPE. */
  readonly qNorm: QkNorm | null;
  readonly kNorm: QkNorm | null;
  /** null: this layer uses no rotary positions (NoPE layers, learned positions, ALiBi-free MQA). */
  readonly rope: RopeSpec | null;
  /** Multiplies q·kᵀ: 1/sqrt(head_dim) unless the model says otherwise. */
  readonly scale: number;
  /** scores = cap · tanh(scores / cap) before the mask, when set. */
  readonly softcap: number | null;
  /** A key further back than this many positions is masked (query i sees j when i − j < window). */
  readonly slidingWindow: number | null;
  /** Per-query-head sink logit [queryHeads] joined to the softmax and dropped after it (GPT-OSS). */
  readonly sinks: string | null;
  /** ALiBi position biases (old Falcon variants): described, refused by the evaluator. */
  readonly alibi: boolean;
}

/** One block: where its norms sit and how the residual stream combines them. */
export interface LayerDescription {
  readonly index: number;
  readonly attention: AttentionRole;
  /** Norm of the attention input (absent in OLMo-2, which normalises outputs). */
  readonly attentionInputNorm: NormRole | null;
  /** Norm of the attention output before the residual add (Gemma 2/3, OLMo-2). */
  readonly attentionOutputNorm: NormRole | null;
  /** Norm of the MLP input; with `parallel` and no norm of its own, the attention input norm is shared. */
  readonly mlpInputNorm: NormRole | null;
  readonly mlpOutputNorm: NormRole | null;
  /** The MLP reads the block input (not the stream after attention); both outputs are added. */
  readonly parallel: boolean;
  /** Branch outputs are multiplied by this before the residual add (Granite). */
  readonly residualMultiplier: number;
  readonly mlp: MlpRole;
}

/** Multi-head latent attention (DeepSeek-V2/V3): keys are already a shared low-rank latent. */
export interface LatentAttentionInfo {
  readonly kvLoraRank: number;
  readonly qLoraRank: number | null;
  readonly qkNopeHeadDim: number;
  readonly qkRopeHeadDim: number;
  readonly vHeadDim: number;
}

export interface ModelDescription {
  /** config.json `model_type`. */
  readonly architecture: string;
  /** The description file in ./models that wrote it. */
  readonly family: string;
  readonly layers: number;
  readonly hidden: number;
  readonly queryHeads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly vocab: number;
  /** queryToKv[h] = the KV head query head h attends with. */
  readonly queryToKv: readonly number[];
  readonly embedding: {
    readonly tokens: string;
    /** Learned absolute positions [maxPositions, hidden]. */
    readonly positions: string | null;
    /** Embeddings are multiplied by this (Gemma: sqrt(hidden); Granite: embedding_multiplier). */
    readonly multiplier: number;
  };
  /** Longest sequence the model's positions cover ({@link NO_POSITION_LIMIT}: none); see positionLimit in rope.ts. */
  readonly maxPositions: number;
  /** What in config.json sets maxPositions: a key ("n_positions"), or the RoPE scaling that extends it. */
  readonly maxPositionsSource: string;
  readonly finalNorm: NormRole | null;
  /** Logits projection; the embedding itself when tied. */
  readonly head: LinearRole;
  /** Logits are multiplied by this (Cohere logit_scale; Granite 1/logits_scaling). */
  readonly logitMultiplier: number;
  readonly finalSoftcap: number | null;
  /** Per layer, in order; empty for architectures whose attention this tool cannot model (MLA). */
  readonly blocks: readonly LayerDescription[];
  /** Present for DeepSeek-style latent attention: reported, refused by every consumer. */
  readonly latentAttention: LatentAttentionInfo | null;
}
