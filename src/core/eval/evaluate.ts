/**
 * Perplexity of original and factored models: one evaluation, original-vs-plan, and sweeps
 * over ranks or energy thresholds for both methods (the panel's quality/savings curve).
 */
import { buildLayout } from '../arch';
import type { AttentionLayout } from '../arch/layout';
import { openCheckpoint, type Checkpoint } from '../checkpoint/checkpoint';
import { bytesPerElement } from '../checkpoint/dtypes';
import type { BackendChoice, BackendName } from '../compute/session';
import { FactoredKeysError, throwIfCancelled, type CancelToken, type ProgressFn } from '../errors';
import type { HeadBasis } from '../factor/basis';
import { energiesOf, requireMethodFeatures } from '../factor/basis';
import { buildPlan, planKeyBytesPerToken } from '../plan/plan';
import type { FactorMethod, RankPlan } from '../plan/types';
import type { CalibrationSpec } from '../calibration/moments';
import { checkpointSource, computeBases, PlanWeights } from './factored';
import { streamNll, type EvalTimings, type Precision, type StreamPlan, type WeightSource } from './forward';
import { CheckpointWeights, readModelSpec, type ModelSpec } from './model';
import { checkTokens, NllAccumulator } from './protocol';

/** Options shared by every evaluation. */
export interface EvalOptions {
  /** Tokens per window (the protocol's --seq). */
  readonly seq: number;
  readonly backend?: BackendChoice;
  readonly threads?: number;
  /** Windows per onnxruntime run (default: from free memory, about 4096 tokens on the CPU, 16 windows on GPUs). */
  readonly batch?: number;
  /** Arithmetic of matrix products (default `auto`: float16 on GPU providers for 16-bit checkpoints). */
  readonly precision?: Precision;
  /** Bytes the evaluation may use (default: what the machine has available; FK_MEMORY_LIMIT). */
  readonly memoryBytes?: number;
  /** Weight bytes per segment (default from the backend and free memory). */
  readonly segmentBytes?: number;
  /** Always spill hidden states between segments to disk (tests; otherwise only when memory is short). */
  readonly spill?: boolean;
  /** Evaluate only the first N windows (quick checks; the protocol itself uses all). */
  readonly maxWindows?: number;
  readonly cancel?: CancelToken;
  readonly progress?: ProgressFn;
}

/** Result of one evaluation. */
export interface EvalResult {
  readonly perplexity: number;
  readonly meanNll: number;
  /** Predicted tokens (windows x seq). */
  readonly tokens: number;
  readonly windows: number;
  /** Execution provider actually used. */
  readonly backend: BackendName;
  /** Why the requested backend was not used, when it was not. */
  readonly fallbackReason?: string;
  /** How `auto` chose the backend, when more than one was usable. */
  readonly backendNote?: string;
  /** Wall-clock seconds: graph build, session creation and all windows. */
  readonly seconds: number;
  /** NLL sum of every window, in order. */
  readonly windowNll: readonly number[];
  /** How it ran: segments, batch sizes, spilling, and the memory estimate. */
  readonly plan?: StreamPlan;
  /** Where the time went (ms): trial, weight reading, graph writing, session creation, runs. */
  readonly timings?: EvalTimings;
}

/**
 * Default windows per run: about 4096 predicted tokens, fewer for large vocabularies so the
 * float32 logits of one run stay near 256 MiB.
 */
export function defaultBatch(seq: number, vocab = 256): number {
  const tokens = Math.min(4096, Math.floor((256 << 20) / (4 * vocab)));
  return Math.max(1, Math.min(64, Math.floor(tokens / seq)));
}

/** Runs the protocol over `ids` with the weights of `source`. */
export async function evaluatePerplexity(source: WeightSource, ids: Int32Array, options: EvalOptions): Promise<EvalResult> {
  const started = performance.now();
  const spec = source.spec;
  if (options.seq > spec.maxPositions) {
    throw new FactoredKeysError(`--seq ${options.seq} is longer than the model's ${spec.maxPositions} positions (config.json ${spec.maxPositionsSource})`);
  }
  let windows = checkTokens(ids, options.seq, spec.vocab, 'text');
  if (options.maxWindows !== undefined) windows = Math.min(windows, Math.max(1, Math.floor(options.maxWindows)));
  throwIfCancelled(options.cancel);
  const r = await streamNll(source, ids, windows, {
    seq: options.seq,
    backend: options.backend,
    threads: options.threads,
    batch: options.batch,
    precision: options.precision,
    memoryBytes: options.memoryBytes,
    segmentBytes: options.segmentBytes,
    spill: options.spill,
    cancel: options.cancel,
    progress: options.progress ? (done, total) => options.progress!(Math.round((done / total) * windows), windows, 'evaluating') : undefined,
  });
  const acc = new NllAccumulator();
  acc.addWindows(r.nll, windows, options.seq);
  return {
    perplexity: acc.perplexity,
    meanNll: acc.meanNll,
    tokens: acc.tokens,
    windows,
    backend: r.backend,
    fallbackReason: r.fallbackReason,
    ...(r.backendNote ? { backendNote: r.backendNote } : {}),
    seconds: (performance.now() - started) / 1000,
    windowNll: acc.windowSums,
    plan: r.plan,
    timings: r.timings,
  };
}

