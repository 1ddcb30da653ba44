/**
 * `finetune` (docs/FINETUNE.md) without PyTorch: the orchestration around
 * python/train_factored_keys.py through a fake Python that speaks the script's protocol
 * (test/helpers/fakePython.mjs), the one error line for a Python without torch, cancellation and
 * failures leaving nothing behind, and static checks of the script itself.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { assertOneError, cli } from '../helpers/cli';
import { FINETUNE_RECORD, finetuneFactored } from '../../src/core/finetune/finetune';
import { CancelledError } from '../../src/core/errors';

const REPO = path.resolve(__dirname, '../..');
const FIXTURES = path.resolve(REPO, '../shared/fixtures');
const SCRIPT = path.join(REPO, 'python', 'train_factored_keys.py');
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-finetune-test-'));
const EXPORT = path.join(work, 'mistral-r16');
const TEXT = path.join(work, 'train.txt');
let fake = '';
after(() => rmSync(work, { recursive: true, force: true }));

before(async () => {
  const r = await cli('export', path.join(FIXTURES, 'mistral-bytes'), EXPORT, '--method', 'key-svd', '--rank', '16', '--quiet');
  assert.equal(r.code, 0, r.err);
  writeFileSync(TEXT, readFileSync(path.join(FIXTURES, 'train.txt')).subarray(0, 20000));
  fake = path.join(work, 'fake-python');
  writeFileSync(fake, `#!/bin/sh\nexec "${process.execPath}" "${path.join(REPO, 'test/helpers/fakePython.mjs')}" "$@"\n`);
  chmodSync(fake, 0o755);
});

/** A copy of the export's source with a tokenizer.json the export lacks. */
function teacherWithTokenizer(): string {
  const dir = path.join(work, 'teacher-tokenizer');
  if (existsSync(dir)) return dir;
  mkdirSync(dir);
  for (const f of readdirSync(path.join(FIXTURES, 'mistral-bytes'))) copyFileSync(path.join(FIXTURES, 'mistral-bytes', f), path.join(dir, f));
  writeFileSync(path.join(dir, 'tokenizer.json'), '{}');
  return dir;
}

function leftovers(dir: string): string[] {
  return readdirSync(dir).filter((e) => e.includes('fk-partial') || e.includes('fk-old'));
}

test('finetune writes a validated checkpoint of the same format, with the record and the template', async () => {
  process.env.FAKE_PY_MODE = 'ok';
  const out = path.join(work, 'ok');
  const r = await cli('finetune', EXPORT, out, '--text', TEXT, '--tokenizer', 'bytes', '--steps', '3', '--python', fake, '--json');
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.kept, 'trained');
  assert.ok(j.heldout_perplexity.after < j.heldout_perplexity.before);
  assert.match(r.err, /step 1\/3 loss 1\.4000 1,000 tokens\/s ETA/);
  const files = readdirSync(out).sort();
  assert.deepEqual(files, [...readdirSync(EXPORT), FINETUNE_RECORD].sort());
  assert.deepEqual(readFileSync(path.join(out, 'modeling_factored_keys.py')), readFileSync(path.join(REPO, 'python', 'modeling_factored_keys.py')));
  assert.deepEqual(readFileSync(path.join(out, 'config.json')), readFileSync(path.join(EXPORT, 'config.json')));
  const rec = JSON.parse(readFileSync(path.join(out, FINETUNE_RECORD), 'utf8'));
  assert.equal(rec.steps, 3);
  assert.equal(rec.text.tokens, 20000);
  assert.equal(rec.heldout_slice.tokens, 50);
  // our reader accepts it (eval's inspect path)
  const inspect = await cli('inspect', out, '--json');
  assert.equal(inspect.code, 0, inspect.err);
  assert.deepEqual(leftovers(work), []);
});

