/** `--backend`: an explicitly named provider must work; only `auto` may fall back. */
import { explicitBackendProblem, parseBackendChoice, type BackendChoice } from '../core/compute/session';
import { FactoredKeysError } from '../core/errors';
import type { ParsedArgs } from './args';

/** Parses `--backend` (default auto) and refuses a named provider that is not usable here. */
export async function backendFromArgs(args: ParsedArgs, command: string): Promise<BackendChoice> {
  const raw = args.values.get('backend');
  const backend = raw === undefined ? 'auto' : parseBackendChoice(raw, `${command}: --backend`);
  if (backend !== 'auto') {
    const problem = await explicitBackendProblem(backend);
    if (problem) throw new FactoredKeysError(`${command}: --backend ${backend} is not usable here: ${problem} (--backend auto falls back to the CPU)`);
  }
  return backend;
}
