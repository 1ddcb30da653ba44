/**
 * Extension safety without VS Code: the webview HTML's CSP, validation of every webview
 * message (hand-written hostile messages and fast-check fuzzing), untrusted-workspace
 * declarations and behaviour of the export flow, and a scan of every built bundle for network
 * APIs. The extension modules import `vscode`; a minimal stand-in is installed for them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import Module from 'node:module';
import * as path from 'node:path';
import fc from 'fast-check';
import { LIMITS, parseWebviewMessage, ProtocolError } from '../../src/protocol';
import { ensureBuilt, REPO_ROOT } from './cliRunner';
import { mutateJson } from './mutateJson';

// ------------------------------------------------------------------ a stand-in `vscode` module

interface FakeUri {
  readonly scheme: string;
  readonly fsPath: string;
  toString(): string;
}
const fileUri = (p: string): FakeUri => ({ scheme: 'file', fsPath: p, toString: () => `file://${p}` });
const calls: string[] = [];
const fakeVscode = {
  Uri: { file: fileUri, joinPath: (u: FakeUri, ...parts: string[]) => fileUri(path.join(u.fsPath, ...parts)) },
  workspace: {
    isTrusted: false,
    workspaceFolders: undefined,
    getConfiguration: () => ({ get: (_k: string, d?: unknown) => d }),
    getWorkspaceFolder: () => undefined,
  },
  window: {
    showWarningMessage: async (m: string) => (calls.push(`warning: ${m}`), undefined),
    showErrorMessage: async (m: string) => (calls.push(`error: ${m}`), undefined),
    showInformationMessage: async (m: string) => (calls.push(`info: ${m}`), undefined),
    showSaveDialog: async () => (calls.push('save dialog'), fileUri('/tmp/never')),
  },
  commands: { executeCommand: async (c: string) => calls.push(`command: ${c}`) },
  env: {},
  ViewColumn: { Active: -1 },
};
const moduleInternals = Module as unknown as { _resolveFilename: (request: string, ...rest: unknown[]) => string; _cache: Record<string, unknown> };
const originalResolve = moduleInternals._resolveFilename;
moduleInternals._resolveFilename = function (request: string, ...rest: unknown[]) {
  return request === 'vscode' ? 'vscode' : originalResolve.call(this, request, ...rest);
};
moduleInternals._cache.vscode = { id: 'vscode', filename: 'vscode', loaded: true, exports: fakeVscode };

type PanelModule = typeof import('../../src/extension/panel');
type ExportFlowModule = typeof import('../../src/extension/exportFlow');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const panel = require('../../src/extension/panel') as PanelModule;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const exportFlow = require('../../src/extension/exportFlow') as ExportFlowModule;

// ------------------------------------------------------------------ CSP

function cspOf(html: string): Map<string, string[]> {
  const m = /<meta http-equiv="Content-Security-Policy" content="([^"]*)">/.exec(html);
  assert.ok(m, 'the panel HTML has a CSP meta tag');
  return new Map(
    m[1]
      .split(';')
      .map((d) => d.trim().split(/\s+/))
      .filter((d) => d[0])
      .map(([name, ...sources]) => [name, sources]),
  );
}

test('webview CSP: default-src none, scripts only by a fresh nonce, no remote or inline sources', () => {
  const webview = { cspSource: 'https://file+.vscode-resource.vscode-cdn.net', asWebviewUri: (u: FakeUri) => ({ toString: () => `vscode-webview-resource:${u.fsPath}` }) };
  const hostileTitle = '"><script>alert(1)</script><img src=x onerror=alert(2)>';
  const html = panel.panelHtml(webview as never, fileUri('/ext') as never, hostileTitle);
  const csp = cspOf(html);
  assert.deepEqual(csp.get('default-src'), ["'none'"]);
  assert.ok(!csp.has('connect-src') && !csp.has('frame-src') && !csp.has('child-src'), 'no connect/frame sources: the webview cannot reach the network');
  const script = csp.get('script-src') ?? [];
  assert.equal(script.length, 1, `script-src is only the nonce: ${script.join(' ')}`);
  const nonce = /^'nonce-([A-Za-z0-9]+)'$/.exec(script[0])?.[1];
  assert.ok(nonce && nonce.length >= 16, 'a nonce of at least 16 random characters');
  for (const [directive, sources] of csp) {
    for (const s of sources) {
      assert.ok(!/unsafe-(inline|eval|hashes)|^\*$|^https?:$|^https?:\/\/(?!file\+\.vscode-resource)/.test(s), `${directive} allows ${s}`);
    }
  }
  // every script tag carries the nonce; no inline script body, no inline event handler
  const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
  assert.ok(scripts.length >= 1);
  for (const [, attrs, body] of scripts) {
    assert.match(attrs, new RegExp(`nonce="${nonce}"`));
    assert.equal(body.trim(), '', 'no inline script');
  }
  assert.ok(!/\son[a-z]+=/i.test(html.replace(/<title>[\s\S]*<\/title>/, '')), 'no inline event handlers');
  assert.ok(!html.includes('<script>alert') && !html.includes('<img src=x'), 'the title (a folder name) is escaped');
  const second = cspOf(panel.panelHtml(webview as never, fileUri('/ext') as never, 't')).get('script-src')![0];
  assert.notEqual(second, script[0], 'a new nonce per page');
});

test('webview options: scripts on, local resources only from the extension dist/ and media/, no command URIs', () => {
  const options = panel.webviewOptions(fileUri('/ext') as never) as { enableScripts?: boolean; enableCommandUris?: unknown; localResourceRoots?: FakeUri[] };
  assert.equal(options.enableScripts, true);
  assert.ok(!options.enableCommandUris, 'command URIs stay disabled');
  assert.deepEqual(options.localResourceRoots?.map((u) => u.fsPath).sort(), ['/ext/dist', '/ext/media']);
});

/** Top-level `${...}` expressions of a template literal body (nested templates stay inside). */
function interpolations(template: string): string[] {
  const out: string[] = [];
  for (let i = template.indexOf('${'); i >= 0; i = template.indexOf('${', i)) {
    let depth = 1;
    let j = i + 2;
    for (; j < template.length && depth > 0; j++) {
      if (template[j] === '{') depth++;
      else if (template[j] === '}') depth--;
    }
    out.push(template.slice(i + 2, j - 1).trim());
    i = j;
  }
  return out;
}