/** Key-cache bytes per token (all layers, batch 1) of the unfactored model. */
export function originalKeyBytesPerToken(layout: AttentionLayout): number {
  return layout.layers.length * layout.kvHeads * layout.headDim * bytesPerElement(layout.dtype);
}

/** Evaluates a checkpoint folder as stored (original, or exported factored checkpoint). */
export async function evaluateCheckpoint(checkpoint: string, ids: Int32Array, options: EvalOptions): Promise<EvalResult> {
  const ckpt = await openCheckpoint(checkpoint);
  try {
    return await evaluatePerplexity(checkpointSource(ckpt), ids, options);
  } finally {
    await ckpt.close();
  }
}

/** An open checkpoint plus what evaluating plans on it needs, with bases cached per method. */
export class PlanEvaluator {
  private readonly basesByMethod = new Map<FactorMethod, Promise<HeadBasis[][]>>();
  readonly spec: ModelSpec;
  readonly layout: AttentionLayout;

  private constructor(readonly ckpt: Checkpoint) {
    if (ckpt.config.factored_keys !== undefined) throw new FactoredKeysError(`${ckpt.dir}/config.json: this checkpoint is already factored; plans apply to original checkpoints`);
    this.spec = readModelSpec(ckpt);
    this.layout = buildLayout(ckpt);
  }

  /** Opens a checkpoint for plan evaluation. Call {@link close} when done. */
  static async open(checkpoint: string): Promise<PlanEvaluator> {
    const ckpt = await openCheckpoint(checkpoint);
    try {
      return new PlanEvaluator(ckpt);
    } catch (e) {
      await ckpt.close();
      throw e;
    }
  }

  private calibrationSpec?: CalibrationSpec;

  /** The calibration text of method `calibrated`; changing it drops calibrated bases computed before. */
  get calibration(): CalibrationSpec | undefined {
    return this.calibrationSpec;
  }

  set calibration(spec: CalibrationSpec | undefined) {
    this.calibrationSpec = spec;
    this.basesByMethod.delete('calibrated');
  }

  /** Full-rank bases for a method (computed once, float64). */
  bases(method: FactorMethod, options: { cancel?: CancelToken; progress?: ProgressFn } = {}): Promise<HeadBasis[][]> {
    let b = this.basesByMethod.get(method);
    if (!b) {
      b = computeBases(this.ckpt, method, { ...options, calibration: this.calibrationSpec }).then((r) => r.bases);
      b.catch(() => this.basesByMethod.delete(method));
      this.basesByMethod.set(method, b);
    }
    return b;
  }

  /** The unfactored model. */
  original(ids: Int32Array, options: EvalOptions): Promise<EvalResult> {
    return evaluatePerplexity(new CheckpointWeights(this.ckpt, this.spec), ids, options);
  }

  /** A plan evaluated in memory (weights rounded to the checkpoint dtype, as export writes them). */
  async plan(plan: RankPlan, ids: Int32Array, options: EvalOptions): Promise<EvalResult> {
    const bases = await this.bases(plan.method, { cancel: options.cancel });
    return evaluatePerplexity(new PlanWeights(this.ckpt, this.spec, this.layout, bases, plan.ranks), ids, options);
  }

  /** A uniform-rank plan for `method`. */
  async uniformPlan(method: FactorMethod, rank: number): Promise<RankPlan> {
    const bases = await this.bases(method);
    return buildPlan({ method, policy: { kind: 'uniform', rank }, model: this.planModel(), energies: energiesOf(bases) });
  }

  /** A per-head energy-threshold plan for `method`. */
  async energyPlan(method: FactorMethod, threshold: number): Promise<RankPlan> {
    const bases = await this.bases(method);
    return buildPlan({ method, policy: { kind: 'energy', threshold }, model: this.planModel(), energies: energiesOf(bases) });
  }

  /** The shape plans for this checkpoint must have. */
  planModel() {
    const l = this.layout;
    return { architecture: l.architecture, layers: l.layers.length, kv_heads: l.kvHeads, head_dim: l.headDim, key_bytes_per_value: bytesPerElement(l.dtype) };
  }