test('without a usable Python, finetune prints one error line saying what is missing and how to get it', async () => {
  const out = path.join(work, 'nopython');
  const missing = await cli('finetune', EXPORT, out, '--text', TEXT, '--tokenizer', 'bytes', '--python', path.join(work, 'no-such-python'));
  assert.equal(missing.code, 1);
  assert.equal(missing.err.trim().split('\n').length, 1, missing.err);
  assert.match(missing.err, /^error: finetune needs Python 3 with PyTorch and transformers.*was not found: install .*pip install torch transformers.*--python PATH/);
  process.env.FAKE_PY_MODE = 'missing';
  const noTorch = await cli('finetune', EXPORT, out, '--text', TEXT, '--tokenizer', 'bytes', '--python', fake);
  assert.equal(noTorch.err.trim().split('\n').length, 1, noTorch.err);
  assert.match(noTorch.err, /^error: finetune needs PyTorch and transformers, but .* has no torch, transformers: install them into it \(\/fake\/python3 -m pip install torch transformers safetensors\)/);
  assert.equal(existsSync(out), false);
  assert.deepEqual(leftovers(work), []);
});

test('the python3 on PATH, if it lacks torch, gives the same one line (the hostile machine of CI)', async (t) => {
  const probe = spawnSync('python3', ['-c', 'import torch'], { encoding: 'utf8' });
  if (probe.error) return t.skip('no python3 on PATH');
  if (probe.status === 0) return t.skip('this python3 has torch');
  const r = await cli('finetune', EXPORT, path.join(work, 'path-python'), '--text', TEXT, '--tokenizer', 'bytes');
  assert.equal(r.code, 1);
  assert.equal(r.err.trim().split('\n').length, 1, r.err);
  assert.match(r.err, /^error: finetune needs PyTorch and transformers, but "python3" on PATH .* has no torch/);
});

test('--device cuda on a PyTorch without CUDA is refused before anything is written', async () => {
  process.env.FAKE_PY_MODE = 'nocuda';
  const out = path.join(work, 'nocuda');
  const r = await cli('finetune', EXPORT, out, '--text', TEXT, '--tokenizer', 'bytes', '--device', 'cuda', '--python', fake);
  assert.equal(r.code, 1);
  assert.match(r.err, /sees no CUDA device/);
  assert.equal(existsSync(out), false);
});

test('a script error, or shards our reader refuses, leave nothing behind', async () => {
  for (const mode of ['fail', 'corrupt']) {
    process.env.FAKE_PY_MODE = mode;
    const out = path.join(work, mode);
    const r = await cli('finetune', EXPORT, out, '--text', TEXT, '--tokenizer', 'bytes', '--python', fake);
    assert.equal(r.code, 1, mode);
    assert.equal(r.err.trim().split('\n').filter((l) => l.startsWith('error:')).length, 1);
    if (mode === 'fail') assert.match(r.err, /error: finetune: the loss became nan/);
    assert.equal(existsSync(out), false, mode);
    assert.deepEqual(leftovers(work), [], mode);
  }
});

test('cancelling kills the training and removes the temporary folder', async () => {
  process.env.FAKE_PY_MODE = 'slow';
  const out = path.join(work, 'cancel');
  const cancel = { cancelled: false };
  let steps = 0;
  const run = finetuneFactored({
    source: EXPORT,
    dest: out,
    text: TEXT,
    tokenizer: 'bytes',
    steps: 100,
    python: fake,
    cancel,
    onEvent: (e) => {
      if (e.event === 'step') {
        steps++;
        cancel.cancelled = true;
      }
    },
  });
  await assert.rejects(run, CancelledError);
  assert.equal(steps, 1);
  assert.equal(existsSync(out), false);
  assert.deepEqual(leftovers(work), []);
});

test('the source must be a factored export, and the destination is checked like export', async () => {
  process.env.FAKE_PY_MODE = 'ok';
  const r = await cli('finetune', path.join(FIXTURES, 'mistral-bytes'), path.join(work, 'x'), '--text', TEXT, '--tokenizer', 'bytes', '--python', fake);
  assert.match(r.err, /not a factored-keys checkpoint .*export it first/);
  const inside = await cli('finetune', EXPORT, path.join(EXPORT, 'sub'), '--text', TEXT, '--tokenizer', 'bytes', '--python', fake);
  assert.match(inside.err, /inside the source checkpoint/);
  const lr = await cli('finetune', EXPORT, path.join(work, 'y'), '--text', TEXT, '--tokenizer', 'bytes', '--lr', 'abc');
  assert.match(lr.err, /--lr must be a positive number/);
});