test('webview DOM: HTML is only ever set from a static template; checkpoint strings go through textContent', () => {
  const dir = path.join(REPO_ROOT, 'webview');
  const sinks: string[] = [];
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.ts'))) {
    const text = fs.readFileSync(path.join(dir, f), 'utf8');
    for (const m of text.matchAll(/\.(innerHTML|outerHTML)\s*=\s*`([\s\S]*?)`;\n|insertAdjacentHTML|document\.write/g)) {
      sinks.push(f);
      for (const expr of interpolations(m[2] ?? '')) assert.match(expr, /^(POLICIES|CACHE_DTYPES|ENERGY_LEVELS)\.map\(/, `${f}: HTML interpolates ${expr}`);
      assert.ok(m[1], `${f}: uses ${m[0]}`);
    }
    // every HTML assignment must be a template literal checked above, not a variable
    const assignments = [...text.matchAll(/\.(innerHTML|outerHTML)\s*=/g)].length;
    assert.equal(assignments, sinks.filter((x) => x === f).length, `${f}: an HTML assignment that is not a static template`);
  }
  assert.ok(sinks.length <= 2, `HTML sinks: ${sinks.join(', ')}`);
});

// ------------------------------------------------------------------ message validation

const validPlan = { policy: 'energy', rank: 16, fraction: 0.25, energy: 0.95, budget: 0.25, overrides: [{ layer: 0, head: 1, rank: 8 }] };
const validSavings = { context: 4096, batch: 1, dtype: 'bf16' };
const VALID_MESSAGES: Record<string, unknown>[] = [
  { type: 'ready' },
  { type: 'analyze', id: 1 },
  { type: 'cancel', id: 2 },
  { type: 'selectBackend', id: 3 },
  { type: 'plan', id: 4, plan: validPlan, savings: validSavings },
  { type: 'export', id: 5, plan: validPlan },
  { type: 'evaluate', id: 6, plan: validPlan },
];

