/**
 * Messages between the extension host and the inspection panel's webview. Both sides import
 * this file: the host bundle (Node) and the webview bundle (browser), so it holds only types,
 * constants and pure validation (no Node or DOM APIs).
 *
 * Shape of the conversation:
 * - the webview sends `ready`, then requests carrying a numeric `id`;
 * - the host answers every request with exactly one `reply` (same id): `ok: true` with a result,
 *   or `ok: false` with a one-line error (`cancelled: true` when the user cancelled);
 * - the host also pushes unsolicited events (`init`, `spectra`, `busy`, `notice`).
 * Large numeric payloads travel as typed arrays (structured-clone friendly, no JSON blow-up).
 * Everything the webview sends is untrusted: the host runs `parseWebviewMessage` on it first.
 */

export const PROTOCOL_VERSION = 1;

/** Rank-selection policies offered by the panel (see src/core/plan). */
export const POLICIES = ['uniform', 'fraction', 'energy', 'budget'] as const;
export type PolicyName = (typeof POLICIES)[number];

/** Cache element types the savings view can price. */
export const CACHE_DTYPES = ['f32', 'f16', 'bf16', 'fp8'] as const;
export type CacheDtype = (typeof CACHE_DTYPES)[number];

/** Effective-rank thresholds reported per head. */
export const ENERGY_LEVELS = ['p90', 'p95', 'p99'] as const;
export type EnergyLevel = (typeof ENERGY_LEVELS)[number];

/** Hard limits that keep a hostile or buggy webview from making the host allocate without bound. */
export const LIMITS = {
  maxLayers: 1024,
  maxHeads: 1024,
  maxRank: 65536,
  maxOverrides: 65536,
  maxContext: 1 << 24,
  maxBatch: 1 << 16,
} as const;

/** A per-head rank the user pinned by clicking the heatmap; wins over the policy. */
export interface RankOverride {
  readonly layer: number;
  /** KV head index (keys are what gets factored; query heads share their KV head's rank). */
  readonly head: number;
  readonly rank: number;
}

/** The plan controls as the panel shows them. Only the field of the chosen policy is used. */
export interface PlanControls {
  readonly policy: PolicyName;
  /** uniform: the same rank for every KV head. */
  readonly rank: number;
  /** fraction: rank = ceil(fraction × head_dim). */
  readonly fraction: number;
  /** energy: smallest rank keeping this share of each head's key energy. */
  readonly energy: number;
  /** budget: factored key cache as this share of the original key cache. */
  readonly budget: number;
  readonly overrides: readonly RankOverride[];
}

/** Where the savings are priced. */
export interface SavingsControls {
  readonly context: number;
  readonly batch: number;
  readonly dtype: CacheDtype;
}

/** Model facts the panel shows in its summary (mirrors `inspect --json`). */
export interface CheckpointSummary {
  readonly name: string;
  readonly dir: string;
  readonly architecture: string;
  readonly layers: number;
  readonly hiddenSize: number;
  readonly queryHeads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly rope: boolean;
  readonly rotaryDim: number | null;
  readonly ropeTheta: number | null;
  readonly dtype: string;
  readonly parameters: number;
  readonly files: number;
  readonly queryToKv: readonly number[];
  /** The model's features in words, e.g. ["q/k-norm", "sliding 4096 on 1 of 2 layers", "MoE 8×top-2"]. */
  readonly features: readonly string[];
}

/**
 * Every head's spectrum, flattened. Head (layer l, index h) of a kind lives at row
 * `l × heads + h`; each row has `width` singular values (descending) and `width` cumulative
 * energies (0..1). Effective ranks are rows of three (p90, p95, p99).
 */
