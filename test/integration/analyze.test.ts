import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { CLI, REPO_ROOT, fixture, tempDir } from '../helpers/fixtures';
import { usableBackends } from '../../src/core/compute/session';

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('factored-keys analyze', () => {
  test('--json on the Mistral fixture: one object, every head, matching the float64 reference', () => {
    const r = cli('analyze', fixture('mistral-bytes'), '--json', '--backend', 'cpu', '--threads', '2');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim().split('\n').length, 1);
    const out = JSON.parse(r.stdout);
    assert.equal(out.backend, 'cpu');
    assert.equal(typeof out.seconds, 'number');
    assert.equal(out.heads.length, 4 * (2 + 4));
    const ref = JSON.parse(readFileSync(path.join(REPO_ROOT, 'test/reference/spectra/mistral-bytes.json'), 'utf8')).heads;
    for (const h of out.heads) {
      assert.ok(Number.isInteger(h.layer) && Number.isInteger(h.head));
      assert.ok(h.kind === 'key' ? h.head < 2 : h.head < 4);
      const want = ref.find((x: { layer: number; kind: string; head: number }) => x.layer === h.layer && x.kind === h.kind && x.head === h.head);
      assert.equal(h.singular_values.length, 64);
      for (let i = 0; i < 64; i++) assert.ok(Math.abs(h.singular_values[i] - want.singular_values[i]) <= 1e-3 * want.singular_values[0]);
      assert.ok(h.effective_rank.p90 >= 1 && h.effective_rank.p90 <= 64);
    }
  });

  test('default (auto) text output and --kinds', () => {
    const r = cli('analyze', fixture('gpt2-bytes'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /backend\s+\S+/);
    assert.match(r.stdout, /layer 3 queries\s+p90/);
    const k = JSON.parse(cli('analyze', fixture('stories260K'), '--json', '--kinds', 'key').stdout);
    assert.equal(k.heads.length, 5 * 4);
    assert.ok(k.heads.every((h: { kind: string }) => h.kind === 'key'));
  });

  test('an explicitly requested backend must be usable: one error naming what is missing; only auto falls back', async () => {
    const usable = await usableBackends();
    for (const b of ['cuda', 'webgpu', 'dml', 'coreml'] as const) {
      const r = cli('analyze', fixture('layouts/llama'), '--json', '--backend', b);
      if (usable.includes(b)) {
        assert.equal(r.code, 0, r.stderr);
        assert.equal(JSON.parse(r.stdout).backend, b);
        continue;
      }
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, '');
      // one line: no raw Dawn/Vulkan warnings with build paths
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^error: analyze: --backend ${b} is not usable here: .+ \\(--backend auto falls back to the CPU\\)`));
      assert.doesNotMatch(r.stderr, /\/build\/|BackendVk|Warning:/);
    }
    const auto = cli('analyze', fixture('layouts/llama'), '--json', '--backend', 'auto');
    assert.equal(auto.code, 0, auto.stderr);
    const cal = cli('analyze', fixture('layouts/llama'), '--json', '--calibrate');
    assert.equal(cal.code, 0, cal.stderr);
    if (usable.length === 1) assert.match(cal.stderr, /note: --calibrate: only the CPU is usable on this machine/);
    else assert.doesNotMatch(cal.stderr, /only the CPU is usable/);
  });

  test('bad input: one error line, non-zero exit, nothing on stdout', () => {
    const cases: [string[], RegExp][] = [
      [['analyze'], /expected one checkpoint path/],
      [['analyze', fixture('gpt2-bytes'), '--backend', 'tpu'], /--backend must be one of/],
      [['analyze', fixture('gpt2-bytes'), '--threads', '0'], /--threads must be at least 1/],
      [['analyze', fixture('gpt2-bytes'), '--kinds', 'value'], /--kinds takes key and\/or query/],
      [['analyze', fixture('gpt2-bytes'), '--bogus'], /unknown option --bogus/],
      [['analyze', '/nonexistent/ckpt'], /no such file or folder/],
    ];
    for (const [args, msg] of cases) {
      const r = cli(...args);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.equal(r.stdout, '');
      const lines = r.stderr.trim().split('\n').filter((l) => l.startsWith('error:'));
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], msg);
    }
  });

  test('a truncated shard names the file and writes nothing to stdout', () => {
    const { dir, cleanup } = tempDir();
    try {
      cpSync(fixture('mistral-bytes'), dir, { recursive: true });
      const shard = path.join(dir, 'model-00002-of-00003.safetensors');
      const bytes = readFileSync(shard);
      writeFileSync(shard, bytes.subarray(0, bytes.length - 1000));
      const r = cli('analyze', dir, '--json');
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^error: .*model-00002-of-00003\.safetensors/m);
    } finally {
      cleanup();
    }
  });
});

test('eval refuses an unusable explicit backend before any work', async () => {
  const usable = await usableBackends();
  if (usable.includes('webgpu')) return;
  const r = spawnSync(process.execPath, [CLI, 'eval', fixture('gpt2-bytes'), '--text', fixture('heldout.txt'), '--tokenizer', 'bytes', '--backend', 'webgpu'], { encoding: 'utf8' });
  assert.equal(r.status, 1, r.stderr);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^error: eval: --backend webgpu is not usable here: [^\n]+\n$/);
});
