/**
 * The host side of the panel, without VS Code: turning core results into protocol payloads
 * and the panel's plan controls into a core `RankPlan` plus savings. Pure functions, unit-tested.
 */
import { featureSummary } from '../core/arch';
import type { AttentionLayout } from '../core/arch/layout';
import { bytesPerElement, type Dtype } from '../core/checkpoint/dtypes';
import { FactoredKeysError } from '../core/errors';
import type { EvalResult, SweepPoint } from '../core/eval/evaluate';
import { buildPlan, planKeyBytesPerToken, type FactorMethod, type HeadEnergies, type PlanModel, type RankPlan, type RankPolicy } from '../core/plan';
import { computeSavings } from '../core/savings';
import type { SpectrumResult } from '../core/spectrum';
import type { CacheDtype, CheckpointSummary, PlanControls, PlanResult, ReferenceSavings, SavingsControls, SavingsView, SpectraPayload, SweepAxis, SweepPointView, SweepResult } from '../protocol';

/** Bits per cached element for each cache dtype the panel offers. */
export const CACHE_DTYPE_BITS: Record<CacheDtype, number> = { f32: 32, f16: 16, bf16: 16, fp8: 8 };

/** The panel's model summary from a layout (same facts as `inspect --json`). */
export function checkpointSummary(dir: string, layout: AttentionLayout, files: number): CheckpointSummary {
  const parts = dir.split(/[\\/]/).filter(Boolean);
  return {
    name: parts[parts.length - 1] ?? dir,
    dir,
    architecture: layout.architecture,
    layers: layout.layers.length,
    hiddenSize: layout.hiddenSize,
    queryHeads: layout.queryHeads,
    kvHeads: layout.kvHeads,
    headDim: layout.headDim,
    rope: layout.rope !== null,
    rotaryDim: layout.rope?.rotaryDim ?? null,
    ropeTheta: layout.rope?.theta ?? null,
    dtype: layout.dtype,
    parameters: layout.parameters,
    files,
    queryToKv: [...layout.queryToKv],
    features: featureSummary(layout.description),
  };
}

/**
 * Packs a core `SpectrumResult` into flat typed arrays (see `SpectraPayload`). Heads the core
 * skipped as non-finite get zero spectra and zero ranks, so the heatmap shows them as rank 0.
 */
export function spectraPayload(result: SpectrumResult, summary: Pick<CheckpointSummary, 'layers' | 'kvHeads' | 'queryHeads' | 'headDim'>): SpectraPayload {
  const { layers, kvHeads, queryHeads, headDim: width } = summary;
  const alloc = (rows: number) => ({
    singular: new Float32Array(rows * width),
    energy: new Float32Array(rows * width),
    eff: new Uint32Array(rows * 3),
    stable: new Float32Array(rows),
    seen: new Uint8Array(rows),
  });
  const key = alloc(layers * kvHeads);
  const query = alloc(layers * queryHeads);
  for (const h of result.heads) {
    const heads = h.kind === 'key' ? kvHeads : queryHeads;
    const into = h.kind === 'key' ? key : query;
    if (h.layer < 0 || h.layer >= layers || h.head < 0 || h.head >= heads) {
      throw new FactoredKeysError(`spectrum: ${h.kind} head ${h.head} of layer ${h.layer} is outside the model (${layers} layers × ${heads} heads)`);
    }
    const row = h.layer * heads + h.head;
    into.seen[row] = 1;
    if (h.nonFinite) continue;
    const n = Math.min(width, h.singularValues.length);
    for (let i = 0; i < n; i++) {
      into.singular[row * width + i] = h.singularValues[i];
      into.energy[row * width + i] = h.cumulativeEnergy[i];
    }
    // A head narrower than head_dim (d_model < head_dim) keeps all its energy past its last value.
    for (let i = n; i < width; i++) into.energy[row * width + i] = n > 0 ? h.cumulativeEnergy[n - 1] : 0;
    into.eff[row * 3] = h.effectiveRank.p90;
    into.eff[row * 3 + 1] = h.effectiveRank.p95;
    into.eff[row * 3 + 2] = h.effectiveRank.p99;
    into.stable[row] = h.stableRank;
  }
  // key-svd spends each direction's σ²; a qk-svd analysis replaces these (withPlanEnergies).
  const planEnergy = new Float32Array(key.singular.length);
  for (let i = 0; i < planEnergy.length; i++) planEnergy[i] = key.singular[i] * key.singular[i];
  const missingKey = key.seen.indexOf(0);
  if (missingKey >= 0) throw new FactoredKeysError(`spectrum: no result for key head ${missingKey % kvHeads} of layer ${Math.floor(missingKey / kvHeads)}`);
  return {
    backend: result.backend,
    seconds: result.seconds,
    layers,
    kvHeads,
    queryHeads,
    width,
    keySingular: key.singular,
    keyEnergy: key.energy,
    keyEffRank: key.eff,
    keyStableRank: key.stable,
    querySingular: query.singular,
    queryEnergy: query.energy,
    queryEffRank: query.eff,
    queryStableRank: query.stable,
    planMethod: 'key-svd',
    planEnergy,
  };
}

