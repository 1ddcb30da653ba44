/**
 * `plan <checkpoint> (policy flags) [--method m] [--override L:G=R,...] [--out plan.json] [--json]`:
 * per-KV-head ranks from a policy, printed (and optionally saved) as a plan file.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { buildLayout } from '../core/arch';
import { openCheckpoint } from '../core/checkpoint/checkpoint';
import { FactoredKeysError } from '../core/errors';
import { resolvePlan } from '../core/export/export';
import { analyzeHeads } from '../core/factor/basis';
import { planKeyBytesPerToken } from '../core/plan/plan';
import { FACTOR_METHODS, type FactorMethod, type RankOverride, type RankPlan, type RankPolicy } from '../core/plan/types';
import { numberFlag, type ParsedArgs } from './args';
import { parseArgs } from './args';
import { calibrationFromArgs } from './calibration';
import type { CliIo } from './io';
import { cacheChoiceFromArgs, checkCacheFlags } from './cache';
import { commandSpec, commandUsageLine } from './options';
import { progressFromArgs } from './progress';
import { describeCacheDtype } from '../core/savings/cacheDtype';
import { jsonTooDeep, MAX_JSON_DEPTH } from '../core/checkpoint/jsonDepth';

/** Flags shared by `plan` and `export` that choose ranks. */
export const POLICY_FLAGS = ['rank', 'fraction', 'energy', 'budget-bytes-per-token', 'plan', 'override', 'method'] as const;
/** The flags that choose where ranks come from; exactly one is given. */
const RANK_SOURCE_FLAGS = ['rank', 'fraction', 'energy', 'budget-bytes-per-token', 'plan'] as const;

/** The rank source chosen on the command line. */
export interface PolicyChoice {
  readonly method?: FactorMethod;
  readonly policy?: RankPolicy;
  readonly overrides: RankOverride[];
  /** Parsed plan file and its path, for --plan. */
  readonly plan?: unknown;
  readonly planPath?: string;
}

/**
 * Parses every `--override L:G=R[,L:G=R...]` given (they accumulate). A head named twice is an
 * error, whichever flag or entry names it.
 */
export function parseOverrides(raws: readonly string[] | undefined, command: string): RankOverride[] {
  const out: RankOverride[] = [];
  const seen = new Set<string>();
  for (const raw of raws ?? []) {
    for (const part of raw.split(',')) {
      const m = /^\s*(\d+):(\d+)=(\d+)\s*$/.exec(part);
      if (!m) throw new FactoredKeysError(`${command}: --override entries look like LAYER:KVHEAD=RANK, got "${part}"`);
      const o = { layer: Number(m[1]), kv_head: Number(m[2]), rank: Number(m[3]) };
      if (![o.layer, o.kv_head, o.rank].every(Number.isSafeInteger)) throw new FactoredKeysError(`${command}: --override number too large in "${part}"`);
      const key = `${o.layer}:${o.kv_head}`;
      if (seen.has(key)) throw new FactoredKeysError(`${command}: --override names layer ${o.layer} KV head ${o.kv_head} more than once`);
      seen.add(key);
      out.push(o);
    }
  }
  return out;
}

/** Reads the policy flags; exactly one of --rank/--fraction/--energy/--budget-bytes-per-token/--plan. */
export async function policyFromArgs(args: ParsedArgs, command: string): Promise<PolicyChoice> {
  const methodRaw = args.values.get('method');
  if (methodRaw !== undefined && !FACTOR_METHODS.includes(methodRaw as FactorMethod)) {
    throw new FactoredKeysError(`${command}: --method must be key-svd, qk-svd or calibrated, got "${methodRaw}"`);
  }
  const method = methodRaw as FactorMethod | undefined;
  const given = RANK_SOURCE_FLAGS.filter((f) => args.values.has(f));
  if (given.length !== 1) {
    throw new FactoredKeysError(`${command}: give exactly one of --rank, --fraction, --energy, --budget-bytes-per-token, --plan${given.length > 1 ? ` (got --${given.join(', --')})` : ''}`);
  }
  const overrides = parseOverrides(args.lists.get('override'), command);
  const flag = given[0];
  if (flag === 'plan') {
    if (overrides.length > 0) throw new FactoredKeysError(`${command}: --override cannot be combined with --plan (edit the plan's overrides instead)`);
    const planPath = args.values.get('plan')!;
    let text: string;
    try {
      const st = await fsp.stat(planPath);
      if (!st.isFile() || st.size > 64 * 1024 * 1024) throw new Error('not a plan file');
      text = await fsp.readFile(planPath, 'utf8');
    } catch {
      throw new FactoredKeysError(`${planPath}: cannot read the plan file`);
    }
    const deep = jsonTooDeep(text);
    if (deep !== undefined) throw new FactoredKeysError(`${planPath}: plan nests more than ${MAX_JSON_DEPTH} levels deep under "${deep}"`);
    let plan: unknown;
    try {
      plan = JSON.parse(text);
    } catch (e) {
      throw new FactoredKeysError(`${planPath}: plan is not valid JSON (${(e as Error).message.split('\n')[0]})`);
    }
    return { method, overrides, plan, planPath };
  }
  let policy: RankPolicy;
  if (flag === 'rank') policy = { kind: 'uniform', rank: numberFlag(args, 'rank', command, { integer: true, min: 1 })! };
  else if (flag === 'fraction') policy = { kind: 'fraction', fraction: numberFlag(args, 'fraction', command, { above: 0, max: 1 })! };
  else if (flag === 'energy') policy = { kind: 'energy', threshold: numberFlag(args, 'energy', command, { above: 0, max: 1 })! };
  else policy = { kind: 'budget', key_bytes_per_token: numberFlag(args, 'budget-bytes-per-token', command, { integer: true, min: 1 })! };
  return { method, policy, overrides };
}

