/**
 * `npm run package` (scripts/package.mjs): one platform-specific .vsix per onnxruntime-node
 * binary (darwin-arm64, linux-x64, linux-arm64, win32-x64, win32-arm64). Packages all five from
 * the built dist/ into a temp folder and reads each with `unzip -l`: the manifest names its
 * target, the only native files are that target's onnxruntime library and binding, and the
 * bundles are there. (The bundles run on every target: only the native library differs.)
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
// @ts-expect-error plain ESM script (no type declarations)
import { ignoreFileFor, ROOT, TARGETS, vsixPath } from '../../scripts/package.mjs';

const targets = TARGETS as Record<string, { dir: string; natives: string[] }>;
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-package-test-'));
after(() => rmSync(work, { recursive: true, force: true }));

const hasUnzip = spawnSync('unzip', ['-v'], { encoding: 'utf8' }).status === 0;
const ORT_BIN = 'extension/node_modules/onnxruntime-node/bin/napi-v6/';
const NATIVE = /\.(node|dll|so(\.\d+)*|dylib)$/;

/** `unzip -l` of a .vsix: the file names. */
function listing(file: string): string[] {
  const out = execFileSync('unzip', ['-l', file], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((l) => /^\s*\d+\s+\S+\s+\S+\s+(.+)$/.exec(l)?.[1])
    .filter((n): n is string => n !== undefined && n !== 'Name');
}

test('each target gets an ignore file naming only its own onnxruntime folder', () => {
  for (const [target, { dir }] of Object.entries(targets)) {
    const text: string = ignoreFileFor(target);
    const ort = text.split('\n').filter((l) => l.includes('napi-v6'));
    assert.deepEqual(ort, [`!node_modules/onnxruntime-node/bin/napi-v6/${dir}/**`], target);
  }
  assert.deepEqual(Object.keys(targets).sort(), ['darwin-arm64', 'linux-arm64', 'linux-x64', 'win32-arm64', 'win32-x64']);
});

test('npm run package: five platform-specific .vsix files, each with only its own native library', { skip: !hasUnzip && 'unzip is not installed', timeout: 600_000 }, async () => {
  if (!existsSync(path.join(ROOT, 'dist/extension.js'))) execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: ROOT, stdio: 'inherit' });
  // what `npm run package` does after its production build, one process per target (in parallel:
  // vsce spends its time collecting files, not compressing)
  await Promise.all(Object.keys(targets).map((t) => promisify(execFile)(process.execPath, ['scripts/package.mjs', '--no-build', '--target', t, '--out-dir', work], { cwd: ROOT })));
  for (const [target, { dir, natives }] of Object.entries(targets)) {
    const file: string = vsixPath(target, work);
    assert.ok(existsSync(file), `${target}: ${file}`);
    const names = listing(file);
    const manifest = execFileSync('unzip', ['-p', file, 'extension.vsixmanifest'], { encoding: 'utf8' });
    assert.match(manifest, new RegExp(`TargetPlatform="${target}"`), target);
    // the native files: exactly this target's folder, holding its binding and library
    const nativeFiles = names.filter((n) => NATIVE.test(n));
    assert.ok(nativeFiles.length > 0, target);
    for (const n of nativeFiles) assert.ok(n.startsWith(`${ORT_BIN}${dir}/`), `${target} carries ${n}`);
    for (const n of natives) assert.ok(names.includes(`${ORT_BIN}${dir}/${n}`), `${target} lacks ${n}`);
    assert.deepEqual(names.filter((n) => n.startsWith(ORT_BIN) && !n.startsWith(`${ORT_BIN}${dir}/`)), [], target);
    // the bundles and manifest, and nothing from the repository's sources, tests or caches
    for (const n of ['extension/package.json', 'extension/dist/extension.js', 'extension/dist/jobWorker.js', 'extension/dist/cli.js', 'extension/dist/webview.js', 'extension/node_modules/onnxruntime-node/dist/index.js', 'extension/node_modules/onnxruntime-common/dist/cjs/index.js']) {
      assert.ok(names.includes(n), `${target} lacks ${n}`);
    }
    assert.deepEqual(names.filter((n) => /^extension\/(src|test|scripts|\.cache|bench|webview)\//.test(n) || /^extension\/dist\/.*\.map$/.test(n)), [], target);
  }
});
