/**
 * One heavy job (analysis, export, evaluation, sweep, calibration) in a child process running
 * dist/jobWorker.js, not a worker thread of the extension host: a native crash, an abort or an
 * OOM kill of the job ends that process only, and the host turns it into one line.
 *
 * Protocol (Node IPC, structured clone so typed arrays travel as typed arrays):
 * host → child `{ type: 'start', request }`, then optionally `{ type: 'cancel' }`;
 * child → host the {@link JobEvent}s of jobProtocol.ts. No vscode import: tests drive it directly.
 */
import { fork, type ChildProcess } from 'node:child_process';
import type { JobEvent, JobRequest } from './jobProtocol';

/** Host → job process. */
export type JobCommand = { readonly type: 'start'; readonly request: JobRequest } | { readonly type: 'cancel' };

/** How a job ended, as the host sees it. */
export type JobOutcome =
  | { readonly kind: 'done'; readonly result: unknown }
  | { readonly kind: 'error'; readonly message: string; readonly userFacing: boolean; readonly cancelled: boolean };

/** A running job process. */
export interface JobHandle {
  readonly pid: number | undefined;
  /** Settles once, with the job's result, its error, or how the process died. */
  readonly outcome: Promise<JobOutcome>;
  /** Asks the job to stop between steps (it then reports `cancelled`). */
  cancel(): void;
  /** Ends the process now (after a cancel that was not honoured in time). */
  kill(): void;
}

/** Options for {@link startJobProcess}. */
export interface JobProcessOptions {
  onProgress?: (done: number, total: number, label: string) => void;
  /** Lines the child writes to stderr (onnxruntime warnings, crashes). */
  onStderr?: (line: string) => void;
  /** Extra environment (FK_MEMORY_LIMIT, for one). */
  env?: Record<string, string>;
}

/** One line for a job process that ended without reporting. */
export function deathMessage(code: number | null, signal: NodeJS.Signals | null, lastStderr: string | undefined): string {
  const why =
    signal === 'SIGKILL'
      ? 'was killed (SIGKILL: out of memory, or ended from outside)'
      : signal
        ? `was ended by ${signal}${signal === 'SIGSEGV' || signal === 'SIGABRT' || signal === 'SIGBUS' ? ' (a native crash)' : ''}`
        : `exited with code ${code}`;
  const detail = lastStderr ? `: ${lastStderr.slice(0, 200)}` : '';
  return `the job process ${why} before finishing${detail}; the extension is unaffected, run the job again`;
}

/**
 * Starts `script` (dist/jobWorker.js) as a child process running `request`. Works in the
 * VS Code extension host (Electron run as Node through ELECTRON_RUN_AS_NODE) and in plain Node.
 */
export function startJobProcess(script: string, request: JobRequest, options: JobProcessOptions = {}): JobHandle {
  const child: ChildProcess = fork(script, [], {
    execArgv: [],
    serialization: 'advanced',
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env: { ...process.env, ELECTRON_RUN_AS_NODE: '1', ...options.env },
  });
  let lastStderr: string | undefined;
  let pending = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const l of lines) {
      const line = l.trim();
      if (!line) continue;
      lastStderr = line;
      options.onStderr?.(line);
    }
  });
  const outcome = new Promise<JobOutcome>((resolve) => {
    let settled = false;
    const settle = (o: JobOutcome) => {
      if (settled) return;
      settled = true;
      resolve(o);
      // the job reported: the process has nothing left to do
      if (child.exitCode === null && child.signalCode === null) setTimeout(() => child.kill('SIGKILL'), 2000).unref();
    };
    child.on('message', (e: JobEvent) => {
      if (e.type === 'progress') options.onProgress?.(e.done, e.total, e.label);
      else if (e.type === 'done') settle({ kind: 'done', result: e.result });
      else settle({ kind: 'error', message: e.message, userFacing: e.userFacing, cancelled: e.cancelled });
    });
    child.on('error', (e) => settle({ kind: 'error', message: `internal error: could not run the job process (${e.message})`, userFacing: false, cancelled: false }));
    child.on('exit', (code, signal) => {
      if (pending.trim()) lastStderr = pending.trim();
      settle({ kind: 'error', message: deathMessage(code, signal, lastStderr), userFacing: true, cancelled: false });
    });
  });
  const send = (c: JobCommand) => {
    if (child.connected) child.send(c, (e) => void e);
  };
  send({ type: 'start', request });
  return {
    pid: child.pid,
    outcome,
    cancel: () => send({ type: 'cancel' }),
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}
