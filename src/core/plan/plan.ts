/**
 * Building and validating rank plans from per-head energy spectra.
 */
import { previewJson } from '../checkpoint/safetensors';
import { FactoredKeysError } from '../errors';
import {
  FACTOR_METHODS,
  PLAN_FORMAT,
  PLAN_FORMAT_VERSION,
  type FactorMethod,
  type HeadEnergies,
  type PlanModel,
  type RankOverride,
  type RankPlan,
  type RankPolicy,
} from './types';

/** Inputs of {@link buildPlan}. */
export interface BuildPlanInput {
  readonly method: FactorMethod;
  readonly policy: RankPolicy;
  readonly model: PlanModel;
  /** Required for `energy` and `budget` policies; used for retained_energy when given. */
  readonly energies?: HeadEnergies;
  readonly overrides?: readonly RankOverride[];
  /** Ranks for the `manual` policy. */
  readonly manualRanks?: readonly (readonly number[])[];
}

/** Fraction of a head's total energy kept at `rank` (1 when the head has no energy at all). */
export function retainedEnergy(energies: readonly number[], rank: number): number {
  let total = 0;
  let kept = 0;
  for (let j = 0; j < energies.length; j++) {
    const e = Math.max(0, energies[j]);
    total += e;
    if (j < rank) kept += e;
  }
  return total > 0 ? Math.min(1, kept / total) : 1;
}

/** Smallest rank (>= 1) whose retained energy reaches `threshold`. */
export function rankForEnergy(energies: readonly number[], threshold: number, maxRank: number): number {
  let total = 0;
  for (const e of energies) total += Math.max(0, e);
  if (total <= 0) return 1;
  let kept = 0;
  for (let r = 1; r <= maxRank; r++) {
    kept += Math.max(0, energies[r - 1] ?? 0);
    // tiny slack so a threshold of exactly 1 is reachable despite summation order
    if (kept >= threshold * total * (1 - 1e-12)) return r;
  }
  return maxRank;
}

function checkModel(m: PlanModel, where: string): void {
  for (const k of ['layers', 'kv_heads', 'head_dim', 'key_bytes_per_value'] as const) {
    const v = m[k];
    if (!Number.isSafeInteger(v) || v <= 0) throw new FactoredKeysError(`${where}: model.${k} must be a positive integer, got ${previewJson(v)}`);
  }
}

function checkEnergies(energies: HeadEnergies | undefined, m: PlanModel, needed: boolean, what: string): HeadEnergies | undefined {
  if (!energies) {
    if (needed) throw new FactoredKeysError(`plan: the ${what} policy needs per-head spectra`);
    return undefined;
  }
  if (energies.length !== m.layers) throw new FactoredKeysError(`plan: spectra have ${energies.length} layers, the model has ${m.layers}`);
  energies.forEach((row, l) => {
    if (row.length !== m.kv_heads) throw new FactoredKeysError(`plan: spectra layer ${l} have ${row.length} KV heads, the model has ${m.kv_heads}`);
    row.forEach((e, g) => {
      if (e.length < 1 || e.some((x) => !Number.isFinite(x))) throw new FactoredKeysError(`plan: spectrum of layer ${l}, KV head ${g} is empty or not finite`);
    });
  });
  return energies;
}

/**
 * Greedy budget allocation: every head starts at rank 1 (or its override), then the remaining
 * dims go one at a time to the largest marginal retained-energy fraction. Per-head marginal
 * gains are non-increasing (energies descending), so greedy is optimal for this separable
 * concave objective; it is done here as one sort of all marginal gains.
 */