export interface SpectraPayload {
  readonly backend: string;
  readonly seconds: number;
  readonly layers: number;
  readonly kvHeads: number;
  readonly queryHeads: number;
  readonly width: number;
  readonly keySingular: Float32Array;
  readonly keyEnergy: Float32Array;
  readonly keyEffRank: Uint32Array;
  readonly keyStableRank: Float32Array;
  readonly querySingular: Float32Array;
  readonly queryEnergy: Float32Array;
  readonly queryEffRank: Uint32Array;
  readonly queryStableRank: Float32Array;
  /** The factorization method the plan energies belong to (the `factoredKeys.method` setting). */
  readonly planMethod: 'key-svd' | 'qk-svd' | 'calibrated';
  /**
   * Per KV head, the energy of each direction the method keeps, descending (rows like keys):
   * σ² of W_K for key-svd, the query-aware eigenvalues for qk-svd. Rank policies spend these.
   */
  readonly planEnergy: Float32Array;
}

/** Key-cache savings for one plan, priced at `SavingsControls`. Bytes are for keys + values. */
export interface SavingsView {
  readonly context: number;
  readonly batch: number;
  readonly dtype: CacheDtype;
  /** Cache bytes per token before factoring (keys + values, all layers). */
  readonly baselineBytesPerToken: number;
  /** Cache bytes per token with the plan's ranks. */
  readonly factoredBytesPerToken: number;
  /** Whole-cache bytes at context × batch, before and after. */
  readonly baselineBytes: number;
  readonly factoredBytes: number;
  /** How many more tokens fit in the same memory (baseline / factored). */
  readonly capacityMultiplier: number;
  /** Key cache alone, before and after, per token. */
  readonly baselineKeyBytesPerToken: number;
  readonly factoredKeyBytesPerToken: number;
}

/** A fixed worked example shown for scale: the paper's configuration, priced by the same code. */
export interface ReferenceSavings {
  readonly label: string;
  readonly baselineBytes: number;
  readonly factoredBytes: number;
  readonly capacityMultiplier: number;
}

/** The host's evaluation of a plan: the rank of every KV head (row `l × kvHeads + g`) and the savings. */
export interface PlanResult {
  readonly ranks: Uint32Array;
  readonly savings: SavingsView;
  /** Mean retained key energy across heads at the chosen ranks, when spectra are known. */
  readonly meanRetainedEnergy: number | null;
}

/** Perplexity of the original checkpoint and of a plan, on the same tokens. */
export interface EvaluationResult {
  readonly original: number;
  readonly factored: number;
  /** (factored / original − 1) · 100. */
  readonly deltaPercent: number;
  readonly tokens: number;
  readonly textFile: string;
  readonly backend: string;
  readonly seconds: number;
}

/** Factorization methods a sweep compares. */
export const SWEEP_METHODS = ['key-svd', 'qk-svd', 'calibrated'] as const;
export type SweepMethod = (typeof SWEEP_METHODS)[number];

/** What a sweep varies: one uniform rank for every KV head, or a per-head energy threshold. */
export type SweepAxis = 'rank' | 'energy';

/** One measured point of the quality/savings curve. */
export interface SweepPointView {
  /** `original` is the unfactored reference; `plan` is the panel's plan at sweep time. */
  readonly method: SweepMethod | 'original' | 'plan';
  /** Uniform rank of a rank sweep, else null. */
  readonly rank: number | null;
  /** Energy threshold of an energy sweep, else null. */
  readonly threshold: number | null;
  /** Key-cache bytes per token, all layers, in the checkpoint's element type. */
  readonly keyCacheBytesPerToken: number;
  readonly perplexity: number;
  /** (perplexity / original − 1) · 100. */
  readonly deltaPercent: number;
  readonly seconds: number;
}

/** A finished sweep: the original, both methods over the axis, and the plan it was run for. */
export interface SweepResult {
  readonly axis: SweepAxis;
  /** Points in evaluation order, the original first. */
  readonly points: readonly SweepPointView[];
  /** The panel's plan, measured on the same tokens (its method is `planMethod`). */
  readonly plan: SweepPointView;
  readonly planMethod: SweepMethod;
  readonly tokens: number;
  readonly textFile: string;
  readonly backend: string;
  readonly seconds: number;
}

