/** Phi (1, 1.5, 2): biased q/k/v and dense, one LayerNorm feeding attention and MLP in parallel, partial rotary, biased lm_head. */
import type { QkNorm } from '../description';
import { readRope } from '../rope';
import { decoder } from './decoder';
import { activation, denseMlp, linear, lmHead, maxPositions, norm, readDims, separateQkv, type Family } from './kit';

export const phi: Family = {
  name: 'phi',
  modelTypes: ['phi'],
  describe(ctx) {
    const c = ctx.config;
    const d = readDims(c);
    const rope = readRope(c, d.headDim, { defaultPartialFactor: 0.5 });
    const eps = c.positive(1e-5, 'layer_norm_eps');
    const act = activation(c, 'gelu_new', 'hidden_act');
    const qkLayerNorm = c.bool('qk_layernorm', false);
    return decoder({
      family: 'phi',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `model.layers.${i}.`;
        const qk = (n: string): QkNorm | null => (qkLayerNorm ? { norm: norm(ctx, `${p}self_attn.${n}`, 'layer', eps), scope: 'head' } : null);
        return {
          attention: { ...separateQkv(ctx, `${p}self_attn.`, d), output: linear(ctx, `${p}self_attn.dense`), rope, qNorm: qk('q_layernorm'), kNorm: qk('k_layernorm') },
          attentionInputNorm: norm(ctx, `${p}input_layernorm`, 'layer', eps),
          mlpInputNorm: null,
          parallel: true,
          mlp: denseMlp(ctx, `${p}mlp.`, 'fc1', 'fc2', act),
        };
      },
      embedding: { tokens: 'model.embed_tokens.weight' },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'model.final_layernorm', 'layer', eps),
      head: lmHead(ctx, 'model.embed_tokens.weight'),
    });
  },
};