function budgetRanks(energies: HeadEnergies, m: PlanModel, budgetBytes: number, fixed: Map<string, number>): number[][] {
  const budgetDims = Math.floor(budgetBytes / m.key_bytes_per_value);
  let used = 0;
  const ranks: number[][] = [];
  const gains: { l: number; g: number; j: number; gain: number }[] = [];
  for (let l = 0; l < m.layers; l++) {
    const row: number[] = [];
    for (let g = 0; g < m.kv_heads; g++) {
      const f = fixed.get(`${l}:${g}`);
      if (f !== undefined) {
        row.push(f);
        used += f;
        continue;
      }
      row.push(1);
      used += 1;
      const e = energies[l][g];
      let total = 0;
      for (const x of e) total += Math.max(0, x);
      for (let j = 1; j < m.head_dim; j++) gains.push({ l, g, j, gain: total > 0 ? Math.max(0, e[j] ?? 0) / total : 0 });
    }
    ranks.push(row);
  }
  if (used > budgetDims) {
    throw new FactoredKeysError(
      `plan: a budget of ${budgetBytes} key bytes per token is below the minimum of ${used * m.key_bytes_per_value} (rank 1 for every head plus overrides)`,
    );
  }
  // Stable order: larger gain first; within a head, lower index first keeps ranks contiguous.
  gains.sort((a, b) => b.gain - a.gain || a.l - b.l || a.g - b.g || a.j - b.j);
  let spare = budgetDims - used;
  for (const x of gains) {
    if (spare === 0) break;
    // Only extend a head contiguously (j equals its current rank), which the sort guarantees
    // for ties; a later index with a larger gain cannot happen since spectra are descending.
    if (ranks[x.l][x.g] !== x.j) continue;
    ranks[x.l][x.g]++;
    spare--;
  }
  return ranks;
}

function checkOverrides(overrides: readonly RankOverride[], m: PlanModel, where: string): Map<string, number> {
  const fixed = new Map<string, number>();
  // Array.from visits the holes of a sparse array (forEach would skip them unchecked).
  Array.from(overrides, (o, i) => {
    const at = `${where}: overrides[${i}]`;
    if (o === null || typeof o !== 'object') throw new FactoredKeysError(`${at} is not an object`);
    if (!Number.isSafeInteger(o.layer) || o.layer < 0 || o.layer >= m.layers) throw new FactoredKeysError(`${at}.layer must be 0..${m.layers - 1}, got ${previewJson(o.layer)}`);
    if (!Number.isSafeInteger(o.kv_head) || o.kv_head < 0 || o.kv_head >= m.kv_heads) {
      throw new FactoredKeysError(`${at}.kv_head must be 0..${m.kv_heads - 1}, got ${previewJson(o.kv_head)}`);
    }
    if (!Number.isSafeInteger(o.rank) || o.rank < 1 || o.rank > m.head_dim) throw new FactoredKeysError(`${at}.rank must be 1..${m.head_dim}, got ${previewJson(o.rank)}`);
    fixed.set(`${o.layer}:${o.kv_head}`, o.rank);
  });
  return fixed;
}

function checkPolicy(p: RankPolicy, m: PlanModel, where: string): void {
  if (p === null || typeof p !== 'object') throw new FactoredKeysError(`${where}: policy is not an object`);
  switch (p.kind) {
    case 'uniform':
      if (!Number.isSafeInteger(p.rank) || p.rank < 1 || p.rank > m.head_dim) throw new FactoredKeysError(`${where}: rank must be an integer from 1 to head_dim ${m.head_dim}, got ${previewJson(p.rank)}`);
      return;
    case 'fraction':
      if (typeof p.fraction !== 'number' || !(p.fraction > 0 && p.fraction <= 1)) throw new FactoredKeysError(`${where}: fraction must be in (0, 1], got ${previewJson(p.fraction)}`);
      return;
    case 'energy':
      if (typeof p.threshold !== 'number' || !(p.threshold > 0 && p.threshold <= 1)) throw new FactoredKeysError(`${where}: energy threshold must be in (0, 1], got ${previewJson(p.threshold)}`);
      return;
    case 'budget':
      if (!Number.isSafeInteger(p.key_bytes_per_token) || p.key_bytes_per_token <= 0) {
        throw new FactoredKeysError(`${where}: key-cache budget must be a positive integer of bytes per token, got ${previewJson(p.key_bytes_per_token)}`);
      }
      return;
    case 'manual':
      return;
    default:
      throw new FactoredKeysError(`${where}: unknown policy kind ${previewJson((p as { kind?: unknown }).kind)} (uniform, fraction, energy, budget, manual)`);
  }
}

