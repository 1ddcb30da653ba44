/** Phi-3: fused qkv_proj (all q rows, then k, then v), fused gate_up_proj (gate half first), RMSNorm, optional partial rotary and longrope. */
import { readRope } from '../rope';
import { decoder } from './decoder';
import { activation, linear, lmHead, maxPositions, norm, readDims, slidingLayers, slidingWindow, stackedQkv, type Family } from './kit';

export const phi3: Family = {
  name: 'phi3',
  modelTypes: ['phi3'],
  describe(ctx) {
    const c = ctx.config;
    const d = readDims(c);
    const sliding = slidingLayers(c, d.layers, () => c.has('sliding_window'));
    const window = slidingWindow(c, sliding);
    const rope = readRope(c, d.headDim);
    const eps = c.positive(1e-5, 'rms_norm_eps');
    const act = activation(c, 'silu', 'hidden_act');
    const inter = c.int('intermediate_size');
    return decoder({
      family: 'phi3',
      architecture: ctx.modelType,
      config: c,
      dims: d,
      block: (i) => {
        const p = `model.layers.${i}.`;
        const qkv = linear(ctx, `${p}self_attn.qkv_proj`);
        const gateUp = linear(ctx, `${p}mlp.gate_up_proj`);
        return {
          attention: { ...stackedQkv(qkv.weight, 'linear', d, qkv.bias), output: linear(ctx, `${p}self_attn.o_proj`), rope, slidingWindow: sliding[i] ? window : null },
          attentionInputNorm: norm(ctx, `${p}input_layernorm`, 'rms', eps),
          mlpInputNorm: norm(ctx, `${p}post_attention_layernorm`, 'rms', eps),
          mlp: { kind: 'gated', gate: { ...gateUp, rows: { start: 0, count: inter } }, up: { ...gateUp, rows: { start: inter, count: inter } }, down: linear(ctx, `${p}mlp.down_proj`), activation: act },
        };
      },
      embedding: { tokens: 'model.embed_tokens.weight' },
      maxPositions: maxPositions(c),
      finalNorm: norm(ctx, 'model.norm', 'rms', eps),
      head: lmHead(ctx, 'model.embed_tokens.weight'),
    });
  },
};
