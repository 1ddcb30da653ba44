/** StableLM: LayerNorm (with bias), partial rotary, gated MLP; use_parallel_residual shares the input norm between attention and MLP. */
import { FactoredKeysError } from '../../errors';
import { readRope } from '../rope';
import { decoder } from './decoder';
import { activation, gatedMlp, linear, lmHead, maxPositions, norm, readDims, separateQkv, type Family } from './kit';

export const stablelm: Family = {
  name: 'stablelm',
  modelTypes: ['stablelm'],
  describe(ctx) {
    const c = ctx.config;
    const d = readDims(c);
    // per-head LayerNorms with a weight per head are not modelled
    if (c.bool('qk_layernorm', false)) throw new FactoredKeysError(`${c.where}: stablelm with qk_layernorm (a LayerNorm per head) is not supported`);
    const rope = readRope(c, d.headDim, { defaultPartialFactor: 0.25 });
    const eps = c.positive(1e-5, 'layer_norm_eps');
    const act = activation(c, 'silu', 'hidden_act');
    const parallel = c.bool('use_parallel_residual', false);
    return decoder({
      family: 'stablelm',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `model.layers.${i}.`;
        return {
          attention: { ...separateQkv(ctx, `${p}self_attn.`, d), output: linear(ctx, `${p}self_attn.o_proj`), rope },
          attentionInputNorm: norm(ctx, `${p}input_layernorm`, 'layer', eps),
          mlpInputNorm: parallel ? null : norm(ctx, `${p}post_attention_layernorm`, 'layer', eps),
          parallel,
          mlp: gatedMlp(ctx, `${p}mlp.`, act),
        };
      },
      embedding: { tokens: 'model.embed_tokens.weight' },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'model.norm', 'layer', eps),
      head: lmHead(ctx, 'model.embed_tokens.weight'),
    });
  },
};
