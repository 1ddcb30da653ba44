/** SmolLM3: Llama blocks where `no_rope_layers[i] == 0` marks a layer without RoPE (NoPE). */
import { FactoredKeysError } from '../../errors';
import { readRope } from '../rope';
import { decoder } from './decoder';
import { defaultSliding, llamaBlock } from './llama';
import { lmHead, maxPositions, norm, readDims, slidingWindow, type Family } from './kit';

export const smollm3: Family = {
  name: 'smollm3',
  modelTypes: ['smollm3'],
  describe(ctx) {
    const c = ctx.config;
    const d = readDims(c);
    const sliding = defaultSliding(ctx, d);
    const window = slidingWindow(c, sliding);
    const rope = readRope(c, d.headDim);
    const eps = c.positive(1e-6, 'rms_norm_eps');
    // 1 = this layer uses RoPE; default: every no_rope_layer_interval-th layer (1-based) is NoPE
    const interval = c.optionalInt('no_rope_layer_interval') ?? 4;
    const useRope = c.numbers('no_rope_layers') ?? Array.from({ length: d.layers }, (_, i) => ((i + 1) % interval !== 0 ? 1 : 0));
    if (useRope.length !== d.layers || useRope.some((v) => v !== 0 && v !== 1)) throw new FactoredKeysError(`${c.where}: "no_rope_layers" must list 0 or 1 for each of ${d.layers} layers`);
    return decoder({
      family: 'smollm3',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => llamaBlock(ctx, i, d, { eps, rope: useRope[i] === 1 ? rope : null, window: sliding[i] ? window : null }),
      embedding: { tokens: 'model.embed_tokens.weight' },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'model.norm', 'rms', eps),
      head: lmHead(ctx, 'model.embed_tokens.weight'),
    });
  },
};
