/**
 * Heavy extension jobs run in a child process (src/extension/jobProcess.ts running
 * dist/jobWorker.js), so that a native crash or an OOM kill ends the job, not the extension
 * host. Killed mid-run with SIGKILL (what the kernel's OOM killer sends), the job fails with one
 * line and the next job runs normally; the same through the extension's JobRunner (jobs.ts,
 * with a stub of the vscode API), whose error is what the panel shows.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import Module from 'node:module';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PlanEvaluator } from '../../src/core/eval';
import type { RankPlan } from '../../src/core/plan';
import { startJobProcess, type JobOutcome } from '../../src/extension/jobProcess';
import type { JobRequest } from '../../src/extension/jobProtocol';
import type { EvaluationResult } from '../../src/protocol';
import { fixture, REPO_ROOT, tempDir } from '../helpers/fixtures';

const WORKER = path.join(REPO_ROOT, 'dist/jobWorker.js');
const MISTRAL = fixture('mistral-bytes');

/** The job processes this test process started (children running jobWorker.js). */
function jobChildren(): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && readFileSync(`/proc/${d}/cmdline`, 'utf8').includes('jobWorker.js')) out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

/** A minimal vscode API for JobRunner: a status bar item, notifications with progress, cancellation tokens. */
function stubVscode() {
  class CancellationTokenSource {
    private listeners: (() => void)[] = [];
    isCancellationRequested = false;
    readonly token = {
      isCancellationRequested: false,
      onCancellationRequested: (f: () => void) => {
        this.listeners.push(f);
        return { dispose: () => (this.listeners = this.listeners.filter((x) => x !== f)) };
      },
    };
    cancel() {
      this.token.isCancellationRequested = true;
      for (const f of this.listeners) f();
    }
    dispose() {}
  }
  return {
    StatusBarAlignment: { Left: 1, Right: 2 },
    ProgressLocation: { Notification: 15 },
    CancellationTokenSource,
    window: {
      createStatusBarItem: () => ({ text: '', tooltip: '', name: '', command: '', show() {}, hide() {}, dispose() {} }),
      withProgress: async (_o: unknown, task: (p: { report(): void }, t: unknown) => Promise<unknown>) => task({ report() {} }, new CancellationTokenSource().token),
    },
  };
}

describe('job process (dist/jobWorker.js as a child process)', () => {
  const tmp = tempDir('fk-jobproc-');
  let plan: RankPlan;
  let text: string;

  before(async () => {
    if (!existsSync(WORKER)) execFileSync(process.execPath, [path.join(REPO_ROOT, 'scripts/build.mjs')], { cwd: REPO_ROOT });
    const ev = await PlanEvaluator.open(MISTRAL);
    plan = await ev.uniformPlan('key-svd', 8);
    await ev.close();
    text = path.join(tmp.dir, 'text.txt');
    writeFileSync(text, readFileSync(fixture('heldout.txt')).subarray(0, 1025));
  });
  after(() => tmp.cleanup());

  const evaluate = (maxWindows = 0, file = text): Extract<JobRequest, { kind: 'evaluate' }> => ({ kind: 'evaluate', dir: MISTRAL, plan, textFile: file, tokenizer: 'bytes', seq: 128, maxWindows, backend: 'cpu', threads: 1 });

  it('runs a job and returns its result (typed arrays intact)', async () => {
    const job = startJobProcess(WORKER, evaluate());
    const o = await job.outcome;
    assert.equal(o.kind, 'done', JSON.stringify(o));
    const r = (o as Extract<JobOutcome, { kind: 'done' }>).result as EvaluationResult;
    assert.equal(r.tokens, 8 * 128);
    assert.ok(r.original > 1 && r.factored > 1);
    const a = startJobProcess(WORKER, { kind: 'analyze', dir: MISTRAL, backend: 'cpu', threads: 1, method: 'key-svd' });
    const ao = await a.outcome;
    assert.equal(ao.kind, 'done');
    const spectra = (ao as { result: { spectra: { keySingular: unknown } } }).result.spectra;
    assert.ok(spectra.keySingular instanceof Float64Array || spectra.keySingular instanceof Float32Array, 'typed arrays survive IPC');
  });

  it('a job process killed mid-run (SIGKILL, as the OOM killer does) fails in one line; the next job runs', async () => {
    const long = path.join(tmp.dir, 'long.txt');
    writeFileSync(long, readFileSync(fixture('heldout.txt')));
    let killed = false;
    const job = startJobProcess(WORKER, { ...evaluate(0, long), seq: 64 }, {
      onProgress: () => {
        if (!killed && job.pid) {
          killed = true;
          process.kill(job.pid, 'SIGKILL');
        }
      },
    });
    const o = await job.outcome;
    assert.ok(killed, 'the job reported progress before it was killed');
    assert.equal(o.kind, 'error');
    const e = o as Extract<JobOutcome, { kind: 'error' }>;
    assert.match(e.message, /^the job process was killed \(SIGKILL/);
    assert.doesNotMatch(e.message, /\n/);
    assert.equal(e.cancelled, false);
    const next = await startJobProcess(WORKER, evaluate(2)).outcome;
    assert.equal(next.kind, 'done', JSON.stringify(next));
    // the killed process's segment files are swept by the next evaluation
    assert.deepEqual(readdirSync(tmpdir()).filter((f) => f.startsWith(`fk-eval-${job.pid}-`)), []);
  });

  it('cancel stops the job between steps', async () => {
    const long = path.join(tmp.dir, 'long.txt');
    let asked = false;
    const job = startJobProcess(WORKER, { ...evaluate(0, long), seq: 64 }, {
      onProgress: () => {
        if (!asked) job.cancel();
        asked = true;
      },
    });
    const o = await job.outcome;
    assert.equal(o.kind, 'error');
    assert.equal((o as Extract<JobOutcome, { kind: 'error' }>).cancelled, true);
    assert.equal((o as Extract<JobOutcome, { kind: 'error' }>).message, 'cancelled');
  });

  it('JobRunner (jobs.ts): a killed job process rejects with one line, the runner stays usable', async () => {
    const load = (Module as unknown as { _load: (req: string, ...rest: unknown[]) => unknown })._load;
    const vscode = stubVscode();
    (Module as unknown as { _load: unknown })._load = (req: string, ...rest: unknown[]) => (req === 'vscode' ? vscode : load(req, ...rest));
    try {
      const { JobRunner, JobError } = await import('../../src/extension/jobs');
      const lines: string[] = [];
      const runner = new JobRunner(REPO_ROOT, { appendLine: (l: string) => lines.push(l) } as never);
      const long = path.join(tmp.dir, 'long.txt');
      let killed = false;
      const failed = await runner
        .run({ ...evaluate(0, long), seq: 64 }, 'Evaluating', undefined, () => {
          if (killed) return;
          killed = true;
          for (const pid of jobChildren()) process.kill(pid, 'SIGKILL');
        })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      assert.ok(failed instanceof JobError, String(failed));
      assert.match(failed.message, /^the job process was killed \(SIGKILL/);
      assert.doesNotMatch(failed.message, /\n/);
      assert.ok(lines.some((l) => /Evaluating: failed: the job process was killed/.test(l)), lines.join('\n'));
      const ok = await runner.run(evaluate(2), 'Evaluating');
      assert.equal(ok.tokens, 2 * 128);
      runner.dispose();
    } finally {
      (Module as unknown as { _load: unknown })._load = load;
    }
  });
});