/** Builds a plan: the policy's ranks, then overrides. Throws a one-line error on bad input. */
export function buildPlan(input: BuildPlanInput): RankPlan {
  const { method, policy, model: m } = input;
  if (!FACTOR_METHODS.includes(method)) throw new FactoredKeysError(`plan: unknown method ${JSON.stringify(method)} (${FACTOR_METHODS.join(', ')})`);
  checkModel(m, 'plan');
  checkPolicy(policy, m, 'plan');
  const overrides = [...(input.overrides ?? [])];
  const fixed = checkOverrides(overrides, m, 'plan');
  const energies = checkEnergies(input.energies, m, policy.kind === 'energy' || policy.kind === 'budget', policy.kind);
  let ranks: number[][];
  const each = (f: (l: number, g: number) => number) => Array.from({ length: m.layers }, (_, l) => Array.from({ length: m.kv_heads }, (_, g) => f(l, g)));
  switch (policy.kind) {
    case 'uniform':
      ranks = each(() => policy.rank);
      break;
    case 'fraction': {
      const r = Math.min(m.head_dim, Math.max(1, Math.round(policy.fraction * m.head_dim)));
      ranks = each(() => r);
      break;
    }
    case 'energy':
      ranks = each((l, g) => rankForEnergy(energies![l][g], policy.threshold, m.head_dim));
      break;
    case 'budget':
      ranks = budgetRanks(energies!, m, policy.key_bytes_per_token, fixed);
      break;
    case 'manual': {
      const given = input.manualRanks;
      if (!given) throw new FactoredKeysError('plan: the manual policy needs ranks');
      ranks = checkRanks(given, m, 'plan');
      break;
    }
  }
  for (const [key, r] of fixed) {
    const [l, g] = key.split(':').map(Number);
    ranks[l][g] = r;
  }
  const plan: RankPlan = { format: PLAN_FORMAT, version: PLAN_FORMAT_VERSION, method, policy, model: { ...m }, ranks, overrides };
  return energies ? { ...plan, retained_energy: ranks.map((row, l) => row.map((r, g) => retainedEnergy(energies[l][g], r))) } : plan;
}

function checkRanks(ranks: unknown, m: PlanModel, where: string): number[][] {
  if (!Array.isArray(ranks) || ranks.length !== m.layers) {
    throw new FactoredKeysError(`${where}: ranks must be an array of ${m.layers} layers, got ${Array.isArray(ranks) ? ranks.length : typeof ranks}`);
  }
  // Array.from, not map: map skips the holes of a sparse array, which would pass unchecked.
  return Array.from(ranks, (row: unknown, l) => {
    if (!Array.isArray(row) || row.length !== m.kv_heads) {
      throw new FactoredKeysError(`${where}: ranks[${l}] must list ${m.kv_heads} KV heads, got ${Array.isArray(row) ? row.length : typeof row}`);
    }
    return Array.from(row, (r: unknown, g) => {
      if (typeof r !== 'number' || !Number.isSafeInteger(r) || r < 1 || r > m.head_dim) {
        throw new FactoredKeysError(`${where}: ranks[${l}][${g}] must be an integer from 1 to head_dim ${m.head_dim}, got ${previewJson(r)}`);
      }
      return r;
    });
  });
}

/**
 * Validates an untrusted plan (e.g. parsed from a file) and returns it typed. When `expect`
 * is given, the plan's model shape must match it (the checkpoint being exported).
 * `where` names the source in messages (the file path).
 */
