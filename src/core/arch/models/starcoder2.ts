/** StarCoder2: biased q/k/v/o, LayerNorm with bias, dense GELU-tanh MLP (c_fc, c_proj), RoPE, optional sliding window on every layer. */
import { readRope } from '../rope';
import { decoder } from './decoder';
import { activation, denseMlp, linear, lmHead, maxPositions, norm, readDims, separateQkv, slidingLayers, slidingWindow, type Family } from './kit';

export const starcoder2: Family = {
  name: 'starcoder2',
  modelTypes: ['starcoder2'],
  describe(ctx) {
    const c = ctx.config;
    const d = readDims(c);
    const sliding = slidingLayers(c, d.layers, () => c.has('sliding_window'));
    const window = slidingWindow(c, sliding);
    const rope = readRope(c, d.headDim);
    const eps = c.positive(1e-5, 'norm_epsilon', 'layer_norm_eps');
    const act = activation(c, 'gelu_pytorch_tanh', 'hidden_act');
    return decoder({
      family: 'starcoder2',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `model.layers.${i}.`;
        return {
          attention: { ...separateQkv(ctx, `${p}self_attn.`, d), output: linear(ctx, `${p}self_attn.o_proj`), rope, slidingWindow: sliding[i] ? window : null },
          attentionInputNorm: norm(ctx, `${p}input_layernorm`, 'layer', eps),
          mlpInputNorm: norm(ctx, `${p}post_attention_layernorm`, 'layer', eps),
          mlp: denseMlp(ctx, `${p}mlp.`, 'c_fc', 'c_proj', act),
        };
      },
      embedding: { tokens: 'model.embed_tokens.weight' },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'model.norm', 'layer', eps),
      head: lmHead(ctx, 'model.embed_tokens.weight'),
    });
  },
};
