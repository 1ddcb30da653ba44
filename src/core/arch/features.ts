/**
 * The features of a description that change what a consumer must do, and the one check every
 * consumer makes: it lists what it supports, and any other feature present is refused in one
 * line naming it. Nothing is silently ignored.
 */
import { FactoredKeysError } from '../errors';
import type { ModelDescription } from './description';

/** A feature and a short human label ("q/k-norm", "MoE 8×top-2"). */
export type ModelFeature =
  | 'latent-attention'
  | 'alibi'
  | 'q-norm'
  | 'k-norm'
  | 'rope-interleaved'
  | 'partial-rotary'
  | 'rope-scaling'
  | 'nope-layers'
  | 'sliding-window'
  | 'attention-softcap'
  | 'final-softcap'
  | 'attention-sinks'
  | 'score-scale'
  | 'parallel-residual'
  | 'post-norms'
  | 'moe'
  | 'multipliers'
  | 'learned-positions';

export function featuresOf(m: ModelDescription): Set<ModelFeature> {
  const f = new Set<ModelFeature>();
  if (m.latentAttention) f.add('latent-attention');
  const ropeLayers = m.blocks.filter((b) => b.attention.rope).length;
  for (const b of m.blocks) {
    const a = b.attention;
    if (a.alibi) f.add('alibi');
    if (a.qNorm) f.add('q-norm');
    if (a.kNorm) f.add('k-norm');
    if (a.rope?.style === 'interleaved') f.add('rope-interleaved');
    if (a.rope && a.rope.rotaryDim < m.headDim) f.add('partial-rotary');
    if (a.rope && a.rope.scaling.type !== 'default') f.add('rope-scaling');
    if (a.slidingWindow !== null) f.add('sliding-window');
    if (a.softcap !== null) f.add('attention-softcap');
    if (a.sinks) f.add('attention-sinks');
    if (Math.abs(a.scale * Math.sqrt(m.headDim) - 1) > 1e-12) f.add('score-scale');
    if (b.parallel) f.add('parallel-residual');
    if (b.attentionOutputNorm || b.mlpOutputNorm) f.add('post-norms');
    if (b.mlp.kind === 'moe' || b.mlp.kind === 'gpt-oss-moe') f.add('moe');
    if (b.residualMultiplier !== 1) f.add('multipliers');
  }
  if (ropeLayers > 0 && ropeLayers < m.blocks.length) f.add('nope-layers');
  if (m.finalSoftcap !== null) f.add('final-softcap');
  if (m.embedding.multiplier !== 1 || m.logitMultiplier !== 1) f.add('multipliers');
  if (m.embedding.positions) f.add('learned-positions');
  return f;
}

const LABELS: Record<ModelFeature, string> = {
  'latent-attention': 'multi-head latent attention',
  alibi: 'ALiBi',
  'q-norm': 'q-norm',
  'k-norm': 'k-norm',
  'rope-interleaved': 'interleaved RoPE',
  'partial-rotary': 'partial rotary',
  'rope-scaling': 'RoPE scaling',
  'nope-layers': 'NoPE layers',
  'sliding-window': 'sliding window',
  'attention-softcap': 'attention softcap',
  'final-softcap': 'final-logit softcap',
  'attention-sinks': 'attention sinks',
  'score-scale': 'score scale',
  'parallel-residual': 'parallel residual',
  'post-norms': 'post-norms',
  moe: 'MoE',
  multipliers: 'multipliers',
  'learned-positions': 'learned positions',
};

/** Refuses, in one line, the first feature of `model` that `consumer` does not support. */
export function requireFeatures(model: ModelDescription, consumer: string, supported: readonly ModelFeature[]): void {
  const ok = new Set(supported);
  for (const f of featuresOf(model)) {
    if (!ok.has(f)) throw new FactoredKeysError(`${consumer} does not support ${LABELS[f]} (${model.architecture})`);
  }
}

/** The summary line of a model's features, e.g. "q/k-norm · sliding 4096 on 1 of 2 layers · MoE 8×top-2". */
export function featureSummary(m: ModelDescription): string[] {
  const parts: string[] = [];
  if (m.latentAttention) parts.push(`multi-head latent attention (kv_lora_rank ${m.latentAttention.kvLoraRank})`);
  const n = m.blocks.length;
  const count = (pred: (b: (typeof m.blocks)[number]) => boolean) => m.blocks.filter(pred).length;
  const ofLayers = (k: number) => (k === n ? 'all layers' : `${k} of ${n} layers`);
  const q = count((b) => b.attention.qNorm !== null);
  const k = count((b) => b.attention.kNorm !== null);
  if (q || k) {
    const scope = m.blocks.find((b) => b.attention.kNorm ?? b.attention.qNorm)?.attention;
    parts.push(`${q && k ? 'q/k' : q ? 'q' : 'k'}-norm${(scope?.kNorm ?? scope?.qNorm)?.scope === 'projection' ? ' (whole projection)' : ''}`);
  }
  const ropes = m.blocks.map((b) => b.attention.rope).filter((r) => r !== null);
  if (ropes.length) {
    const r = ropes[0];
    const bits = [r.style === 'interleaved' ? 'interleaved RoPE' : 'RoPE'];
    if (r.rotaryDim < m.headDim) bits.push(`${r.rotaryDim}/${m.headDim} dims`);
    if (r.scaling.type !== 'default') bits.push(r.scaling.type);
    parts.push(bits.join(' '));
    if (ropes.length < n) parts.push(`NoPE on ${ofLayers(n - ropes.length)}`);
  }
  const windows = m.blocks.map((b) => b.attention.slidingWindow).filter((w) => w !== null);
  if (windows.length) parts.push(`sliding ${windows[0]} on ${ofLayers(windows.length)}`);
  const sc = m.blocks.find((b) => b.attention.softcap !== null)?.attention.softcap;
  if (sc) parts.push(`score softcap ${sc}`);
  if (m.finalSoftcap !== null) parts.push(`logit softcap ${m.finalSoftcap}`);
  if (m.blocks.some((b) => b.attention.sinks)) parts.push('attention sinks');
  if (m.blocks.some((b) => b.attention.alibi)) parts.push('ALiBi');
  if (m.blocks.some((b) => b.parallel)) parts.push('parallel residual');
  const moe = m.blocks.find((b) => b.mlp.kind === 'moe' || b.mlp.kind === 'gpt-oss-moe')?.mlp;
  if (moe && (moe.kind === 'moe' || moe.kind === 'gpt-oss-moe')) {
    const e = moe.kind === 'moe' ? moe.experts.length : moe.experts;
    const sparse = count((b) => b.mlp.kind === 'moe' || b.mlp.kind === 'gpt-oss-moe');
    parts.push(`MoE ${e}×top-${moe.routing.topK}${sparse < n ? ` on ${ofLayers(sparse)}` : ''}`);
  }
  const mult = m.embedding.multiplier !== 1 || m.logitMultiplier !== 1 || m.blocks.some((b) => b.residualMultiplier !== 1);
  if (mult) parts.push('multipliers');
  return parts;
}
