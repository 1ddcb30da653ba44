/**
 * The architecture layer's entry points: describe a checkpoint, and the attention layout that
 * analysis and export read (a view of the description).
 */
import type { Checkpoint } from '../checkpoint/checkpoint';
import { elementCount } from '../checkpoint/safetensors';
import { FactoredKeysError } from '../errors';
import type { ModelDescription } from './description';
import { describeModel } from './describe';
import type { AttentionLayout, LayerAttention } from './layout';

export { ConfigReader } from './config';
export { describeModel, MAX_HEADS, SUPPORTED_ARCHITECTURES } from './describe';
export { featureSummary, featuresOf, requireFeatures, type ModelFeature } from './features';

/** Latent unless every layer's scores are bilinear in its projections (see AttentionLayout.keyMode). */
export function keyModeOf(m: ModelDescription): 'absorbed' | 'latent' {
  return m.blocks.every((b) => !b.attention.rope && !b.attention.qNorm && !b.attention.kNorm) ? 'absorbed' : 'latent';
}

/** The attention layout of a description (analysis, plans and export read only this). */
export function layoutOf(m: ModelDescription, ckpt: Checkpoint): AttentionLayout {
  if (m.latentAttention) {
    throw new FactoredKeysError(`${ckpt.dir}/config.json: ${m.architecture} uses multi-head latent attention: its keys are already a ${m.latentAttention.kvLoraRank}-dim latent shared by all heads, so there is no per-head key projection to factor`);
  }
  const layers: LayerAttention[] = m.blocks.map((b) => ({
    layer: b.index,
    queryHeads: b.attention.query,
    keyHeads: b.attention.key,
    valueHeads: b.attention.value,
    projectionTensors: b.attention.projectionTensors,
    outputTensor: b.attention.output.weight,
  }));
  const firstRope = m.blocks.find((b) => b.attention.rope)?.attention.rope ?? null;
  let parameters = 0;
  for (const t of ckpt.tensors.values()) parameters += elementCount(t.shape);
  const a0 = m.blocks[0].attention;
  return {
    architecture: m.architecture,
    layers,
    hiddenSize: m.hidden,
    queryHeads: m.queryHeads,
    kvHeads: m.kvHeads,
    headDim: m.headDim,
    queryToKv: m.queryToKv,
    rope: firstRope ? { rotaryDim: firstRope.rotaryDim, partialRotaryFactor: firstRope.rotaryDim / m.headDim, theta: firstRope.theta, style: firstRope.style } : null,
    keyMode: keyModeOf(m),
    qkBias: m.blocks.some((b) => b.attention.query[0].bias !== undefined || b.attention.key[0].bias !== undefined),
    fusedQkv: a0.projectionTensors.length === 1,
    dtype: ckpt.tensor(a0.query[0].tensor).dtype,
    softmaxScale: a0.scale,
    parameters,
    description: m,
  };
}

/** Builds and validates the attention layout of an open (unfactored) checkpoint. */
export function buildLayout(ckpt: Checkpoint): AttentionLayout {
  // A factored checkpoint's key tensors are thinner than the config implies; say so plainly.
  if (ckpt.config.factored_keys !== undefined) {
    throw new FactoredKeysError(`${ckpt.dir}/config.json: this checkpoint is already factored (factored_keys block); analyze, plan and export take the original checkpoint`);
  }
  return layoutOf(describeModel(ckpt), ckpt);
}
