/**
 * `npm run demo` as a user runs it: started through npm, with its throwaway folders in a temp
 * dir, opened in Chromium so code-server forks its extension host, file watcher and pty host,
 * Evaluate clicked once (the demo presets the fixture's heldout.txt, so no file is asked for),
 * then SIGINT to the npm process: every process the demo started must be gone, and its temp
 * folders removed.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { chromium, type Browser, type Frame, type Page } from 'playwright-core';
// @ts-expect-error plain ESM helper shared with `npm run demo` (no type declarations)
import { CHROMIUM, ensureCodeServer, freePort, packageExtension, ROOT, VSIX } from '../../scripts/e2e/codeServer.mjs';

const linux = process.platform === 'linux';

/** pid -> [ppid, cmdline] from /proc (read here, independently of the demo's own helpers). */
function procTable(): Map<number, { ppid: number; zombie: boolean; cmd: string }> {
  const t = new Map<number, { ppid: number; zombie: boolean; cmd: string }>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      t.set(Number(e), { ppid: Number(rest[1]), zombie: rest[0] === 'Z', cmd });
    } catch {
      // exited meanwhile
    }
  }
  return t;
}

function treeOf(root: number): { pid: number; cmd: string }[] {
  const t = procTable();
  const out: { pid: number; cmd: string }[] = [];
  const queue = [root];
  while (queue.length) {
    const p = queue.shift()!;
    for (const [pid, info] of t) {
      if (info.ppid === p && !out.some((o) => o.pid === pid)) {
        out.push({ pid, cmd: info.cmd });
        queue.push(pid);
      }
    }
  }
  return out;
}

const running = (pids: number[]): number[] => {
  const t = procTable();
  return pids.filter((p) => t.has(p) && !t.get(p)!.zombie);
};

async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? ` (${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

let demo: ChildProcess | undefined;
let browser: Browser | undefined;
let seen: number[] = [];
const tmp = mkdtempSync(path.join(os.tmpdir(), 'fk-demo-test-'));

after(async () => {
  await browser?.close().catch(() => undefined);
  // whatever a failed run left: by pid, never by name
  const left = [...new Set([...seen, ...(demo?.pid ? treeOf(demo.pid).map((p) => p.pid) : [])])];
  for (const pid of running(left)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  if (demo?.pid && demo.exitCode === null) demo.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
});

test('npm run demo: Evaluate works at the first click, and SIGINT to npm ends every process it started', { skip: !linux && 'reads /proc', timeout: 600_000 }, async () => {
  ensureCodeServer();
  // the e2e suite packages the extension first; a lone run packages it here
  if (!existsSync(VSIX)) packageExtension();
  const port = await freePort();
  let stdout = '';
  demo = spawn('npm', ['run', 'demo'], {
    cwd: ROOT,
    // TMPDIR: code-server's user-data and extensions folders land in this test's temp dir
    env: { ...process.env, TMPDIR: tmp, FK_DEMO_PORT: String(port), FK_DEMO_SKIP_PACKAGE: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  demo.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
  demo.stderr!.on('data', (b: Buffer) => (stdout += b.toString()));
  const npmPid = demo.pid!;
  const url = await waitFor('the demo URL', () => /\[demo\] VS Code \(code-server\) with Factored Keys: (\S+)/.exec(stdout)?.[1], 180_000);
  assert.match(stdout, /Evaluate and Sweep use .*heldout\.txt/);
  const userDataDirs = readdirSync(tmp).filter((d) => d.startsWith('fk-code-server-'));
  assert.equal(userDataDirs.length, 1, `one throwaway code-server folder in ${tmp}: ${userDataDirs}`);

  browser = await chromium.launch(CHROMIUM);
  const page: Page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await page.goto(url);
  // the demo opens the panel on the fixture by itself
  const frame = await waitFor<Frame>(
    'the panel on mistral-bytes',
    async () => {
      for (const f of page.frames()) if ((await f.$('#model-name').then((h) => h?.innerText() ?? null).catch(() => null)) === 'mistral-bytes') return f;
      return null;
    },
    120_000,
  );
  await waitFor('spectra', async () => (await frame.locator('#heat-keys').getAttribute('data-ready')) === 'true', 60_000);
  await frame.locator('#btn-evaluate').click();
  const line = frame.locator('[data-testid=evaluation]');
  const evaluated = await waitFor('a perplexity at the first click', async () => ((await line.innerText()).startsWith('Perplexity') ? line.innerText() : null), 120_000);
  assert.match(evaluated, /tokens of heldout\.txt/);

  // code-server has forked its helpers by now; all of them descend from npm
  const tree = await waitFor('extension host and file watcher', () => {
    const t = treeOf(npmPid);
    return t.some((p) => /--type=extensionHost/.test(p.cmd)) && t.some((p) => /--type=fileWatcher/.test(p.cmd)) ? t : null;
  }, 60_000);
  seen = tree.map((p) => p.pid);
  assert.ok(tree.some((p) => /code-server\/out\/node\/entry\.js/.test(p.cmd)), tree.map((p) => p.cmd).join('\n'));

  const exited = new Promise<number | null>((resolve) => demo!.once('exit', (code) => resolve(code)));
  process.kill(npmPid, 'SIGINT');
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 30_000)))]);
  clearTimeout(timer);
  assert.notEqual(code, 'timeout', `npm run demo did not exit within 30 s of SIGINT:\n${stdout.slice(-2000)}`);
  assert.match(stdout, /\[demo\] SIGINT: stopping code-server/);
  // nothing the demo started outlives it (a short grace for the kernel to reap reparented ones)
  const left = await waitFor('every demo process to end', () => (running(seen).length === 0 ? [] : null), 10_000).catch(() => running(seen));
  const t = procTable();
  assert.deepEqual(left.map((p) => `${p} ${t.get(p)?.cmd.slice(0, 160)}`), [], `processes left after SIGINT (of ${seen.length}):`);
  assert.deepEqual(readdirSync(tmp).filter((d) => d.startsWith('fk-code-server-')), [], 'the throwaway user-data folder is removed');
});
