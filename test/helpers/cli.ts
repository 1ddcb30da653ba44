/** Runs the CLI in-process (same entry point as dist/cli.js) and checks its one-line errors. */
import assert from 'node:assert/strict';
import { main } from '../../src/cli/main';

export interface CliResult {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/** `factored-keys <argv…>` in this process: exit code and everything written to stdout and stderr. */
export async function cli(...argv: string[]): Promise<CliResult> {
  let out = '';
  let err = '';
  const code = await main(argv, { stdout: (t) => (out += t), stderr: (t) => (err += t) });
  return { code, out, err };
}

/** Exactly one line on stderr, starting with `error:` and matching `re`, nothing on stdout, exit 1. */
export function assertOneError(r: CliResult, re: RegExp): void {
  assert.equal(r.code, 1, r.err);
  assert.equal(r.out, '');
  const lines = r.err.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, r.err);
  assert.match(lines[0], /^error: /);
  assert.match(lines[0], re);
}
