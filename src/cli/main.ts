/**
 * `factored-keys` command-line entry. Every failure is one `error:` line on stderr and a
 * non-zero exit; `--debug` adds the stack.
 */
import { CancelledError, FactoredKeysError } from '../core/errors';
import { runAnalyze } from './analyze';
import { runInspect } from './inspect';
import { runEval } from './eval';
import { runExport } from './export';
import { runFinetune } from './finetune';
import { runPlan } from './plan';
import { runSavings } from './savings';
import { processIo, type CliIo } from './io';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { resolveHubCache } from '../core/checkpoint/checkpoint';
import { flagSpecOf, positionalIndexes, wantsHelp } from './args';
import { commandHelp, commandSpec, topLevelUsage, type CommandSpec } from './options';

type Command = (argv: string[], io: CliIo) => Promise<number>;

/** Command runners; their arguments and help come from the option table in ./options. */
export const COMMANDS: Record<string, { run: Command; spec: CommandSpec }> = Object.fromEntries(
  (
    [
      ['inspect', runInspect],
      ['analyze', runAnalyze],
      ['plan', runPlan],
      ['export', runExport],
      ['savings', runSavings],
      ['eval', runEval],
      ['finetune', runFinetune],
    ] as const
  ).map(([name, run]) => [name, { run, spec: commandSpec(name) }]),
);

export async function main(argv: string[], io: CliIo = processIo): Promise<number> {
  const [command, ...rest] = argv;
  const debug = rest.includes('--debug');
  if (!command) {
    io.stderr(topLevelUsage());
    return 2;
  }
  if (command === '--help' || command === '-h' || command === 'help') {
    const about = command === 'help' ? rest[0] : undefined;
    if (about !== undefined && Object.hasOwn(COMMANDS, about)) io.stdout(commandHelp(COMMANDS[about].spec));
    else io.stdout(topLevelUsage());
    return 0;
  }
  if (command === '--version') {
    io.stdout(`${typeof __FK_VERSION__ === "string" ? __FK_VERSION__ : "dev"}\n`);
    return 0;
  }
  const entry = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (!entry) {
    io.stderr(`error: unknown command "${command}" (commands: ${Object.keys(COMMANDS).join(', ')})\n`);
    return 2;
  }
  if (wantsHelp(rest)) {
    io.stdout(commandHelp(entry.spec));
    return 0;
  }
  try {
    return await entry.run(await resolveCheckpointArg(rest.filter((a) => a !== '--debug'), entry.spec, io), io);
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

/**
 * A Hugging Face hub cache folder (`models--org--name/`) given as the checkpoint is replaced
 * by the snapshot it resolves to, with a note naming the revision.
 */
async function resolveCheckpointArg(argv: string[], spec: CommandSpec, io: CliIo): Promise<string[]> {
  if (!/^\[?<checkpoint>/.test(spec.args)) return argv;
  const at = positionalIndexes(argv, flagSpecOf(spec))[0];
  if (at === undefined) return argv;
  const input = argv[at];
  if (!(await fsp.stat(input).then((s) => s.isDirectory(), () => false))) return argv;
  const found = await resolveHubCache(path.resolve(input));
  if (!found) return argv;
  const { revision, ref } = found.hub;
  io.stderr(`note: ${input} is a Hugging Face cache folder; using revision ${revision} (${ref ? `refs/${ref}` : 'its only snapshot'})\n`);
  const out = [...argv];
  out[at] = found.snapshot;
  return out;
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
