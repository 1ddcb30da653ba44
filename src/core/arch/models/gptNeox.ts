/** GPT-NeoX (Pythia): fused query_key_value interleaved per head [q_h | k_h | v_h], partial rotary, parallel residual with two LayerNorms. */
import { readRope } from '../rope';
import { decoder } from './decoder';
import { activation, denseMlp, headSlices, linear, lmHead, maxPositions, norm, readDims, type Family } from './kit';

export const gptNeox: Family = {
  name: 'gpt_neox',
  modelTypes: ['gpt_neox'],
  describe(ctx) {
    const c = ctx.config;
    const base = readDims(c);
    // GPT-NeoX is multi-head
    const d = { ...base, kvHeads: base.queryHeads };
    const rope = readRope(c, d.headDim, { defaultPartialFactor: 0.25 });
    const eps = c.positive(1e-5, 'layer_norm_eps');
    const act = activation(c, 'gelu', 'hidden_act');
    const parallel = c.bool('use_parallel_residual', true);
    return decoder({
      family: 'gpt_neox',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `gpt_neox.layers.${i}.`;
        const qkv = linear(ctx, `${p}attention.query_key_value`);
        const stride = 3 * d.headDim;
        return {
          attention: {
            query: headSlices(qkv.weight, 'linear', 0, d.queryHeads, stride, qkv.bias),
            key: headSlices(qkv.weight, 'linear', d.headDim, d.kvHeads, stride, qkv.bias),
            value: headSlices(qkv.weight, 'linear', 2 * d.headDim, d.kvHeads, stride, qkv.bias),
            projectionTensors: [qkv.weight],
            output: linear(ctx, `${p}attention.dense`),
            rope,
          },
          attentionInputNorm: norm(ctx, `${p}input_layernorm`, 'layer', eps),
          mlpInputNorm: norm(ctx, `${p}post_attention_layernorm`, 'layer', eps),
          parallel,
          mlp: denseMlp(ctx, `${p}mlp.`, 'dense_h_to_4h', 'dense_4h_to_h', act),
        };
      },
      embedding: { tokens: 'gpt_neox.embed_in.weight' },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'gpt_neox.final_layer_norm', 'layer', eps),
      head: lmHead(ctx, 'gpt_neox.embed_in.weight', 'embed_out'),
    });
  },
};
