/**
 * Progress of long commands: one updating line on a terminal by default, one line per update
 * with --progress, nothing with --quiet or when stderr is not a terminal; export's factoring and
 * writing counters on one line. Checked in-process with an io that says it is a terminal, with
 * the reporter's own clock, and through a real pseudo-terminal (util-linux `script`).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { main } from '../../src/cli/main';
import type { CliIo } from '../../src/cli/io';
import { channelOfLabel, ProgressReporter } from '../../src/cli/progress';
import { CLI, ensureBuilt, FIXTURES } from '../hostile/cliRunner';

const mistral = path.join(FIXTURES, 'mistral-bytes');
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-progress-'));
const text = path.join(work, 'heldout-3k.txt');
before(() => writeFileSync(text, readFileSync(path.join(FIXTURES, 'heldout.txt')).subarray(0, 3000)));
after(() => rmSync(work, { recursive: true, force: true }));

/** What a terminal shows after `out`: `\r` returns to column 0, later characters overwrite. */
function screen(out: string): string[] {
  const lines: string[] = [''];
  let col = 0;
  for (const ch of out.replace(/\r\n/g, '\n')) {
    if (ch === '\r') col = 0;
    else if (ch === '\n') {
      lines.push('');
      col = 0;
    } else {
      const l = lines[lines.length - 1].padEnd(col);
      lines[lines.length - 1] = l.slice(0, col) + ch + l.slice(col + 1);
      col++;
    }
  }
  return lines.map((l) => l.trimEnd()).filter(Boolean);
}

interface Captured {
  code: number;
  out: string;
  err: string;
  /** Every stderr write, in order. */
  writes: string[];
}

async function cli(argv: string[], tty: boolean): Promise<Captured> {
  let out = '';
  const writes: string[] = [];
  const io: CliIo = { stdout: (t) => (out += t), stderr: (t) => writes.push(t), stderrIsTTY: tty, stderrColumns: tty ? 200 : undefined };
  const code = await main(argv, io);
  return { code, out, err: writes.join(''), writes };
}

test('the reporter draws two counters on one line, rewrites it in place, and clears it at the end', () => {
  const writes: string[] = [];
  let now = 0;
  const base: CliIo = { stdout: () => undefined, stderr: (t) => writes.push(t), stderrIsTTY: true, stderrColumns: 120 };
  const p = new ProgressReporter(base, 'export', 'bar', { now: () => now, intervalMs: 100 });
  const fn = p.fn!;
  fn(0, 4, 'factoring layer 0');
  now += 150;
  fn(100, 1000, 'writing model-00001.safetensors');
  now += 10;
  fn(200, 1000, 'writing model-00001.safetensors'); // within 100 ms: not drawn
  assert.equal(writes.length, 2);
  now += 150;
  fn(1, 4, 'factoring layer 1');
  const frames = writes.map((w) => screen(w));
  assert.deepEqual(frames.at(-1), ['export: factoring layer 1 25% | writing model-00001.safetensors 20%']);
  assert.ok(writes.every((w) => w.startsWith('\r') && !w.includes('\n')), 'in-place redraws only');
  // a note in between keeps its own line and the bar comes back under it
  p.io.stderr('note: something\n');
  assert.deepEqual(screen(writes.join('')), ['note: something', 'export: factoring layer 1 25% | writing model-00001.safetensors 20%']);
  // a finished counter hides once a later one is running
  now += 150;
  fn(4, 4, 'factored');
  now += 150;
  fn(500, 1000, 'writing model-00002.safetensors');
  assert.deepEqual(screen(writes.join('')), ['note: something', 'export: writing model-00002.safetensors 50%']);
  p.done();
  assert.deepEqual(screen(writes.join('')), ['note: something']);
  const before = writes.length;
  fn(1000, 1000, 'writing model-00002.safetensors');
  assert.equal(writes.length, before, 'nothing drawn after done()');
});

test('the bar never wraps: it is cut to the terminal width', () => {
  const writes: string[] = [];
  const p = new ProgressReporter({ stdout: () => undefined, stderr: (t) => writes.push(t), stderrIsTTY: true, stderrColumns: 40 }, 'export', 'bar', { intervalMs: 0 });
  p.fn!(1, 2, `writing ${'x'.repeat(100)}.safetensors`);
  assert.ok(screen(writes.join(''))[0].length <= 39, screen(writes.join(''))[0]);
});

test('counters are named by their label', () => {
  assert.equal(channelOfLabel('factoring layer 3'), 'factoring');
  assert.equal(channelOfLabel('factored'), 'factoring');
  assert.equal(channelOfLabel('writing model.safetensors'), 'writing');
  assert.equal(channelOfLabel('calibrating layer 0'), 'calibrating');
  assert.equal(channelOfLabel('calibration statistics from cache'), 'calibrating');
  assert.equal(channelOfLabel('evaluating the original'), 'evaluating');
});

const EXPORT = (dest: string, ...extra: string[]) => ['export', mistral, path.join(work, dest), '--method', 'qk-svd', '--rank', '8', ...extra];

