/** Mixtral: Llama attention, sparse MoE `block_sparse_moe` (softmax → top-k → renormalised; w1 gate, w3 up, w2 down). */
import { llamaModel } from './llama';
import { activation, linear, type Family } from './kit';

export const mixtral: Family = {
  name: 'mixtral',
  modelTypes: ['mixtral'],
  describe(ctx) {
    const c = ctx.config;
    const act = activation(c, 'silu', 'hidden_act');
    const experts = c.int('num_local_experts');
    const topK = c.int('num_experts_per_tok');
    return llamaModel(ctx, 'mixtral', {
      epsDefault: 1e-5,
      layer: (i) => {
        const p = `model.layers.${i}.block_sparse_moe.`;
        return {
          mlp: {
            kind: 'moe',
            router: linear(ctx, `${p}gate`),
            routing: { order: 'softmax-topk', topK, renormalize: true },
            experts: Array.from({ length: experts }, (_, e) => ({ gate: linear(ctx, `${p}experts.${e}.w1`), up: linear(ctx, `${p}experts.${e}.w3`), down: linear(ctx, `${p}experts.${e}.w2`) })),
            activation: act,
          },
        };
      },
    });
  },
};
