/**
 * `factored-keys eval <checkpoint> --text FILE --tokenizer bytes|<tokenizer.json> --seq 256
 * [--backend ...] [--threads N] [--method m (--rank R | --fraction F | --energy E |
 * --budget-bytes-per-token N) | --plan plan.json] [--json]`: perplexity of a checkpoint as
 * stored (original or exported factored), or of a rank plan applied in memory.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { backendFromArgs } from './backend';
import { FactoredKeysError } from '../core/errors';
import { evaluateCheckpoint, PlanEvaluator, tokenizeFile, type EvalOptions, type EvalResult } from '../core/eval';
import { planModelOf, resolvePlan } from '../core/export/export';
import { validatePlan } from '../core/plan/plan';
import { numberFlag, parseArgs } from './args';
import { calibrationFromArgs } from './calibration';
import type { CliIo } from './io';
import { cacheChoiceFromArgs, checkCacheFlags } from './cache';
import { readConfigForDefaults } from './checkpointConfig';
import { checkBytesTokenizer, checkIds, checkSeq, evalLimits, utf8Warning } from './evalGuards';
import { commandSpec, commandUsageLine } from './options';
import { methodOf, POLICY_FLAGS, policyFromArgs } from './plan';
import { progressFromArgs } from './progress';

const SPEC = commandSpec('eval');

/** The `eval --json` object (a documented contract). */
export interface EvalJson {
  perplexity: number;
  tokens: number;
  backend: string;
  seconds: number;
  /** What was evaluated: the checkpoint as stored, an exported factored one, or a plan in memory. */
  variant: 'original' | 'export' | 'plan';
  /** Factorization method (null for an original checkpoint). */
  method: string | null;
  /** Key ranks over all KV heads (null for an original checkpoint). */
  ranks: { min: number; max: number; mean: number } | null;
  seq: number;
  tokenizer: string;
}

function ranksSummary(ranks: unknown): EvalJson['ranks'] {
  const flat = Array.isArray(ranks) ? (ranks as unknown[]).flat().filter((r): r is number => typeof r === 'number') : [];
  if (flat.length === 0) return null;
  return { min: Math.min(...flat), max: Math.max(...flat), mean: flat.reduce((a, b) => a + b, 0) / flat.length };
}

async function resolveTokenizer(raw: string | undefined, checkpoint: string): Promise<string> {
  if (raw !== undefined) {
    if (raw === 'bytes') return raw;
    const st = await fsp.stat(raw).catch(() => undefined);
    if (!st?.isFile()) throw new FactoredKeysError(`${raw}: tokenizer file not found (give --tokenizer bytes or a tokenizer.json path)`);
    return raw;
  }
  const beside = path.join(checkpoint, 'tokenizer.json');
  if (await fsp.stat(beside).then((s) => s.isFile(), () => false)) return beside;
  throw new FactoredKeysError(`eval: --tokenizer is required (bytes, or a tokenizer.json path); ${checkpoint} has no tokenizer.json`);
}

