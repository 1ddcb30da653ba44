/**
 * Qwen3 and Qwen3-MoE: Llama blocks with per-head RMS q_norm/k_norm before RoPE; the MoE variant
 * routes softmax → top-k (renormalised when norm_topk_prob) over `mlp.experts.<e>`.
 */
import type { MlpRole } from '../description';
import { readRope } from '../rope';
import { decoder } from './decoder';
import { defaultSliding, llamaBlock } from './llama';
import { activation, gatedMlp, linear, lmHead, maxPositions, norm, readDims, slidingWindow, type Family } from './kit';

export const qwen3: Family = {
  name: 'qwen3',
  modelTypes: ['qwen3', 'qwen3_moe'],
  describe(ctx) {
    const c = ctx.config;
    const d = readDims(c);
    const sliding = defaultSliding(ctx, d);
    const window = slidingWindow(c, sliding);
    const rope = readRope(c, d.headDim);
    const eps = c.positive(1e-6, 'rms_norm_eps');
    const act = activation(c, 'silu', 'hidden_act');
    const experts = ctx.modelType === 'qwen3_moe' ? c.optionalInt('num_experts', 'num_local_experts') ?? 0 : 0;
    const sparseStep = c.optionalInt('decoder_sparse_step') ?? 1;
    const denseLayers = new Set(c.numbers('mlp_only_layers') ?? []);
    const mlp = (i: number): MlpRole => {
      const p = `model.layers.${i}.mlp.`;
      if (experts === 0 || denseLayers.has(i) || (i + 1) % sparseStep !== 0) return gatedMlp(ctx, p, act);
      return {
        kind: 'moe',
        router: linear(ctx, `${p}gate`),
        routing: { order: 'softmax-topk', topK: c.int('num_experts_per_tok'), renormalize: c.bool('norm_topk_prob', false) },
        experts: Array.from({ length: experts }, (_, e) => {
          const g = gatedMlp(ctx, `${p}experts.${e}.`, act);
          return g.kind === 'gated' ? { gate: g.gate, up: g.up, down: g.down } : (undefined as never);
        }),
        activation: act,
      };
    };
    return decoder({
      family: 'qwen3',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `model.layers.${i}.self_attn.`;
        return llamaBlock(ctx, i, d, {
          eps,
          rope,
          window: sliding[i] ? window : null,
          mlp: mlp(i),
          qNorm: { norm: norm(ctx, `${p}q_norm`, 'rms', eps), scope: 'head' },
          kNorm: { norm: norm(ctx, `${p}k_norm`, 'rms', eps), scope: 'head' },
        });
      },
      embedding: { tokens: 'model.embed_tokens.weight' },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'model.norm', 'rms', eps),
      head: lmHead(ctx, 'model.embed_tokens.weight'),
    });
  },
};