/** Settings the panel starts from (from the user's configuration). */
export interface PanelDefaults {
  readonly plan: PlanControls;
  readonly savings: SavingsControls;
  readonly backend: string;
}

// ---------------------------------------------------------------- host -> webview

/** Sections of the panel the host can scroll to. */
export type PanelSection = 'heatmaps' | 'plan' | 'savings' | 'spectra' | 'sweep';

/** Long-running work the host reports as busy. */
export type BusyTask = 'analyze' | 'export' | 'evaluate' | 'sweep';

export type HostMessage =
  | { readonly type: 'init'; readonly version: number; readonly summary: CheckpointSummary; readonly defaults: PanelDefaults; readonly trusted: boolean; readonly evaluateAvailable: boolean; readonly reference: ReferenceSavings }
  | { readonly type: 'spectra'; readonly spectra: SpectraPayload }
  | { readonly type: 'busy'; readonly task: BusyTask | null; readonly backend?: string; readonly label?: string }
  | { readonly type: 'notice'; readonly level: 'info' | 'error'; readonly message: string }
  | { readonly type: 'setPlan'; readonly plan: PlanControls; readonly savings?: SavingsControls }
  | { readonly type: 'focus'; readonly section: PanelSection }
  /** A sweep the host ran on its own (the Command Palette's Sweep); shown like the button's. */
  | { readonly type: 'sweepResult'; readonly result: SweepResult }
  | { readonly type: 'backend'; readonly backend: string }
  | ReplyMessage;

/** The answer to request `id`. */
export type ReplyMessage =
  | { readonly type: 'reply'; readonly id: number; readonly ok: true; readonly result: unknown }
  | { readonly type: 'reply'; readonly id: number; readonly ok: false; readonly error: string; readonly cancelled?: boolean };

// ---------------------------------------------------------------- webview -> host

/** Requests the webview may make, with the result type each reply carries. */
export interface RequestMap {
  /** Compute (or recompute) every head's spectrum. Result: `null`; spectra arrive as a `spectra` event. */
  analyze: { params: Record<string, never>; result: null };
  /** Ranks and savings for a plan. */
  plan: { params: { plan: PlanControls; savings: SavingsControls }; result: PlanResult };
  /** Export the plan; the host asks the user where. Result: the folder written, or null if the user declined. */
  export: { params: { plan: PlanControls }; result: { path: string } | null };
  /** Perplexity of the original and of the plan on held-out text (the host asks which text). */
  evaluate: { params: { plan: PlanControls }; result: EvaluationResult | null };
  /**
   * Quality against key-cache size: perplexity of the original, of both methods over a rank set
   * (or energy thresholds when the plan's policy is energy), and of the plan itself, on the same
   * held-out text as `evaluate`. Result: null if the user declined to pick a text.
   */
  sweep: { params: { plan: PlanControls }; result: SweepResult | null };
  /** Let the user pick the compute backend (host shows a quick pick). Result: the backend now selected. */
  selectBackend: { params: Record<string, never>; result: string };
  /** Cancel the running analysis/export/evaluation/sweep, if any. */
  cancel: { params: Record<string, never>; result: null };
}
export type RequestType = keyof RequestMap;
export const REQUEST_TYPES: readonly RequestType[] = ['analyze', 'plan', 'export', 'evaluate', 'sweep', 'selectBackend', 'cancel'];

export type WebviewRequest = { [K in RequestType]: { readonly type: K; readonly id: number } & RequestMap[K]['params'] }[RequestType];
export type WebviewMessage = { readonly type: 'ready' } | WebviewRequest;