/** `eval` command. */
export async function runEval(argv: string[], baseIo: CliIo): Promise<number> {
  const args = parseArgs(argv, SPEC, 'eval');
  // calibrating, factoring and evaluating, on one line
  const progress = progressFromArgs(args, 'eval', baseIo);
  const io = progress.io;
  if (args.positionals.length !== 1) throw new FactoredKeysError(`eval: expected one checkpoint path (usage: ${commandUsageLine(SPEC)})`);
  const checkpoint = args.positionals[0];
  const text = args.values.get('text');
  if (text === undefined) throw new FactoredKeysError('eval: --text FILE is required (the evaluation text)');
  const seq = numberFlag(args, 'seq', 'eval', { integer: true, min: 1, max: 1 << 20 }) ?? 256;
  const threads = numberFlag(args, 'threads', 'eval', { integer: true, min: 1, max: 1024 });
  const batch = numberFlag(args, 'batch', 'eval', { integer: true, min: 1, max: 4096 });
  const backend = await backendFromArgs(args, 'eval');
  const factored = POLICY_FLAGS.some((f) => args.values.has(f) || args.lists.has(f));
  const choice = factored ? await policyFromArgs(args, 'eval') : undefined;
  checkCacheFlags(args, 'eval');
  if (!choice && (args.values.has('cache-dtype') || args.values.has('bytes-per-value'))) throw new FactoredKeysError('eval: --cache-dtype and --bytes-per-value go with a rank policy or --plan');
  if (!choice && (args.values.has('calibration') || args.values.has('calibration-tokens'))) throw new FactoredKeysError('eval: --calibration and --calibration-tokens go with --method calibrated and a rank policy');
  const tokenizer = await resolveTokenizer(args.values.get('tokenizer'), checkpoint);
  const config = await readConfigForDefaults(checkpoint);
  const limits = await evalLimits(checkpoint);
  checkBytesTokenizer(tokenizer, limits);
  checkSeq(seq, limits);
  const warning = await utf8Warning(text, tokenizer);
  const { ids } = await tokenizeFile(text, tokenizer);
  checkIds(ids, tokenizer, limits);
  if (warning) io.stderr(`warning: ${warning}\n`);

  const cancel = { cancelled: false };
  const onSignal = () => {
    cancel.cancelled = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const options: EvalOptions = {
    seq,
    backend,
    threads,
    batch,
    cancel,
    progress: progress.fn,
  };
  let result: EvalResult;
  const factoredBlock = (config?.factored_keys ?? undefined) as { method?: unknown; ranks?: unknown } | undefined;
  let variant: EvalJson['variant'] = factoredBlock ? 'export' : 'original';
  let evaluatedMethod: string | null = factoredBlock && typeof factoredBlock.method === 'string' ? factoredBlock.method : null;
  let ranks = factoredBlock ? ranksSummary(factoredBlock.ranks) : null;
  try {
    if (!choice) {
      result = await evaluateCheckpoint(checkpoint, ids, options);
    } else {
      const evaluator = await PlanEvaluator.open(checkpoint);
      try {
        const method = methodOf(choice);
        evaluator.calibration = await calibrationFromArgs(args, { command: 'eval', method, checkpoint, sharedTokenizer: true, backend, threads });
        // a plan made for another model is refused before any work
        if (choice.plan !== undefined) validatePlan(choice.plan, choice.planPath ?? 'plan', planModelOf(evaluator.layout, evaluator.ckpt.tensors));
        const bases = await evaluator.bases(method, { cancel, progress: progress.fn });
        const cache = cacheChoiceFromArgs(args, 'eval', evaluator.ckpt.config);
        const plan = resolvePlan(evaluator.layout, bases, { method, policy: choice.policy, overrides: choice.overrides, plan: choice.plan, planSource: choice.planPath, cache }, evaluator.ckpt.tensors);
        result = await evaluator.plan(plan, ids, options);
        variant = 'plan';
        evaluatedMethod = plan.method;
        ranks = ranksSummary(plan.ranks);
      } finally {
        await evaluator.close();
      }
    }
  } finally {
    progress.done();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (result.backendNote) io.stderr(`note: ${result.backendNote}\n`);
  if (result.fallbackReason) io.stderr(`note: ${result.fallbackReason}\n`);
  if (args.booleans.has('json')) {
    const out: EvalJson = {
      perplexity: result.perplexity,
      tokens: result.tokens,
      backend: result.backend,
      seconds: result.seconds,
      variant,
      method: evaluatedMethod,
      ranks,
      seq,
      tokenizer: tokenizer === 'bytes' ? 'bytes' : path.basename(tokenizer),
    };
    io.stdout(JSON.stringify(out) + '\n');
  } else {
    io.stdout(`perplexity ${result.perplexity.toFixed(4)} over ${result.tokens} tokens (${result.windows} window${result.windows === 1 ? '' : 's'} of ${seq}) on ${result.backend} in ${result.seconds.toFixed(2)} s\n`);
  }
  return 0;
}
