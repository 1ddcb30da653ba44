/** Minimal, strict argument parsing: unknown flags are errors, not silently ignored. */
import { FactoredKeysError } from '../core/errors';
import type { CommandSpec } from './options';

export interface FlagSpec {
  /** Flags that take a value. */
  readonly values?: readonly string[];
  /** Flags that are booleans. */
  readonly booleans?: readonly string[];
  /** Value flags that may be repeated (their values accumulate in `lists`). */
  readonly repeatable?: readonly string[];
}

export interface ParsedArgs {
  readonly positionals: string[];
  /** Single-valued flags. */
  readonly values: Map<string, string>;
  readonly booleans: Set<string>;
  /** Repeatable flags, every value in order. */
  readonly lists: Map<string, string[]>;
}

/** The parser's view of a command's option table. */
export function flagSpecOf(spec: CommandSpec): FlagSpec {
  return {
    values: spec.options.filter((o) => o.value && !o.repeatable).map((o) => o.flag),
    booleans: spec.options.filter((o) => !o.value).map((o) => o.flag),
    repeatable: spec.options.filter((o) => o.value && o.repeatable).map((o) => o.flag),
  };
}

/** Whether an argument list asks for help (`--help` or `-h` anywhere). */
export function wantsHelp(argv: readonly string[]): boolean {
  return argv.some((a) => a === '--help' || a === '-h');
}

export function parseArgs(argv: readonly string[], specOrCommand: FlagSpec | CommandSpec, command: string): ParsedArgs {
  const spec: FlagSpec = 'options' in specOrCommand ? flagSpecOf(specOrCommand) : specOrCommand;
  const values = new Map<string, string>();
  const booleans = new Set<string>();
  const lists = new Map<string, string[]>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('-') || a === '-') {
      positionals.push(a);
      continue;
    }
    if (!a.startsWith('--')) throw new FactoredKeysError(`${command}: unknown option ${a} (options start with --)`);
    const eq = a.indexOf('=');
    const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    if (spec.booleans?.includes(name)) {
      if (eq >= 0) throw new FactoredKeysError(`${command}: --${name} takes no value`);
      booleans.add(name);
    } else if (spec.values?.includes(name) || spec.repeatable?.includes(name)) {
      let v: string | undefined;
      if (eq >= 0) v = a.slice(eq + 1);
      else {
        v = argv[i + 1];
        // `--rank --json` is a missing value, not a rank of "--json"
        if (v !== undefined && v.startsWith('--')) v = undefined;
        else i++;
      }
      if (v === undefined) throw new FactoredKeysError(`${command}: --${name} needs a value`);
      if (spec.repeatable?.includes(name)) {
        lists.set(name, [...(lists.get(name) ?? []), v]);
      } else {
        if (values.has(name)) throw new FactoredKeysError(`${command}: --${name} is given more than once`);
        values.set(name, v);
      }
    } else {
      throw new FactoredKeysError(`${command}: unknown option --${name}`);
    }
  }
  return { positionals, values, booleans, lists };
}

/** Indexes in `argv` of the positional arguments, skipping flag values (lenient: never throws). */
export function positionalIndexes(argv: readonly string[], spec: FlagSpec): number[] {
  const out: number[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('-') || a === '-') out.push(i);
    else if (a.startsWith('--') && !a.includes('=') && (spec.values?.includes(a.slice(2)) || spec.repeatable?.includes(a.slice(2)))) i++;
  }
  return out;
}

/** Options of {@link numberFlag}. */
export interface NumberOptions {
  /** Whole numbers only (plain decimal digits: no hex, no exponent, no fraction). */
  readonly integer?: boolean;
  /** Smallest allowed value (inclusive). */
  readonly min?: number;
  /** Values must be strictly greater than this. */
  readonly above?: number;
  /** Largest allowed value (inclusive). */
  readonly max?: number;
}

const INTEGER = /^[+-]?\d+$/;
const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)$/;

/**
 * Parses a number written in plain decimal notation (`16`, `0.25`, `.5`). `0x10`, `1e1`,
 * `Infinity`, empty and padded strings are errors, so a typo never becomes another value.
 */
export function parseStrictNumber(raw: string, what: string, opts: NumberOptions = {}): number {
  const ok = opts.integer ? INTEGER.test(raw) : DECIMAL.test(raw);
  const v = Number(raw);
  if (!ok || !Number.isFinite(v)) {
    throw new FactoredKeysError(`${what} must be ${opts.integer ? 'an integer in decimal digits' : 'a decimal number'}, got "${raw}"`);
  }
  if (opts.integer && !Number.isSafeInteger(v)) throw new FactoredKeysError(`${what} is too large, got ${raw}`);
  if (opts.above !== undefined && !(v > opts.above)) throw new FactoredKeysError(`${what} must be greater than ${opts.above}, got ${raw}`);
  if (opts.min !== undefined && v < opts.min) throw new FactoredKeysError(`${what} must be at least ${opts.min}, got ${raw}`);
  if (opts.max !== undefined && v > opts.max) throw new FactoredKeysError(`${what} must be at most ${opts.max}, got ${raw}`);
  return v;
}

export function numberFlag(args: ParsedArgs, name: string, command: string, opts: NumberOptions = {}): number | undefined {
  const raw = args.values.get(name);
  if (raw === undefined) return undefined;
  return parseStrictNumber(raw, `${command}: --${name}`, opts);
}