/** JSON text parsed the way structured clone delivers it: `__proto__` stays an own key. */
const parsed = (text: string) => JSON.parse(text) as unknown;
const HOSTILE_MESSAGES: [string, unknown][] = [
  ['null', null],
  ['string', 'analyze'],
  ['array', [{ type: 'analyze', id: 1 }]],
  ['no type', { id: 1 }],
  ['unknown type', { type: 'runShell', id: 1, command: 'rm -rf ~' }],
  ['type not a string', { type: ['analyze'], id: 1 }],
  ['prototype type', { type: 'constructor', id: 1 }],
  ['__proto__ type', { type: '__proto__', id: 1 }],
  ['missing id', { type: 'analyze' }],
  ['id zero', { type: 'analyze', id: 0 }],
  ['id negative', { type: 'analyze', id: -1 }],
  ['id float', { type: 'analyze', id: 1.5 }],
  ['id NaN', { type: 'analyze', id: NaN }],
  ['id string', { type: 'analyze', id: '1' }],
  ['id unsafe', { type: 'analyze', id: 2 ** 60 }],
  ['extra field', { type: 'analyze', id: 1, path: '/etc/passwd' }],
  ['ready with extra', { type: 'ready', html: '<img onerror=x>' }],
  ['export with a path', { type: 'export', id: 1, plan: validPlan, dest: '/home/user/.ssh' }],
  ['__proto__ field', parsed(`{"type":"analyze","id":1,"__proto__":{"polluted":true}}`)],
  ['plan __proto__', parsed(`{"type":"export","id":1,"plan":${JSON.stringify(validPlan).slice(0, -1)},"__proto__":{"polluted":true}}}`)],
  ['plan missing', { type: 'export', id: 1 }],
  ['plan array', { type: 'export', id: 1, plan: [] }],
  ['policy unknown', { type: 'export', id: 1, plan: { ...validPlan, policy: 'all' } }],
  ['rank zero', { type: 'export', id: 1, plan: { ...validPlan, rank: 0 } }],
  ['rank huge', { type: 'export', id: 1, plan: { ...validPlan, rank: LIMITS.maxRank + 1 } }],
  ['rank string', { type: 'export', id: 1, plan: { ...validPlan, rank: '16' } }],
  ['fraction NaN', { type: 'export', id: 1, plan: { ...validPlan, fraction: NaN } }],
  ['fraction Infinity', { type: 'export', id: 1, plan: { ...validPlan, fraction: Infinity } }],
  ['energy above 1', { type: 'export', id: 1, plan: { ...validPlan, energy: 1.5 } }],
  ['budget negative', { type: 'export', id: 1, plan: { ...validPlan, budget: -0.5 } }],
  ['overrides not an array', { type: 'export', id: 1, plan: { ...validPlan, overrides: { length: 1 } } }],
  ['too many overrides', { type: 'export', id: 1, plan: { ...validPlan, overrides: Array.from({ length: LIMITS.maxOverrides + 1 }, (_, i) => ({ layer: i % 1024, head: Math.floor(i / 1024), rank: 1 })) } }],
  ['override duplicate', { type: 'export', id: 1, plan: { ...validPlan, overrides: [{ layer: 0, head: 0, rank: 1 }, { layer: 0, head: 0, rank: 2 }] } }],
  ['override layer huge', { type: 'export', id: 1, plan: { ...validPlan, overrides: [{ layer: LIMITS.maxLayers, head: 0, rank: 1 }] } }],
  ['override extra field', { type: 'export', id: 1, plan: { ...validPlan, overrides: [{ layer: 0, head: 0, rank: 1, file: 'x' }] } }],
  ['savings missing', { type: 'plan', id: 1, plan: validPlan }],
  ['context huge', { type: 'plan', id: 1, plan: validPlan, savings: { ...validSavings, context: LIMITS.maxContext + 1 } }],
  ['batch zero', { type: 'plan', id: 1, plan: validPlan, savings: { ...validSavings, batch: 0 } }],
  ['dtype unknown', { type: 'plan', id: 1, plan: validPlan, savings: { ...validSavings, dtype: 'int4' } }],
  ['deep nesting', { type: 'export', id: 1, plan: JSON.parse('['.repeat(10_000) + ']'.repeat(10_000)) }],
];

