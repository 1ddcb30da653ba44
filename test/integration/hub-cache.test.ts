/** A Hugging Face hub cache folder (models--org--name/) resolves to its snapshot. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { cli } from '../helpers/cli';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';

const fixtures = path.resolve(__dirname, '../../../shared/fixtures');
const mistral = path.join(fixtures, 'mistral-bytes');
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-hub-'));
after(() => rmSync(work, { recursive: true, force: true }));

/**
 * Lays out `models--<name>` the way huggingface_hub does: content-addressed blobs, one folder
 * of relative symlinks per snapshot, and refs/main holding the commit (unless `ref` is null).
 */
function hubRepo(name: string, revisions: string[], ref: string | null): string {
  const repo = path.join(work, `models--${name}`);
  mkdirSync(path.join(repo, 'blobs'), { recursive: true });
  for (const rev of revisions) {
    const snap = path.join(repo, 'snapshots', rev);
    mkdirSync(snap, { recursive: true });
    for (const f of readdirSync(mistral)) {
      const bytes = readFileSync(path.join(mistral, f));
      const blob = createHash('sha256').update(bytes).digest('hex');
      copyFileSync(path.join(mistral, f), path.join(repo, 'blobs', blob));
      symlinkSync(path.join('..', '..', 'blobs', blob), path.join(snap, f));
    }
  }
  if (ref !== null) {
    mkdirSync(path.join(repo, 'refs'), { recursive: true });
    writeFileSync(path.join(repo, 'refs', 'main'), ref);
  }
  return repo;
}

const REV_A = 'a'.repeat(40);
const REV_B = '0123456789abcdef0123456789abcdef01234567';

test('refs/main picks the snapshot; the CLI names the revision it used', async () => {
  const repo = hubRepo('org--mistral', [REV_A, REV_B], REV_B);
  const ckpt = await openCheckpoint(repo);
  try {
    assert.equal(ckpt.dir, path.join(repo, 'snapshots', REV_B));
    assert.deepEqual(ckpt.hub, { repo, revision: REV_B, ref: 'main' });
    assert.equal(ckpt.files.length, 3);
  } finally {
    await ckpt.close();
  }
  const direct = await cli('inspect', mistral, '--json');
  const r = await cli('inspect', repo, '--json');
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(JSON.parse(r.out), JSON.parse(direct.out));
  assert.equal(r.err, `note: ${repo} is a Hugging Face cache folder; using revision ${REV_B} (refs/main)\n`);
  // analyze and plan work from it too, with the same result as the plain folder
  const p = await cli('plan', repo, '--rank', '8', '--json');
  assert.equal(p.code, 0, p.err);
  assert.deepEqual(JSON.parse(p.out), JSON.parse((await cli('plan', mistral, '--rank', '8', '--json')).out));
  const e = await cli('export', repo, path.join(work, 'exported'), '--method', 'key-svd', '--rank', '8', '--json');
  assert.equal(e.code, 0, e.err);
  assert.match(e.err, /using revision 0123456789abcdef/);
});

test('a single snapshot without refs is used; several without refs/main are listed', async () => {
  const one = hubRepo('org--one', [REV_A], null);
  const r = await cli('inspect', one);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /using revision a{40} \(its only snapshot\)/);
  const many = hubRepo('org--many', [REV_A, REV_B], null);
  const m = await cli('inspect', many);
  assert.equal(m.code, 1);
  assert.equal(m.out, '');
  const lines = m.err.trim().split('\n');
  assert.equal(lines.length, 1, m.err);
  assert.match(lines[0], /^error: .*models--org--many: Hugging Face cache folder without refs\/main and 2 snapshots; give one of: /);
  assert.ok(lines[0].includes(path.join(many, 'snapshots', REV_A)) && lines[0].includes(path.join(many, 'snapshots', REV_B)));
});

test('a bad or dangling refs/main is one clear error', async () => {
  const dangling = hubRepo('org--dangling', [REV_A], REV_B);
  const d = await cli('analyze', dangling);
  assert.equal(d.code, 1);
  assert.match(d.err, /^error: .*refs\/main: names revision 0123456789abcdef0123456789abcdef01234567, but .* is missing/);
  const escape = hubRepo('org--escape', [REV_A], '../../etc');
  const x = await cli('inspect', escape);
  assert.equal(x.code, 1);
  assert.match(x.err, /refs\/main: does not hold a revision/);
  // an ordinary folder with no weights keeps its old message
  const empty = path.join(work, 'empty');
  mkdirSync(empty);
  writeFileSync(path.join(empty, 'config.json'), '{}');
  assert.match((await cli('inspect', empty)).err, /no \.safetensors file in the folder/);
});