/** A message from the webview that failed validation. */
export class ProtocolError extends Error {
  constructor(
    message: string,
    /** The request id, when one could be read, so the host can still send an error reply. */
    readonly id?: number,
  ) {
    super(message);
    this.name = 'ProtocolError';
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(o: Record<string, unknown>, allowed: readonly string[], what: string, id?: number): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw new ProtocolError(`${what}: unexpected field "${k}"`, id);
}

function int(v: unknown, min: number, max: number, what: string, id?: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new ProtocolError(`${what} must be an integer in [${min}, ${max}]`, id);
  return v;
}

function real(v: unknown, min: number, max: number, what: string, id?: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw new ProtocolError(`${what} must be a number in [${min}, ${max}]`, id);
  return v;
}

function oneOf<T extends string>(v: unknown, options: readonly T[], what: string, id?: number): T {
  if (typeof v !== 'string' || !(options as readonly string[]).includes(v)) throw new ProtocolError(`${what} must be one of ${options.join(', ')}`, id);
  return v as T;
}

/** Validates plan controls from the webview (shape and ranges; model-specific bounds are the host's job). */
export function parsePlanControls(v: unknown, id?: number): PlanControls {
  if (!isRecord(v)) throw new ProtocolError('plan must be an object', id);
  checkKeys(v, ['policy', 'rank', 'fraction', 'energy', 'budget', 'overrides'], 'plan', id);
  const overridesRaw = v.overrides;
  if (!Array.isArray(overridesRaw) || overridesRaw.length > LIMITS.maxOverrides) throw new ProtocolError(`plan.overrides must be an array of at most ${LIMITS.maxOverrides} entries`, id);
  const seen = new Set<string>();
  const overrides = overridesRaw.map((o, i) => {
    if (!isRecord(o)) throw new ProtocolError(`plan.overrides[${i}] must be an object`, id);
    checkKeys(o, ['layer', 'head', 'rank'], `plan.overrides[${i}]`, id);
    const layer = int(o.layer, 0, LIMITS.maxLayers - 1, `plan.overrides[${i}].layer`, id);
    const head = int(o.head, 0, LIMITS.maxHeads - 1, `plan.overrides[${i}].head`, id);
    const key = `${layer}/${head}`;
    if (seen.has(key)) throw new ProtocolError(`plan.overrides[${i}] repeats layer ${layer} head ${head}`, id);
    seen.add(key);
    return { layer, head, rank: int(o.rank, 1, LIMITS.maxRank, `plan.overrides[${i}].rank`, id) };
  });
  return {
    policy: oneOf(v.policy, POLICIES, 'plan.policy', id),
    rank: int(v.rank, 1, LIMITS.maxRank, 'plan.rank', id),
    fraction: real(v.fraction, 1e-6, 1, 'plan.fraction', id),
    energy: real(v.energy, 1e-6, 1, 'plan.energy', id),
    budget: real(v.budget, 1e-6, 1, 'plan.budget', id),
    overrides,
  };
}

/** Validates savings controls from the webview. */
export function parseSavingsControls(v: unknown, id?: number): SavingsControls {
  if (!isRecord(v)) throw new ProtocolError('savings must be an object', id);
  checkKeys(v, ['context', 'batch', 'dtype'], 'savings', id);
  return {
    context: int(v.context, 1, LIMITS.maxContext, 'savings.context', id),
    batch: int(v.batch, 1, LIMITS.maxBatch, 'savings.batch', id),
    dtype: oneOf(v.dtype, CACHE_DTYPES, 'savings.dtype', id),
  };
}

/**
 * Validates one message from the webview. Throws `ProtocolError` (carrying the request id when
 * it was readable) for anything that is not exactly a known message with well-formed fields.
 */
export function parseWebviewMessage(raw: unknown): WebviewMessage {
  if (!isRecord(raw)) throw new ProtocolError('message must be an object');
  const type = raw.type;
  if (type === 'ready') {
    checkKeys(raw, ['type'], 'ready');
    return { type: 'ready' };
  }
  if (typeof type !== 'string' || !(REQUEST_TYPES as readonly string[]).includes(type)) throw new ProtocolError(`unknown message type ${JSON.stringify(type)?.slice(0, 40)}`);
  const id = int(raw.id, 1, Number.MAX_SAFE_INTEGER, `${type}.id`);
  switch (type as RequestType) {
    case 'analyze':
    case 'selectBackend':
    case 'cancel':
      checkKeys(raw, ['type', 'id'], type, id);
      return { type, id } as WebviewRequest;
    case 'plan':
      checkKeys(raw, ['type', 'id', 'plan', 'savings'], type, id);
      return { type: 'plan', id, plan: parsePlanControls(raw.plan, id), savings: parseSavingsControls(raw.savings, id) };
    case 'export':
    case 'evaluate':
    case 'sweep':
      checkKeys(raw, ['type', 'id', 'plan'], type, id);
      return { type, id, plan: parsePlanControls(raw.plan, id) } as WebviewRequest;
  }
}

/**
 * Reads a numeric array that crossed the webview boundary. VS Code transfers typed arrays as
 * typed arrays, but older hosts or JSON fallbacks may deliver plain arrays or index-keyed
 * objects; accept those and always hand back the typed array the code expects.
 */
export function asFloat32(v: unknown, length: number, what: string): Float32Array {
  const out = v instanceof Float32Array ? v : toNumbers(v, what, Float32Array);
  if (out.length !== length) throw new ProtocolError(`${what} has ${out.length} values, expected ${length}`);
  return out;
}

/** Like `asFloat32`, for unsigned integer arrays. */
export function asUint32(v: unknown, length: number, what: string): Uint32Array {
  const out = v instanceof Uint32Array ? v : toNumbers(v, what, Uint32Array);
  if (out.length !== length) throw new ProtocolError(`${what} has ${out.length} values, expected ${length}`);
  return out;
}

function toNumbers<T extends Float32Array | Uint32Array>(v: unknown, what: string, ctor: { from(a: ArrayLike<number>): T }): T {
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return ctor.from(v as unknown as ArrayLike<number>);
  if (Array.isArray(v)) return ctor.from(v as number[]);
  if (isRecord(v)) {
    const n = Object.keys(v).length;
    const a = new Array<number>(n);
    for (let i = 0; i < n; i++) {
      const x = v[String(i)];
      if (typeof x !== 'number') throw new ProtocolError(`${what} is not a numeric array`);
      a[i] = x;
    }
    return ctor.from(a);
  }
  throw new ProtocolError(`${what} is not a numeric array`);
}

/** Row count of a kind in a spectra payload. */
export function headRows(s: Pick<SpectraPayload, 'layers' | 'kvHeads' | 'queryHeads'>, kind: 'key' | 'query'): number {
  return s.layers * (kind === 'key' ? s.kvHeads : s.queryHeads);
}

/** Re-types a spectra payload after transfer (host -> webview), checking every array's length. */
export function normalizeSpectra(raw: unknown): SpectraPayload {
  if (!isRecord(raw)) throw new ProtocolError('spectra must be an object');
  const layers = int(raw.layers, 1, LIMITS.maxLayers, 'spectra.layers');
  const kvHeads = int(raw.kvHeads, 1, LIMITS.maxHeads, 'spectra.kvHeads');
  const queryHeads = int(raw.queryHeads, 1, LIMITS.maxHeads, 'spectra.queryHeads');
  const width = int(raw.width, 1, LIMITS.maxRank, 'spectra.width');
  const k = layers * kvHeads;
  const q = layers * queryHeads;
  return {
    backend: String(raw.backend),
    seconds: real(raw.seconds, 0, Number.MAX_VALUE, 'spectra.seconds'),
    layers,
    kvHeads,
    queryHeads,
    width,
    keySingular: asFloat32(raw.keySingular, k * width, 'spectra.keySingular'),
    keyEnergy: asFloat32(raw.keyEnergy, k * width, 'spectra.keyEnergy'),
    keyEffRank: asUint32(raw.keyEffRank, k * 3, 'spectra.keyEffRank'),
    keyStableRank: asFloat32(raw.keyStableRank, k, 'spectra.keyStableRank'),
    querySingular: asFloat32(raw.querySingular, q * width, 'spectra.querySingular'),
    queryEnergy: asFloat32(raw.queryEnergy, q * width, 'spectra.queryEnergy'),
    queryEffRank: asUint32(raw.queryEffRank, q * 3, 'spectra.queryEffRank'),
    queryStableRank: asFloat32(raw.queryStableRank, q, 'spectra.queryStableRank'),
    planMethod: raw.planMethod === 'qk-svd' || raw.planMethod === 'calibrated' ? raw.planMethod : 'key-svd',
    planEnergy: asFloat32(raw.planEnergy, k * width, 'spectra.planEnergy'),
  };
}

function sweepPoint(v: unknown, what: string): SweepPointView {
  if (!isRecord(v)) throw new ProtocolError(`${what} must be an object`);
  const method = oneOf(v.method, [...SWEEP_METHODS, 'original', 'plan'] as const, `${what}.method`);
  const rank = v.rank === null || v.rank === undefined ? null : int(v.rank, 1, LIMITS.maxRank, `${what}.rank`);
  const threshold = v.threshold === null || v.threshold === undefined ? null : real(v.threshold, 0, 1, `${what}.threshold`);
  return {
    method,
    rank,
    threshold,
    keyCacheBytesPerToken: real(v.keyCacheBytesPerToken, 0, Number.MAX_VALUE, `${what}.keyCacheBytesPerToken`),
    perplexity: real(v.perplexity, 0, Number.MAX_VALUE, `${what}.perplexity`),
    deltaPercent: real(v.deltaPercent, -100, Number.MAX_VALUE, `${what}.deltaPercent`),
    seconds: real(v.seconds, 0, Number.MAX_VALUE, `${what}.seconds`),
  };
}

/**
 * Checks a sweep result after transfer (host -> webview): the original comes first, every
 * method point is of a known method and carries the field of the sweep's axis.
 */
export function normalizeSweep(raw: unknown): SweepResult {
  if (!isRecord(raw)) throw new ProtocolError('sweep must be an object');
  const axis = oneOf(raw.axis, ['rank', 'energy'] as const, 'sweep.axis');
  if (!Array.isArray(raw.points) || raw.points.length < 1 || raw.points.length > 4096) throw new ProtocolError('sweep.points must be a non-empty array');
  const points = raw.points.map((p, i) => sweepPoint(p, `sweep.points[${i}]`));
  if (points[0].method !== 'original' || points.slice(1).some((p) => p.method === 'original' || p.method === 'plan')) throw new ProtocolError('sweep.points must hold the original first, then method points');
  for (const [i, p] of points.entries()) {
    if (i > 0 && (axis === 'rank' ? p.rank === null : p.threshold === null)) throw new ProtocolError(`sweep.points[${i}] has no ${axis === 'rank' ? 'rank' : 'threshold'}`);
  }
  const plan = sweepPoint(raw.plan, 'sweep.plan');
  if (plan.method !== 'plan') throw new ProtocolError('sweep.plan.method must be "plan"');
  return {
    axis,
    points,
    plan,
    planMethod: oneOf(raw.planMethod, SWEEP_METHODS, 'sweep.planMethod'),
    tokens: int(raw.tokens, 0, Number.MAX_SAFE_INTEGER, 'sweep.tokens'),
    textFile: String(raw.textFile),
    backend: String(raw.backend),
    seconds: real(raw.seconds, 0, Number.MAX_VALUE, 'sweep.seconds'),
  };
}
