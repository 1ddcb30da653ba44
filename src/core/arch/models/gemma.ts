/**
 * Gemma, Gemma 2 and Gemma 3 (text): embeddings × sqrt(hidden), RMSNorm (1 + w), GELU-tanh gated
 * MLP. Gemma 2/3 add sandwich norms around attention and MLP, a score scale of
 * query_pre_attn_scalar^-½, sliding layers and logit softcapping (Gemma 2 also caps attention
 * scores); Gemma 3 adds per-head q/k norms before RoPE and a RoPE per layer type.
 */
import type { QkNorm, RopeSpec } from '../description';
import { readRope } from '../rope';
import { decoder } from './decoder';
import { activation, gatedMlp, linear, lmHead, maxPositions, norm, readDims, separateQkv, slidingLayers, slidingWindow, type Family } from './kit';

export const gemma: Family = {
  name: 'gemma',
  modelTypes: ['gemma', 'gemma2', 'gemma3_text'],
  describe(ctx) {
    const c = ctx.config;
    const d = readDims(c);
    const v2 = ctx.modelType !== 'gemma';
    const v3 = ctx.modelType === 'gemma3_text';
    const eps = c.positive(1e-6, 'rms_norm_eps');
    const act = activation(c, 'gelu_pytorch_tanh', 'hidden_activation', 'hidden_act');
    const pattern = c.optionalInt('sliding_window_pattern', '_sliding_window_pattern') ?? (v3 ? 6 : 2);
    const sliding = v2 ? slidingLayers(c, d.layers, (i) => (i + 1) % pattern !== 0) : Array<boolean>(d.layers).fill(false);
    const window = slidingWindow(c, sliding);
    const perType = v3 && c.has('rope_parameters.sliding_attention');
    const ropeOf = (slides: boolean): RopeSpec =>
      perType ? readRope(c, d.headDim, { layerType: slides ? 'sliding_attention' : 'full_attention', defaultTheta: slides ? 10000 : 1000000 }) : readRope(c, d.headDim);
    const ropes = { sliding: ropeOf(true), full: ropeOf(false) };
    const scale = v2 ? 1 / Math.sqrt(c.positive(256, 'query_pre_attn_scalar')) : undefined;
    // Gemma 3 passes no score softcap to attention even when the config names one
    const softcap = ctx.modelType === 'gemma2' ? c.optionalNumber('attn_logit_softcapping') ?? null : null;
    return decoder({
      family: 'gemma',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `model.layers.${i}.`;
        const qk = (n: string): QkNorm | null => (v3 ? { norm: norm(ctx, `${p}self_attn.${n}`, 'rms-offset', eps), scope: 'head' } : null);
        return {
          attention: {
            ...separateQkv(ctx, `${p}self_attn.`, d),
            output: linear(ctx, `${p}self_attn.o_proj`),
            rope: sliding[i] ? ropes.sliding : ropes.full,
            slidingWindow: sliding[i] ? window : null,
            scale,
            softcap,
            qNorm: qk('q_norm'),
            kNorm: qk('k_norm'),
          },
          attentionInputNorm: norm(ctx, `${p}input_layernorm`, 'rms-offset', eps),
          attentionOutputNorm: v2 ? norm(ctx, `${p}post_attention_layernorm`, 'rms-offset', eps) : null,
          mlpInputNorm: norm(ctx, v2 ? `${p}pre_feedforward_layernorm` : `${p}post_attention_layernorm`, 'rms-offset', eps),
          mlpOutputNorm: v2 ? norm(ctx, `${p}post_feedforward_layernorm`, 'rms-offset', eps) : null,
          mlp: gatedMlp(ctx, `${p}mlp.`, act),
        };
      },
      // the normaliser is a float32 scalar: sqrt(hidden) rounded once
      embedding: { tokens: 'model.embed_tokens.weight', multiplier: Math.fround(Math.sqrt(d.hidden)) },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'model.norm', 'rms-offset', eps),
      head: lmHead(ctx, 'model.embed_tokens.weight'),
      finalSoftcap: v2 ? c.optionalNumber('final_logit_softcapping') ?? null : null,
    });
  },
};