export function validatePlan(raw: unknown, where: string, expect?: PlanModel): RankPlan {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new FactoredKeysError(`${where}: plan is not a JSON object`);
  const p = raw as Record<string, unknown>;
  if (p.format !== PLAN_FORMAT) throw new FactoredKeysError(`${where}: "format" must be "${PLAN_FORMAT}", got ${previewJson(p.format)}`);
  if (p.version !== PLAN_FORMAT_VERSION) throw new FactoredKeysError(`${where}: plan version ${previewJson(p.version)} is not supported (this tool reads version ${PLAN_FORMAT_VERSION})`);
  if (!FACTOR_METHODS.includes(p.method as FactorMethod)) throw new FactoredKeysError(`${where}: "method" must be one of ${FACTOR_METHODS.join(', ')}, got ${previewJson(p.method)}`);
  const model = p.model as PlanModel;
  if (model === null || typeof model !== 'object') throw new FactoredKeysError(`${where}: "model" is missing`);
  checkModel(model, where);
  if (typeof model.architecture !== 'string') throw new FactoredKeysError(`${where}: model.architecture must be a string`);
  if (model.fingerprint !== undefined && typeof model.fingerprint !== 'string') throw new FactoredKeysError(`${where}: model.fingerprint must be a string`);
  if (expect) {
    for (const k of ['layers', 'kv_heads', 'head_dim'] as const) {
      if (model[k] !== expect[k]) throw new FactoredKeysError(`${where}: plan is for ${k} = ${model[k]} but the checkpoint has ${expect[k]}`);
    }
    if (expect.architecture && model.architecture !== expect.architecture) {
      throw new FactoredKeysError(`${where}: plan was made for a ${previewJson(model.architecture)} model, but the checkpoint is ${JSON.stringify(expect.architecture)}`);
    }
    if (expect.fingerprint && model.fingerprint !== undefined && model.fingerprint !== expect.fingerprint) {
      throw new FactoredKeysError(
        `${where}: plan was made for another checkpoint (fingerprint ${previewJson(model.fingerprint.slice(0, 24))}…, this one is ${expect.fingerprint.slice(0, 24)}…): its attention geometry or Q/K tensor names or shapes differ`,
      );
    }
  }
  checkPolicy(p.policy as RankPolicy, model, where);
  const ranks = checkRanks(p.ranks, model, where);
  const overridesRaw = p.overrides ?? [];
  if (!Array.isArray(overridesRaw)) throw new FactoredKeysError(`${where}: "overrides" must be an array`);
  const fixed = checkOverrides(overridesRaw as RankOverride[], model, where);
  for (const [key, r] of fixed) {
    const [l, g] = key.split(':').map(Number);
    if (ranks[l][g] !== r) throw new FactoredKeysError(`${where}: ranks[${l}][${g}] is ${ranks[l][g]} but an override sets ${r}`);
  }
  const plan: RankPlan = {
    format: PLAN_FORMAT,
    version: PLAN_FORMAT_VERSION,
    method: p.method as FactorMethod,
    policy: p.policy as RankPolicy,
    model: { ...model, key_bytes_per_value: expect?.key_bytes_per_value ?? model.key_bytes_per_value, ...(expect?.fingerprint ? { fingerprint: expect.fingerprint } : {}) },
    ranks,
    overrides: overridesRaw as RankOverride[],
  };
  return plan;
}

/** Total cached key bytes per token (all layers, batch 1) of a plan. */
export function planKeyBytesPerToken(plan: RankPlan): number {
  let dims = 0;
  for (const row of plan.ranks) for (const r of row) dims += r;
  return dims * plan.model.key_bytes_per_value;
}

/** The fields of a spectrum-analysis head that {@link keyEnergiesFromSpectra} reads. */
export interface KeySpectrumLike {
  readonly layer: number;
  readonly kind: string;
  readonly head: number;
  readonly singularValues: readonly number[];
}

/**
 * key-svd energies (σ²) from `analyzeSpectra` key heads, for planning without re-reading
 * weights (e.g. in the panel). Heads without values (non-finite weights) get zero energy,
 * which plans as rank 1 under energy policies. qk-svd energies need the queries too: use
 * `analyzeHeads(..., 'qk-svd')` from src/core/factor instead.
 */
export function keyEnergiesFromSpectra(heads: readonly KeySpectrumLike[], layers: number, kvHeads: number, headDim: number): number[][][] {
  const out = Array.from({ length: layers }, () => Array.from({ length: kvHeads }, () => Array<number>(headDim).fill(0)));
  for (const h of heads) {
    if (h.kind !== 'key' || h.layer < 0 || h.layer >= layers || h.head < 0 || h.head >= kvHeads) continue;
    const e = out[h.layer][h.head];
    h.singularValues.forEach((s, j) => {
      if (j < headDim) e[j] = s * s;
    });
  }
  return out;
}
