/**
 * The shape every supported family shares: embeddings, a stack of blocks, a final norm and a
 * logits head. A family gives its per-layer roles; this assembles the description and fills
 * the defaults (no multipliers, no softcaps, pre-norm blocks).
 */
import type { AttentionRole, LayerDescription, LinearRole, MlpRole, ModelDescription, NormRole, PositionLimit } from '../description';
import { positionLimit } from '../rope';
import type { ConfigReader } from '../config';
import { queryToKv, type Dims } from './kit';

type Optional<T, K extends keyof T> = Omit<T, K> & Partial<Pick<T, K>>;

/** A block as a family states it: attention defaults to no norms/softcap/window/sinks. */
export type BlockSpec = Optional<Omit<LayerDescription, 'index' | 'attention'>, 'attentionOutputNorm' | 'mlpOutputNorm' | 'parallel' | 'residualMultiplier'> & {
  readonly attention: Optional<AttentionRole, 'qNorm' | 'kNorm' | 'softcap' | 'slidingWindow' | 'sinks' | 'scale' | 'alibi'>;
};

export interface DecoderSpec {
  readonly family: string;
  readonly architecture: string;
  readonly config: ConfigReader;
  readonly dims: Dims;
  readonly block: (layer: number) => BlockSpec;
  readonly embedding: { readonly tokens: string; readonly positions?: string | null; readonly multiplier?: number };
  /** What config.json states; RoPE scaling may extend it (positionLimit). */
  readonly maxPositions: PositionLimit;
  readonly finalNorm: NormRole | null;
  readonly head: LinearRole;
  readonly logitMultiplier?: number;
  readonly finalSoftcap?: number | null;
}

export function decoder(s: DecoderSpec): ModelDescription {
  const d = s.dims;
  const toKv = queryToKv(s.config, d);
  const blocks: LayerDescription[] = [];
  for (let i = 0; i < d.layers; i++) {
    const b = s.block(i);
    const a = b.attention;
    blocks.push({
      index: i,
      attention: { ...a, qNorm: a.qNorm ?? null, kNorm: a.kNorm ?? null, softcap: a.softcap ?? null, slidingWindow: a.slidingWindow ?? null, sinks: a.sinks ?? null, alibi: a.alibi ?? false, scale: a.scale ?? 1 / Math.sqrt(d.headDim) },
      attentionInputNorm: b.attentionInputNorm,
      attentionOutputNorm: b.attentionOutputNorm ?? null,
      mlpInputNorm: b.mlpInputNorm,
      mlpOutputNorm: b.mlpOutputNorm ?? null,
      parallel: b.parallel ?? false,
      residualMultiplier: b.residualMultiplier ?? 1,
      mlp: b.mlp satisfies MlpRole,
    });
  }
  const limit = positionLimit(s.maxPositions, blocks.map((b) => b.attention.rope));
  return {
    architecture: s.architecture,
    family: s.family,
    layers: d.layers,
    hidden: d.hidden,
    queryHeads: d.queryHeads,
    kvHeads: d.kvHeads,
    headDim: d.headDim,
    vocab: d.vocab,
    queryToKv: toKv,
    embedding: { tokens: s.embedding.tokens, positions: s.embedding.positions ?? null, multiplier: s.embedding.multiplier ?? 1 },
    maxPositions: limit.tokens,
    maxPositionsSource: limit.source,
    finalNorm: s.finalNorm,
    head: s.head,
    logitMultiplier: s.logitMultiplier ?? 1,
    finalSoftcap: s.finalSoftcap ?? null,
    blocks,
    latentAttention: null,
  };
}
