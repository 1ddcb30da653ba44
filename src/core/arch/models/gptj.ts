/** GPT-J: separate bias-free q/k/v, interleaved rotary on the first rotary_dim dims, one LayerNorm feeding attention and MLP in parallel, biased lm_head. */
import { FactoredKeysError } from '../../errors';
import type { RopeSpec } from '../description';
import { decoder } from './decoder';
import { activation, denseMlp, type Family, linear, lmHead, norm, readGpt2Dims, statedMaxPositions, separateQkv } from './kit';

export const gptj: Family = {
  name: 'gptj',
  modelTypes: ['gptj'],
  describe(ctx) {
    const c = ctx.config;
    // GPT-J is multi-head: a num_key_value_heads key in its config is not read by the model
    const d = readGpt2Dims(c);
    const headDim = d.headDim;
    const rotaryDim = c.optionalInt('rotary_dim') ?? headDim;
    if (rotaryDim > headDim || rotaryDim % 2 !== 0) throw new FactoredKeysError(`${c.where}: rotary_dim ${rotaryDim} must be even and at most head_dim ${headDim}`);
    // the model code fixes the base at 10000 and reads no scaling
    const rope: RopeSpec = { style: 'interleaved', rotaryDim, theta: 10000, scaling: { type: 'default' } };
    const eps = c.positive(1e-5, 'layer_norm_epsilon');
    const act = activation(c, 'gelu_new', 'activation_function');
    return decoder({
      family: 'gptj',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `transformer.h.${i}.`;
        return {
          attention: { ...separateQkv(ctx, `${p}attn.`, d), output: linear(ctx, `${p}attn.out_proj`), rope },
          attentionInputNorm: norm(ctx, `${p}ln_1`, 'layer', eps),
          mlpInputNorm: null,
          parallel: true,
          mlp: denseMlp(ctx, `${p}mlp.`, 'fc_in', 'fc_out', act),
        };
      },
      embedding: { tokens: 'transformer.wte.weight' },
      maxPositions: statedMaxPositions(c, 'n_positions', 'max_position_embeddings'),
      finalNorm: norm(ctx, 'transformer.ln_f', 'layer', eps),
      head: lmHead(ctx, 'transformer.wte.weight'),
    });
  },
};
