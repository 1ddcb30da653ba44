/**
 * The offline-safe install: the project's npm config holds only settings npm knows (no
 * "Unknown project config" warning), and it keeps onnxruntime-node's download-on-install script
 * from running.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

const ROOT = path.resolve(__dirname, '../..');

/** npm in the repository, without the npm_* settings a parent `npm test` exports. */
function npm(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
  return spawnSync('npm', args, { cwd: ROOT, env, encoding: 'utf8' });
}

test('npm reads the project config without warnings, and dependency install scripts are off', () => {
  const list = npm('config', 'list');
  assert.equal(list.status, 0, list.stderr);
  assert.doesNotMatch(list.stderr, /Unknown (project|user|env|builtin|global)? ?config/i);
  assert.doesNotMatch(list.stderr, /npm warn/i);
  assert.equal(npm('config', 'get', 'ignore-scripts').stdout.trim(), 'true');
  // every key of .npmrc is one npm documents (npm's own --long listing shows it)
  const keys = readFileSync(path.join(ROOT, '.npmrc'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#') && !l.startsWith(';'))
    .map((l) => l.split('=')[0].trim());
  const known = npm('config', 'list', '--long', '--json');
  const all = JSON.parse(known.stdout) as Record<string, unknown>;
  for (const k of keys) assert.ok(Object.hasOwn(all, k), `.npmrc key ${k} is not an npm setting`);
});

test("onnxruntime-node's install script is the one being kept from running", { skip: (process.platform !== 'linux' || process.arch !== 'x64') && 'checks the linux-x64 package' }, () => {
  // It downloads CUDA libraries from NuGet on linux-x64 unless told to skip (ignore-scripts
  // keeps npm from starting it at all); if a new version stops doing that, this README note
  // and the .npmrc setting can go.
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'node_modules/onnxruntime-node/package.json'), 'utf8')) as { scripts?: Record<string, string> };
  assert.match(pkg.scripts?.postinstall ?? pkg.scripts?.install ?? '', /script\/install/);
  const meta = readFileSync(path.join(ROOT, 'node_modules/onnxruntime-node/script/install-metadata.js'), 'utf8');
  assert.match(meta, /'linux\/x64': \['cuda12'\]/);
  const utils = readFileSync(path.join(ROOT, 'node_modules/onnxruntime-node/script/install-utils.js'), 'utf8');
  assert.match(utils, /process\.env\.ONNXRUNTIME_NODE_INSTALL\b/, 'README documents ONNXRUNTIME_NODE_INSTALL=cuda12 for CUDA');
  // the bundled binary works without the script: CPU provider present
  assert.ok(readFileSync(path.join(ROOT, 'node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1')).byteLength > 1e6);
});
