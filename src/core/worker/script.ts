/** Where the worker-thread entry lives (src/core/worker/worker.ts, bundled to dist/worker.js). */
import { existsSync } from 'node:fs';
import * as path from 'node:path';

/**
 * The worker entry: next to the bundle (dist/worker.js), else the built bundle when running from
 * sources (it starts much faster than a TypeScript entry), else the TypeScript entry itself
 * through tsx (only when this process runs under tsx). Undefined when none is usable.
 */
export function workerScript(): string | undefined {
  const candidates = [path.join(__dirname, 'worker.js'), path.resolve(__dirname, '../../../dist/worker.js'), path.resolve(__dirname, './dev-bootstrap.mjs')];
  for (const c of candidates) {
    if (!existsSync(c)) continue;
    // the TypeScript entry only loads when this process runs under tsx
    if (c.endsWith('.mjs') && !process.execArgv.some((a) => a.includes('tsx'))) continue;
    return c;
  }
  return undefined;
}