test('--teacher: the export\'s source is passed to the script, and the record and --json name it and the KL', async () => {
  process.env.FAKE_PY_MODE = 'ok';
  const argsFile = path.join(work, 'teacher-args.json');
  process.env.FAKE_PY_ARGS_FILE = argsFile;
  try {
    const out = path.join(work, 'teacher-ok');
    const teacher = path.join(FIXTURES, 'mistral-bytes');
    const r = await cli('finetune', EXPORT, out, '--text', TEXT, '--tokenizer', 'bytes', '--steps', '3', '--python', fake, '--teacher', teacher, '--lm-weight', '0.25', '--freeze-key-up', '--json');
    assert.equal(r.code, 0, r.err);
    const args = JSON.parse(readFileSync(argsFile, 'utf8')) as string[];
    assert.equal(args[args.indexOf('--teacher') + 1], teacher);
    assert.equal(args[args.indexOf('--lm-weight') + 1], '0.25');
    assert.ok(args.includes('--freeze-key-up'));
    const j = JSON.parse(r.out);
    assert.deepEqual([j.loss, j.lm_weight, j.criterion, j.freeze_key_up, j.heldout_kl], ['kl+lm', 0.25, 'kl', true, { before: 0.08, after: 0.05 }]);
    assert.match(r.err, /held-out perplexity before 4\.4817, KL to the teacher 0\.08000/);
    const rec = JSON.parse(readFileSync(path.join(out, FINETUNE_RECORD), 'utf8'));
    assert.equal(rec.teacher.name, 'mistral-bytes');
    assert.equal(rec.teacher.matches_report, true);
    assert.equal(rec.teacher.manifest_sha256, JSON.parse(readFileSync(path.join(EXPORT, 'factored_keys_report.json'), 'utf8')).source.manifest_sha256);
    assert.deepEqual(rec.loss, { kind: 'kl+lm', lm_weight: 0.25, kl: 'KL(teacher || student) of next-token distributions, temperature 1' });
    assert.equal(rec.heldout_slice.criterion, 'kl');
    // without --lm-weight the loss is pure distillation
    const plain = await cli('finetune', EXPORT, path.join(work, 'teacher-kl'), '--text', TEXT, '--tokenizer', 'bytes', '--steps', '3', '--python', fake, '--teacher', teacher, '--json');
    assert.equal(plain.code, 0, plain.err);
    assert.equal(JSON.parse(plain.out).loss, 'kl');
    const plainArgs = JSON.parse(readFileSync(argsFile, 'utf8')) as string[];
    assert.equal(plainArgs.includes('--freeze-key-up'), false);
    // distilling, the default rate is the sweep's (3e-3); an explicit --lr wins
    assert.equal(Number(plainArgs[plainArgs.indexOf('--lr') + 1]), 3e-3);
    assert.equal(Number(args[args.indexOf('--lr') + 1]), 3e-3);
    const given = await cli('finetune', EXPORT, path.join(work, 'teacher-lr'), '--text', TEXT, '--tokenizer', 'bytes', '--steps', '3', '--python', fake, '--teacher', teacher, '--lr', '0.0002', '--json');
    assert.equal(given.code, 0, given.err);
    const givenArgs = JSON.parse(readFileSync(argsFile, 'utf8')) as string[];
    assert.equal(Number(givenArgs[givenArgs.indexOf('--lr') + 1]), 2e-4);
  } finally {
    delete process.env.FAKE_PY_ARGS_FILE;
  }
});

