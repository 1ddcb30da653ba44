/**
 * The inspection panel's state and its pure transitions. main.ts owns the DOM and the message
 * port; everything that decides *what* the panel shows lives here so it can be unit-tested
 * without a browser.
 */
import type { BusyTask, CheckpointSummary, EnergyLevel, EvaluationResult, HostMessage, PanelDefaults, PlanControls, PlanResult, PolicyName, RankOverride, ReferenceSavings, SavingsControls, SpectraPayload, SweepMethod, SweepPointView, SweepResult } from '../src/protocol';
import { SWEEP_METHODS } from '../src/protocol';

/** What the heatmap colours: each head's effective rank at an energy level, or the plan's rank. */
export type HeatmapMode = 'effective' | 'chosen';

/** The head whose spectrum is plotted: a KV head, and optionally one of its query heads. */
export interface Selection {
  readonly layer: number;
  readonly kvHead: number;
  readonly queryHead: number | null;
}

/** Everything the panel renders. */
export interface PanelState {
  readonly summary: CheckpointSummary | null;
  readonly spectra: SpectraPayload | null;
  readonly plan: PlanControls;
  readonly savings: SavingsControls;
  /** The host's ranks and savings for `plan` (stale while `planPending`). */
  readonly result: PlanResult | null;
  readonly planPending: boolean;
  /** Why the host could not evaluate the current plan (cleared by the next good result). */
  readonly planError: string | null;
  readonly selection: Selection;
  readonly heatmapMode: HeatmapMode;
  readonly level: EnergyLevel;
  readonly busy: { readonly task: BusyTask; readonly backend?: string; readonly label?: string } | null;
  readonly backend: string;
  readonly trusted: boolean;
  readonly evaluateAvailable: boolean;
  readonly reference: ReferenceSavings | null;
  readonly notice: { readonly level: 'info' | 'error'; readonly message: string } | null;
  /** The last evaluation, and the plan it was for (it goes stale when the plan changes). */
  readonly evaluation: (EvaluationResult & { readonly stale: boolean }) | null;
  /** The last quality/savings sweep; its plan point goes stale when the plan changes. */
  readonly sweep: (SweepResult & { readonly stale: boolean }) | null;
}

/** Transitions: host events plus the user's gestures. */
export type Action =
  | { readonly kind: 'host'; readonly message: HostMessage }
  | { readonly kind: 'policy'; readonly policy: PolicyName }
  | { readonly kind: 'param'; readonly field: 'rank' | 'fraction' | 'energy' | 'budget'; readonly value: number }
  | { readonly kind: 'savings'; readonly field: keyof SavingsControls; readonly value: number | string }
  | { readonly kind: 'select'; readonly layer: number; readonly kvHead: number; readonly queryHead: number | null }
  | { readonly kind: 'override'; readonly layer: number; readonly head: number; readonly rank: number | null }
  | { readonly kind: 'clearOverrides' }
  | { readonly kind: 'heatmapMode'; readonly mode: HeatmapMode }
  | { readonly kind: 'level'; readonly level: EnergyLevel }
  | { readonly kind: 'planResult'; readonly result: PlanResult }
  | { readonly kind: 'planError'; readonly message: string }
  | { readonly kind: 'evaluation'; readonly result: EvaluationResult }
  | { readonly kind: 'sweep'; readonly result: SweepResult }
  | { readonly kind: 'notice'; readonly level: 'info' | 'error'; readonly message: string | null };

/** Before the host's `init` arrives. */
export function initialState(): PanelState {
  return {
    summary: null,
    spectra: null,
    plan: { policy: 'energy', rank: 16, fraction: 0.25, energy: 0.95, budget: 0.25, overrides: [] },
    savings: { context: 128000, batch: 1, dtype: 'bf16' },
    result: null,
    planPending: false,
    planError: null,
    selection: { layer: 0, kvHead: 0, queryHead: null },
    heatmapMode: 'effective',
    level: 'p95',
    busy: null,
    backend: 'auto',
    trusted: true,
    evaluateAvailable: false,
    reference: null,
    notice: null,
    evaluation: null,
    sweep: null,
  };
}

function clampInt(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, Math.round(v)));
}

function clampReal(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}

