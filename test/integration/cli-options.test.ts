/** Per-command help from the option table, strict numeric flags, repeated --override, plan --out --force. */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { COMMANDS } from '../../src/cli/main';
import { COMMAND_SPECS, commandHelp, topLevelUsage } from '../../src/cli/options';
import { assertOneError, cli } from '../helpers/cli';

const fixtures = path.resolve(__dirname, '../../../shared/fixtures');
const mistral = path.join(fixtures, 'mistral-bytes');
const work = mkdtempSync(path.join(os.tmpdir(), 'fk-opts-'));
after(() => rmSync(work, { recursive: true, force: true }));

test('every command has a spec and runner; usage and help list every flag of the table', () => {
  assert.deepEqual(Object.keys(COMMANDS).sort(), COMMAND_SPECS.map((c) => c.name).sort());
  const usage = topLevelUsage();
  for (const spec of COMMAND_SPECS) {
    const help = commandHelp(spec);
    assert.match(help, new RegExp(`^usage: factored-keys ${spec.name} `));
    const block = usage.slice(usage.indexOf(`  ${spec.name} `));
    for (const o of spec.options) {
      assert.ok(help.includes(`--${o.flag}`), `${spec.name} --help lacks --${o.flag}`);
      // the top-level entry of this command (up to the next command) lists the flag
      const next = COMMAND_SPECS[COMMAND_SPECS.indexOf(spec) + 1];
      const own = next ? block.slice(0, block.indexOf(`  ${next.name} `)) : block;
      assert.ok(own.includes(`[--${o.flag}`), `top-level usage of ${spec.name} lacks --${o.flag}`);
    }
  }
  // the flags the issue found missing from the old top-level usage
  for (const f of ['--progress', '--key-fraction', '--bits-per-value', '--kinds']) assert.ok(usage.includes(f), f);
  const evalBlock = usage.slice(usage.indexOf('  eval '));
  assert.ok(evalBlock.includes('[--threads N]'));
});

test('<command> --help and -h print that command help with exit 0; -h is never a path', async () => {
  for (const spec of COMMAND_SPECS) {
    for (const h of ['--help', '-h']) {
      const r = await cli(spec.name, h);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.err, '');
      assert.equal(r.out, commandHelp(spec));
    }
  }
  // help wins over everything else on the line, even an otherwise invalid one
  const r = await cli('export', mistral, '-h', '--rank', 'abc');
  assert.equal(r.code, 0);
  assert.match(r.out, /^usage: factored-keys export <checkpoint> <outdir>/);
  const viaHelp = await cli('help', 'savings');
  assert.equal(viaHelp.out, commandHelp(COMMAND_SPECS.find((c) => c.name === 'savings')!));
});

test('no arguments: usage on stderr, exit 2; --help: usage on stdout, exit 0', async () => {
  const none = await cli();
  assert.equal(none.code, 2);
  assert.equal(none.out, '');
  assert.equal(none.err, topLevelUsage());
  for (const h of ['--help', '-h']) {
    const r = await cli(h);
    assert.equal(r.code, 0);
    assert.equal(r.err, '');
    assert.equal(r.out, topLevelUsage());
  }
});