test('--teacher: a bad teacher is one error line, before Python runs or anything is written', async () => {
  process.env.FAKE_PY_MODE = 'missing'; // were Python reached, the error would be about torch
  const notCheckpoint = path.join(work, 'not-a-checkpoint');
  mkdirSync(notCheckpoint, { recursive: true });
  writeFileSync(path.join(notCheckpoint, 'notes.txt'), 'x');
  const tokenized = teacherWithTokenizer();
  const cases: [string, RegExp][] = [
    [path.join(work, 'no-such-teacher'), /^error: finetune --teacher .*no-such-teacher: no such folder$/],
    [TEXT, /--teacher .*train\.txt: not a folder/],
    [notCheckpoint, /--teacher .*not-a-checkpoint: not a checkpoint folder \(.*no \.safetensors file/],
    [EXPORT, /--teacher .*mistral-r16: is a factored export; the teacher is the original checkpoint/],
    [path.join(FIXTURES, 'stories260K'), /--teacher .*stories260K: has a vocabulary of 512 tokens, the export 256/],
    [tokenized, /--teacher .*teacher-tokenizer: the teacher has tokenizer\.json and the other has not/],
    [path.join(FIXTURES, 'gpt2-bytes'), /--teacher .*gpt2-bytes: is not the checkpoint this export was made from \(mistral-bytes\)/],
  ];
  for (const [teacher, re] of cases) {
    const out = path.join(work, 'bad-teacher');
    assertOneError(await cli('finetune', EXPORT, out, '--text', TEXT, '--tokenizer', 'bytes', '--python', fake, '--teacher', teacher), re);
    assert.equal(existsSync(out), false);
  }
  assertOneError(await cli('finetune', EXPORT, path.join(work, 'z'), '--text', TEXT, '--tokenizer', 'bytes', '--python', fake, '--lm-weight', '0.5'), /--lm-weight needs --teacher/);
  assertOneError(await cli('finetune', EXPORT, path.join(work, 'z'), '--text', TEXT, '--tokenizer', 'bytes', '--python', fake, '--teacher', path.join(FIXTURES, 'mistral-bytes'), '--lm-weight', '2'), /--lm-weight must be at most 1/);
  assert.deepEqual(leftovers(work), []);
});

test('the script\'s own teacher checks (run without torch): the manifest the export records, and the same refusals', (t) => {
  const probe = `
import json, sys
sys.path.insert(0, sys.argv[1])
import train_factored_keys as t
export, fixtures, tokenized = sys.argv[2], sys.argv[3], sys.argv[4]
config = json.load(open(export + "/config.json"))
out = {"manifest": t.source_manifest(fixtures + "/mistral-bytes"), "errors": []}
t.check_teacher(fixtures + "/mistral-bytes", export, config)
for teacher in (fixtures + "/nope", export, fixtures + "/stories260K", tokenized, fixtures + "/gpt2-bytes"):
    try:
        t.check_teacher(teacher, export, config)
        out["errors"].append(None)
    except t.Failure as e:
        out["errors"].append(str(e))
print(json.dumps(out))
`;
  const r = spawnSync('python3', ['-c', probe, path.join(REPO, 'python'), EXPORT, FIXTURES, teacherWithTokenizer()], { encoding: 'utf8' });
  if (r.error) return t.skip('no python3');
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { manifest: string; errors: (string | null)[] };
  assert.equal(j.manifest, JSON.parse(readFileSync(path.join(EXPORT, 'factored_keys_report.json'), 'utf8')).source.manifest_sha256);
  const want = [/nope: no such folder/, /is a factored export/, /vocabulary of 512 tokens, the export 256/, /the teacher has tokenizer\.json and the other has not/, /is not the checkpoint this export was made from \(mistral-bytes\)/];
  want.forEach((re, i) => assert.match(j.errors[i] ?? 'accepted', re));
});

test('the training script is static: it compiles, and takes no code from the checkpoint', (t) => {
  const src = readFileSync(SCRIPT, 'utf8');
  const compiled = spawnSync('python3', ['-c', 'import py_compile,sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)', SCRIPT, path.join(work, 'x.pyc')], { encoding: 'utf8' });
  if (compiled.error) t.diagnostic('no python3: py_compile skipped');
  else assert.equal(compiled.status, 0, compiled.stderr);
  // no dynamic code: no eval/exec/compile, no pickle (torch.load), never trust_remote_code=True
  for (const bad of [/(?<![.\w])eval\(/, /(?<![.\w])exec\(/, /(?<![.\w])compile\(/, /pickle/, /torch\.load\(/, /trust_remote_code=True/, /weights_only=False/]) assert.doesNotMatch(src, bad);
  // the model is built by the project's template beside the script, imported by path
  assert.match(src, /RUNTIME = os\.path\.join\(HERE, "modeling_factored_keys\.py"\)/);
  assert.match(src, /trust_remote_code=False/);
  // the teacher is built by transformers' stock classes, never its own code, from safetensors only
  assert.match(src, /teacher = transformers\.AutoModelForCausalLM\.from_pretrained\(teacher_dir, trust_remote_code=False, local_files_only=True, use_safetensors=True,/);
  // the only module loaded from a path is that template
  assert.equal((src.match(/spec_from_file_location\(/g) ?? []).length, 1);
  // and the .vsix ships it beside the template
  assert.match(readFileSync(path.join(REPO, '.vscodeignore'), 'utf8'), /^!python\/train_factored_keys\.py$/m);
});
