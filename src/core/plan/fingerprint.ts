/**
 * A plan's binding to its model: a hash over the attention geometry and the names and shapes
 * of the Q/K weight tensors. Two checkpoints share a fingerprint when a plan's ranks mean the
 * same heads in both (e.g. a fine-tune of the same base); a model of another architecture or
 * layout, even with the same layer/head counts, gets another one.
 */
import { createHash } from 'node:crypto';
import type { AttentionLayout, HeadSlice } from '../arch/layout';

/** Prefix of every fingerprint, naming the hash and the canonical form's version. */
export const FINGERPRINT_PREFIX = 'fk1-sha256:';

/** Looks up a tensor's shape by name (a checkpoint's `tensors` map fits). */
export type TensorShapes = ReadonlyMap<string, { readonly shape: readonly number[] }>;

function slice(h: HeadSlice): unknown[] {
  return [h.tensor, h.orientation, h.offset, h.bias ?? null];
}

/**
 * The fingerprint of a checkpoint's attention: architecture, hidden size, head counts and
 * dimension, GQA grouping, RoPE geometry, and per layer each query and key head's slice
 * (tensor name, orientation, offset, bias) with the shapes of those tensors.
 */
export function modelFingerprint(layout: AttentionLayout, tensors: TensorShapes): string {
  const shapeOf = (name: string): readonly number[] | null => tensors.get(name)?.shape ?? null;
  const canonical = {
    architecture: layout.architecture,
    hidden_size: layout.hiddenSize,
    query_heads: layout.queryHeads,
    kv_heads: layout.kvHeads,
    head_dim: layout.headDim,
    query_to_kv: layout.queryToKv,
    rope: layout.rope ? { rotary_dim: layout.rope.rotaryDim, theta: layout.rope.theta, style: layout.rope.style } : null,
    qk_bias: layout.qkBias,
    fused_qkv: layout.fusedQkv,
    layers: layout.layers.map((l) => {
      const names = new Set<string>();
      for (const h of [...l.queryHeads, ...l.keyHeads]) {
        names.add(h.tensor);
        if (h.bias) names.add(h.bias);
      }
      return {
        layer: l.layer,
        query: l.queryHeads.map(slice),
        key: l.keyHeads.map(slice),
        shapes: [...names].sort().map((n) => [n, shapeOf(n)]),
      };
    }),
  };
  return FINGERPRINT_PREFIX + createHash('sha256').update(JSON.stringify(canonical)).digest('hex');
}
