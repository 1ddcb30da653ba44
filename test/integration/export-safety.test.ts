/** The export's documented safety rules (docs/FORMAT.md section 8). */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';
import { CancelledError } from '../../src/core/errors';
import { exportFactored } from '../../src/core/export/export';
import { writeSafetensors, type RawTensor } from '../helpers/safetensors';

const fixtures = path.resolve(__dirname, '../../../shared/fixtures');
const mistral = path.join(fixtures, 'mistral-bytes');
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-safety-'));
after(() => rmSync(work, { recursive: true, force: true }));

const run = (source: string, dest: string, force = false) => exportFactored({ source, dest, method: 'key-svd', policy: { kind: 'uniform', rank: 8 }, force });
const leftovers = (dir: string) => readdirSync(dir).filter((e) => e.includes('.fk-'));

test('refuses to write into, over, or around the source (also through symlinks)', async () => {
  const copy = path.join(work, 'src-copy');
  cpSync(mistral, copy, { recursive: true });
  await assert.rejects(run(copy, copy), /inside the source checkpoint folder/);
  await assert.rejects(run(copy, path.join(copy, 'out')), /inside the source checkpoint folder/);
  await assert.rejects(run(copy, work, true), /contains the source checkpoint/);
  const link = path.join(work, 'src-link');
  symlinkSync(copy, link);
  await assert.rejects(run(link, path.join(copy, 'nested', 'out')), /inside the source checkpoint folder/);
  await assert.rejects(run(copy, path.join(link, 'out')), /inside the source checkpoint folder/);
  assert.deepEqual(readdirSync(copy).sort(), readdirSync(mistral).sort(), 'source folder untouched');
});

test('refuses a file, a symlink, or a non-empty folder without --force; --force replaces', async () => {
  const file = path.join(work, 'a-file');
  writeFileSync(file, 'x');
  await assert.rejects(run(mistral, file), /exists and is not a folder/);
  const target = path.join(work, 'target');
  mkdirSync(target);
  const link = path.join(work, 'link-to-target');
  symlinkSync(target, link);
  await assert.rejects(run(mistral, link), /is a symbolic link/);
  writeFileSync(path.join(target, 'keep.txt'), 'user data');
  await assert.rejects(run(mistral, target), /not empty \(use --force to replace it\)/);
  assert.ok(existsSync(path.join(target, 'keep.txt')));
  await run(mistral, target, true);
  assert.ok(!existsSync(path.join(target, 'keep.txt')));
  assert.ok(existsSync(path.join(target, 'config.json')));
  assert.deepEqual(leftovers(work), []);
  const empty = path.join(work, 'empty');
  mkdirSync(empty);
  await run(mistral, empty);
  assert.ok(existsSync(path.join(empty, 'model.safetensors.index.json')));
});

test('cancel during writing leaves no destination and no temporary folder', async () => {
  const parent = path.join(work, 'cancel');
  mkdirSync(parent);
  const dest = path.join(parent, 'out');
  const cancel = { cancelled: false };
  let writes = 0;
  await assert.rejects(
    exportFactored({
      source: mistral,
      dest,
      method: 'qk-svd',
      policy: { kind: 'uniform', rank: 8 },
      cancel,
      progress: (_d, _t, label) => {
        if (label.startsWith('writing') && ++writes === 2) cancel.cancelled = true;
      },
    }),
    (e) => e instanceof CancelledError,
  );
  assert.ok(writes >= 2);
  assert.deepEqual(readdirSync(parent), []);
});

test('bad input fails before anything is written', async () => {
  const parent = path.join(work, 'bad');
  mkdirSync(parent);
  await assert.rejects(exportFactored({ source: mistral, dest: path.join(parent, 'o'), method: 'key-svd', policy: { kind: 'uniform', rank: 65 } }), /rank must be an integer from 1 to head_dim 64/);
  await assert.rejects(exportFactored({ source: mistral, dest: path.join(parent, 'o'), method: 'key-svd', plan: { format: 'factored-keys-plan', version: 1 }, planSource: 'p.json' }), /p\.json: "method"/);
  assert.deepEqual(readdirSync(parent), []);
  const done = path.join(work, 'done');
  await run(mistral, done);
  await assert.rejects(run(done, path.join(parent, 'again')), /already factored/);
  assert.deepEqual(readdirSync(parent), []);
});

test('stale temporary folders of dead exports to the same destination are removed', async () => {
  const parent = path.join(work, 'stale');
  mkdirSync(parent);
  let deadPid = 999_999;
  for (;;) {
    try {
      process.kill(deadPid, 0);
      deadPid--;
    } catch {
      break;
    }
  }
  const stale = path.join(parent, `.out.fk-partial-${deadPid}-deadbeef`);
  const other = path.join(parent, `.other.fk-partial-${deadPid}-deadbeef`);
  mkdirSync(stale);
  mkdirSync(other);
  writeFileSync(path.join(stale, 'model-00001-of-00003.safetensors'), 'partial');
  await run(mistral, path.join(parent, 'out'));
  assert.deepEqual(readdirSync(parent).sort(), [path.basename(other), 'out'].sort());
});

test('a failure found while factoring (rank-deficient keys under qk-svd) removes the temporary folder', async () => {
  // layouts/llama with KV head 1 of layer 1 zeroed: its key Gram is singular
  const src = path.join(fixtures, 'layouts', 'llama');
  const broken = path.join(work, 'llama-zero-head');
  mkdirSync(broken);
  cpSync(path.join(src, 'config.json'), path.join(broken, 'config.json'));
  const ck = await openCheckpoint(src);
  const tensors: Record<string, RawTensor> = {};
  for (const t of ck.tensors.values()) tensors[t.name] = { dtype: t.dtype, shape: [...t.shape], data: await ck.readRows(t.name) };
  await ck.close();
  const k = tensors['model.layers.1.self_attn.k_proj.weight'];
  const rowBytes = k.data.byteLength / k.shape[0];
  const headDim = 16;
  k.data.fill(0, headDim * rowBytes, 2 * headDim * rowBytes);
  writeSafetensors(path.join(broken, 'model.safetensors'), tensors);
  const parent = path.join(work, 'deficient');
  mkdirSync(parent);
  await assert.rejects(
    exportFactored({ source: broken, dest: path.join(parent, 'out'), method: 'qk-svd', policy: { kind: 'uniform', rank: 4 } }),
    /model\.layers\.1\.self_attn\.k_proj\.weight: layer 1 KV head 1 key projection is rank-deficient/,
  );
  assert.deepEqual(readdirSync(parent), []);
  // key-svd still works on it
  await exportFactored({ source: broken, dest: path.join(parent, 'out'), method: 'key-svd', policy: { kind: 'uniform', rank: 4 } });
  assert.ok(existsSync(path.join(parent, 'out', 'config.json')));
});
