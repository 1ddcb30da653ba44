/**
 * Job worker entry (bundled to dist/jobWorker.js): runs one analysis, export, evaluation, sweep or backend probe
 * with the core library and reports progress, the result, or a one-line error to the host.
 * The extension runs it as a child process (jobProcess.ts: request and cancel arrive as IPC
 * messages); it also runs as a worker thread (workerData, shared cancel flag).
 */
// first: no onnxruntime telemetry (see src/core/compute/noTelemetry.ts)
import '../core/compute/noTelemetry';
import { parentPort, workerData } from 'node:worker_threads';
import { buildLayout } from '../core/arch';
import { openCheckpoint } from '../core/checkpoint/checkpoint';
import { parseBackendChoice, probeBackends } from '../core/compute/session';
import { CancelledError, FactoredKeysError, type CancelToken } from '../core/errors';
import { comparePlan, PlanEvaluator, sweepPerplexity } from '../core/eval/evaluate';
import { tokenizeFile } from '../core/eval/tokenize';
import { analyzeHeads, energiesOf } from '../core/factor/basis';
import { analyzeSpectra } from '../core/spectrum';
import { runExportJob } from './exportJob';
import type { JobCommand } from './jobProcess';
import type { JobEvent, JobRequest, JobResults, JobWorkerData } from './jobProtocol';
import { checkpointSummary, spectraPayload, sweepResult, withPlanEnergies } from './panelModel';

const asProcess = !parentPort && typeof process.send === 'function';
const flag = new Int32Array(asProcess ? new SharedArrayBuffer(4) : (workerData as JobWorkerData).cancelFlag);
const cancel: CancelToken = {
  get cancelled() {
    return Atomics.load(flag, 0) === 1;
  },
};

function post(event: JobEvent, transfer: ArrayBuffer[] = []): void {
  if (!asProcess) parentPort?.postMessage(event, transfer);
  // a child process ends once its last word is delivered
  else process.send?.(event, undefined, {}, () => (event.type === 'progress' ? undefined : process.disconnect?.()));
}

const progress = (done: number, total: number, label: string) => post({ type: 'progress', done, total, label });

async function run(req: JobRequest): Promise<{ result: unknown; transfer: ArrayBuffer[] }> {
  switch (req.kind) {
    case 'probe': {
      const result: JobResults['probe'] = { probes: await probeBackends() };
      return { result, transfer: [] };
    }
    case 'analyze': {
      const ckpt = await openCheckpoint(req.dir);
      try {
        const layout = buildLayout(ckpt);
        const summary = checkpointSummary(ckpt.dir, layout, ckpt.files.length);
        const result = await analyzeSpectra(ckpt, layout, {
          backend: parseBackendChoice(req.backend, 'factoredKeys.backend'),
          threads: req.threads > 0 ? req.threads : undefined,
          cancel,
          progress,
        });
        let spectra = spectraPayload(result, summary);
        if (req.method === 'qk-svd' || req.method === 'calibrated') {
          // Query-aware bases: their eigenvalues are what a qk-svd / calibrated rank keeps (docs/QK_SVD.md, docs/CALIBRATED.md).
          const bases = await analyzeHeads(ckpt, layout, req.method, { cancel, calibration: req.calibration, progress: (d, t, label) => progress(d, t, req.method === 'calibrated' ? label : `qk-svd bases, layer ${d + 1} of ${t}`) });
          spectra = withPlanEnergies(spectra, req.method, energiesOf(bases));
        }
        const out: JobResults['analyze'] = { spectra, notes: result.notes ?? [] };
        const transfer = [spectra.planEnergy, spectra.keySingular, spectra.keyEnergy, spectra.keyEffRank, spectra.keyStableRank, spectra.querySingular, spectra.queryEnergy, spectra.queryEffRank, spectra.queryStableRank].map((a) => a.buffer as ArrayBuffer);
        return { result: out, transfer };
      } finally {
        await ckpt.close();
      }
    }
    case 'evaluate': {
      const { ids } = await tokenizeFile(req.textFile, req.tokenizer);
      const backend = parseBackendChoice(req.backend, 'factoredKeys.backend');
      const c = await comparePlan(req.dir, req.plan, ids, { seq: req.seq, maxWindows: req.maxWindows > 0 ? req.maxWindows : undefined, backend, threads: req.threads > 0 ? req.threads : undefined, cancel, progress }, req.calibration);
      const result: JobResults['evaluate'] = {
        original: c.original.perplexity,
        factored: c.plan.perplexity,
        deltaPercent: c.deltaPercent,
        tokens: c.plan.tokens,
        textFile: req.textFile,
        backend: c.plan.backend,
        seconds: c.original.seconds + c.plan.seconds,
      };
      return { result, transfer: [] };
    }
    case 'sweep': {
      const started = performance.now();
      const { ids } = await tokenizeFile(req.textFile, req.tokenizer);
      const backend = parseBackendChoice(req.backend, 'factoredKeys.backend');
      const options = { seq: req.seq, maxWindows: req.maxWindows > 0 ? req.maxWindows : undefined, backend, threads: req.threads > 0 ? req.threads : undefined, cancel };
      const evaluator = await PlanEvaluator.open(req.dir);
      try {
        evaluator.calibration = req.calibration;
        // the calibrated curve joins the other two once a calibration text is known
        const methods = req.calibration ? (['key-svd', 'qk-svd', 'calibrated'] as const) : (['key-svd', 'qk-svd'] as const);
        const spec = { methods, ...(req.axis === 'rank' ? { ranks: req.values } : { thresholds: req.values }) };
        // One more step than the sweep itself: the panel's own plan, measured on the same tokens.
        let steps = 1;
        const points = await sweepPerplexity(evaluator, ids, spec, { ...options, progress: (done, total, label) => progress(done, (steps = total + 1), label) });
        const planned = await evaluator.plan(req.plan, ids, options);
        progress(steps, steps, 'the plan');
        const result: JobResults['sweep'] = sweepResult(req.axis, points, req.plan, planned, req.textFile, (performance.now() - started) / 1000);
        return { result, transfer: [] };
      } finally {
        await evaluator.close();
      }
    }
    case 'export': {
      const result: JobResults['export'] = await runExportJob(req, cancel, progress);
      return { result, transfer: [] };
    }
  }
}

function start(req: JobRequest): void {
  run(req).then(
    ({ result, transfer }) => post({ type: 'done', result }, transfer),
    (e: unknown) => {
      const cancelled = e instanceof CancelledError;
      const userFacing = e instanceof FactoredKeysError;
      const message = cancelled ? 'cancelled' : userFacing ? (e as Error).message : `internal error: ${(e as Error)?.stack ?? String(e)}`;
      post({ type: 'error', message, userFacing, cancelled });
    },
  );
}

if (asProcess) {
  let started = false;
  process.on('message', (c: JobCommand) => {
    if (c.type === 'cancel') Atomics.store(flag, 0, 1);
    else if (c.type === 'start' && !started) {
      started = true;
      start(c.request);
    }
  });
  // the host went away (closed window, crashed host): nobody wants the result
  process.on('disconnect', () => process.exit(0));
} else {
  start((workerData as JobWorkerData).request);
}
