/**
 * Runs core jobs in a child process (jobProcess.ts) under `withProgress`, with cancellation, a
 * status bar item naming the backend while work runs, and one-line errors. A job process that
 * crashes or is OOM-killed fails that job in one line; the extension host is not touched.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { startJobProcess } from './jobProcess';
import type { JobRequest, JobResults } from './jobProtocol';

/** A job failure: `cancelled` when the user stopped it, `userFacing` for input problems. */
export class JobError extends Error {
  constructor(
    message: string,
    readonly cancelled: boolean,
    readonly userFacing: boolean,
  ) {
    super(message);
    this.name = 'JobError';
  }
}

/** How long a cancelled job may take to stop on its own before its process is killed. */
const CANCEL_GRACE_MS = 15_000;

/**
 * How long the status bar item stays after the last job ends, showing how it ended, so that a
 * job of a fraction of a second still leaves a readable trace (then the item disappears).
 */
const STATUS_LINGER_MS = 1500;

/** Spawns job workers; one status bar item shows what runs and on which backend. */
export class JobRunner implements vscode.Disposable {
  private readonly status: vscode.StatusBarItem;
  private readonly running = new Set<string>();
  private lingerTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly extensionPath: string,
    private readonly log: vscode.OutputChannel,
  ) {
    this.status = vscode.window.createStatusBarItem('factoredKeys.backend', vscode.StatusBarAlignment.Left, 50);
    this.status.name = 'Factored Keys backend';
    this.status.command = 'factoredKeys.selectBackend';
  }

  dispose(): void {
    clearTimeout(this.lingerTimer);
    this.status.dispose();
  }

  /** Spinning while jobs run; after the last one, how it ended for `STATUS_LINGER_MS`, then hidden. */
  private showStatus(ended?: { label: string; outcome: 'done' | 'cancelled' | 'failed' }): void {
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    if (this.running.size > 0) {
      const [first] = this.running;
      this.status.text = `$(sync~spin) Factored Keys: ${first}`;
      this.status.tooltip = 'Factored Keys is working (click to choose the compute backend)';
      this.status.show();
      return;
    }
    if (!ended) {
      this.status.hide();
      return;
    }
    const icon = { done: '$(check)', cancelled: '$(circle-slash)', failed: '$(error)' }[ended.outcome];
    this.status.text = `${icon} Factored Keys: ${ended.label} (${ended.outcome})`;
    this.status.tooltip = 'Factored Keys finished (click to choose the compute backend)';
    this.status.show();
    this.lingerTimer = setTimeout(() => this.showStatus(), STATUS_LINGER_MS);
  }

  /**
   * Runs `request` in a job process. `label` names the job in the status bar together with the
   * backend; `onProgress` receives the job's progress; `token` cancels.
   */
  run<K extends JobRequest['kind']>(request: Extract<JobRequest, { kind: K }>, label: string, token?: vscode.CancellationToken, onProgress?: (done: number, total: number, label: string) => void): Promise<JobResults[K]> {
    const job = startJobProcess(path.join(this.extensionPath, 'dist', 'jobWorker.js'), request, {
      onProgress,
      onStderr: (line) => this.log.appendLine(`[${label}] ${line}`),
    });
    const started = Date.now();
    this.running.add(label);
    this.showStatus();
    this.log.appendLine(`[${new Date().toISOString()}] ${label}: started`);
    return new Promise<JobResults[K]>((resolve, reject) => {
      let settled = false;
      let killTimer: ReturnType<typeof setTimeout> | undefined;
      const finish = (error: JobError | null, result?: unknown) => {
        if (settled) return;
        settled = true;
        if (killTimer) clearTimeout(killTimer);
        cancelSub?.dispose();
        this.running.delete(label);
        this.showStatus({ label, outcome: error ? (error.cancelled ? 'cancelled' : 'failed') : 'done' });
        const secs = ((Date.now() - started) / 1000).toFixed(2);
        this.log.appendLine(`[${new Date().toISOString()}] ${label}: ${error ? (error.cancelled ? 'cancelled' : `failed: ${error.message}`) : 'done'} after ${secs} s`);
        if (error) job.kill();
        if (error) reject(error);
        else resolve(result as JobResults[K]);
      };
      const cancelSub = token?.onCancellationRequested(() => {
        job.cancel();
        killTimer = setTimeout(() => finish(new JobError('cancelled', true, true)), CANCEL_GRACE_MS);
      });
      void job.outcome.then((o) => (o.kind === 'done' ? finish(null, o.result) : finish(new JobError(o.message, o.cancelled, o.userFacing))));
    });
  }

  /** Like `run`, inside a cancellable notification with progress. */
  withProgress<K extends JobRequest['kind']>(request: Extract<JobRequest, { kind: K }>, title: string, statusLabel: string, onProgress?: (done: number, total: number, label: string) => void, external?: vscode.CancellationToken): Promise<JobResults[K]> {
    return Promise.resolve(
      vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, async (progress, token) => {
        let last = 0;
        const source = new vscode.CancellationTokenSource();
        const subs = [token.onCancellationRequested(() => source.cancel()), external?.onCancellationRequested(() => source.cancel())];
        try {
          return await this.run(request, statusLabel, source.token, (done, total, label) => {
            const pct = total > 0 ? (100 * done) / total : 0;
            progress.report({ increment: Math.max(0, pct - last), message: label });
            last = Math.max(last, pct);
            onProgress?.(done, total, label);
          });
        } finally {
          subs.forEach((s) => s?.dispose());
          source.dispose();
        }
      }),
    );
  }
}
