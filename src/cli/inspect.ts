import { describeModel, featureSummary, layoutOf } from '../core/arch';
import type { ModelDescription } from '../core/arch/description';
import type { AttentionLayout } from '../core/arch/layout';
import type { Checkpoint } from '../core/checkpoint/checkpoint';
import { elementCount } from '../core/checkpoint/safetensors';
import { openCheckpoint } from '../core/checkpoint/checkpoint';
import { FactoredKeysError } from '../core/errors';
import { parseArgs } from './args';
import { summarizeFactored } from './inspectFactored';
import type { CliIo } from './io';

/** The `inspect --json` object (a stable, documented contract). */
export interface InspectSummary {
  architecture: string;
  layers: number;
  hidden_size: number;
  query_heads: number;
  kv_heads: number;
  head_dim: number;
  rope: boolean;
  rotary_dim: number | null;
  rope_theta: number | null;
  qk_bias: boolean;
  fused_qkv: boolean;
  dtype: string;
  parameters: number;
  files: number;
  query_to_kv: number[];
  /** The model's features in words ("q/k-norm", "sliding 64 on 1 of 2 layers", "MoE 4×top-2"). */
  features: string[];
  /** DeepSeek-style multi-head latent attention, when the model has it. */
  latent_attention?: { kv_lora_rank: number; q_lora_rank: number | null; qk_nope_head_dim: number; qk_rope_head_dim: number; v_head_dim: number };
}

export function summarize(layout: AttentionLayout, files: number): InspectSummary {
  return {
    architecture: layout.architecture,
    layers: layout.layers.length,
    hidden_size: layout.hiddenSize,
    query_heads: layout.queryHeads,
    kv_heads: layout.kvHeads,
    head_dim: layout.headDim,
    rope: layout.rope !== null,
    rotary_dim: layout.rope?.rotaryDim ?? null,
    rope_theta: layout.rope?.theta ?? null,
    qk_bias: layout.qkBias,
    fused_qkv: layout.fusedQkv,
    dtype: layout.dtype,
    parameters: layout.parameters,
    files: files,
    query_to_kv: [...layout.queryToKv],
    features: featureSummary(layout.description),
  };
}

/** The summary of a checkpoint whose attention has no per-head keys (multi-head latent attention). */
function summarizeLatent(m: ModelDescription, ckpt: Checkpoint): InspectSummary {
  const mla = m.latentAttention!;
  let parameters = 0;
  for (const t of ckpt.tensors.values()) parameters += elementCount(t.shape);
  return {
    architecture: m.architecture,
    layers: m.layers,
    hidden_size: m.hidden,
    query_heads: m.queryHeads,
    kv_heads: m.kvHeads,
    head_dim: m.headDim,
    rope: true,
    rotary_dim: mla.qkRopeHeadDim,
    rope_theta: null,
    qk_bias: false,
    fused_qkv: false,
    dtype: ckpt.tensors.get(m.embedding.tokens)?.dtype ?? 'F32',
    parameters,
    files: ckpt.files.length,
    query_to_kv: [...m.queryToKv],
    features: featureSummary(m),
    latent_attention: { kv_lora_rank: mla.kvLoraRank, q_lora_rank: mla.qLoraRank, qk_nope_head_dim: mla.qkNopeHeadDim, qk_rope_head_dim: mla.qkRopeHeadDim, v_head_dim: mla.vHeadDim },
  };
}

/** inspect's summary of an original checkpoint. */
function summarizeCheckpoint(ckpt: Checkpoint): InspectSummary {
  const m = describeModel(ckpt);
  return m.latentAttention ? summarizeLatent(m, ckpt) : summarize(layoutOf(m, ckpt), ckpt.files.length);
}

export function formatTable(rows: [string, string][]): string {
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}

export async function runInspect(argv: string[], io: CliIo): Promise<number> {
  const args = parseArgs(argv, { booleans: ['json', 'debug'] }, 'inspect');
  if (args.positionals.length !== 1) throw new FactoredKeysError('inspect: expected one checkpoint path (usage: factored-keys inspect <checkpoint> [--json])');
  const ckpt = await openCheckpoint(args.positionals[0]);
  try {
    const factored = ckpt.config.factored_keys !== undefined ? summarizeFactored(ckpt) : undefined;
    const s = factored ?? summarizeCheckpoint(ckpt);
    if (args.booleans.has('json')) {
      io.stdout(JSON.stringify(s) + '\n');
      return 0;
    }
    const gqa = s.query_heads === s.kv_heads ? 'MHA' : s.kv_heads === 1 ? 'MQA' : `GQA (${s.query_heads / s.kv_heads} query heads per KV head)`;
    io.stdout(
      formatTable([
        ['checkpoint', ckpt.dir],
        ['architecture', s.architecture],
        ['layers', String(s.layers)],
        ['hidden size', String(s.hidden_size)],
        ['heads', `${s.query_heads} query / ${s.kv_heads} KV x ${s.head_dim} (${gqa})`],
        ['features', s.features.length ? s.features.join(' · ') : 'none beyond the basics'],
        ['positions', s.rope ? `RoPE, ${s.rotary_dim} of ${s.head_dim} dims rotated, theta ${s.rope_theta}` : 'no RoPE (learned/absolute)'],
        ['Q/K bias', s.qk_bias ? 'yes' : 'no'],
        ['Q/K/V storage', s.fused_qkv ? 'fused' : 'separate'],
        ['Q/K dtype', s.dtype],
        ['parameters', s.parameters.toLocaleString('en-US')],
        ['files', String(s.files)],
        ...(factored
          ? ([
              ['factored keys', `${factored.factored.method}, ${factored.factored.rope_mode} (${factored.factored.rope_mode === 'latent' ? 'cache c = x·A, k = c·B before RoPE' : 'rank-r map absorbed into the queries'})`],
              ['key dims/token', `${factored.factored.key_dims_per_token.after} of ${factored.factored.key_dims_per_token.before} (${(100 * (1 - factored.factored.key_dims_per_token.after / factored.factored.key_dims_per_token.before)).toFixed(1)}% smaller key cache)`],
              ['ranks', factored.factored.ranks.map((r, i) => `L${i}: ${r.join(' ')}`).join(' | ')],
            ] as [string, string][])
          : []),
      ]) + '\n',
    );
    return 0;
  } finally {
    await ckpt.close();
  }
}