/** The spectra with plan energies from another method's bases (e.g. qk-svd eigenvalues). */
export function withPlanEnergies(spectra: SpectraPayload, method: SpectraPayload['planMethod'], energies: HeadEnergies): SpectraPayload {
  const w = spectra.width;
  const planEnergy = new Float32Array(spectra.layers * spectra.kvHeads * w);
  energies.forEach((row, l) =>
    row.forEach((e, g) => {
      const at = (l * spectra.kvHeads + g) * w;
      for (let i = 0; i < Math.min(w, e.length); i++) planEnergy[at + i] = e[i];
    }),
  );
  return { ...spectra, planMethod: method, planEnergy };
}

/** Per-head energies for the rank policies (the plan method's), in the shape `buildPlan` wants. */
export function keyEnergies(spectra: SpectraPayload): HeadEnergies {
  const w = spectra.width;
  return Array.from({ length: spectra.layers }, (_, l) =>
    Array.from({ length: spectra.kvHeads }, (_, g) => {
      const row = (l * spectra.kvHeads + g) * w;
      return Array.from(spectra.planEnergy.subarray(row, row + w));
    }),
  );
}

/** The plan model (shape + key element width) of a checkpoint. */
export function planModel(summary: CheckpointSummary): PlanModel {
  let width = 2;
  try {
    width = bytesPerElement(summary.dtype as Dtype);
  } catch {
    // Unusual storage dtypes (e.g. F64, FP8) still plan in 16-bit cache units.
  }
  return { architecture: summary.architecture, layers: summary.layers, kv_heads: summary.kvHeads, head_dim: summary.headDim, key_bytes_per_value: width };
}

/** Maps the panel's controls to a core policy. `budget` is a share of the original key cache. */
export function rankPolicy(controls: PlanControls, model: PlanModel): RankPolicy {
  switch (controls.policy) {
    case 'uniform':
      return { kind: 'uniform', rank: Math.min(model.head_dim, Math.max(1, Math.round(controls.rank))) };
    case 'fraction':
      return { kind: 'fraction', fraction: controls.fraction };
    case 'energy':
      return { kind: 'energy', threshold: controls.energy };
    case 'budget': {
      const full = model.layers * model.kv_heads * model.head_dim * model.key_bytes_per_value;
      // Never below one dimension per head: the planner keeps rank >= 1 everywhere.
      const floor = model.layers * model.kv_heads * model.key_bytes_per_value;
      return { kind: 'budget', key_bytes_per_token: Math.max(floor, Math.floor(controls.budget * full)) };
    }
  }
}

/**
 * Builds the core plan for the panel's controls. Overrides outside the model or above head_dim
 * are rejected with a one-line error (the webview clamps, so this only fires on a bad message).
 * `energy` and `budget` need spectra; without them the caller gets a clear error.
 */
export function panelPlan(summary: CheckpointSummary, spectra: SpectraPayload | null, controls: PlanControls, method: FactorMethod): RankPlan {
  const model = planModel(summary);
  const policy = rankPolicy(controls, model);
  if (!spectra && (policy.kind === 'energy' || policy.kind === 'budget')) throw new FactoredKeysError(`the ${policy.kind} policy needs the spectra: run Analyze first`);
  if (spectra && spectra.planMethod !== method && (policy.kind === 'energy' || policy.kind === 'budget')) {
    throw new FactoredKeysError(`the spectra were analyzed for ${spectra.planMethod}, but the method is now ${method}: run Analyze again`);
  }
  return buildPlan({
    method,
    policy,
    model,
    energies: spectra ? keyEnergies(spectra) : undefined,
    overrides: controls.overrides.map((o) => ({ layer: o.layer, kv_head: o.head, rank: o.rank })),
  });
}