/** The method of a choice: --method, else the plan file's, else key-svd. */
export function methodOf(choice: PolicyChoice): FactorMethod {
  if (choice.method) return choice.method;
  const m = (choice.plan as { method?: unknown } | undefined)?.method;
  return FACTOR_METHODS.includes(m as FactorMethod) ? (m as FactorMethod) : 'key-svd';
}

/** Human-readable plan summary. */
export function formatPlan(plan: RankPlan): string {
  const lines = [`method ${plan.method}, policy ${JSON.stringify(plan.policy)}`, `ranks per layer (KV heads 0..${plan.model.kv_heads - 1}) of head_dim ${plan.model.head_dim}:`];
  plan.ranks.forEach((row, l) => {
    const energy = plan.retained_energy?.[l];
    lines.push(`  layer ${String(l).padStart(3)}: ${row.map((r) => String(r).padStart(4)).join('')}${energy ? `   retained energy ${energy.map((e) => e.toFixed(3)).join(' ')}` : ''}`);
  });
  const before = plan.model.layers * plan.model.kv_heads * plan.model.head_dim * plan.model.key_bytes_per_value;
  lines.push(`key cache per token: ${before} B -> ${planKeyBytesPerToken(plan)} B`);
  return lines.join('\n') + '\n';
}

const SPEC = commandSpec('plan');

/** Refuses an --out that exists (unless --force and it is a regular file) or whose folder does not. */
async function checkPlanOut(out: string, force: boolean): Promise<void> {
  const st = await fsp.lstat(out).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw new FactoredKeysError(`${out}: cannot check the plan file (${e.code ?? e.message})`);
  });
  if (st) {
    if (!force) throw new FactoredKeysError(`${out}: already exists; give --force to replace it`);
    if (!st.isFile()) throw new FactoredKeysError(`${out}: exists and is not a regular file; not replaced`);
    return;
  }
  const dir = path.dirname(path.resolve(out));
  const ds = await fsp.stat(dir).catch(() => undefined);
  if (!ds?.isDirectory()) throw new FactoredKeysError(`${out}: folder ${dir} does not exist`);
}

/** `plan` command. */
export async function runPlan(argv: string[], baseIo: CliIo): Promise<number> {
  const args = parseArgs(argv, SPEC, 'plan');
  // factoring every layer (and calibrating, for --method calibrated)
  const progress = progressFromArgs(args, 'plan', baseIo);
  const io = progress.io;
  if (args.positionals.length !== 1) throw new FactoredKeysError(`plan: expected one checkpoint path (usage: ${commandUsageLine(SPEC)})`);
  const choice = await policyFromArgs(args, 'plan');
  checkCacheFlags(args, 'plan');
  const out = args.values.get('out');
  const force = args.booleans.has('force');
  if (force && out === undefined) throw new FactoredKeysError('plan: --force goes with --out');
  if (out !== undefined) await checkPlanOut(out, force);
  const method = methodOf(choice);
  const calibration = await calibrationFromArgs(args, { command: 'plan', method, checkpoint: args.positionals[0] });
  const ckpt = await openCheckpoint(args.positionals[0]);
  let plan: RankPlan;
  let cacheNote = '';
  try {
    const layout = buildLayout(ckpt);
    const cache = cacheChoiceFromArgs(args, 'plan', ckpt.config);
    const bases = await analyzeHeads(ckpt, layout, method, { calibration, progress: progress.fn });
    plan = resolvePlan(layout, bases, { method, policy: choice.policy, overrides: choice.overrides, plan: choice.plan, planSource: choice.planPath, cache }, ckpt.tensors);
    cacheNote = describeCacheDtype(cache);
  } finally {
    progress.done();
    await ckpt.close();
  }
  if (out !== undefined) {
    // checked again: the file may have appeared during the analysis
    await checkPlanOut(out, force);
    // write-then-rename so a failed write never leaves a truncated plan behind
    const tmp = `${out}.tmp-${process.pid}`;
    try {
      await fsp.writeFile(tmp, JSON.stringify(plan, null, 2) + '\n', { flag: 'wx' });
      await fsp.rename(tmp, out);
    } catch (e) {
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      throw new FactoredKeysError(`${out}: cannot write the plan (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  }
  io.stdout(args.booleans.has('json') ? JSON.stringify(plan) + '\n' : formatPlan(plan) + `cache priced as ${cacheNote}\n`);
  return 0;
}
