// `npm run demo`: builds and packages the extension, installs code-server if missing (into
// .cache/code-server), starts it on 127.0.0.1 with ../shared/fixtures/mistral-bytes open in the
// inspection panel, prints the URL, and keeps running until Ctrl+C.
import * as path from 'node:path';
import { ensureCodeServer, freePort, packageExtension, ROOT, startCodeServer } from './e2e/codeServer.mjs';

const workspace = path.resolve(ROOT, process.env.FK_DEMO_CHECKPOINT ?? '../shared/fixtures/mistral-bytes');
const wanted = Number(process.env.FK_DEMO_PORT ?? 8080);

async function portOrFree(port) {
  const net = await import('node:net');
  const free = await new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
  return free ? port : freePort();
}

console.log('[demo] installing code-server and Chromium if missing…');
ensureCodeServer();
console.log('[demo] building and packaging the extension…');
packageExtension();
const server = await startCodeServer({
  workspace,
  port: await portOrFree(wanted),
  settings: { 'factoredKeys.openWorkspaceCheckpointOnStartup': true },
});
console.log(`[demo] VS Code (code-server) with Factored Keys: ${server.url}`);
console.log(`[demo] the inspection panel opens on ${path.basename(workspace)} when the page loads; Ctrl+C stops the server (pid ${server.pid}).`);
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await server.stop();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
// Keep the process alive while code-server runs.
setInterval(() => undefined, 1 << 30);
