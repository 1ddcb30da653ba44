/**
 * `factored-keys` command-line entry. Every failure is one `error:` line on stderr and a
 * non-zero exit; `--debug` adds the stack.
 */
import { CancelledError, FactoredKeysError } from '../core/errors';
import { runAnalyze } from './analyze';
import { runInspect } from './inspect';
import { runEval } from './eval';
import { runExport } from './export';
import { runPlan } from './plan';
import { runSavings } from './savings';
import { processIo, type CliIo } from './io';

type Command = (argv: string[], io: CliIo) => Promise<number>;

/** Commands register here; later modules add analyze, plan, export, savings, eval. */
export const COMMANDS: Record<string, { run: Command; summary: string }> = {
  inspect: { run: runInspect, summary: 'inspect <checkpoint> [--json]            attention layout of a checkpoint' },
  analyze: { run: runAnalyze, summary: 'analyze <checkpoint> [--json] [--backend auto|cpu|webgpu|cuda] [--calibrate] [--threads N]   key/query spectra per head' },
  plan: { run: runPlan, summary: 'plan <checkpoint> [--method m] (--rank R | --fraction F | --energy E | --budget-bytes-per-token N) [--override L:G=R,...] [--out plan.json] [--json]   per-KV-head ranks' },
  export: { run: runExport, summary: 'export <checkpoint> <outdir> --method key-svd|qk-svd (--rank R | --fraction F | --energy E | --budget-bytes-per-token N | --plan plan.json) [--force] [--json]   write a factored checkpoint' },
  savings: { run: runSavings, summary: 'savings [<checkpoint>] [--layers L --kv-heads H --head-dim D] --key-rank R --context N [--batch B] [--bytes-per-value 2] [--json]   KV-cache bytes before/after' },
  eval: { run: runEval, summary: 'eval <checkpoint> --text FILE --tokenizer bytes|<tokenizer.json> [--seq 256] [--backend B] [--method m --rank R | --plan plan.json] [--json]   perplexity (original, exported or planned)' },
};

function usage(): string {
  return ['usage: factored-keys <command> [options]', '', 'commands:', ...Object.values(COMMANDS).map((c) => `  ${c.summary}`), '', 'add --debug to any command for stack traces'].join('\n') + '\n';
}

export async function main(argv: string[], io: CliIo = processIo): Promise<number> {
  const [command, ...rest] = argv;
  const debug = rest.includes('--debug');
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    io.stdout(usage());
    return command ? 0 : 2;
  }
  if (command === '--version') {
    io.stdout(`${typeof __FK_VERSION__ === "string" ? __FK_VERSION__ : "dev"}\n`);
    return 0;
  }
  const entry = COMMANDS[command];
  if (!entry) {
    io.stderr(`error: unknown command "${command}" (commands: ${Object.keys(COMMANDS).join(', ')})\n`);
    return 2;
  }
  try {
    return await entry.run(rest.filter((a) => a !== '--debug'), io);
  } catch (e) {
    if (e instanceof CancelledError) {
      io.stderr('error: cancelled\n');
      return 130;
    }
    const message = e instanceof FactoredKeysError ? e.message : `internal error: ${(e as Error)?.message ?? String(e)}`;
    io.stderr(`error: ${errorLine(message)}\n`);
    if (debug && e instanceof Error && e.stack) io.stderr(e.stack + '\n');
    return 1;
  }
}

/** Longest error line printed; messages quote names from untrusted files, which may be huge. */
const MAX_ERROR_CHARS = 1000;

/**
 * One printable line: newlines collapsed, control characters (terminal escapes from hostile
 * tensor names or file contents) shown as \uXXXX, and the length capped.
 */
export function errorLine(message: string): string {
  const line = message
    .replace(/\s*\n\s*/g, ' ')
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return line.length > MAX_ERROR_CHARS ? `${line.slice(0, MAX_ERROR_CHARS)}…` : line;
}

declare const __FK_VERSION__: string;
