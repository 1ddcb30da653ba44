/**
 * Spawns the built CLI on hostile inputs with a wall-clock limit and measures its peak memory,
 * so tests can assert "one clean error line, bounded time and memory".
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';

export const REPO_ROOT = path.resolve(__dirname, '../..');
export const FIXTURES = path.resolve(REPO_ROOT, '../shared/fixtures');
export const CLI = path.join(REPO_ROOT, 'dist/cli.js');

/**
 * A fresh scratch folder, on tmpfs (/dev/shm) when there is one: the fuzzer rewrites files
 * thousands of times, and on a busy disk that waits on write-back.
 */
export function scratchDir(prefix: string, preferMemory = false): string {
  const shm = '/dev/shm';
  let parent = os.tmpdir();
  if (preferMemory) {
    try {
      fs.accessSync(shm, fs.constants.W_OK);
      parent = shm;
    } catch {
      // no tmpfs: the system temp folder works, only slower
    }
  }
  return fs.mkdtempSync(path.join(parent, prefix));
}

/** Result of one CLI run. */
export interface CliRun {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
  /** Peak resident set of the child in MiB (undefined when it died before reporting). */
  readonly maxRssMiB?: number;
  readonly timedOut: boolean;
}

let probeFile: string | undefined;

/** A preload that writes the process's peak RSS (KiB) to fd 3 as it exits. */
function rssProbe(): string {
  if (!probeFile) {
    probeFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fk-probe-')), 'rss-probe.cjs');
    fs.writeFileSync(probeFile, "process.on('exit', () => { try { require('fs').writeSync(3, String(process.resourceUsage().maxRSS)); } catch {} });\n");
  }
  return probeFile;
}

/** Builds dist/ when it is missing (the test script builds first; direct runs may not). */
export function ensureBuilt(): void {
  if (!fs.existsSync(CLI)) execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: REPO_ROOT, stdio: 'inherit' });
}

/** Runs `node dist/cli.js ...argv`, killing it after `timeoutMs`. */
export function runCli(argv: readonly string[], timeoutMs: number, env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--max-old-space-size=2048', '--require', rssProbe(), CLI, ...argv], {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const rss: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    (child.stdio[3] as NodeJS.ReadableStream).on('data', (b: Buffer) => rss.push(b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const kib = Number(Buffer.concat(rss).toString());
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        ms: Date.now() - started,
        maxRssMiB: kib > 0 ? kib / 1024 : undefined,
        timedOut,
      });
    });
  });
}

/** Runs `tasks` with at most `limit` in flight, keeping result order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await task(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Longest error line we accept: long enough for paths and names, short enough to read. */
export const MAX_ERROR_LINE = 1200;

/**
 * Problems with a run that should have failed cleanly: exactly one `error:` line on stderr,
 * nothing on stdout, non-zero exit, no internal error, no control characters.
 */
export function cleanErrorProblems(run: CliRun, mentions: readonly string[]): string[] {
  const problems: string[] = [];
  if (run.timedOut) return ['timed out (killed)'];
  if (run.signal) problems.push(`killed by ${run.signal}`);
  if (run.code === 0) problems.push('exit code 0');
  if (run.stdout !== '') problems.push(`stdout not empty: ${JSON.stringify(run.stdout.slice(0, 200))}`);
  const lines = run.stderr.split('\n');
  if (!(lines.length === 2 && lines[1] === '' && lines[0].startsWith('error: '))) {
    problems.push(`stderr is not one error line: ${JSON.stringify(run.stderr.slice(0, 400))}`);
  }
  const line = lines[0];
  if (line.includes('internal error')) problems.push(`internal error: ${line.slice(0, 400)}`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(line)) problems.push(`control characters in the error line: ${JSON.stringify(line.slice(0, 200))}`);
  if (line.length > MAX_ERROR_LINE) problems.push(`error line is ${line.length} characters`);
  for (const m of mentions) if (!line.includes(m)) problems.push(`error line does not mention ${JSON.stringify(m)}: ${line.slice(0, 400)}`);
  return problems;
}
