/** Mixtral: Llama attention, sparse MoE `block_sparse_moe` (softmax → top-k → renormalised; w1 gate, w3 up, w2 down). */
import { readRope } from '../rope';
import { decoder } from './decoder';
import { defaultSliding, llamaBlock } from './llama';
import { activation, linear, lmHead, maxPositions, norm, readDims, slidingWindow, type Family } from './kit';

export const mixtral: Family = {
  name: 'mixtral',
  modelTypes: ['mixtral'],
  describe(ctx) {
    const c = ctx.config;
    const d = readDims(c);
    const sliding = defaultSliding(ctx, d);
    const window = slidingWindow(c, sliding);
    const rope = readRope(c, d.headDim);
    const eps = c.positive(1e-5, 'rms_norm_eps');
    const act = activation(c, 'silu', 'hidden_act');
    const experts = c.int('num_local_experts');
    const topK = c.int('num_experts_per_tok');
    return decoder({
      family: 'mixtral',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `model.layers.${i}.block_sparse_moe.`;
        return llamaBlock(ctx, i, d, {
          eps,
          rope,
          window: sliding[i] ? window : null,
          mlp: {
            kind: 'moe',
            router: linear(ctx, `${p}gate`),
            routing: { order: 'softmax-topk', topK, renormalize: true },
            experts: Array.from({ length: experts }, (_, e) => ({ gate: linear(ctx, `${p}experts.${e}.w1`), up: linear(ctx, `${p}experts.${e}.w3`), down: linear(ctx, `${p}experts.${e}.w2`) })),
            activation: act,
          },
        });
      },
      embedding: { tokens: 'model.embed_tokens.weight' },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'model.norm', 'rms', eps),
      head: lmHead(ctx, 'model.embed_tokens.weight'),
    });
  },
};
