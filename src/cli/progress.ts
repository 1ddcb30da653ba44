/**
 * Progress of long commands (analyze, plan, export, eval) on stderr.
 *
 * - `bar` (the default when stderr is a terminal): one line, rewritten in place with `\r` and
 *   padded with spaces (no escape sequences, so it works on every terminal), cleared before any
 *   other output and when the command ends.
 * - `lines` (`--progress`): one line per visible change, for logs and pipes.
 * - `off` (`--quiet`, or stderr is not a terminal and `--progress` was not given).
 *
 * Several counters of one command (export factors and writes at the same time) render as one
 * line: `export: factoring layer 12 38% | writing model.safetensors 45%`.
 */
import { FactoredKeysError, type ProgressFn } from '../core/errors';
import type { ParsedArgs } from './args';
import type { CliIo } from './io';

export type ProgressMode = 'bar' | 'lines' | 'off';

/** `--progress` → lines, `--quiet` → off, else a bar when stderr is a terminal, else off. */
export function progressModeFromArgs(args: ParsedArgs, command: string, io: CliIo): ProgressMode {
  const lines = args.booleans.has('progress');
  const quiet = args.booleans.has('quiet');
  if (lines && quiet) throw new FactoredKeysError(`${command}: give --progress or --quiet, not both`);
  if (quiet) return 'off';
  if (lines) return 'lines';
  return io.stderrIsTTY === true ? 'bar' : 'off';
}

/**
 * The counter a core progress label belongs to: its first word, with the finished forms
 * folded into the running ones (`factored` → `factoring`, `calibration …` → `calibrating`).
 */
export function channelOfLabel(label: string): string {
  const word = label.trim().split(/\s+/)[0] ?? '';
  if (word === 'factored' || word === 'factoring') return 'factoring';
  if (word === 'calibration' || word === 'calibrating') return 'calibrating';
  return word || 'progress';
}

interface Channel {
  text: string;
  complete: boolean;
  /** Order of the latest update, so a finished counter hides once a later one is running. */
  seq: number;
}

/** Options of {@link ProgressReporter} (tests pass a clock and a width). */
export interface ProgressOptions {
  /** Least time between two redraws of the bar (default 100 ms). */
  readonly intervalMs?: number;
  readonly now?: () => number;
  /** Terminal width; the bar is cut to one column less so it never wraps. */
  readonly columns?: number;
  /** Text of one counter (default `label NN%`). */
  readonly format?: (done: number, total: number, label: string) => string;
  /** Which counter a label updates (default {@link channelOfLabel}). */
  readonly channelOf?: (label: string) => string;
}

/** The progress display of one command run. */
export class ProgressReporter {
  /** Writes through this: stderr text clears the bar first and redraws it after. */
  readonly io: CliIo;
  private readonly channels = new Map<string, Channel>();
  private seq = 0;
  private shown = '';
  private lastLine = '';
  private lastDraw = -Infinity;
  private finished = false;

  constructor(
    private readonly base: CliIo,
    readonly command: string,
    readonly mode: ProgressMode,
    private readonly options: ProgressOptions = {},
  ) {
    this.io = {
      stdout: (t) => {
        this.clear();
        base.stdout(t);
      },
      stderr: (t) => {
        this.clear();
        base.stderr(t);
        this.draw(true);
      },
      stderrIsTTY: base.stderrIsTTY,
      stderrColumns: base.stderrColumns,
    };
  }

  /** The callback for core code, or undefined when progress is off (core skips the work). */
  get fn(): ProgressFn | undefined {
    if (this.mode === 'off') return undefined;
    return (done, total, label) => this.update(done, total, label);
  }

  private update(done: number, total: number, label: string): void {
    if (this.finished) return;
    const name = (this.options.channelOf ?? channelOfLabel)(label);
    const pct = total > 0 ? Math.min(100, Math.floor((100 * done) / total)) : 0;
    const text = this.options.format ? this.options.format(done, total, label) : `${label} ${pct}%`;
    this.channels.set(name, { text, complete: total > 0 && done >= total, seq: ++this.seq });
    if (this.mode === 'lines') {
      const line = this.render();
      if (line !== this.lastLine) this.base.stderr(`${this.command}: ${line}\n`);
      this.lastLine = line;
    } else {
      this.draw(false);
    }
  }

  /** Every counter, in the order they first appeared; finished ones hide once a later one runs. */
  render(): string {
    const all = [...this.channels.values()];
    return all
      .filter((c) => !c.complete || !all.some((o) => !o.complete && o.seq > c.seq))
      .map((c) => c.text)
      .join(' | ');
  }

  private draw(force: boolean): void {
    if (this.mode !== 'bar' || this.finished || this.channels.size === 0) return;
    const now = (this.options.now ?? performance.now.bind(performance))();
    if (!force && now - this.lastDraw < (this.options.intervalMs ?? 100)) return;
    this.lastDraw = now;
    // a terminal of unknown (0) or tiny width gets 80 columns
    const columns = this.options.columns ?? this.base.stderrColumns ?? 0;
    const width = (columns >= 20 ? columns : 80) - 1;
    let text = `${this.command}: ${this.render()}`;
    if (text.length > width) text = `${text.slice(0, width - 1)}…`;
    if (text === this.shown) return;
    this.base.stderr(`\r${text}${' '.repeat(Math.max(0, this.shown.length - text.length))}`);
    this.shown = text;
  }

  /** Blanks the bar's line and returns the cursor to its start. */
  private clear(): void {
    if (!this.shown) return;
    this.base.stderr(`\r${' '.repeat(this.shown.length)}\r`);
    this.shown = '';
  }

  /** Ends the display: the bar's line is cleared (call it in a `finally`). */
  done(): void {
    this.clear();
    this.finished = true;
  }
}

/** A progress display for `command` chosen by its flags and stderr (see {@link progressModeFromArgs}). */
export function progressFromArgs(args: ParsedArgs, command: string, io: CliIo, options: ProgressOptions = {}): ProgressReporter {
  return new ProgressReporter(io, command, progressModeFromArgs(args, command, io), options);
}

/** A progress callback that prints `label NN%` on stderr whenever the whole percentage changes. */
export function percentProgress(io: CliIo): ProgressFn {
  let lastPct = -1;
  return (done, total, label) => {
    const pct = total > 0 ? Math.floor((100 * done) / total) : 0;
    if (pct !== lastPct) io.stderr(`${label} ${pct}%\n`);
    lastPct = pct;
  };
}
