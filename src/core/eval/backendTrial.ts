/**
 * `--backend auto` for evaluation: the provider that evaluates this model fastest here.
 *
 * Where more than one provider is usable, the first evaluation of a model shape times each on
 * the same small piece of the real work (the first layers with the embedding, a couple of
 * windows) and estimates the whole run from it: session building (weight conversion and upload)
 * plus the runs, both per layer. The fastest is remembered per shape in the user's cache, like
 * the spectrum's choice, so later evaluations pay nothing. With one usable provider, or too
 * little work for a trial to pay off, nothing is timed.
 */
import * as os from 'node:os';
import { choiceKey, recalledChoice, rememberChoice } from '../compute/backendChoice';
import { gpuCandidates, usableBackends, type BackendName } from '../compute/session';
import { throwIfCancelled, type CancelToken } from '../errors';
import type { ModelSpec } from './model';

/** Layers a trial builds (with the embedding). */
export const TRIAL_LAYERS = 2;
/** Windows a trial runs (twice: a warm-up, then the timed run). */
export const TRIAL_WINDOWS = 2;
/** Fewest windows for which a trial is worth its cost. */
export const MIN_WINDOWS_FOR_TRIAL = 16;

/** What one candidate's piece of the work cost. */
export interface TrialTiming {
  /** Building the session of {@link TRIAL_LAYERS} layers (or all, if fewer). */
  readonly buildMs: number;
  /** The timed run of {@link TRIAL_WINDOWS} windows (or all, if fewer) through them. */
  readonly runMs: number;
  /** Layers and windows actually used. */
  readonly layers: number;
  readonly windows: number;
}

/** Times one provider on the trial's piece (built by the caller, which owns sessions). */
export type TrialMeasure = (backend: BackendName) => Promise<TrialTiming>;

export interface EvalBackendChoice {
  readonly backend: BackendName;
  /** How `auto` decided, for the user (undefined when there was nothing to decide). */
  readonly note?: string;
}

/** Test hook: the providers `auto` may consider, instead of this machine's. */
export const evalTrialInternals: { autoCandidates?: readonly BackendName[] } = {};

/** The remembered choice's key: what decides the winner (shape, dtype, window length, threads). */
function shapeOf(spec: ModelSpec, seq: number): string {
  return `eval|${spec.weightDtype}|L${spec.layers}|d${spec.hidden}|q${spec.queryHeads}|v${spec.vocab}|seq${seq}`;
}

/** Estimated milliseconds of the whole evaluation on the candidate timed as `t`. */
export function estimateMs(t: TrialTiming, layers: number, windows: number): number {
  const perLayer = layers / Math.max(1, t.layers);
  return t.buildMs * perLayer + (t.runMs / Math.max(1, t.windows)) * windows * perLayer;
}

/**
 * The provider for an `auto` evaluation of `windows` windows: remembered, timed, or (too little
 * work, one provider) the first usable one.
 */
export async function chooseEvalBackend(spec: ModelSpec, windows: number, options: { seq: number; threads?: number; cancel?: CancelToken }, measure: TrialMeasure): Promise<EvalBackendChoice> {
  // keyed by the providers that may exist, so that recalling needs no probe
  const possible: BackendName[] = evalTrialInternals.autoCandidates ? [...evalTrialInternals.autoCandidates] : ['cpu', ...gpuCandidates()];
  if (possible.length === 1) return { backend: possible[0] };
  const threads = Math.max(1, options.threads ?? os.availableParallelism());
  const key = choiceKey(shapeOf(spec, options.seq), threads, possible);
  const known = recalledChoice('eval', key, possible);
  if (known) return { backend: known.backend, note: `auto: using ${known.backend}, measured fastest for this model shape on ${known.measured.slice(0, 10)}` };
  const usable: BackendName[] = evalTrialInternals.autoCandidates ? possible : [...(await usableBackends()).filter((b) => b !== 'cpu'), 'cpu'];
  if (usable.length === 1) return { backend: usable[0] };
  if (windows < MIN_WINDOWS_FOR_TRIAL) return { backend: usable[0], note: `auto: ${windows} windows are too few to time ${usable.join(' and ')}; using ${usable[0]}` };
  const estimates: Record<string, number> = {};
  const failures: string[] = [];
  let best: { backend: BackendName; ms: number } | undefined;
  for (const b of usable) {
    throwIfCancelled(options.cancel);
    try {
      const ms = estimateMs(await measure(b), spec.layers, windows);
      estimates[b] = ms;
      if (!best || ms < best.ms) best = { backend: b, ms };
    } catch (e) {
      // a provider that cannot run this model is simply not chosen
      estimates[b] = Number.POSITIVE_INFINITY;
      failures.push(`${b} failed (${String((e as Error)?.message ?? e).split('\n')[0].slice(0, 120)})`);
    }
  }
  if (!best) return { backend: 'cpu', note: `auto: every provider failed its trial (${failures.join('; ')}); using cpu` };
  // per window and layer, so the record reads the same for any text length
  const perWindowLayer = Object.fromEntries(Object.entries(estimates).map(([b, ms]) => [b, ms / (windows * spec.layers)]));
  rememberChoice('eval', key, best.backend, perWindowLayer);
  const timed = Object.entries(estimates)
    .map(([b, ms]) => `${b} ${Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : 'failed'}`)
    .join(', ');
  return { backend: best.backend, note: `auto: timed ${usable.join(', ')} on ${TRIAL_LAYERS} layers; estimated ${timed}; using ${best.backend}` };
}
