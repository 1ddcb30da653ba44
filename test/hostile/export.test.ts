/**
 * Export failure safety: a full disk (real tmpfs when mountable, and injected ENOSPC at many
 * byte positions) gives one clear error and no destination; SIGKILL at random points of a
 * spawned export never leaves a destination that looks complete unless it is complete.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';
import { FactoredKeysError } from '../../src/core/errors';
import { exportFactored } from '../../src/core/export/export';
import { REPORT_FILE } from '../../src/core/export/format';
import { CLI, cleanErrorProblems, ensureBuilt, FIXTURES, runCli, scratchDir } from './cliRunner';

const MISTRAL = path.join(FIXTURES, 'mistral-bytes');
const EXPORT_ARGS = ['--method', 'key-svd', '--rank', '8'];

/** Entries of a folder that are not the exporter's hidden temporary folders. */
function visible(dir: string): string[] {
  return fs.readdirSync(dir).filter((e) => !/^\..*\.fk-(partial|old)-/.test(e));
}

/** File name -> size of a finished export, the reference a complete destination must match. */
function listing(dir: string): Record<string, number> {
  return Object.fromEntries(fs.readdirSync(dir).sort().map((f) => [f, fs.statSync(path.join(dir, f)).size]));
}

/** Whether `dir` is a complete export: same files and sizes as the reference, and it opens. */
async function isCompleteExport(dir: string, reference: Record<string, number>): Promise<string | undefined> {
  const got = listing(dir);
  if (JSON.stringify(got) !== JSON.stringify(reference)) return `files differ from a finished export: ${JSON.stringify(got)}`;
  try {
    const ckpt = await openCheckpoint(dir);
    await ckpt.close();
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as { factored_keys?: unknown };
    if (!config.factored_keys) return 'config.json has no factored_keys block';
    JSON.parse(fs.readFileSync(path.join(dir, REPORT_FILE), 'utf8'));
  } catch (e) {
    return `does not open: ${(e as Error).message}`;
  }
  return undefined;
}

/**
 * Runs `body` with a fresh 1 MiB tmpfs mounted at a scratch folder (skipping the test, with
 * `skipReason`, where mounting needs a root this process lacks); unmounts and removes it after.
 */
async function withFullDisk(t: { skip: (reason: string) => void }, prefix: string, skipReason: string, body: (mount: string) => Promise<void>): Promise<void> {
  const mount = scratchDir(prefix);
  try {
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mount], { stdio: 'ignore' });
    } catch {
      t.skip(skipReason);
      return;
    }
    try {
      await body(mount);
    } finally {
      execFileSync('umount', [mount]);
    }
  } finally {
    fs.rmSync(mount, { recursive: true, force: true });
  }
}

test('disk full on a real 1 MiB tmpfs: one error line, no destination, --force keeps the old one', async (t) => {
  ensureBuilt();
  await withFullDisk(t, 'fk-enospc-', 'cannot mount a tmpfs here (needs root); the injected ENOSPC test below still runs', async (mount) => {
    const dest = path.join(mount, 'out');
    const run = await runCli(['export', MISTRAL, dest, ...EXPORT_ARGS], 60_000);
    assert.deepEqual(cleanErrorProblems(run, [dest, 'no space left', 'ENOSPC']), []);
    assert.deepEqual(fs.readdirSync(mount), [], 'nothing left on the full file system');

    fs.mkdirSync(dest);
    fs.writeFileSync(path.join(dest, 'keep.txt'), 'previous export');
    const forced = await runCli(['export', MISTRAL, dest, ...EXPORT_ARGS, '--force'], 60_000);
    assert.deepEqual(cleanErrorProblems(forced, [dest, 'no space left']), []);
    assert.deepEqual(fs.readdirSync(mount), ['out']);
    assert.deepEqual(fs.readdirSync(dest), ['keep.txt'], 'the old destination survives a failed --force export');
  });
});

