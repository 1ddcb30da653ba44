// `npm run demo`: builds and packages the extension, installs code-server if missing (into
// .cache/code-server), starts it on 127.0.0.1 with ../shared/fixtures/mistral-bytes open in the
// inspection panel, prints the URL, and keeps running until Ctrl+C (SIGINT), SIGTERM or SIGHUP,
// which stop code-server and every process it started (extension hosts, file watchers, pty host).
//
// The evaluation text is preset to the fixture's heldout.txt (beside or inside the checkpoint
// folder), so Evaluate and Sweep work at the first click.
//
// Environment: FK_DEMO_CHECKPOINT (folder to open), FK_DEMO_PORT (default 8080, or a free one),
// FK_DEMO_EVAL_TEXT (evaluation text), FK_DEMO_SKIP_PACKAGE=1 (use the factored-keys.vsix there is).
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { ensureCodeServer, freePort, packageExtension, ROOT, startCodeServer, VSIX } from './e2e/codeServer.mjs';

const workspace = path.resolve(ROOT, process.env.FK_DEMO_CHECKPOINT ?? '../shared/fixtures/mistral-bytes');
const wanted = Number(process.env.FK_DEMO_PORT ?? 8080);

/** The held-out text for Evaluate and Sweep: FK_DEMO_EVAL_TEXT, else heldout.txt in or beside the checkpoint. */
function demoEvalText(checkpoint, env = process.env) {
  if (env.FK_DEMO_EVAL_TEXT) return path.resolve(env.FK_DEMO_EVAL_TEXT);
  return [path.join(checkpoint, 'heldout.txt'), path.join(path.dirname(checkpoint), 'heldout.txt')].find((f) => existsSync(f));
}

async function portOrFree(port) {
  const net = await import('node:net');
  const free = await new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
  return free ? port : freePort();
}

// Stopping: set up first, so a Ctrl+C while code-server starts also ends it.
let server;
let stopping = false;
const stop = async (signal) => {
  if (stopping) return;
  stopping = true;
  console.log(`[demo] ${signal}: stopping code-server and the processes it started…`);
  try {
    await server?.stop();
  } finally {
    process.exit(0);
  }
};
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => void stop(signal));

console.log('[demo] installing code-server and Chromium if missing…');
ensureCodeServer();
if (process.env.FK_DEMO_SKIP_PACKAGE === '1' && existsSync(VSIX)) {
  console.log(`[demo] using the existing ${path.basename(VSIX)} (FK_DEMO_SKIP_PACKAGE=1)`);
} else {
  console.log('[demo] building and packaging the extension…');
  packageExtension();
}
if (stopping) process.exit(0);
const evalText = demoEvalText(workspace);
await startCodeServer({
  workspace,
  port: await portOrFree(wanted),
  settings: {
    'factoredKeys.openWorkspaceCheckpointOnStartup': true,
    ...(evalText ? { 'factoredKeys.eval.textFile': evalText } : {}),
  },
  onSpawn: (s) => {
    server = s;
    if (stopping) void s.stop();
  },
}).then((s) => {
  if (stopping) return;
  console.log(`[demo] VS Code (code-server) with Factored Keys: ${s.url}`);
  console.log(`[demo] the inspection panel opens on ${path.basename(workspace)} when the page loads${evalText ? `; Evaluate and Sweep use ${evalText}` : ''}; Ctrl+C stops the server (pid ${s.pid}).`);
});
// Keep the process alive while code-server runs.
setInterval(() => undefined, 1 << 30);
