/**
 * DeepSeek-V2/V3 multi-head latent attention: keys and values come from one shared latent of
 * kv_lora_rank dims per token (kv_a_proj_with_mqa, then kv_b_proj per head), so the key cache is
 * already factored. Described for inspect; every consumer refuses it (./features.ts).
 */
import { maxPositions, type Family } from './kit';

export const deepseek: Family = {
  name: 'deepseek',
  modelTypes: ['deepseek_v2', 'deepseek_v3'],
  describe(ctx) {
    const c = ctx.config;
    const heads = c.int('num_attention_heads');
    const nope = c.int('qk_nope_head_dim');
    const ropeDim = c.int('qk_rope_head_dim');
    const positions = maxPositions(c);
    return {
      architecture: ctx.modelType,
      family: 'deepseek',
      layers: c.int('num_hidden_layers'),
      hidden: c.int('hidden_size'),
      queryHeads: heads,
      // every query head reads its own key/value heads expanded from the shared latent
      kvHeads: heads,
      headDim: nope + ropeDim,
      vocab: c.int('vocab_size'),
      queryToKv: Array.from({ length: heads }, (_, h) => h),
      embedding: { tokens: 'model.embed_tokens.weight', positions: null, multiplier: 1 },
      maxPositions: positions.tokens,
      maxPositionsSource: positions.source,
      finalNorm: null,
      head: { weight: 'lm_head.weight', orientation: 'linear' },
      logitMultiplier: 1,
      finalSoftcap: null,
      blocks: [],
      latentAttention: { kvLoraRank: c.int('kv_lora_rank'), qLoraRank: c.optionalInt('q_lora_rank') ?? null, qkNopeHeadDim: nope, qkRopeHeadDim: ropeDim, vHeadDim: c.int('v_head_dim') },
    };
  },
};