/** Clamps plan controls to what the model allows (ranks within 1..head_dim, overrides on real heads). */
export function sanitizePlan(plan: PlanControls, summary: CheckpointSummary | null): PlanControls {
  const maxRank = summary?.headDim ?? 65536;
  const overrides = plan.overrides
    .filter((o) => !summary || (o.layer < summary.layers && o.head < summary.kvHeads))
    .map((o) => ({ ...o, rank: clampInt(o.rank, 1, maxRank) }));
  return {
    policy: plan.policy,
    rank: clampInt(plan.rank, 1, maxRank),
    fraction: clampReal(plan.fraction, 0.001, 1),
    energy: clampReal(plan.energy, 0.001, 1),
    budget: clampReal(plan.budget, 0.001, 1),
    overrides,
  };
}

function applyDefaults(state: PanelState, summary: CheckpointSummary, defaults: PanelDefaults): PanelState {
  return { ...state, summary, plan: sanitizePlan(defaults.plan, summary), savings: defaults.savings, backend: defaults.backend, planPending: true };
}

/** Adds, replaces or (rank null) removes the override for one KV head, keeping a stable order. */
export function withOverride(overrides: readonly RankOverride[], layer: number, head: number, rank: number | null): RankOverride[] {
  const rest = overrides.filter((o) => !(o.layer === layer && o.head === head));
  if (rank === null) return rest;
  return [...rest, { layer, head, rank }].sort((a, b) => a.layer - b.layer || a.head - b.head);
}

/** The panel's reducer. Any change to the plan or savings controls marks the plan as pending. */
export function reduce(state: PanelState, action: Action): PanelState {
  switch (action.kind) {
    case 'host': {
      const m = action.message;
      switch (m.type) {
        case 'init':
          return { ...applyDefaults(state, m.summary, m.defaults), trusted: m.trusted, evaluateAvailable: m.evaluateAvailable, reference: m.reference, selection: { layer: 0, kvHead: 0, queryHead: null } };
        case 'spectra':
          return { ...state, spectra: m.spectra, backend: m.spectra.backend, planPending: true };
        case 'busy':
          return { ...state, busy: m.task ? { task: m.task, backend: m.backend, label: m.label } : null, backend: m.backend ?? state.backend };
        case 'notice':
          return { ...state, notice: { level: m.level, message: m.message } };
        case 'setPlan':
          return { ...state, plan: sanitizePlan(m.plan, state.summary), savings: m.savings ?? state.savings, planPending: true };
        case 'backend':
          return { ...state, backend: m.backend };
        case 'sweepResult':
          return { ...state, sweep: { ...m.result, stale: false } };
        case 'reply':
        case 'focus':
          return state;
      }
      return state;
    }
    case 'policy':
      return { ...state, plan: { ...state.plan, policy: action.policy }, planPending: true };
    case 'param': {
      if (!Number.isFinite(action.value)) return state;
      const plan = sanitizePlan({ ...state.plan, [action.field]: action.value }, state.summary);
      return { ...state, plan, planPending: true };
    }
    case 'savings': {
      const s = state.savings;
      let savings: SavingsControls = s;
      if (action.field === 'dtype') {
        if (action.value === 'f32' || action.value === 'f16' || action.value === 'bf16' || action.value === 'fp8') savings = { ...s, dtype: action.value };
      } else {
        const v = Number(action.value);
        if (!Number.isFinite(v) || v < 1) return state;
        savings = { ...s, [action.field]: clampInt(v, 1, action.field === 'context' ? 1 << 24 : 1 << 16) };
      }
      return savings === s ? state : { ...state, savings, planPending: true };
    }
    case 'select': {
      const sm = state.summary;
      if (sm && (action.layer < 0 || action.layer >= sm.layers || action.kvHead < 0 || action.kvHead >= sm.kvHeads)) return state;
      return { ...state, selection: { layer: action.layer, kvHead: action.kvHead, queryHead: action.queryHead } };
    }
    case 'override': {
      const rank = action.rank === null ? null : clampInt(action.rank, 1, state.summary?.headDim ?? 65536);
      return { ...state, plan: { ...state.plan, overrides: withOverride(state.plan.overrides, action.layer, action.head, rank) }, planPending: true };
    }
    case 'clearOverrides':
      return state.plan.overrides.length === 0 ? state : { ...state, plan: { ...state.plan, overrides: [] }, planPending: true };
    case 'heatmapMode':
      return { ...state, heatmapMode: action.mode };
    case 'level':
      return { ...state, level: action.level };
    case 'planResult': {
      // A different plan than the one evaluated makes the shown perplexity stale.
      const same = state.result !== null && sameRanks(state.result.ranks, action.result.ranks);
      const evaluation = state.evaluation && !same ? { ...state.evaluation, stale: true } : state.evaluation;
      const sweep = state.sweep && !same ? { ...state.sweep, stale: true } : state.sweep;
      return { ...state, result: action.result, planPending: false, planError: null, evaluation, sweep };
    }
    case 'planError':
      return { ...state, planPending: false, planError: action.message };
    case 'evaluation':
      return { ...state, evaluation: { ...action.result, stale: false } };
    case 'sweep':
      return { ...state, sweep: { ...action.result, stale: false } };
    case 'notice':
      return { ...state, notice: action.message === null ? null : { level: action.level, message: action.message } };
  }
}

