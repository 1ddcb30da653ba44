/** OLMo-2: no input norms, RMSNorm of each branch's output; q/k RMSNorm over the whole projection before RoPE. */
import { readRope } from '../rope';
import { decoder } from './decoder';
import { activation, gatedMlp, linear, lmHead, maxPositions, norm, readDims, separateQkv, type Family } from './kit';

export const olmo2: Family = {
  name: 'olmo2',
  modelTypes: ['olmo2'],
  describe(ctx) {
    const c = ctx.config;
    const d = readDims(c);
    const rope = readRope(c, d.headDim);
    const eps = c.positive(1e-6, 'rms_norm_eps');
    const act = activation(c, 'silu', 'hidden_act');
    return decoder({
      family: 'olmo2',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `model.layers.${i}.`;
        return {
          attention: {
            ...separateQkv(ctx, `${p}self_attn.`, d),
            output: linear(ctx, `${p}self_attn.o_proj`),
            rope,
            qNorm: { norm: norm(ctx, `${p}self_attn.q_norm`, 'rms', eps), scope: 'projection' },
            kNorm: { norm: norm(ctx, `${p}self_attn.k_norm`, 'rms', eps), scope: 'projection' },
          },
          attentionInputNorm: null,
          attentionOutputNorm: norm(ctx, `${p}post_attention_layernorm`, 'rms', eps),
          mlpInputNorm: null,
          mlpOutputNorm: norm(ctx, `${p}post_feedforward_layernorm`, 'rms', eps),
          mlp: gatedMlp(ctx, `${p}mlp.`, act),
        };
      },
      embedding: { tokens: 'model.embed_tokens.weight' },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'model.norm', 'rms', eps),
      head: lmHead(ctx, 'model.embed_tokens.weight'),
    });
  },
};
