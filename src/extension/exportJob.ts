/**
 * Export inside the job worker. The core export already stages into a hidden sibling folder
 * and renames it into place only on success (removing it on error or cancel), refuses
 * non-empty destinations and never writes into the source; this adds the panel's plan.
 */
import { promises as fsp } from 'node:fs';
import type { CancelToken, ProgressFn } from '../core/errors';
import { exportFactored } from '../core/export';
import type { JobRequest, JobResults } from './jobProtocol';

/** Runs the export of `req` (plan built by the host from the panel's validated controls). */
export async function runExportJob(req: Extract<JobRequest, { kind: 'export' }>, cancel: CancelToken, progress: ProgressFn): Promise<JobResults['export']> {
  const result = await exportFactored({ source: req.dir, dest: req.dest, method: req.plan.method, plan: req.plan, planSource: 'the panel plan', calibration: req.calibration, threads: req.threads, cancel, progress });
  const files = (await fsp.readdir(result.dest)).sort();
  const mb = (result.bytesWritten / 1e6).toFixed(1);
  return { dest: result.dest, files, notes: [`${mb} MB written, ${result.config.rope_mode} mode, method ${result.plan.method}`] };
}
