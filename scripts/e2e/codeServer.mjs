// Starting real VS Code (code-server) with the packaged extension, for the e2e test and `npm run demo`.
// Everything it starts is stopped by PID (code-server and every process it forked: extension hosts,
// file watchers, pty host); every folder it writes is a throwaway under the OS temp dir.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { killTreeSync, stopTree } from './processTree.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CODE_SERVER_DIR = process.env.FK_CODE_SERVER_DIR ?? path.join(ROOT, '.cache/code-server');
const NODE24 = path.join(CODE_SERVER_DIR, 'node/bin/node');
const ENTRY = path.join(CODE_SERVER_DIR, 'node_modules/code-server/out/node/entry.js');
export const VSIX = path.join(ROOT, 'factored-keys.vsix');

/** Installs code-server + Chromium when missing (scripts/e2e/ensure-code-server.sh). */
export function ensureCodeServer() {
  execFileSync('bash', [path.join(ROOT, 'scripts/e2e/ensure-code-server.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
}

/** Builds this machine's .vsix (`npm run package` for one target, scripts/package.mjs). */
export function packageExtension() {
  execFileSync(process.execPath, [path.join(ROOT, 'scripts/package.mjs'), '--host', '--out', VSIX], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  if (!existsSync(VSIX)) throw new Error(`npm run package did not produce ${VSIX}`);
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts code-server on 127.0.0.1 with the .vsix installed into fresh dirs.
 * options: { workspace, port?, settings?, env?, log?, untrusted? (restricted mode: workspace trust on), vsix?,
 *   onSpawn?(server) (called as soon as code-server runs, before it answers: { pid, dirs, stop() }) }
 *   -> { url, port, pid, dirs, stop() }
 * code-server runs in its own process group; stop() ends it and every process it started.
 */
export async function startCodeServer(options) {
  const base = mkdtempSync(path.join(os.tmpdir(), 'fk-code-server-'));
  const dirs = { base, userData: path.join(base, 'user-data'), extensions: path.join(base, 'extensions'), config: path.join(base, 'config.yaml') };
  mkdirSync(path.join(dirs.userData, 'User'), { recursive: true });
  mkdirSync(dirs.extensions, { recursive: true });
  writeFileSync(dirs.config, 'auth: none\n');
  const settings = {
    'workbench.startupEditor': 'none',
    'workbench.tips.enabled': false,
    'workbench.welcomePage.walkthroughs.openOnInstall': false,
    'telemetry.telemetryLevel': 'off',
    'update.mode': 'none',
    'extensions.autoCheckUpdates': false,
    'extensions.autoUpdate': false,
    // Trust is off (everything trusted) unless a test asks for restricted mode.
    'security.workspace.trust.enabled': options.untrusted === true,
    'files.simpleDialog.enable': true,
    'window.restoreWindows': 'none',
    'workbench.secondarySideBar.defaultVisibility': 'hidden',
    'chat.disableAIFeatures': true,
    ...(options.settings ?? {}),
  };
  writeFileSync(path.join(dirs.userData, 'User/settings.json'), JSON.stringify(settings, null, 2));
  const common = ['--config', dirs.config, '--user-data-dir', dirs.userData, '--extensions-dir', dirs.extensions];
  execFileSync(NODE24, [ENTRY, ...common, '--install-extension', options.vsix ?? VSIX], { stdio: ['ignore', 'ignore', 'inherit'] });
  const port = options.port ?? (await freePort());
  const child = spawn(NODE24, [ENTRY, ...common, '--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry', '--disable-update-check', ...(options.untrusted ? [] : ['--disable-workspace-trust']), '--disable-getting-started-override', options.workspace], {
    env: { ...process.env, ...(options.env ?? {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
    // its own process group, so a Ctrl+C meant for us reaches it only through stop()
    detached: process.platform !== 'win32',
  });
  // if this process dies without stop() (an uncaught error), the server does not outlive it
  const lastResort = () => killTreeSync(child.pid, { group: process.platform !== 'win32' });
  process.once('exit', lastResort);
  let stopping;
  const stop = () =>
    (stopping ??= (async () => {
      await stopTree(child.pid, { group: process.platform !== 'win32' });
      process.off('exit', lastResort);
      // The throwaway user-data and extensions folders go with the server.
      rmSync(base, { recursive: true, force: true, maxRetries: 3 });
    })());
  options.onSpawn?.({ pid: child.pid, dirs, stop });
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk.toString()).slice(-20000);
    options.log?.(chunk.toString());
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const url = `http://127.0.0.1:${port}/?folder=${encodeURIComponent(options.workspace)}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`code-server exited with ${child.exitCode}:\n${output}`);
    }
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`code-server did not start within 60 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    url,
    port,
    pid: child.pid,
    dirs,
    output: () => output,
    stop,
  };
}

/** Chromium launch options for Playwright (Debian's chromium; Playwright's own download is unreachable). */
export const CHROMIUM = {
  executablePath: process.env.FK_CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
};
