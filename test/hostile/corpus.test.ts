/**
 * Runs the built CLI on every case of the malformed-checkpoint corpus (scripts/corpus.ts):
 * each must end in one clean `error:` line naming the file/tensor/key at fault (a `warning:` for
 * NaN/Inf weights, success for the bounded-cost cases), with a
 * non-zero exit, nothing on stdout, within the time and memory bounds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeCorpus, writeFactoredBase, type CorpusCase } from '../../scripts/corpus';
import { cleanErrorProblems, ensureBuilt, FIXTURES, mapLimit, runCli, type CliRun } from './cliRunner';

/** Per-case wall-clock limit; the slowest case (a 90 MB header) takes about a second. */
const CASE_TIMEOUT_MS = 10_000;

function problemsOf(c: CorpusCase, run: CliRun): string[] {
  const problems: string[] = [];
  if (c.expect === 'error') problems.push(...cleanErrorProblems(run, c.mentions));
  else if (run.timedOut) problems.push('timed out (killed)');
  else if (c.expect === 'warning') {
    const lines = run.stderr.split('\n');
    if (run.code !== 0) problems.push(`expected success with a warning, got exit ${run.code}: ${run.stderr.slice(0, 400)}`);
    if (!(lines.length === 2 && lines[0].startsWith('warning: '))) problems.push(`stderr is not one warning line: ${JSON.stringify(run.stderr.slice(0, 400))}`);
    for (const m of c.mentions) if (!lines[0].includes(m)) problems.push(`warning does not mention ${JSON.stringify(m)}: ${lines[0]}`);
    if (/\bNaN\b|\bInfinity\b/.test(run.stdout)) problems.push(`NaN/Inf in the report: ${run.stdout.slice(0, 400)}`);
  } else if (c.expect === 'ok') {
    if (run.code !== 0 || run.stderr !== '') problems.push(`expected success, got exit ${run.code}: ${run.stderr.slice(0, 400)}`);
  }
  if (c.mustNotExist && fs.existsSync(c.mustNotExist)) problems.push(`${c.mustNotExist} was created`);
  if (run.maxRssMiB === undefined && !run.timedOut) problems.push('did not report its memory (crashed?)');
  if (run.maxRssMiB !== undefined && run.maxRssMiB > c.maxRssMiB) problems.push(`peak memory ${run.maxRssMiB.toFixed(0)} MiB > ${c.maxRssMiB} MiB`);
  return problems;
}

test('malformed-checkpoint corpus: every case is rejected cleanly, in bounded time and memory', async (t) => {
  ensureBuilt();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fk-corpus-'));
  try {
    const started = Date.now();
    const factoredBase = await writeFactoredBase(path.join(root, '.factored-base'), FIXTURES);
    const cases = writeCorpus(root, FIXTURES, { withAnalyze: true, factoredBase });
    const generatedMs = Date.now() - started;
    const runs = await mapLimit(cases, 2, (c) => runCli(c.argv, CASE_TIMEOUT_MS));
    const failures: string[] = [];
    const byCategory = new Map<string, { tried: number; clean: number }>();
    let slowest = { ms: 0, name: '' };
    let hungriest = { mib: 0, name: '' };
    cases.forEach((c, i) => {
      const run = runs[i];
      const problems = problemsOf(c, run);
      const counts = byCategory.get(c.category) ?? { tried: 0, clean: 0 };
      counts.tried++;
      if (problems.length === 0) counts.clean++;
      byCategory.set(c.category, counts);
      if (problems.length) failures.push(`${c.name}: ${problems.join('; ')}`);
      if (run.ms > slowest.ms) slowest = { ms: run.ms, name: c.name };
      if ((run.maxRssMiB ?? 0) > hungriest.mib) hungriest = { mib: run.maxRssMiB ?? 0, name: c.name };
    });
    const clean = cases.length - failures.length;
    const failed = new Set(failures.map((f) => f.slice(0, f.indexOf(':'))));
    const cleanOf = (e: string) => cases.filter((c) => c.expect === e && !failed.has(c.name)).length;
    t.diagnostic(
      `corpus: ${cases.length} cases tried, ${clean} handled cleanly (${cleanOf('error')} rejected with one error line, ${cleanOf('warning')} analysed with one warning line, ` +
        `${cleanOf('ok')} accepted in bounds), ${failures.length} failed; generated in ${generatedMs} ms, ran in ${Date.now() - started - generatedMs} ms`,
    );
    t.diagnostic(`corpus by category: ${[...byCategory].map(([k, v]) => `${k} ${v.clean}/${v.tried}`).join(', ')}`);
    t.diagnostic(`corpus slowest case ${slowest.name} ${slowest.ms} ms; peak memory ${hungriest.mib.toFixed(0)} MiB (${hungriest.name})`);
    assert.deepEqual(failures, [], `corpus failures:\n${failures.join('\n')}`);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('NaN/Inf weights: analyze --json flags exactly the affected heads and keeps every other spectrum finite', async () => {
  ensureBuilt();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fk-nan-'));
  try {
    const cases = writeCorpus(root, FIXTURES, { withAnalyze: true }).filter((c) => c.nonFiniteHeads);
    assert.ok(cases.length >= 2);
    for (const c of cases) {
      const run = await runCli([...c.argv, '--json'], CASE_TIMEOUT_MS);
      assert.equal(run.code, 0, run.stderr);
      const json = JSON.parse(run.stdout) as { heads: { layer: number; kind: string; head: number; singular_values: number[]; stable_rank: number; non_finite?: true }[] };
      const flagged = json.heads.filter((h) => h.non_finite).map((h) => `${h.layer}/${h.kind}/${h.head}`);
      assert.deepEqual(flagged.sort(), [...c.nonFiniteHeads!].sort(), c.name);
      for (const h of json.heads.filter((x) => !x.non_finite)) {
        assert.ok(h.singular_values.length > 0 && h.singular_values.every(Number.isFinite) && Number.isFinite(h.stable_rank), `${c.name}: head ${h.layer}/${h.kind}/${h.head} not finite`);
      }
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