const LEVEL_INDEX: Record<EnergyLevel, number> = { p90: 0, p95: 1, p99: 2 };

/**
 * The numbers a heatmap shows, row-major (layer × head), or null when not computable yet.
 * Effective mode: each head's own effective rank. Chosen mode: the plan's rank of the KV head
 * (query heads show the rank of the KV head they share, since the factorization is per KV head).
 */
export function heatmapValues(state: Pick<PanelState, 'summary' | 'spectra' | 'result' | 'heatmapMode' | 'level'>, kind: 'key' | 'query'): Float32Array | null {
  const { summary, spectra, result } = state;
  if (!summary) return null;
  const heads = kind === 'key' ? summary.kvHeads : summary.queryHeads;
  const out = new Float32Array(summary.layers * heads);
  if (state.heatmapMode === 'effective') {
    if (!spectra) return null;
    const eff = kind === 'key' ? spectra.keyEffRank : spectra.queryEffRank;
    const li = LEVEL_INDEX[state.level];
    for (let i = 0; i < out.length; i++) out[i] = eff[i * 3 + li];
    return out;
  }
  if (!result) return null;
  for (let l = 0; l < summary.layers; l++) {
    for (let h = 0; h < heads; h++) {
      const g = kind === 'key' ? h : summary.queryToKv[h];
      out[l * heads + h] = result.ranks[l * summary.kvHeads + g];
    }
  }
  return out;
}

/** One series of a spectrum plot. */
export interface SpectrumSeries {
  readonly label: string;
  readonly kind: 'key' | 'query';
  /** σ_i / σ_1, so keys and queries of different scale compare by shape. */
  readonly normalized: Float32Array;
  readonly energy: Float32Array;
}

/** The selected KV head's key spectrum and the spectra of the query heads that share it. */
export function selectedSpectra(state: Pick<PanelState, 'summary' | 'spectra' | 'selection'>): SpectrumSeries[] {
  const { summary, spectra, selection } = state;
  if (!summary || !spectra) return [];
  const w = spectra.width;
  const row = (arr: Float32Array, r: number) => arr.subarray(r * w, (r + 1) * w);
  const normalize = (s: Float32Array) => {
    const top = s[0] > 0 ? s[0] : 1;
    const out = new Float32Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s[i] / top;
    return out;
  };
  const kRow = selection.layer * spectra.kvHeads + selection.kvHead;
  const series: SpectrumSeries[] = [
    { label: `key L${selection.layer} KV${selection.kvHead}`, kind: 'key', normalized: normalize(row(spectra.keySingular, kRow)), energy: row(spectra.keyEnergy, kRow) },
  ];
  summary.queryToKv.forEach((g, h) => {
    if (g !== selection.kvHead) return;
    const qRow = selection.layer * spectra.queryHeads + h;
    series.push({ label: `query L${selection.layer} Q${h}`, kind: 'query', normalized: normalize(row(spectra.querySingular, qRow)), energy: row(spectra.queryEnergy, qRow) });
  });
  return series;
}

