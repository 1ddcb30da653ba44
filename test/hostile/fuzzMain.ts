/**
 * Child-process entry of the checkpoint fuzzer (forked by fuzz.test.ts, which kills it when
 * it stops reporting progress: that is how a hang is caught). Environment:
 * FK_FUZZ_ROOT (scratch folder), FK_FUZZ_FIXTURES, FK_FUZZ_RUNS, FK_FUZZ_SEED.
 */
import fc from 'fast-check';
import { FuzzWorkspace, fuzzCase, runFuzzCase, type FuzzCase } from './fuzzCore';

/** Messages sent to the parent. */
export type FuzzMessage =
  | { type: 'case'; n: number; description: string }
  | { type: 'done'; tried: number; accepted: number; rejected: Record<string, number>; heads: number; seed: number; failure?: string };

const send = (m: FuzzMessage) => process.send?.(m);

async function main(): Promise<void> {
  const root = process.env.FK_FUZZ_ROOT!;
  const fixtures = process.env.FK_FUZZ_FIXTURES!;
  const numRuns = Number(process.env.FK_FUZZ_RUNS ?? 2000);
  const seed = Number(process.env.FK_FUZZ_SEED ?? Date.now() % 2 ** 31);
  const workspace = new FuzzWorkspace(root, fixtures);
  let tried = 0;
  let accepted = 0;
  let heads = 0;
  const rejected: Record<string, number> = {};
  process.on('unhandledRejection', (e) => {
    send({ type: 'done', tried, accepted, rejected, heads, seed, failure: `unhandled rejection: ${(e as Error)?.stack ?? String(e)}` });
    process.exit(1);
  });
  const property = fc.asyncProperty(fuzzCase, async (c: FuzzCase) => {
    tried++;
    send({ type: 'case', n: tried, description: fc.stringify(c) });
    const outcome = await runFuzzCase(workspace.prepare(c));
    if (outcome.kind === 'accepted') {
      accepted++;
      heads += outcome.heads;
    } else rejected[outcome.stage] = (rejected[outcome.stage] ?? 0) + 1;
  });
  const details = await fc.check(property, { numRuns, seed });
  let failure: string | undefined;
  if (details.failed) {
    failure = `seed ${details.seed}, path ${details.counterexamplePath}: ${fc.stringify(details.counterexample)}\n${(details.errorInstance as Error)?.message ?? ''}`;
  }
  send({ type: 'done', tried, accepted, rejected, heads, seed, failure });
}

main().catch((e) => {
  send({ type: 'done', tried: 0, accepted: 0, rejected: {}, heads: 0, seed: -1, failure: `fuzzer crashed: ${(e as Error)?.stack ?? String(e)}` });
  process.exitCode = 1;
});
