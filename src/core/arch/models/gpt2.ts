/** GPT-2: Conv1D c_attn [in, 3·hidden] (columns q | k | v) with biases, learned positions, LayerNorm, dense GELU MLP. */
import { decoder } from './decoder';
import { activation, denseMlp, type Family, linear, lmHead, norm, readGpt2Dims, statedMaxPositions, stackedQkv } from './kit';

export const gpt2: Family = {
  name: 'gpt2',
  modelTypes: ['gpt2'],
  describe(ctx) {
    const c = ctx.config;
    const d = readGpt2Dims(c);
    const headDim = d.headDim;
    const eps = c.positive(1e-5, 'layer_norm_epsilon');
    const act = activation(c, 'gelu_new', 'activation_function');
    const scaled = c.bool('scale_attn_weights', true);
    const byLayer = c.bool('scale_attn_by_inverse_layer_idx', false);
    return decoder({
      family: 'gpt2',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `transformer.h.${i}.`;
        const qkv = linear(ctx, `${p}attn.c_attn`, 'conv1d');
        return {
          attention: { ...stackedQkv(qkv.weight, 'conv1d', d, qkv.bias), output: linear(ctx, `${p}attn.c_proj`, 'conv1d'), rope: null, scale: (scaled ? 1 / Math.sqrt(headDim) : 1) / (byLayer ? i + 1 : 1) },
          attentionInputNorm: norm(ctx, `${p}ln_1`, 'layer', eps),
          mlpInputNorm: norm(ctx, `${p}ln_2`, 'layer', eps),
          mlp: denseMlp(ctx, `${p}mlp.`, 'c_fc', 'c_proj', act, 'conv1d'),
        };
      },
      embedding: { tokens: 'transformer.wte.weight', positions: 'transformer.wpe.weight' },
      maxPositions: statedMaxPositions(c, 'n_positions', 'max_position_embeddings'),
      finalNorm: norm(ctx, 'transformer.ln_f', 'layer', eps),
      head: lmHead(ctx, 'transformer.wte.weight'),
    });
  },
};
