/**
 * Qwen3 and Qwen3-MoE: Llama blocks with per-head RMS q_norm/k_norm before RoPE; the MoE variant
 * routes softmax → top-k (renormalised when norm_topk_prob) over `mlp.experts.<e>`.
 */
import type { MlpRole } from '../description';
import { llamaModel } from './llama';
import { activation, gatedMlp, linear, norm, type Family } from './kit';

export const qwen3: Family = {
  name: 'qwen3',
  modelTypes: ['qwen3', 'qwen3_moe'],
  describe(ctx) {
    const c = ctx.config;
    const act = activation(c, 'silu', 'hidden_act');
    const experts = ctx.modelType === 'qwen3_moe' ? (c.optionalInt('num_experts', 'num_local_experts') ?? 0) : 0;
    const sparseStep = c.optionalInt('decoder_sparse_step') ?? 1;
    const denseLayers = new Set(c.numbers('mlp_only_layers') ?? []);
    const mlp = (i: number): MlpRole => {
      const p = `model.layers.${i}.mlp.`;
      if (experts === 0 || denseLayers.has(i) || (i + 1) % sparseStep !== 0) return gatedMlp(ctx, p, act);
      return {
        kind: 'moe',
        router: linear(ctx, `${p}gate`),
        routing: { order: 'softmax-topk', topK: c.int('num_experts_per_tok'), renormalize: c.bool('norm_topk_prob', false) },
        experts: Array.from({ length: experts }, (_, e) => ({ gate: linear(ctx, `${p}experts.${e}.gate_proj`), up: linear(ctx, `${p}experts.${e}.up_proj`), down: linear(ctx, `${p}experts.${e}.down_proj`) })),
        activation: act,
      };
    };
    return llamaModel(ctx, 'qwen3', {
      layer: (i, { eps }) => {
        const p = `model.layers.${i}.self_attn.`;
        return { mlp: mlp(i), qNorm: { norm: norm(ctx, `${p}q_norm`, 'rms', eps), scope: 'head' }, kNorm: { norm: norm(ctx, `${p}k_norm`, 'rms', eps), scope: 'head' } };
      },
    });
  },
};
