/**
 * `factored-keys analyze <checkpoint> [--json] [--backend ...] [--threads N] [--kinds key,query]`:
 * every layer's key and query head spectra.
 */
import { buildLayout } from '../core/arch';
import type { AttentionLayout } from '../core/arch/layout';
import { openCheckpoint } from '../core/checkpoint/checkpoint';
import { usableBackends } from '../core/compute/session';
import { backendFromArgs } from './backend';
import { FactoredKeysError } from '../core/errors';
import { analyzeSpectra, type HeadSpectrum, type SpectrumKind, type SpectrumResult } from '../core/spectrum';
import { numberFlag, parseArgs } from './args';
import { formatTable } from './inspect';
import type { CliIo } from './io';
import { commandSpec, commandUsageLine } from './options';
import { progressFromArgs } from './progress';

const SPEC = commandSpec('analyze');

/** One head in the `analyze --json` output (snake_case, a documented contract). */
export interface AnalyzeJsonHead {
  layer: number;
  kind: SpectrumKind;
  head: number;
  singular_values: number[];
  effective_rank: { p90: number; p95: number; p99: number };
  stable_rank: number;
  non_finite?: true;
}

/** The `analyze --json` object. */
export interface AnalyzeJson {
  backend: string;
  seconds: number;
  heads: AnalyzeJsonHead[];
  notes?: string[];
}

/** Converts a result to the JSON contract. */
export function toAnalyzeJson(r: SpectrumResult): AnalyzeJson {
  return {
    backend: r.backend,
    seconds: r.seconds,
    heads: r.heads.map((h) => ({
      layer: h.layer,
      kind: h.kind,
      head: h.head,
      singular_values: h.singularValues,
      effective_rank: { ...h.effectiveRank },
      stable_rank: h.stableRank,
      ...(h.nonFinite ? { non_finite: true as const } : {}),
    })),
    ...(r.notes?.length ? { notes: r.notes } : {}),
  };
}

function parseKinds(raw: string | undefined): SpectrumKind[] | undefined {
  if (raw === undefined) return undefined;
  const kinds = raw.split(',').map((s) => s.trim()).filter(Boolean);
  for (const k of kinds) if (k !== 'key' && k !== 'query') throw new FactoredKeysError(`analyze: --kinds takes key and/or query (comma-separated), got "${k}"`);
  if (kinds.length === 0) throw new FactoredKeysError('analyze: --kinds needs key and/or query');
  return kinds as SpectrumKind[];
}

function mean(xs: number[]): number {
  return xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length;
}

function summaryLine(heads: HeadSpectrum[]): string {
  const ok = heads.filter((h) => !h.nonFinite);
  if (ok.length === 0) return heads.length ? 'all heads non-finite' : '-';
  const p90 = ok.map((h) => h.effectiveRank.p90);
  const p99 = ok.map((h) => h.effectiveRank.p99);
  const bad = heads.length - ok.length;
  return `p90 ${Math.min(...p90)}-${Math.max(...p90)} (mean ${mean(p90).toFixed(1)}), p99 mean ${mean(p99).toFixed(1)}, stable rank ${mean(ok.map((h) => h.stableRank)).toFixed(2)}${bad ? `, ${bad} non-finite` : ''}`;
}

/** Heads named in the non-finite warning before it switches to a count. */
const MAX_NAMED_HEADS = 8;

/**
 * One line naming the heads whose weights hold NaN or Inf (skipped by the engine), with the
 * tensor each lives in, or undefined when every head is finite.
 */
export function nonFiniteWarning(heads: readonly HeadSpectrum[], layout: AttentionLayout): string | undefined {
  const bad = heads.filter((h) => h.nonFinite);
  if (bad.length === 0) return undefined;
  const named = bad.slice(0, MAX_NAMED_HEADS).map((h) => {
    const layer = layout.layers.find((l) => l.layer === h.layer);
    const slice = (h.kind === 'key' ? layer?.keyHeads : layer?.queryHeads)?.[h.head];
    return `layer ${h.layer} ${h.kind} head ${h.head}${slice ? ` (${slice.tensor})` : ''}`;
  });
  const more = bad.length > MAX_NAMED_HEADS ? `, and ${bad.length - MAX_NAMED_HEADS} more` : '';
  return `${bad.length} head${bad.length === 1 ? '' : 's'} with NaN/Inf weights, spectra skipped: ${named.join(', ')}${more}`;
}

/** Runs the command. */
export async function runAnalyze(argv: string[], baseIo: CliIo): Promise<number> {
  const args = parseArgs(argv, SPEC, 'analyze');
  // layers done of the analysis (also while --calibrate times the providers)
  const progress = progressFromArgs(args, 'analyze', baseIo, { channelOf: () => 'layers', format: (done, total) => `layer ${done}/${total}` });
  const io = progress.io;
  if (args.positionals.length !== 1) throw new FactoredKeysError(`analyze: expected one checkpoint path (usage: ${commandUsageLine(SPEC)})`);
  const backend = await backendFromArgs(args, 'analyze');
  const threads = numberFlag(args, 'threads', 'analyze', { integer: true, min: 1, max: 1024 });
  const kinds = parseKinds(args.values.get('kinds'));
  const calibrate = args.booleans.has('calibrate');
  if (calibrate && backend !== 'auto') throw new FactoredKeysError('analyze: --calibrate goes with --backend auto');

  const ckpt = await openCheckpoint(args.positionals[0]);
  if (calibrate) {
    const usable = await usableBackends();
    if (usable.length === 1) io.stderr(`note: --calibrate: only the CPU is usable on this machine, so there is nothing to compare and nothing is remembered\n`);
  }
  const cancel = { cancelled: false };
  const onSignal = (): void => {
    cancel.cancelled = true;
  };
  process.once('SIGINT', onSignal);
  try {
    const layout = buildLayout(ckpt);
    const result = await analyzeSpectra(ckpt, layout, { backend, calibrate, threads, kinds, cancel, progress: progress.fn });
    progress.done();
    for (const note of result.notes ?? []) io.stderr(`analyze: ${note}\n`);
    const warning = nonFiniteWarning(result.heads, layout);
    if (warning) io.stderr(`warning: ${warning}\n`);
    if (args.booleans.has('json')) {
      io.stdout(JSON.stringify(toAnalyzeJson(result)) + '\n');
      return 0;
    }
    const rows: [string, string][] = [
      ['checkpoint', ckpt.dir],
      ['backend', result.backend],
      ['seconds', result.seconds.toFixed(2)],
      ['heads', `${result.heads.length} (${layout.layers.length} layers, ${layout.kvHeads} key / ${layout.queryHeads} query heads x ${layout.headDim})`],
    ];
    for (const layer of layout.layers) {
      const lh = result.heads.filter((h) => h.layer === layer.layer);
      for (const kind of kinds ?? (['key', 'query'] as const)) rows.push([`layer ${layer.layer} ${kind === 'key' ? 'keys' : 'queries'}`, summaryLine(lh.filter((h) => h.kind === kind))]);
    }
    io.stdout(formatTable(rows) + '\n');
    return 0;
  } finally {
    progress.done();
    process.removeListener('SIGINT', onSignal);
    await ckpt.close();
  }
}
