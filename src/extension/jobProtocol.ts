/**
 * Messages between the extension host and its job worker (dist/jobWorker.js). Jobs that read
 * whole checkpoints (analysis, export) or load native code (backend probing) run there, so the
 * extension host's event loop stays responsive and a native crash cannot take it down.
 */
import type { CalibrationSpec } from '../core/calibration/moments';
import type { BackendProbe } from '../core/compute/session';
import type { RankPlan } from '../core/plan';
import type { EvaluationResult, SpectraPayload, SweepAxis, SweepResult } from '../protocol';

/** What to run. Paths come from the host (the user's own choices), never from the webview. */
export type JobRequest =
  | { readonly kind: 'analyze'; readonly dir: string; readonly backend: string; readonly threads: number; readonly method: 'key-svd' | 'qk-svd' | 'calibrated'; readonly calibration?: CalibrationSpec }
  | { readonly kind: 'export'; readonly dir: string; readonly dest: string; readonly plan: RankPlan; readonly backend: string; readonly threads: number; readonly calibration?: CalibrationSpec }
  | { readonly kind: 'evaluate'; readonly dir: string; readonly plan: RankPlan; readonly textFile: string; readonly tokenizer: string; readonly seq: number; readonly maxWindows: number; readonly backend: string; readonly threads: number; readonly calibration?: CalibrationSpec }
  | { readonly kind: 'sweep'; readonly dir: string; readonly plan: RankPlan; readonly axis: SweepAxis; readonly values: readonly number[]; readonly textFile: string; readonly tokenizer: string; readonly seq: number; readonly maxWindows: number; readonly backend: string; readonly threads: number; readonly calibration?: CalibrationSpec }
  | { readonly kind: 'probe' };

/** Result type of each job kind. */
export interface JobResults {
  analyze: { readonly spectra: SpectraPayload; readonly notes: readonly string[] };
  export: { readonly dest: string; readonly files: readonly string[]; readonly notes: readonly string[] };
  probe: { readonly probes: readonly BackendProbe[] };
  evaluate: EvaluationResult;
  sweep: SweepResult;
}

/** Data the worker starts with: the request and the shared cancel flag (Int32Array over it; 1 = cancel). */
export interface JobWorkerData {
  readonly request: JobRequest;
  readonly cancelFlag: SharedArrayBuffer;
}

/** Worker -> host. */
export type JobEvent =
  | { readonly type: 'progress'; readonly done: number; readonly total: number; readonly label: string }
  | { readonly type: 'done'; readonly result: unknown }
  | { readonly type: 'error'; readonly message: string; readonly userFacing: boolean; readonly cancelled: boolean };