/** The plan's rank for the selected KV head, and whether the user pinned it. */
export function selectedRank(state: Pick<PanelState, 'summary' | 'result' | 'selection' | 'plan'>): { rank: number | null; pinned: boolean } {
  const { summary, result, selection, plan } = state;
  const pinned = plan.overrides.find((o) => o.layer === selection.layer && o.head === selection.kvHead);
  if (pinned) return { rank: pinned.rank, pinned: true };
  if (!summary || !result) return { rank: null, pinned: false };
  return { rank: result.ranks[selection.layer * summary.kvHeads + selection.kvHead], pinned: false };
}

/** Bytes as a short human string (binary-free SI units, like the paper's "25.2 GB"). */
export function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let v = bytes;
  let u = 0;
  while (Math.abs(v) >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v.toFixed(0) : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`;
}

/** The policy parameter the controls show for a policy. */
export function policyField(policy: PolicyName): 'rank' | 'fraction' | 'energy' | 'budget' {
  return policy === 'uniform' ? 'rank' : policy;
}

/** One line of the quality/savings chart: a method's points, or a reference. */
export interface SweepSeries {
  readonly label: string;
  readonly kind: SweepMethod | 'original' | 'plan';
  /** Perplexity at each x of the chart (null where the series has no point). */
  readonly ys: readonly (number | null)[];
}

/** The quality/savings chart: shared x (key-cache bytes per token, ascending) and its series. */
export interface SweepChart {
  readonly xs: readonly number[];
  readonly series: readonly SweepSeries[];
}

/** How a sweep point is named: its rank or threshold. */
export function sweepSetting(p: SweepPointView): string {
  if (p.rank !== null) return `rank ${p.rank}`;
  if (p.threshold !== null) return `${+(p.threshold * 100).toFixed(2)}% energy`;
  return p.method === 'original' ? 'full' : '';
}

/**
 * The chart of a sweep: one series per method (points in x order), the original as a
 * horizontal line across every x, and the plan as a lone point ("earlier plan" once the panel's
 * plan has changed). Points of different methods at the same key-cache size share an x
 * (uniform ranks cost the same for both methods).
 */
export function sweepChart(sweep: SweepResult & { readonly stale?: boolean }): SweepChart {
  const original = sweep.points[0];
  const methods = sweep.points.slice(1);
  const xs = [...new Set([original.keyCacheBytesPerToken, ...methods.map((p) => p.keyCacheBytesPerToken), sweep.plan.keyCacheBytesPerToken])].sort((a, b) => a - b);
  const at = (points: readonly SweepPointView[]) => {
    const ys: (number | null)[] = xs.map(() => null);
    // Two thresholds can land on the same ranks (and bytes): keep the first, they measure the same plan.
    for (const p of points) {
      const i = xs.indexOf(p.keyCacheBytesPerToken);
      if (ys[i] === null) ys[i] = p.perplexity;
    }
    return ys;
  };
  const series: SweepSeries[] = [];
  for (const m of SWEEP_METHODS) {
    const points = methods.filter((p) => p.method === m);
    if (points.length) series.push({ label: m, kind: m, ys: at(points) });
  }
  series.push({ label: `original (${original.perplexity.toFixed(3)})`, kind: 'original', ys: xs.map(() => original.perplexity) });
  series.push({ label: `${sweep.stale ? 'earlier plan' : 'plan'} (${sweep.planMethod})`, kind: 'plan', ys: at([sweep.plan]) });
  return { xs, series };
}

/** The sweep's table rows: the original, each method by growing key cache, then the plan. */
export function sweepRows(sweep: SweepResult): SweepPointView[] {
  const byMethod = (m: SweepMethod) => sweep.points.filter((p) => p.method === m).sort((a, b) => a.keyCacheBytesPerToken - b.keyCacheBytesPerToken || (a.threshold ?? 0) - (b.threshold ?? 0));
  return [sweep.points[0], ...SWEEP_METHODS.flatMap(byMethod), sweep.plan];
}

/** Whether an export can start now (trusted workspace, nothing running, a plan computed). */
export function canExport(state: Pick<PanelState, 'trusted' | 'busy' | 'result' | 'planPending'>): boolean {
  return state.trusted && state.busy === null && state.result !== null;
}

function sameRanks(a: Uint32Array, b: Uint32Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
