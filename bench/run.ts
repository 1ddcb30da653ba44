/**
 * Benchmark runner (`npm run bench [-- name ...]`): runs every bench/*.ts module that exports
 * `run()`, or only those whose file name contains one of the given names.
 */
import { readdirSync } from 'node:fs';
import * as path from 'node:path';

async function main(): Promise<void> {
  const filters = process.argv.slice(2).filter((a) => !a.startsWith('--'));
  const files = readdirSync(__dirname)
    .filter((f) => f.endsWith('.ts') && f !== 'run.ts')
    .sort();
  let ran = 0;
  for (const file of files) {
    const name = file.replace(/\.ts$/, '');
    if (filters.length > 0 && !filters.some((f) => name.includes(f))) continue;
    const imported = (await import(path.join(__dirname, file))) as { run?: () => Promise<unknown>; default?: { run?: () => Promise<unknown> } };
    const mod = typeof imported.run === 'function' ? imported : (imported.default ?? {});
    if (typeof mod.run !== 'function') continue;
    process.stderr.write(`\n=== bench ${name} ===\n`);
    await mod.run();
    ran++;
  }
  if (ran === 0) {
    process.stderr.write(`no benchmark matched ${filters.join(', ') || '(none found)'}\n`);
    process.exitCode = 2;
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
});
