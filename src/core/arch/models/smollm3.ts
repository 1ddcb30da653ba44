/** SmolLM3: Llama blocks where `no_rope_layers[i] == 0` marks a layer without RoPE (NoPE). */
import { FactoredKeysError } from '../../errors';
import { llamaModel } from './llama';
import { readDims, type Family } from './kit';

export const smollm3: Family = {
  name: 'smollm3',
  modelTypes: ['smollm3'],
  describe(ctx) {
    const c = ctx.config;
    const layers = readDims(c).layers;
    // 1 = this layer uses RoPE; default: every no_rope_layer_interval-th layer (1-based) is NoPE
    const interval = c.optionalInt('no_rope_layer_interval') ?? 4;
    const useRope = c.numbers('no_rope_layers') ?? Array.from({ length: layers }, (_, i) => ((i + 1) % interval !== 0 ? 1 : 0));
    if (useRope.length !== layers || useRope.some((v) => v !== 0 && v !== 1)) throw new FactoredKeysError(`${c.where}: "no_rope_layers" must list 0 or 1 for each of ${layers} layers`);
    return llamaModel(ctx, 'smollm3', { layer: (i) => (useRope[i] === 1 ? {} : { rope: null }) });
  },
};
