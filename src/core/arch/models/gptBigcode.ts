/**
 * GPT-BigCode (StarCoder 1, SantaCoder): nn.Linear c_attn; multi-query stacks [q | k | v] with one
 * KV head, multi-head interleaves [q_h | k_h | v_h] per head. Learned positions, LayerNorm, dense MLP.
 */
import { decoder } from './decoder';
import { activation, denseMlp, type Family, headSlices, linear, lmHead, norm, readGpt2Dims, statedMaxPositions, stackedQkv } from './kit';

export const gptBigcode: Family = {
  name: 'gpt_bigcode',
  modelTypes: ['gpt_bigcode'],
  describe(ctx) {
    const c = ctx.config;
    const mqa = c.bool('multi_query', true);
    const d = readGpt2Dims(c, (heads) => (mqa ? 1 : heads));
    const { headDim, queryHeads: heads } = d;
    const eps = c.positive(1e-5, 'layer_norm_epsilon');
    const act = activation(c, 'gelu_pytorch_tanh', 'activation_function');
    const scale = c.bool('scale_attn_weights', true) ? 1 / Math.sqrt(headDim) : 1;
    return decoder({
      family: 'gpt_bigcode',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `transformer.h.${i}.`;
        const qkv = linear(ctx, `${p}attn.c_attn`);
        const slices = mqa
          ? stackedQkv(qkv.weight, 'linear', d, qkv.bias)
          : {
              query: headSlices(qkv.weight, 'linear', 0, heads, 3 * headDim, qkv.bias),
              key: headSlices(qkv.weight, 'linear', headDim, heads, 3 * headDim, qkv.bias),
              value: headSlices(qkv.weight, 'linear', 2 * headDim, heads, 3 * headDim, qkv.bias),
              projectionTensors: [qkv.weight],
            };
        return {
          attention: { ...slices, output: linear(ctx, `${p}attn.c_proj`), rope: null, scale },
          attentionInputNorm: norm(ctx, `${p}ln_1`, 'layer', eps),
          mlpInputNorm: norm(ctx, `${p}ln_2`, 'layer', eps),
          mlp: denseMlp(ctx, `${p}mlp.`, 'c_fc', 'c_proj', act),
        };
      },
      embedding: { tokens: 'transformer.wte.weight', positions: 'transformer.wpe.weight' },
      maxPositions: statedMaxPositions(c, 'n_positions', 'max_position_embeddings'),
      finalNorm: norm(ctx, 'transformer.ln_f', 'layer', eps),
      head: lmHead(ctx, 'transformer.wte.weight'),
    });
  },
};
