/** Granite: Llama blocks with embedding, attention (score scale), residual and logit multipliers. */
import { llamaModel } from './llama';
import type { Family } from './kit';

export const granite: Family = {
  name: 'granite',
  modelTypes: ['granite'],
  describe(ctx) {
    const c = ctx.config;
    const scale = c.optionalNumber('attention_multiplier') !== undefined ? c.positive(1, 'attention_multiplier') : undefined;
    const residualMultiplier = c.positive(1, 'residual_multiplier');
    return llamaModel(ctx, 'granite', {
      layer: () => ({ scale, residualMultiplier }),
      embeddingMultiplier: c.positive(1, 'embedding_multiplier'),
      // logits are divided by logits_scaling
      logitMultiplier: 1 / c.positive(1, 'logits_scaling'),
    });
  },
};
