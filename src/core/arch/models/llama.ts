/** Llama, Mistral and Qwen2: separate q/k/v (Qwen2 with biases), RMSNorm, gated SiLU MLP. */
import type { MlpRole, ModelDescription, QkNorm, RopeSpec } from '../description';
import { readRope } from '../rope';
import { decoder, type BlockSpec } from './decoder';
import { activation, gatedMlp, linear, lmHead, maxPositions, norm, readDims, separateQkv, slidingLayers, slidingWindow, type DescribeContext, type Dims, type Family } from './kit';

/** Per-layer choices of a Llama-shaped block. */
export interface LlamaBlockOptions {
  readonly eps: number;
  readonly rope: RopeSpec | null;
  readonly window: number | null;
  readonly mlp?: MlpRole;
  readonly qNorm?: QkNorm | null;
  readonly kNorm?: QkNorm | null;
  readonly scale?: number;
  readonly residualMultiplier?: number;
}

/** A block under `model.layers.<i>.` with input/post-attention RMSNorms. */
export function llamaBlock(ctx: DescribeContext, i: number, d: Dims, o: LlamaBlockOptions): BlockSpec {
  const p = `model.layers.${i}.`;
  return {
    attention: { ...separateQkv(ctx, `${p}self_attn.`, d), output: linear(ctx, `${p}self_attn.o_proj`), rope: o.rope, slidingWindow: o.window, qNorm: o.qNorm, kNorm: o.kNorm, scale: o.scale },
    attentionInputNorm: norm(ctx, `${p}input_layernorm`, 'rms', o.eps),
    mlpInputNorm: norm(ctx, `${p}post_attention_layernorm`, 'rms', o.eps),
    mlp: o.mlp ?? gatedMlp(ctx, `${p}mlp.`, activation(ctx.config, 'silu', 'hidden_act')),
    residualMultiplier: o.residualMultiplier,
  };
}

/** Mistral slides every layer when sliding_window is set; Qwen2 only with use_sliding_window. */
export function defaultSliding(ctx: DescribeContext, d: Dims): boolean[] {
  const c = ctx.config;
  const useWindow = ctx.modelType === 'mistral' || ctx.modelType === 'mixtral' ? c.has('sliding_window') : c.bool('use_sliding_window', false) && c.has('sliding_window');
  const from = c.optionalInt('max_window_layers') ?? 0;
  return slidingLayers(c, d.layers, (i) => useWindow && i >= (ctx.modelType.startsWith('qwen') ? from : 0));
}

/** What a Llama-shaped family changes: its epsilon default, per-layer block options, multipliers. */
export interface LlamaModelOptions {
  readonly epsDefault?: number;
  /** Per-layer changes to the block, given the defaults read from the config. */
  readonly layer?: (i: number, defaults: LlamaBlockOptions) => Partial<LlamaBlockOptions>;
  readonly embeddingMultiplier?: number;
  readonly logitMultiplier?: number;
}

/** A Llama-shaped model (`model.layers.<i>`, RMSNorm, `model.norm`, `lm_head` or tied). */
export function llamaModel(ctx: DescribeContext, family: string, o: LlamaModelOptions = {}): ModelDescription {
  const c = ctx.config;
  const d = readDims(c);
  const sliding = defaultSliding(ctx, d);
  const window = slidingWindow(c, sliding);
  const rope = readRope(c, d.headDim);
  const eps = c.positive(o.epsDefault ?? 1e-6, 'rms_norm_eps');
  return decoder({
    family,
    architecture: ctx.modelType,
    config: c,
    dims: d,
    block: (i) => {
      const defaults: LlamaBlockOptions = { eps, rope, window: sliding[i] ? window : null };
      return llamaBlock(ctx, i, d, { ...defaults, ...o.layer?.(i, defaults) });
    },
    embedding: { tokens: 'model.embed_tokens.weight', multiplier: o.embeddingMultiplier },
    maxPositions: maxPositions(c),
    finalNorm: norm(ctx, 'model.norm', 'rms', eps),
    head: lmHead(ctx, 'model.embed_tokens.weight'),
    logitMultiplier: o.logitMultiplier,
  });
}

export const llama: Family = {
  name: 'llama',
  modelTypes: ['llama', 'mistral', 'qwen2'],
  describe: (ctx) => llamaModel(ctx, 'llama'),
};