test('disk full on a real tmpfs with the copy and eigensolves on worker threads: FactoredKeysError, nothing left', async (t) => {
  await withFullDisk(t, 'fk-enospc-worker-', 'cannot mount a tmpfs here (needs root)', async (mount) => {
    const dest = path.join(mount, 'out');
    await assert.rejects(
      exportFactored({ source: MISTRAL, dest, method: 'key-svd', policy: { kind: 'uniform', rank: 8 } }, { copyInWorker: true, eigenWorkers: true }),
      (e: unknown) => e instanceof FactoredKeysError && /no space left on the device \(ENOSPC/.test(e.message) && e.message.includes(dest),
    );
    assert.deepEqual(fs.readdirSync(mount), [], 'nothing left on the full file system');
  });
});

test('injected ENOSPC at many byte positions: FactoredKeysError, no destination, no temporary folder', async (t) => {
  const parent = scratchDir('fk-enospc-inject-');
  // Every write path the exporter uses: FileHandle.write (tensor data), fsp.writeFile (json),
  // fsp.copyFile (extra files). Each is replaced by one that fails once `budget` bytes are spent.
  const probe = await fs.promises.open(path.join(parent, 'probe'), 'w');
  const handleProto = Object.getPrototypeOf(probe) as { write: (...a: unknown[]) => Promise<{ bytesWritten: number }> };
  await probe.close();
  fs.rmSync(path.join(parent, 'probe'));
  const original = { write: handleProto.write, writeFile: fs.promises.writeFile, copyFile: fs.promises.copyFile };
  let budget = Infinity;
  const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
  const spend = (n: number) => {
    if (n > budget) {
      budget = 0;
      throw enospc();
    }
    budget -= n;
  };
  handleProto.write = async function (this: unknown, ...args: unknown[]) {
    const buf = args[0] as Uint8Array | string;
    spend(typeof buf === 'string' ? Buffer.byteLength(buf) : ((args[2] as number | undefined) ?? buf.byteLength));
    return original.write.apply(this, args);
  };
  (fs.promises as { writeFile: unknown }).writeFile = async (file: fs.PathLike, data: string | Uint8Array, opts?: unknown) => {
    spend(typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength);
    return original.writeFile(file, data, opts as fs.WriteFileOptions);
  };
  (fs.promises as { copyFile: unknown }).copyFile = async (from: fs.PathLike, to: fs.PathLike, mode?: number) => {
    spend(fs.statSync(from).size);
    return original.copyFile(from, to, mode);
  };
  try {
    const exportTo = (dest: string) => exportFactored({ source: MISTRAL, dest, method: 'key-svd', policy: { kind: 'uniform', rank: 8 } });
    await exportTo(path.join(parent, 'full'));
    const total = Object.values(listing(path.join(parent, 'full'))).reduce((a, b) => a + b, 0);
    fs.rmSync(path.join(parent, 'full'), { recursive: true });
    // Fail at the start, inside every shard, in the json files, and one byte before the end.
    const points = [0, 1, 8, 1000, ...Array.from({ length: 12 }, (_, i) => Math.floor(((i + 0.5) * total) / 12)), total - 5000, total - 1];
    for (const at of points) {
      budget = at;
      const dest = path.join(parent, `out-${at}`);
      await assert.rejects(exportTo(dest), (e: unknown) => e instanceof FactoredKeysError && /no space left on the device \(ENOSPC\)/.test(e.message) && e.message.includes(dest), `ENOSPC after ${at} bytes`);
      assert.deepEqual(fs.readdirSync(parent), [], `ENOSPC after ${at} bytes left ${fs.readdirSync(parent).join(', ')}`);
    }
    t.diagnostic(`injected ENOSPC at ${points.length} byte positions of a ${total}-byte export: all rejected cleanly, nothing left`);
  } finally {
    handleProto.write = original.write;
    (fs.promises as { writeFile: unknown }).writeFile = original.writeFile;
    (fs.promises as { copyFile: unknown }).copyFile = original.copyFile;
    budget = Infinity;
    fs.rmSync(parent, { recursive: true, force: true });
  }
});

/** How and when a spawned export is stopped. */
interface KillPlan {
  readonly signal: 'SIGKILL' | 'SIGINT';
  readonly delayMs?: number;
  /** Stop after this many progress lines on stderr. */
  readonly lines?: number;
}

/** Spawns an export and signals it after `delayMs`, or after `lines` stderr progress lines. */
function exportAndKill(dest: string, kill: KillPlan, force: boolean): Promise<{ killed: boolean; code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, 'export', MISTRAL, dest, ...EXPORT_ARGS, '--progress', ...(force ? ['--force'] : [])], { stdio: ['ignore', 'ignore', 'pipe'] });
    let killed = false;
    let stderr = '';
    const doKill = () => {
      if (!killed && child.exitCode === null) {
        killed = true;
        child.kill(kill.signal);
      }
    };
    const timer = kill.delayMs !== undefined ? setTimeout(doKill, kill.delayMs) : undefined;
    let lines = 0;
    child.stderr!.on('data', (b: Buffer) => {
      stderr += b.toString();
      lines += b.toString().split('\n').length - 1;
      if (kill.lines !== undefined && lines >= kill.lines) doKill();
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      // SIGKILL shows as a null code; SIGINT is handled (cancel, exit 130)
      resolve({ killed: killed && (code === null || code === 130), code, stderr });
    });
  });
}

