/**
 * FK_SPECTRUM_TRACE=<file>: a timeline of one analysis, for benchmarks on many-core and GPU
 * hosts (where the wall time goes: worker start-up, reads, Gram products, eigensolves). Off
 * unless the variable is set; times are milliseconds since the analysis started, taken from a
 * clock every thread shares (`performance.timeOrigin + performance.now()`).
 */
import { writeFileSync } from 'node:fs';

/** A clock comparable across worker threads (epoch milliseconds, sub-millisecond resolution). */
export function sharedClock(): number {
  return performance.timeOrigin + performance.now();
}

/** Whether tracing is on (checked in workers too: they inherit the environment). */
export function tracing(): boolean {
  return Boolean(process.env.FK_SPECTRUM_TRACE);
}

/** What a worker measured for one task: when it got it, when its session was ready, and when the read, the Gram and the eigensolves were done. */
export interface TaskTiming {
  readonly received: number;
  readonly ready: number;
  /** When the task's rows had been read (the worker reads them itself). */
  readonly read: number;
  readonly gram: number;
  readonly eigen: number;
  /** Warm-up only: when the worker's entry started, and when onnxruntime had loaded there. */
  readonly booted?: number;
  readonly loaded?: number;
}

/** Collects events on the main thread and writes them as JSON when the analysis ends. */
export class SpectrumTrace {
  private readonly start = sharedClock();
  private readonly events: Record<string, unknown>[] = [];

  /** Records `what` now (or at the shared-clock time `at`), with any details. */
  mark(what: string, details: Record<string, unknown> = {}, at = sharedClock()): void {
    this.events.push({ t: +(at - this.start).toFixed(3), what, ...details });
  }

  /** A worker's task timing, relative to the analysis start. */
  relative(timing: TaskTiming): Record<string, number> {
    return Object.fromEntries(Object.entries(timing).map(([k, v]) => [k, +(v - this.start).toFixed(3)]));
  }

  write(summary: Record<string, unknown>): void {
    const file = process.env.FK_SPECTRUM_TRACE;
    if (file) writeFileSync(file, JSON.stringify({ ...summary, events: this.events }) + '\n', { flag: 'a' });
  }
}