test(`webview messages: ${HOSTILE_MESSAGES.length} hostile messages are refused with ProtocolError, valid ones accepted`, () => {
  for (const m of VALID_MESSAGES) assert.doesNotThrow(() => parseWebviewMessage(m), JSON.stringify(m));
  for (const [name, m] of HOSTILE_MESSAGES) {
    assert.throws(() => parseWebviewMessage(m), (e: unknown) => e instanceof ProtocolError && !e.message.includes('\n') && e.message.length < 300, name);
  }
  assert.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype untouched');
});

/** A valid message with one value somewhere replaced, removed, or a key added. */
const mutatedMessage = fc
  .record({
    base: fc.constantFrom(...VALID_MESSAGES),
    pathPick: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }),
    action: fc.constantFrom('replace', 'delete', 'add'),
    key: fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'path', 'dest', 'html'), fc.string({ maxLength: 8 })),
    value: fc.oneof(fc.anything({ maxDepth: 2 }), fc.constantFrom(NaN, Infinity, -Infinity, -0, 2 ** 53, -1, 0, 1e308, '', '__proto__')),
  })
  .map(({ base, pathPick, action, key, value }) => mutateJson(base, { path: pathPick, action, key, value }));

test('webview messages, fuzzed: anything is a ProtocolError or a well-formed message, never another exception', (t) => {
  let accepted = 0;
  let refused = 0;
  fc.assert(
    fc.property(fc.oneof(mutatedMessage, fc.anything({ maxDepth: 3 })), (m) => {
      let out;
      try {
        out = parseWebviewMessage(m);
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw new Error(`${(e as Error).name}: ${(e as Error).message}`);
        refused++;
        return;
      }
      accepted++;
      // accepted output is a fresh, clean object: validating it again gives the same thing
      assert.deepEqual(parseWebviewMessage(structuredClone(out)), out);
      assert.ok(JSON.stringify(out).length < 1_000_000);
    }),
    { numRuns: 5000, seed: Number(process.env.FK_FUZZ_SEED ?? 42) },
  );
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  t.diagnostic(`message fuzz: ${accepted + refused} messages, ${refused} refused with ProtocolError, ${accepted} accepted (re-validated)`);
});

// ------------------------------------------------------------------ untrusted workspaces

test('untrusted workspace: declared limited in package.json, export command gated, export flow refuses before any dialog or write', async () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
    capabilities?: { untrustedWorkspaces?: { supported?: unknown; description?: string; restrictedConfigurations?: string[] } };
    contributes?: { commands?: { command: string; enablement?: string }[] };
  };
  assert.equal(pkg.capabilities?.untrustedWorkspaces?.supported, 'limited');
  assert.ok((pkg.capabilities?.untrustedWorkspaces?.description ?? '').length > 0);
  // settings that pick native code paths or resource use come from user settings only
  for (const key of ['factoredKeys.backend', 'factoredKeys.maxThreads']) assert.ok(pkg.capabilities?.untrustedWorkspaces?.restrictedConfigurations?.includes(key), key);
  const exportCommand = pkg.contributes?.commands?.find((c) => c.command === 'factoredKeys.exportCheckpoint');
  assert.match(exportCommand?.enablement ?? '', /isWorkspaceTrusted/);

  fakeVscode.workspace.isTrusted = false;
  calls.length = 0;
  let jobStarted = false;
  const services = { jobs: { withProgress: async () => ((jobStarted = true), { notes: [], files: [] }) }, log: { appendLine: () => undefined } };
  const summary = { name: 'm', dir: '/tmp/m' };
  await assert.rejects(
    exportFlow.exportPlan(services as never, summary as never, '/tmp/m', {} as never, { isCancellationRequested: false } as never, () => undefined),
    /export needs a trusted workspace/,
  );
  assert.equal(jobStarted, false, 'no export job in an untrusted workspace');
  assert.ok(!calls.includes('save dialog'), 'no save dialog either');
  assert.ok(calls.some((c) => c.startsWith('warning:') && /trusted workspace/.test(c)));
});

