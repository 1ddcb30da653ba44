/** Minimal, strict argument parsing: unknown flags are errors, not silently ignored. */
import { FactoredKeysError } from '../core/errors';

export interface FlagSpec {
  /** Flags that take a value. */
  readonly values?: readonly string[];
  /** Flags that are booleans. */
  readonly booleans?: readonly string[];
}

export interface ParsedArgs {
  readonly positionals: string[];
  readonly values: Map<string, string>;
  readonly booleans: Set<string>;
}

export function parseArgs(argv: readonly string[], spec: FlagSpec, command: string): ParsedArgs {
  const values = new Map<string, string>();
  const booleans = new Set<string>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      positionals.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    if (spec.booleans?.includes(name)) {
      if (eq >= 0) throw new FactoredKeysError(`${command}: --${name} takes no value`);
      booleans.add(name);
    } else if (spec.values?.includes(name)) {
      let v: string | undefined;
      if (eq >= 0) v = a.slice(eq + 1);
      else v = argv[++i];
      if (v === undefined) throw new FactoredKeysError(`${command}: --${name} needs a value`);
      values.set(name, v);
    } else {
      throw new FactoredKeysError(`${command}: unknown option --${name}`);
    }
  }
  return { positionals, values, booleans };
}

export function numberFlag(args: ParsedArgs, name: string, command: string, opts: { integer?: boolean; min?: number; max?: number } = {}): number | undefined {
  const raw = args.values.get(name);
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v) || (opts.integer && !Number.isInteger(v))) {
    throw new FactoredKeysError(`${command}: --${name} must be ${opts.integer ? 'an integer' : 'a number'}, got "${raw}"`);
  }
  if (opts.min !== undefined && v < opts.min) throw new FactoredKeysError(`${command}: --${name} must be at least ${opts.min}, got ${raw}`);
  if (opts.max !== undefined && v > opts.max) throw new FactoredKeysError(`${command}: --${name} must be at most ${opts.max}, got ${raw}`);
  return v;
}
