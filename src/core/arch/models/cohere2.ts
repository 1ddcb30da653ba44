/**
 * Cohere 2: one bias-free LayerNorm feeds attention and MLP in parallel; interleaved RoPE on
 * sliding layers only (full-attention layers are NoPE); logits × logit_scale.
 */
import { readRope } from '../rope';
import { decoder } from './decoder';
import { activation, gatedMlp, linear, lmHead, maxPositions, norm, readDims, separateQkv, slidingLayers, slidingWindow, type Family } from './kit';

export const cohere2: Family = {
  name: 'cohere2',
  modelTypes: ['cohere2'],
  describe(ctx) {
    const c = ctx.config;
    const d = readDims(c);
    const pattern = c.optionalInt('sliding_window_pattern', '_sliding_window_pattern') ?? 4;
    const sliding = slidingLayers(c, d.layers, (i) => (i + 1) % pattern !== 0);
    const window = slidingWindow(c, sliding);
    const rope = readRope(c, d.headDim, { style: 'interleaved' });
    const eps = c.positive(1e-5, 'layer_norm_eps');
    const act = activation(c, 'silu', 'hidden_act');
    return decoder({
      family: 'cohere2',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `model.layers.${i}.`;
        return {
          attention: { ...separateQkv(ctx, `${p}self_attn.`, d), output: linear(ctx, `${p}self_attn.o_proj`), rope: sliding[i] ? rope : null, slidingWindow: sliding[i] ? window : null },
          attentionInputNorm: norm(ctx, `${p}input_layernorm`, 'layer', eps),
          mlpInputNorm: null,
          parallel: true,
          mlp: gatedMlp(ctx, `${p}mlp.`, act),
        };
      },
      embedding: { tokens: 'model.embed_tokens.weight' },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'model.norm', 'layer', eps),
      head: lmHead(ctx, 'model.embed_tokens.weight'),
      logitMultiplier: c.positive(0.0625, 'logit_scale'),
    });
  },
};
