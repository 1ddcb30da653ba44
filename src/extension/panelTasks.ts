/**
 * The panel's running tasks (analysis, export, evaluate, sweep) and their cancellation: each
 * task has its own cancellation source for its whole lifetime, Cancel cancels every running
 * task, and the busy state shown is the latest task still running.
 *
 * Before, one shared slot held "the" cancellation source: an Export started from the Command
 * Palette while an analysis ran replaced the analysis's source, and the analysis, ending,
 * disposed and cleared the slot, so the export could no longer be cancelled and the panel
 * showed itself idle while it ran. No vscode import, so it is unit-tested as it is.
 */

/** What a task's cancellation needs (vscode.CancellationTokenSource in the extension). */
export interface CancelSource<Token> {
  readonly token: Token;
  cancel(): void;
  dispose(): void;
}

/** What the panel shows while a task runs (the `busy` host message without its type). */
export interface BusyView<Task extends string> {
  readonly task: Task;
  readonly label: string;
  readonly backend?: string;
}

/** One running task. */
export interface TaskHandle<Token> {
  readonly token: Token;
  /** Updates the task's busy label (shown when it is the latest task running). */
  progress(label: string): void;
  /** The task ended (done, failed or cancelled): call once, in a `finally`. */
  end(): void;
}

interface Running<Task extends string, Token> {
  readonly source: CancelSource<Token>;
  view: BusyView<Task>;
}

export class PanelTasks<Task extends string, Token> {
  private readonly running: Running<Task, Token>[] = [];

  constructor(
    private readonly newSource: () => CancelSource<Token>,
    /** Posts the busy state: the latest running task, or null when none runs. */
    private readonly showBusy: (view: BusyView<Task> | null) => void,
  ) {}

  /** Whether any task runs. */
  get busy(): boolean {
    return this.running.length > 0;
  }

  /** The tasks running, oldest first. */
  get tasks(): Task[] {
    return this.running.map((r) => r.view.task);
  }

  start(view: BusyView<Task>): TaskHandle<Token> {
    const entry: Running<Task, Token> = { source: this.newSource(), view };
    this.running.push(entry);
    this.showBusy(view);
    let ended = false;
    return {
      token: entry.source.token,
      progress: (label) => {
        if (ended) return;
        entry.view = { ...entry.view, label };
        if (this.running.at(-1) === entry) this.showBusy(entry.view);
      },
      end: () => {
        if (ended) return;
        ended = true;
        const at = this.running.indexOf(entry);
        if (at >= 0) this.running.splice(at, 1);
        entry.source.dispose();
        // the task still running (if any) is shown again, so its Cancel stays on screen
        this.showBusy(this.running.at(-1)?.view ?? null);
      },
    };
  }

  /** Cancels every running task (the panel's Cancel button, or the panel closing). */
  cancelAll(): void {
    for (const r of [...this.running]) r.source.cancel();
  }
}