/** Savings of a plan at the panel's context × batch × dtype. */
export function savingsView(summary: CheckpointSummary, ranks: readonly (readonly number[])[], controls: SavingsControls): SavingsView {
  const bits = CACHE_DTYPE_BITS[controls.dtype];
  const s = computeSavings({ layers: summary.layers, kvHeads: summary.kvHeads, headDim: summary.headDim, keyRanks: ranks, keyBitsPerValue: bits, context: controls.context, batch: controls.batch });
  return {
    context: controls.context,
    batch: controls.batch,
    dtype: controls.dtype,
    baselineBytesPerToken: s.kvBytesPerToken.before,
    factoredBytesPerToken: s.kvBytesPerToken.after,
    baselineBytes: s.baselineBytes,
    factoredBytes: s.factoredBytes,
    capacityMultiplier: s.capacityMultiplier,
    baselineKeyBytesPerToken: s.keyBytesPerToken.before,
    factoredKeyBytesPerToken: s.keyBytesPerToken.after,
  };
}

/** The reply to a `plan` request: ranks flattened (layer-major), savings, mean retained energy. */
export function planResult(summary: CheckpointSummary, plan: RankPlan, controls: SavingsControls): PlanResult {
  const ranks = new Uint32Array(summary.layers * summary.kvHeads);
  plan.ranks.forEach((row, l) => row.forEach((r, g) => (ranks[l * summary.kvHeads + g] = r)));
  let meanRetainedEnergy: number | null = null;
  if (plan.retained_energy) {
    let sum = 0;
    for (const row of plan.retained_energy) for (const e of row) sum += e;
    meanRetainedEnergy = sum / ranks.length;
  }
  return { ranks, savings: savingsView(summary, plan.ranks, controls), meanRetainedEnergy };
}

/**
 * The paper's worked example (a 7B-class model: 32 layers, 32 KV heads × 128, 16-bit cache,
 * 128,000 tokens, keys at rank 32), priced by the same savings code as the open checkpoint.
 */
export function paperReference(): ReferenceSavings {
  const s = computeSavings({ layers: 32, kvHeads: 32, headDim: 128, keyRanks: 32, keyBitsPerValue: 16, context: 128000, batch: 1 });
  return { label: "paper's example: 32 layers × 32 KV heads × 128, fp16, 128,000 tokens, keys at rank 32", baselineBytes: s.baselineBytes, factoredBytes: s.factoredBytes, capacityMultiplier: s.capacityMultiplier };
}

/** Energy thresholds every energy sweep measures (the plan's own threshold is added). */
export const SWEEP_THRESHOLDS = [0.8, 0.9, 0.95, 0.99] as const;

/**
 * What a sweep varies for the panel's controls: energy thresholds when the policy is energy
 * (the fixed set plus the plan's threshold), else uniform ranks head_dim/16, /8, /4, /2 and
 * full, rounded, at least 1, de-duplicated, ascending.
 */
export function sweepAxis(summary: Pick<CheckpointSummary, 'headDim'>, controls: PlanControls): { axis: SweepAxis; values: number[] } {
  if (controls.policy === 'energy') {
    // Four decimals: enough to tell thresholds apart, and the same plan the slider shows.
    const values = [...SWEEP_THRESHOLDS, Math.round(controls.energy * 1e4) / 1e4].filter((t) => t > 0 && t <= 1);
    return { axis: 'energy', values: [...new Set(values)].sort((a, b) => a - b) };
  }
  const ranks = [16, 8, 4, 2, 1].map((d) => Math.max(1, Math.round(summary.headDim / d)));
  return { axis: 'rank', values: [...new Set(ranks)].sort((a, b) => a - b) };
}

/** A core sweep point as the protocol carries it. */
export function sweepPointView(p: SweepPoint): SweepPointView {
  return { method: p.method, rank: p.rank ?? null, threshold: p.threshold ?? null, keyCacheBytesPerToken: p.keyCacheBytesPerToken, perplexity: p.perplexity, deltaPercent: p.deltaPercent, seconds: p.seconds };
}

/** The reply to a `sweep` request: the core points (original first) and the measured plan. */
export function sweepResult(axis: SweepAxis, points: readonly SweepPoint[], plan: RankPlan, planned: EvalResult, textFile: string, seconds: number): SweepResult {
  const original = points[0];
  if (!original || original.method !== 'original') throw new FactoredKeysError('sweep: the original was not evaluated first');
  return {
    axis,
    points: points.map(sweepPointView),
    plan: {
      method: 'plan',
      rank: null,
      threshold: null,
      keyCacheBytesPerToken: planKeyBytesPerToken(plan),
      perplexity: planned.perplexity,
      deltaPercent: (planned.perplexity / original.perplexity - 1) * 100,
      seconds: planned.seconds,
    },
    planMethod: plan.method,
    tokens: planned.tokens,
    textFile,
    backend: planned.backend,
    seconds,
  };
}
