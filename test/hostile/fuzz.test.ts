/**
 * Fuzzes the checkpoint reader and layout builder with mutated fixtures (see fuzzCore.ts).
 * Runs in a child process so a hang (no progress for HANG_MS) or runaway memory is caught and
 * reported with the case that caused it. FK_FUZZ_RUNS / FK_FUZZ_SEED override the defaults.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FIXTURES, scratchDir } from './cliRunner';
import type { FuzzMessage } from './fuzzMain';

const RUNS = Number(process.env.FK_FUZZ_RUNS ?? 3000);
/** No single case may take this long: the fixtures are at most 13 MB. */
const HANG_MS = 15_000;

test(`checkpoint fuzzing: ${RUNS} mutated fixtures, no uncaught error, hang or out-of-file read`, async (t) => {
  const root = scratchDir('fk-fuzz-', true);
  const started = Date.now();
  try {
    const result = await new Promise<{ done?: Extract<FuzzMessage, { type: 'done' }>; hang?: string; exit?: string }>((resolve) => {
      const child = fork(path.join(__dirname, 'fuzzMain.ts'), [], {
        execArgv: ['--import', 'tsx', '--max-old-space-size=1024'],
        env: { ...process.env, FK_FUZZ_ROOT: root, FK_FUZZ_FIXTURES: FIXTURES, FK_FUZZ_RUNS: String(RUNS) },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      let last = 'before the first case';
      let done: Extract<FuzzMessage, { type: 'done' }> | undefined;
      let watchdog = setTimeout(() => onHang(), HANG_MS);
      const onHang = () => {
        child.kill('SIGKILL');
        resolve({ hang: `no progress for ${HANG_MS} ms; last case: ${last}` });
      };
      child.on('message', (m: FuzzMessage) => {
        clearTimeout(watchdog);
        watchdog = setTimeout(onHang, HANG_MS);
        if (m.type === 'case') last = `#${m.n} ${m.description}`;
        else done = m;
      });
      child.on('exit', (code, signal) => {
        clearTimeout(watchdog);
        resolve(done ? { done } : { exit: `fuzzer exited (code ${code}, signal ${signal}) during ${last}` });
      });
    });
    assert.equal(result.hang, undefined, result.hang);
    assert.ok(result.done, result.exit);
    const d = result.done!;
    const rejected = Object.values(d.rejected).reduce((a, b) => a + b, 0);
    t.diagnostic(
      `fuzz: ${d.tried} cases tried (seed ${d.seed}), ${rejected} rejected cleanly with FactoredKeysError ` +
        `(open ${d.rejected.open ?? 0}, layout ${d.rejected.layout ?? 0}, read ${d.rejected.read ?? 0}), ${d.accepted} accepted with ${d.heads} head reads, ` +
        `${d.failure ? 1 : 0} failures, ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    assert.equal(d.failure, undefined, d.failure);
    assert.ok(d.tried >= RUNS, `only ${d.tried} of ${RUNS} cases ran`);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
