/**
 * GPT-OSS: Llama-shaped attention with biases and a learned sink logit per query head, sliding
 * layers, YaRN RoPE; MoE with a biased router (top-k of logits, softmax over those) and stacked
 * experts whose gate/up columns interleave (clamp 7, alpha 1.702, (up + 1)·glu).
 */
import { readRope } from '../rope';
import { decoder } from './decoder';
import { linear, lmHead, maxPositions, norm, readDims, separateQkv, slidingLayers, slidingWindow, type Family } from './kit';

export const gptOss: Family = {
  name: 'gpt_oss',
  modelTypes: ['gpt_oss'],
  describe(ctx) {
    const c = ctx.config;
    const d = readDims(c);
    const sliding = slidingLayers(c, d.layers, (i) => i % 2 === 0);
    const window = slidingWindow(c, sliding);
    const rope = readRope(c, d.headDim, { defaultTheta: 150000 });
    const eps = c.positive(1e-5, 'rms_norm_eps');
    const experts = c.int('num_local_experts', 'num_experts');
    return decoder({
      family: 'gpt_oss',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `model.layers.${i}.`;
        return {
          attention: { ...separateQkv(ctx, `${p}self_attn.`, d), output: linear(ctx, `${p}self_attn.o_proj`), rope, slidingWindow: sliding[i] ? window : null, sinks: `${p}self_attn.sinks` },
          attentionInputNorm: norm(ctx, `${p}input_layernorm`, 'rms', eps),
          mlpInputNorm: norm(ctx, `${p}post_attention_layernorm`, 'rms', eps),
          mlp: {
            kind: 'gpt-oss-moe',
            router: linear(ctx, `${p}mlp.router`),
            routing: { order: 'topk-softmax', topK: c.int('num_experts_per_tok'), renormalize: false },
            gateUp: { weight: `${p}mlp.experts.gate_up_proj`, bias: `${p}mlp.experts.gate_up_proj_bias` },
            down: { weight: `${p}mlp.experts.down_proj`, bias: `${p}mlp.experts.down_proj_bias` },
            experts,
            // fixed in the model code, not read from the config
            limit: 7,
            alpha: 1.702,
          },
        };
      },
      embedding: { tokens: 'model.embed_tokens.weight' },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'model.norm', 'rms', eps),
      head: lmHead(ctx, 'model.embed_tokens.weight'),
    });
  },
};
