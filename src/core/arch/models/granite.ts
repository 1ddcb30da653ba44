/** Granite: Llama blocks with embedding, attention (score scale), residual and logit multipliers. */
import { readRope } from '../rope';
import { decoder } from './decoder';
import { defaultSliding, llamaBlock } from './llama';
import { lmHead, maxPositions, norm, readDims, slidingWindow, type Family } from './kit';

export const granite: Family = {
  name: 'granite',
  modelTypes: ['granite'],
  describe(ctx) {
    const c = ctx.config;
    const d = readDims(c);
    const sliding = defaultSliding(ctx, d);
    const window = slidingWindow(c, sliding);
    const rope = readRope(c, d.headDim);
    const eps = c.positive(1e-6, 'rms_norm_eps');
    const scale = c.positive(1 / Math.sqrt(d.headDim), 'attention_multiplier');
    const residualMultiplier = c.positive(1, 'residual_multiplier');
    return decoder({
      family: 'granite',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => llamaBlock(ctx, i, d, { eps, rope, window: sliding[i] ? window : null, scale, residualMultiplier }),
      embedding: { tokens: 'model.embed_tokens.weight', multiplier: c.positive(1, 'embedding_multiplier') },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'model.norm', 'rms', eps),
      head: lmHead(ctx, 'model.embed_tokens.weight'),
      // logits are divided by logits_scaling
      logitMultiplier: 1 / c.positive(1, 'logits_scaling'),
    });
  },
};
