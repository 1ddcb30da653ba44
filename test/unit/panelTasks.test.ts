/**
 * The panel's task bookkeeping (src/extension/panelTasks.ts), with cancellation sources that
 * behave as vscode.CancellationTokenSource does: cancel() after dispose() does nothing.
 * The case of issue 15: an Export started from the Command Palette while an analysis runs keeps
 * a working Cancel, and stays shown as busy, after the analysis ends.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PanelTasks, type BusyView, type CancelSource } from '../../src/extension/panelTasks';

interface Token {
  isCancellationRequested: boolean;
}

class FakeSource implements CancelSource<Token> {
  readonly token: Token = { isCancellationRequested: false };
  disposed = false;
  cancel(): void {
    if (!this.disposed) this.token.isCancellationRequested = true;
  }
  dispose(): void {
    this.disposed = true;
  }
}

type Task = 'analyze' | 'export' | 'evaluate' | 'sweep';

function harness() {
  const sources: FakeSource[] = [];
  const shown: (BusyView<Task> | null)[] = [];
  const tasks = new PanelTasks<Task, Token>(
    () => {
      const s = new FakeSource();
      sources.push(s);
      return s;
    },
    (view) => shown.push(view),
  );
  return { tasks, sources, shown, last: () => shown.at(-1) };
}

describe('panel tasks', () => {
  it('an export started during an analysis can still be cancelled after the analysis ends', () => {
    const { tasks, sources, last } = harness();
    const analysis = tasks.start({ task: 'analyze', backend: 'cpu', label: 'analyzing' });
    const exp = tasks.start({ task: 'export', label: 'exporting' });
    assert.notEqual(analysis.token, exp.token, 'each task has its own token');
    analysis.progress('layer 3/4 (3/4)'); // the export is the one shown
    assert.deepEqual(last(), { task: 'export', label: 'exporting' });
    analysis.end();
    assert.equal(sources[0].disposed, true, "the analysis's source is released");
    assert.equal(sources[1].disposed, false, "the export's source is kept");
    assert.deepEqual(last(), { task: 'export', label: 'exporting' }, 'the panel still shows the export as busy (and its Cancel)');
    assert.equal(tasks.busy, true);
    exp.progress('writing model.safetensors (3/10)');
    assert.deepEqual(last(), { task: 'export', label: 'writing model.safetensors (3/10)' });
    tasks.cancelAll();
    assert.equal(exp.token.isCancellationRequested, true, 'Cancel reaches the export');
    exp.end();
    assert.equal(last(), null);
    assert.equal(tasks.busy, false);
  });

  it('Cancel while both run cancels both; the analysis is shown again when the later task ends first', () => {
    const { tasks, last } = harness();
    const analysis = tasks.start({ task: 'analyze', backend: 'webgpu', label: 'analyzing' });
    const sweep = tasks.start({ task: 'sweep', label: 'sweeping' });
    sweep.end();
    assert.deepEqual(last(), { task: 'analyze', backend: 'webgpu', label: 'analyzing' });
    analysis.progress('layer 1/4 (1/4)');
    assert.deepEqual(last(), { task: 'analyze', backend: 'webgpu', label: 'layer 1/4 (1/4)' });
    const exp = tasks.start({ task: 'export', label: 'exporting' });
    assert.deepEqual(tasks.tasks, ['analyze', 'export']);
    tasks.cancelAll();
    assert.equal(analysis.token.isCancellationRequested, true);
    assert.equal(exp.token.isCancellationRequested, true);
  });

  it('a task that ended is not cancelled, redrawn or ended twice', () => {
    const { tasks, sources, shown } = harness();
    const a = tasks.start({ task: 'evaluate', label: 'evaluating' });
    a.end();
    const n = shown.length;
    a.end();
    a.progress('late');
    assert.equal(shown.length, n);
    tasks.cancelAll();
    assert.equal(sources[0].token.isCancellationRequested, false);
    const b = tasks.start({ task: 'export', label: 'exporting' });
    a.end(); // a stale end must not remove the new task
    assert.deepEqual(tasks.tasks, ['export']);
    b.end();
  });
});