test('numeric flags take plain decimal notation only', async () => {
  const cases: [string[], RegExp][] = [
    [['plan', mistral, '--rank', '0x10'], /plan: --rank must be an integer in decimal digits, got "0x10"/],
    [['plan', mistral, '--rank', '1e1'], /plan: --rank must be an integer in decimal digits, got "1e1"/],
    [['plan', mistral, '--rank', '16.0'], /--rank must be an integer in decimal digits/],
    [['plan', mistral, '--rank', ' 16'], /--rank must be an integer in decimal digits/],
    [['plan', mistral, '--fraction', '0'], /plan: --fraction must be greater than 0, got 0/],
    [['plan', mistral, '--fraction', '2.5e-1'], /--fraction must be a decimal number, got "2.5e-1"/],
    [['plan', mistral, '--energy', 'Infinity'], /--energy must be a decimal number/],
    [['plan', mistral, '--energy', '1.5'], /--energy must be at most 1, got 1.5/],
    [['export', mistral, path.join(work, 'x'), '--method', 'key-svd', '--budget-bytes-per-token', '0x100'], /--budget-bytes-per-token must be an integer in decimal digits/],
    [['analyze', mistral, '--threads', '1e1'], /analyze: --threads must be an integer in decimal digits/],
    [['eval', mistral, '--text', 'x', '--seq', '0x100'], /eval: --seq must be an integer in decimal digits/],
    [['savings', '--layers', '4', '--kv-heads', '2', '--head-dim', '64', '--key-rank', '16', '--context', '1e3'], /savings: --context must be an integer in decimal digits/],
    [['savings', '--layers', '4', '--kv-heads', '2', '--head-dim', '64', '--key-fraction', '0', '--context', '10'], /--key-fraction must be greater than 0/],
    [['savings', '--layers', '4', '--kv-heads', '2', '--head-dim', '64', '--key-rank', '16', '--context', '10', '--bytes-per-value', '0.5'], /--bytes-per-value takes whole bytes, got 0\.5; for sub-byte caches give --bits-per-value 4/],
    [['plan', mistral, '--rank', '8', '--rank', '16'], /plan: --rank is given more than once/],
    [['plan', mistral, '--rank', '--json'], /plan: --rank needs a value/],
    [['plan', mistral, '-r', '8'], /plan: unknown option -r/],
  ];
  for (const [argv, re] of cases) assertOneError(await cli(...argv), re);
  // the plain spellings still work
  const ok = await cli('plan', mistral, '--rank', '16', '--json');
  assert.equal(ok.code, 0, ok.err);
  assert.deepEqual(JSON.parse(ok.out).ranks, Array(4).fill([16, 16]));
  const f = await cli('plan', mistral, '--fraction', '.25', '--json');
  assert.deepEqual(JSON.parse(f.out).ranks, Array(4).fill([16, 16]));
});

test('repeated --override accumulates; a head named twice is an error', async () => {
  const r = await cli('plan', mistral, '--rank', '8', '--override', '0:1=40', '--override', '2:0=4,3:1=64', '--json');
  assert.equal(r.code, 0, r.err);
  const plan = JSON.parse(r.out);
  assert.deepEqual(plan.ranks, [[8, 40], [8, 8], [4, 8], [8, 64]]);
  assert.deepEqual(plan.overrides, [
    { layer: 0, kv_head: 1, rank: 40 },
    { layer: 2, kv_head: 0, rank: 4 },
    { layer: 3, kv_head: 1, rank: 64 },
  ]);
  // export applies all of them too
  const dest = path.join(work, 'ov');
  const e = await cli('export', mistral, dest, '--method', 'key-svd', '--rank', '8', '--override', '0:1=40', '--override', '2:0=4', '--json');
  assert.equal(e.code, 0, e.err);
  assert.deepEqual(JSON.parse(e.out).ranks, [[8, 40], [8, 8], [4, 8], [8, 8]]);
  assertOneError(await cli('plan', mistral, '--rank', '8', '--override', '0:1=40', '--override', '0:1=4'), /--override names layer 0 KV head 1 more than once/);
  assertOneError(await cli('plan', mistral, '--rank', '8', '--override', '1:0=4,1:0=5'), /--override names layer 1 KV head 0 more than once/);
  const dup = path.join(work, 'never');
  assertOneError(await cli('export', mistral, dup, '--method', 'key-svd', '--rank', '8', '--override', '0:0=4', '--override', '0:0=4'), /more than once/);
  assert.equal(existsSync(dup), false);
});

test('plan --out refuses an existing file without --force', async () => {
  const out = path.join(work, 'plan.json');
  writeFileSync(out, 'precious\n');
  assertOneError(await cli('plan', mistral, '--rank', '8', '--out', out), /plan\.json: already exists; give --force to replace it/);
  assert.equal(readFileSync(out, 'utf8'), 'precious\n');
  const forced = await cli('plan', mistral, '--rank', '8', '--out', out, '--force', '--json');
  assert.equal(forced.code, 0, forced.err);
  assert.deepEqual(JSON.parse(readFileSync(out, 'utf8')), JSON.parse(forced.out));
  // a folder is never replaced, even with --force; a missing parent folder is named
  assertOneError(await cli('plan', mistral, '--rank', '8', '--out', work, '--force'), /exists and is not a regular file/);
  assertOneError(await cli('plan', mistral, '--rank', '8', '--out', path.join(work, 'no', 'p.json')), /does not exist/);
  assertOneError(await cli('plan', mistral, '--rank', '8', '--force'), /--force goes with --out/);
  assert.deepEqual(readdirSync(work).filter((f) => f.includes('.tmp-')), []);
});