test('export on a terminal: one updating line by default, cleared before the result', async () => {
  const r = await cli(EXPORT('tty'), true);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /\rexport: factoring/);
  assert.ok(!r.err.includes('\n'), `no progress line is ever ended: ${JSON.stringify(r.err)}`);
  assert.deepEqual(screen(r.err), [], 'the bar is cleared when the export ends');
  assert.match(r.out, /^wrote /);
});

test('export --progress: line-per-update output, factoring and writing on one line', async () => {
  const r = await cli(EXPORT('lines', '--progress'), false);
  assert.equal(r.code, 0, r.err);
  const lines = r.err.split('\n').filter(Boolean);
  assert.ok(lines.length >= 3, r.err);
  for (const l of lines) assert.match(l, /^export: ((factoring|factored|writing) \S.* \d+%)( \| (factoring|factored|writing) \S.* \d+%)?$/);
  assert.ok(lines.some((l) => /factor.* \| writing/.test(l)), `the two counters share a line:\n${r.err}`);
  assert.ok(!r.err.includes('\r'));
});

test('--quiet silences progress on a terminal, and no terminal means no progress by default', async () => {
  const quiet = await cli(EXPORT('quiet', '--quiet'), true);
  assert.equal(quiet.code, 0, quiet.err);
  assert.equal(quiet.err, '');
  const piped = await cli(EXPORT('piped'), false);
  assert.equal(piped.code, 0, piped.err);
  assert.equal(piped.err, '');
  const both = await cli(EXPORT('both', '--progress', '--quiet'), true);
  assert.equal(both.code, 1);
  assert.equal(both.err, 'error: export: give --progress or --quiet, not both\n');
});

test('analyze, plan (calibrated) and eval show their counters', async () => {
  const analyze = await cli(['analyze', mistral, '--json', '--progress'], false);
  assert.equal(analyze.code, 0, analyze.err);
  assert.deepEqual(analyze.err.split('\n').filter(Boolean), ['analyze: layer 0/4', 'analyze: layer 1/4', 'analyze: layer 2/4', 'analyze: layer 3/4', 'analyze: layer 4/4']);
  JSON.parse(analyze.out);

  const analyzeTty = await cli(['analyze', mistral, '--json', '--calibrate'], true);
  assert.equal(analyzeTty.code, 0, analyzeTty.err);
  // the --calibrate note keeps its line; the bar is gone at the end
  assert.deepEqual(screen(analyzeTty.err).filter((l) => !l.startsWith('note: ')), []);
  assert.match(analyzeTty.err, /\ranalyze: layer \d\/4/);

  const plan = await cli(['plan', mistral, '--method', 'calibrated', '--rank', '4', '--calibration', path.join(FIXTURES, 'calibration.txt'), '--calibration-tokens', '2048', '--tokenizer', 'bytes', '--progress', '--json'], false);
  assert.equal(plan.code, 0, plan.err);
  assert.match(plan.err, /^plan: calibrat/m);

  const evalLines = await cli(['eval', mistral, '--text', text, '--tokenizer', 'bytes', '--seq', '64', '--method', 'key-svd', '--rank', '8', '--progress', '--json'], false);
  assert.equal(evalLines.code, 0, evalLines.err);
  assert.match(evalLines.err, /^eval: factoring layer 0 0%$/m);
  assert.match(evalLines.err, /evaluating 100%$/m);
  const evalQuiet = await cli(['eval', mistral, '--text', text, '--tokenizer', 'bytes', '--seq', '64', '--quiet', '--json'], true);
  assert.equal(evalQuiet.code, 0, evalQuiet.err);
  assert.equal(evalQuiet.err, '');
});

/** Runs the built CLI under a pseudo-terminal (stdout to a file, so the transcript is stderr only). */
function underPty(args: string[]): { code: number | null; transcript: string; stdout: string } {
  const outFile = path.join(work, `pty-${Math.random().toString(36).slice(2)}.out`);
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const cmd = `${quote(process.execPath)} ${quote(CLI)} ${args.map(quote).join(' ')} > ${quote(outFile)}`;
  const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, COLUMNS: '120' } });
  const stdout = readFileSync(outFile, 'utf8');
  return { code: r.status, transcript: r.stdout, stdout };
}

const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;

test('through a real pseudo-terminal: the bar by default, lines with --progress, nothing with --quiet', { skip: !hasScript && 'util-linux script is not installed' }, () => {
  ensureBuilt();
  const bar = underPty(EXPORT('pty-bar'));
  assert.equal(bar.code, 0, bar.transcript);
  assert.match(bar.transcript, /\rexport: factoring/);
  assert.deepEqual(screen(bar.transcript), [], `cleared at the end: ${JSON.stringify(bar.transcript)}`);
  assert.match(bar.stdout, /^wrote /);

  const lines = underPty(EXPORT('pty-lines', '--progress'));
  assert.equal(lines.code, 0, lines.transcript);
  assert.ok(screen(lines.transcript).length >= 3 && screen(lines.transcript).every((l) => l.startsWith('export: ')), lines.transcript);

  const quiet = underPty(EXPORT('pty-quiet', '--quiet'));
  assert.equal(quiet.code, 0, quiet.transcript);
  assert.equal(quiet.transcript, '');
});