// ------------------------------------------------------------------ no network

/** Network (and process-spawning) APIs that must not appear in any built bundle. */
const NETWORK_PATTERNS: [string, RegExp][] = [
  ['node network module', /require\(["'](node:)?(http|https|http2|net|tls|dgram|dns)["']\)|from ["'](node:)?(http|https|http2|net|tls|dgram|dns)["']/],
  ['fetch', /\bfetch\s*\(/],
  ['XMLHttpRequest', /\bXMLHttpRequest\b/],
  ['WebSocket', /\bWebSocket\b/],
  ['EventSource', /\bEventSource\b/],
  ['sendBeacon', /\bsendBeacon\b/],
  ['importScripts', /\bimportScripts\b/],
  ['eval', /(?<![\w$.])eval\(|\bnew Function\(/],
];

test('no network access anywhere: built bundles use no network, socket or fetch API, and start processes only where designed (fine-tune Python, the job host), never through a shell', (t) => {
  ensureBuilt();
  const dist = path.join(REPO_ROOT, 'dist');
  const bundles = fs.readdirSync(dist).filter((f) => f.endsWith('.js'));
  assert.ok(bundles.includes('extension.js') && bundles.includes('cli.js'), `bundles: ${bundles.join(', ')}`);
  const findings: string[] = [];
  for (const b of bundles) {
    const text = fs.readFileSync(path.join(dist, b), 'utf8');
    for (const [what, re] of NETWORK_PATTERNS) {
      const m = re.exec(text);
      if (m) findings.push(`${b}: ${what} (${JSON.stringify(text.slice(Math.max(0, m.index - 60), m.index + 60))})`);
    }
  }
  // Processes are started in exactly two places, both by design: the user's own Python for
  // fine-tuning (its path comes from --python / factoredKeys.python / PATH) and the extension's
  // job host, a fork of our own bundle. Never through a shell.
  const spawners = new Set(['src/core/finetune/finetune.ts', 'src/core/finetune/python.ts', 'src/extension/jobProcess.ts']);
  for (const b of bundles) {
    const text = fs.readFileSync(path.join(dist, b), 'utf8');
    for (const m of text.matchAll(/require\(["'](node:)?child_process["']\)/g)) {
      const module = [...text.slice(0, m.index).matchAll(/^\/\/ (src\/\S+)$/gm)].pop()?.[1] ?? '(unknown module)';
      if (!spawners.has(module)) findings.push(`${b}: child_process in ${module}`);
    }
    if (/\bshell:\s*true\b|\bexecSync\(|\bexec\(/.test(text.replace(/\bRegExp\.prototype\.exec\(/g, ''))) {
      for (const m of text.matchAll(/\bshell:\s*true\b|(?<![.\w])execSync\(|(?<![.\w])exec\(/g)) findings.push(`${b}: shell or exec (${JSON.stringify(text.slice(Math.max(0, m.index - 60), m.index + 40))})`);
    }
  }
  assert.deepEqual(findings, []);
  // onnxruntime-node is the only external module loaded at run time (a native library, no network)
  const externals = new Set<string>();
  for (const b of bundles) {
    for (const m of fs.readFileSync(path.join(dist, b), 'utf8').matchAll(/require\(["']([^"'./][^"']*)["']\)/g)) if (!m[1].startsWith('node:')) externals.add(m[1]);
  }
  const builtins = new Set(Module.builtinModules);
  const nonBuiltin = [...externals].filter((e) => !builtins.has(e)).sort();
  assert.deepEqual(nonBuiltin.filter((e) => e !== 'vscode' && e !== 'onnxruntime-node'), [], `unexpected run-time modules: ${nonBuiltin.join(', ')}`);
  t.diagnostic(`scanned ${bundles.length} bundles (${bundles.join(', ')}): no network API; run-time externals: ${nonBuiltin.join(', ')}`);
});
