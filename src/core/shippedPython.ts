/**
 * The fixed Python files the project ships in `python/` at its root, found from this module's
 * folder: src/core under tsx, dist/ in the bundles and the .vsix.
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { FactoredKeysError } from './errors';

/** The path of `python/<file>`; `what` names it in the error when the installation lacks it. */
export function shippedPythonFile(file: string, what: string): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    const p = path.join(dir, 'python', file);
    if (existsSync(p)) return p;
    dir = path.dirname(dir);
  }
  throw new FactoredKeysError(`${what} python/${file} is missing from this installation`);
}
