/**
 * No telemetry and no stray files: analyze, plan, export and eval run with HOME set to an
 * empty folder leave it empty except for the tool's own cache (~/.cache/factored-keys).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { GraphBuilder } from '../../src/core/compute/onnx';
import { CLI, ensureBuilt, REPO_ROOT } from '../hostile/cliRunner';

const fixtures = path.resolve(__dirname, '../../../shared/fixtures');
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-home-'));
after(() => rmSync(work, { recursive: true, force: true }));
before(() => ensureBuilt());

/** Every file and symlink below `dir`, relative to it. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

/**
 * onnxruntime stays quiet on its own when it sees a CI service's variable (it checks these
 * names), so they are removed too: otherwise on CI neither the control nor the real test
 * could fail.
 */
const CI_MARKERS = ['CI', 'TF_BUILD', 'GITHUB_ACTIONS', 'GITLAB_CI', 'CIRCLECI', 'TRAVIS', 'JENKINS_URL', 'CODEBUILD_BUILD_ID', 'BUILDKITE', 'TEAMCITY_VERSION', 'APPVEYOR', 'BITBUCKET_BUILD_NUMBER'];

/** The environment of a run under `home`, without anything that would redirect, pre-set or silence it. */
function envFor(home: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, ...extra };
  for (const k of ['XDG_CACHE_HOME', 'XDG_CONFIG_HOME', 'XDG_DATA_HOME', 'FACTORED_KEYS_CACHE_DIR', 'ORT_DISABLE_TELEMETRY', ...CI_MARKERS]) delete env[k];
  for (const [k, v] of Object.entries(extra)) env[k] = v;
  return env;
}

function freshHome(name: string): string {
  const home = path.join(work, name);
  mkdirSync(home);
  return home;
}

test('control: a bare onnxruntime session writes its telemetry store unless ORT_DISABLE_TELEMETRY=1', { skip: process.platform !== 'linux' && 'telemetry paths checked on linux' }, () => {
  const g = new GraphBuilder('id');
  g.output(g.op('Identity', [g.input('x', 'float32', [1])]), 'float32', [1]);
  const model = path.join(work, 'id.onnx');
  writeFileSync(model, g.toModel());
  const script = `require('onnxruntime-node').InferenceSession.create(require('fs').readFileSync(${JSON.stringify(model)})).then((s) => s.release())`;
  const bare = freshHome('bare');
  const r = spawnSync(process.execPath, ['-e', script], { cwd: REPO_ROOT, env: envFor(bare), encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(filesUnder(bare).some((f) => f.startsWith(path.join('.cache', 'Microsoft'))), `expected onnxruntime's telemetry files, got ${filesUnder(bare).join(', ')}`);
  const off = freshHome('off');
  const o = spawnSync(process.execPath, ['-e', script], { cwd: REPO_ROOT, env: envFor(off, { ORT_DISABLE_TELEMETRY: '1' }), encoding: 'utf8' });
  assert.equal(o.status, 0, o.stderr);
  assert.deepEqual(filesUnder(off), []);
});

test('analyze, plan, export and eval under an empty HOME write nothing outside ~/.cache/factored-keys', () => {
  const home = freshHome('home');
  const out = path.join(work, 'out');
  mkdirSync(out);
  const mistral = path.join(fixtures, 'mistral-bytes');
  const text = path.join(fixtures, 'heldout.txt');
  const plan = path.join(out, 'plan.json');
  const exported = path.join(out, 'exported');
  const runs: string[][] = [
    ['analyze', mistral, '--json'],
    ['analyze', mistral, '--calibrate', '--json'],
    ['plan', mistral, '--method', 'key-svd', '--energy', '0.9', '--out', plan],
    ['export', mistral, exported, '--plan', plan, '--json'],
    ['eval', exported, '--text', text, '--tokenizer', 'bytes', '--seq', '128', '--json'],
    ['eval', mistral, '--text', text, '--tokenizer', 'bytes', '--seq', '128', '--plan', plan, '--json'],
  ];
  for (const argv of runs) {
    const r = spawnSync(process.execPath, [CLI, ...argv], { cwd: out, env: envFor(home), encoding: 'utf8', timeout: 240_000 });
    assert.equal(r.status, 0, `${argv.join(' ')}: ${r.stderr}`);
  }
  const files = filesUnder(home);
  const own = path.join('.cache', 'factored-keys') + path.sep;
  assert.deepEqual(
    files.filter((f) => !f.startsWith(own)),
    [],
    `files outside the tool's cache: ${files.join(', ')}`,
  );
  // only the calibration's remembered choice may be there (none when the CPU is the only provider)
  for (const f of files) assert.equal(f, path.join('.cache', 'factored-keys', 'spectrum-backend.json'));
});

test('every entry point sets ORT_DISABLE_TELEMETRY before anything loads onnxruntime', () => {
  const firstImport = (file: string) => /^import\s+[^;]*;/m.exec(readFileSync(path.join(REPO_ROOT, file), 'utf8'))?.[0];
  for (const entry of ['src/cli/cli.ts', 'src/extension/extension.ts', 'src/extension/jobWorker.ts']) {
    assert.equal(firstImport(entry), "import '../core/compute/noTelemetry';", entry);
  }
  const session = readFileSync(path.join(REPO_ROOT, 'src/core/compute/session.ts'), 'utf8');
  assert.ok(session.indexOf("import './noTelemetry';") >= 0 && session.indexOf("import './noTelemetry';") < session.indexOf("from 'onnxruntime-node'"));
  // no other module loads onnxruntime at run time (type-only imports are erased)
  const offenders: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(path.join(REPO_ROOT, d), { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith('.ts') && p !== path.join('src', 'core', 'compute', 'session.ts')) {
        if (/^import\s+(?!type\b)[^;]*from\s+'onnxruntime-node'/m.test(readFileSync(path.join(REPO_ROOT, p), 'utf8'))) offenders.push(p);
      }
    }
  };
  walk('src');
  assert.deepEqual(offenders, []);
  // and the bundles keep the order: the assignment comes before the require
  // (dist/worker.js is the spectrum worker thread: it loads onnxruntime through session.ts too)
  for (const bundle of ['dist/cli.js', 'dist/extension.js', 'dist/jobWorker.js', 'dist/worker.js']) {
    const js = readFileSync(path.join(REPO_ROOT, bundle), 'utf8');
    const set = js.indexOf('process.env.ORT_DISABLE_TELEMETRY');
    const load = js.indexOf('require("onnxruntime-node")');
    assert.ok(set >= 0 && load >= 0 && set < load, `${bundle}: telemetry switch at ${set}, onnxruntime require at ${load}`);
  }
});
