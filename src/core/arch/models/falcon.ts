/**
 * Falcon: fused query_key_value. Old decoder: multi-query [q heads | k | v], or per head
 * [q_h | k_h | v_h] when multi-head; new decoder: grouped per KV head [q × (H/KV) | k | v].
 * Parallel attention/MLP (one shared LayerNorm, or ln_attn/ln_mlp). ALiBi models are described
 * without RoPE and refused by the evaluator.
 */
import { FactoredKeysError } from '../../errors';
import type { HeadSlice, WeightOrientation } from '../description';
import { readRope } from '../rope';
import { decoder } from './decoder';
import { activation, denseMlp, headSlices, linear, lmHead, maxPositions, norm, type Family } from './kit';

export const falcon: Family = {
  name: 'falcon',
  modelTypes: ['falcon'],
  describe(ctx) {
    const c = ctx.config;
    const hidden = c.int('hidden_size');
    const queryHeads = c.int('num_attention_heads', 'n_head');
    const newArch = c.bool('new_decoder_architecture', false);
    const kvHeads = newArch ? c.int('num_kv_heads', 'n_head_kv') : c.bool('multi_query', true) ? 1 : queryHeads;
    const headDim = hidden / queryHeads;
    if (!Number.isInteger(headDim)) throw new FactoredKeysError(`${c.where}: hidden size ${hidden} is not divisible by ${queryHeads} attention heads`);
    const d = { layers: c.int('num_hidden_layers', 'n_layer'), hidden, queryHeads, kvHeads, headDim, vocab: c.int('vocab_size') };
    const alibi = c.bool('alibi', false);
    const rope = alibi ? null : readRope(c, headDim);
    const eps = c.positive(1e-5, 'layer_norm_epsilon');
    const act = activation(c, 'gelu', 'activation');
    const parallel = newArch || c.bool('parallel_attn', true);
    const twoNorms = newArch && (c.optionalInt('num_ln_in_parallel_attn') ?? 2) === 2;
    return decoder({
      family: 'falcon',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `transformer.h.${i}.`;
        const qkv = linear(ctx, `${p}self_attention.query_key_value`);
        const t = qkv.weight;
        const o: WeightOrientation = 'linear';
        let q: HeadSlice[];
        let k: HeadSlice[];
        let v: HeadSlice[];
        if (newArch && kvHeads < queryHeads) {
          const perKv = queryHeads / kvHeads;
          const block = (perKv + 2) * headDim;
          q = Array.from({ length: queryHeads }, (_, h) => ({ tensor: t, orientation: o, offset: Math.floor(h / perKv) * block + (h % perKv) * headDim, bias: qkv.bias }));
          k = headSlices(t, o, perKv * headDim, kvHeads, block, qkv.bias);
          v = headSlices(t, o, (perKv + 1) * headDim, kvHeads, block, qkv.bias);
        } else if (kvHeads === queryHeads) {
          q = headSlices(t, o, 0, queryHeads, 3 * headDim, qkv.bias);
          k = headSlices(t, o, headDim, kvHeads, 3 * headDim, qkv.bias);
          v = headSlices(t, o, 2 * headDim, kvHeads, 3 * headDim, qkv.bias);
        } else {
          q = headSlices(t, o, 0, queryHeads, headDim, qkv.bias);
          k = headSlices(t, o, queryHeads * headDim, kvHeads, headDim, qkv.bias);
          v = headSlices(t, o, (queryHeads + kvHeads) * headDim, kvHeads, headDim, qkv.bias);
        }
        return {
          attention: { query: q, key: k, value: v, projectionTensors: [t], output: linear(ctx, `${p}self_attention.dense`), rope, alibi },
          attentionInputNorm: norm(ctx, twoNorms ? `${p}ln_attn` : `${p}input_layernorm`, 'layer', eps),
          mlpInputNorm: twoNorms ? norm(ctx, `${p}ln_mlp`, 'layer', eps) : parallel ? null : norm(ctx, `${p}post_attention_layernorm`, 'layer', eps),
          parallel,
          mlp: denseMlp(ctx, `${p}mlp.`, 'dense_h_to_4h', 'dense_4h_to_h', act),
        };
      },
      embedding: { tokens: 'transformer.word_embeddings.weight' },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'transformer.ln_f', 'layer', eps),
      head: lmHead(ctx, 'transformer.word_embeddings.weight'),
    });
  },
};