test('SIGKILL at random points of a spawned export never leaves a destination that looks complete', async (t) => {
  ensureBuilt();
  const parent = scratchDir('fk-kill-');
  try {
    const refDir = path.join(parent, 'reference');
    const started = Date.now();
    const ref = await runCli(['export', MISTRAL, refDir, ...EXPORT_ARGS], 60_000);
    assert.equal(ref.code, 0, ref.stderr);
    const fullMs = Date.now() - started;
    const reference = listing(refDir);
    const refLines = (await new Promise<number>((resolve) => {
      const c = spawn(process.execPath, [CLI, 'export', MISTRAL, path.join(parent, 'count'), ...EXPORT_ARGS, '--progress'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let n = 0;
      c.stderr!.on('data', (b: Buffer) => (n += b.toString().split('\n').length - 1));
      c.on('close', () => resolve(n));
    })) as number;
    fs.rmSync(path.join(parent, 'count'), { recursive: true, force: true });

    const seed = Number(process.env.FK_KILL_SEED ?? Date.now() % 100_000);
    let state = seed;
    const random = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const outcomes = { noDestination: 0, oldKept: 0, newComplete: 0, finished: 0, cancelledClean: 0 };
    const runs = Number(process.env.FK_KILL_RUNS ?? 16);
    for (let i = 0; i < runs; i++) {
      // Odd runs keep an older complete export at the destination and replace it with --force;
      // every fourth run sends SIGINT (a cancel), which must also remove the temporary folder.
      const force = i % 2 === 1;
      const dir = path.join(parent, `run-${i}`);
      fs.mkdirSync(dir);
      const dest = path.join(dir, 'out');
      if (force) fs.cpSync(refDir, dest, { recursive: true });
      const oldInode = force ? fs.statSync(dest).ino : undefined;
      const kill: KillPlan =
        i % 4 === 3
          ? { signal: 'SIGINT', lines: 1 + Math.floor(random() * (refLines - 1)) }
          : i % 4 < 2
            ? { signal: 'SIGKILL', delayMs: Math.floor(random() * fullMs * 1.1) }
            : { signal: 'SIGKILL', lines: 1 + Math.floor(random() * refLines) };
      const what = `run ${i} (${JSON.stringify(kill)}${force ? ', --force' : ''})`;
      const r = await exportAndKill(dest, kill, force);
      const names = visible(dir);
      if (kill.signal === 'SIGINT' && r.killed) {
        assert.equal(r.code, 130, `${what}: exit ${r.code}`);
        assert.match(r.stderr, /^error: cancelled$/m, what);
        assert.deepEqual(fs.readdirSync(dir), force ? ['out'] : [], `${what}: a cancelled export left ${fs.readdirSync(dir).join(', ')}`);
        outcomes.cancelledClean++;
      }
      if (names.length === 0) {
        assert.ok(r.killed, `${what}: export exited ${r.code} without a destination`);
        outcomes.noDestination++;
        continue;
      }
      assert.deepEqual(names, ['out'], `${what}: unexpected entries ${names.join(', ')}`);
      const problem = await isCompleteExport(dest, reference);
      assert.equal(problem, undefined, `${what}: destination exists but ${problem}`);
      if (!r.killed) outcomes.finished++;
      else if (oldInode !== undefined && fs.statSync(dest).ino === oldInode) outcomes.oldKept++;
      else outcomes.newComplete++;
    }
    // A later export to the same destination clears what the killed ones left behind.
    const last = path.join(parent, `run-0`, 'out');
    const again = await runCli(['export', MISTRAL, last, ...EXPORT_ARGS, '--force'], 60_000);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(fs.readdirSync(path.join(parent, 'run-0')), ['out'], 'stale temporary folders removed');
    t.diagnostic(
      `kill loop (seed ${seed}): ${runs} exports killed at random points (full run ${fullMs} ms, ${refLines} progress lines): ` +
        `${outcomes.noDestination} left no destination, ${outcomes.oldKept} kept the previous complete export (--force), ${outcomes.newComplete} were stopped after the new export was in place, ` +
        `${outcomes.finished} finished first, ${outcomes.cancelledClean} SIGINT cancels left no temporary folder; none incomplete`,
    );
  } finally {
    fs.rmSync(parent, { recursive: true, force: true });
  }
});

test('export refuses the source folder, its inside, a file, a symlink and a non-empty folder without --force (CLI)', async () => {
  ensureBuilt();
  const root = scratchDir('fk-refuse-');
  try {
    const source = path.join(root, 'source');
    fs.cpSync(path.join(FIXTURES, 'layouts/llama'), source, { recursive: true });
    const before = listing(source);
    const file = path.join(root, 'a-file');
    fs.writeFileSync(file, 'x');
    const full = path.join(root, 'full');
    fs.mkdirSync(full);
    fs.writeFileSync(path.join(full, 'keep.txt'), 'user data');
    const link = path.join(root, 'link');
    fs.symlinkSync(full, link);
    const cases: [string, string[]][] = [
      [source, ['inside the source']],
      [path.join(source, 'out'), ['inside the source']],
      [root, ['contains the source']],
      [file, ['not a folder']],
      [link, ['symbolic link']],
      [full, ['not empty', '--force']],
    ];
    for (const [dest, mentions] of cases) {
      const run = await runCli(['export', source, dest, ...EXPORT_ARGS], 60_000);
      assert.deepEqual(cleanErrorProblems(run, mentions), [], dest);
    }
    assert.deepEqual(listing(source), before, 'source untouched');
    assert.deepEqual(fs.readdirSync(full), ['keep.txt'], 'non-empty destination untouched');
    assert.deepEqual(fs.readdirSync(root).sort(), ['a-file', 'full', 'link', 'source'], 'nothing else created');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