  close(): Promise<void> {
    return this.ckpt.close();
  }
}

/** One point of the quality/savings curve. */
export interface SweepPoint {
  readonly method: FactorMethod | 'original';
  /** Uniform rank, when the sweep is over ranks. */
  readonly rank?: number;
  /** Energy threshold, when the sweep is over thresholds. */
  readonly threshold?: number;
  readonly keyCacheBytesPerToken: number;
  readonly perplexity: number;
  /** Relative change against the original, in percent. */
  readonly deltaPercent: number;
  readonly seconds: number;
}

/** What to sweep: uniform ranks or energy thresholds, for one or both methods. */
export interface SweepSpec {
  readonly methods: readonly FactorMethod[];
  readonly ranks?: readonly number[];
  readonly thresholds?: readonly number[];
}

/**
 * Evaluates the original and then every (method, rank or threshold) plan; returns the points
 * in evaluation order, the original first. Progress counts evaluations.
 */
/** Whether `method` can factor this model (see requireMethodFeatures). */
export function methodSupported(layout: AttentionLayout, method: FactorMethod): boolean {
  try {
    requireMethodFeatures(layout, method);
    return true;
  } catch {
    return false;
  }
}

export async function sweepPerplexity(evaluator: PlanEvaluator, ids: Int32Array, sweep: SweepSpec, options: EvalOptions): Promise<SweepPoint[]> {
  const jobs: { method: FactorMethod; rank?: number; threshold?: number }[] = [];
  // a method the model refuses (qk-svd with q/k norms) is left out of the curve, not an error
  for (const method of sweep.methods.filter((m) => methodSupported(evaluator.layout, m))) {
    for (const rank of sweep.ranks ?? []) jobs.push({ method, rank });
    for (const threshold of sweep.thresholds ?? []) jobs.push({ method, threshold });
  }
  const total = jobs.length + 1;
  const inner: EvalOptions = { ...options, progress: undefined };
  const original = await evaluator.original(ids, inner);
  const points: SweepPoint[] = [{ method: 'original', keyCacheBytesPerToken: originalKeyBytesPerToken(evaluator.layout), perplexity: original.perplexity, deltaPercent: 0, seconds: original.seconds }];
  options.progress?.(1, total, 'original');
  for (const job of jobs) {
    throwIfCancelled(options.cancel);
    const plan = job.rank !== undefined ? await evaluator.uniformPlan(job.method, job.rank) : await evaluator.energyPlan(job.method, job.threshold!);
    const r = await evaluator.plan(plan, ids, inner);
    points.push({
      method: job.method,
      rank: job.rank,
      threshold: job.threshold,
      keyCacheBytesPerToken: planKeyBytesPerToken(plan),
      perplexity: r.perplexity,
      deltaPercent: (r.perplexity / original.perplexity - 1) * 100,
      seconds: r.seconds,
    });
    options.progress?.(points.length, total, `${job.method} ${job.rank !== undefined ? `rank ${job.rank}` : `energy ${job.threshold}`}`);
  }
  return points;
}

/** Original and plan perplexity side by side (the panel's "Evaluate"). */
export interface PlanComparison {
  readonly original: EvalResult;
  readonly plan: EvalResult;
  /** (plan / original − 1) · 100. */
  readonly deltaPercent: number;
  readonly keyCacheBytesPerToken: { readonly before: number; readonly after: number };
}

/**
 * Evaluates the original checkpoint and `plan` (in memory) on the same token ids. Progress runs
 * over both evaluations; cancelling stops between batches.
 */
export async function comparePlan(checkpoint: string, plan: RankPlan, ids: Int32Array, options: EvalOptions, calibration?: CalibrationSpec): Promise<PlanComparison> {
  const evaluator = await PlanEvaluator.open(checkpoint);
  evaluator.calibration = calibration;
  try {
    const half = (offset: number, label: string): ProgressFn | undefined =>
      options.progress ? (done, total) => options.progress!(offset * total + done, 2 * total, label) : undefined;
    const original = await evaluator.original(ids, { ...options, progress: half(0, 'evaluating the original') });
    const planned = await evaluator.plan(plan, ids, { ...options, progress: half(1, `evaluating the ${plan.method} plan`) });
    return {
      original,
      plan: planned,
      deltaPercent: (planned.perplexity / original.perplexity - 1) * 100,
      keyCacheBytesPerToken: { before: originalKeyBytesPerToken(evaluator.layout), after: planKeyBytesPerToken(plan) },
    };
  } finally {
    await evaluator.close();
  }
}
