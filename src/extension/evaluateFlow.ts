/**
 * Evaluate and Sweep from the panel: perplexity of the original checkpoint and of the panel's
 * plan (in memory), or of both methods over a rank/threshold set, on held-out text the user
 * chose, in cancellable worker jobs.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { FactoredKeysError } from '../core/errors';
import type { RankPlan } from '../core/plan';
import type { CheckpointSummary, EvaluationResult, PlanControls, SweepResult } from '../protocol';
import type { PanelServices } from './panel';
import { sweepAxis } from './panelModel';
import { calibrationFor } from './calibrationFlow';
import { readSettings } from './settings';

/** The held-out text: the setting, else a file the user picks; undefined if they declined. */
async function chooseText(configured: string): Promise<string | undefined> {
  if (configured) {
    const file = path.isAbsolute(configured) ? configured : path.resolve(vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? '.', configured);
    return file;
  }
  const picked = await vscode.window.showOpenDialog({ canSelectFiles: true, canSelectFolders: false, canSelectMany: false, openLabel: 'Evaluate on This Text', title: 'Factored Keys: held-out text for perplexity', defaultUri: vscode.workspace.workspaceFolders?.[0]?.uri });
  if (!picked?.[0]) return undefined;
  if (picked[0].scheme !== 'file') throw new FactoredKeysError(`${picked[0].toString()}: choose a text file on the file system the extension runs on`);
  return picked[0].fsPath;
}

/** `auto`: tokenizer.json beside the checkpoint, else raw bytes for byte-vocabulary models. */
export async function resolveTokenizer(setting: string, summary: CheckpointSummary, vocabSize: number | undefined): Promise<string> {
  if (setting !== 'auto') return setting;
  const beside = path.join(summary.dir, 'tokenizer.json');
  if (await fsp.stat(beside).then((s) => s.isFile(), () => false)) return beside;
  if (vocabSize !== undefined && vocabSize <= 256) return 'bytes';
  throw new FactoredKeysError(`${summary.dir}: no tokenizer.json beside the checkpoint; set factoredKeys.eval.tokenizer to "bytes" or a tokenizer.json path`);
}

/** Runs the comparison; null when the user declined to pick a text. */
export async function evaluatePlan(services: PanelServices, summary: CheckpointSummary, input: string, vocabSize: number | undefined, plan: RankPlan, token: vscode.CancellationToken, onProgress: (done: number, total: number, label: string) => void): Promise<EvaluationResult | null> {
  const settings = readSettings();
  const textFile = await chooseText(settings.eval.textFile);
  if (!textFile) return null;
  const tokenizer = await resolveTokenizer(settings.eval.tokenizer, summary, vocabSize);
  const result = await services.jobs.withProgress(
    { kind: 'evaluate', dir: input, plan, textFile, tokenizer, seq: settings.eval.seq, maxWindows: settings.eval.maxWindows, backend: settings.backend, threads: settings.threads, calibration: plan.method === 'calibrated' ? await calibrationFor(summary.dir, vocabSize, true) : undefined },
    `Evaluating ${summary.name}: original vs plan`,
    `evaluating ${summary.name} · ${settings.backend}`,
    onProgress,
    token,
  );
  services.log.appendLine(`evaluate ${summary.name} on ${textFile}: perplexity ${result.original.toFixed(4)} -> ${result.factored.toFixed(4)} (${result.deltaPercent.toFixed(2)}%), ${result.tokens} tokens, ${result.backend}, ${result.seconds.toFixed(2)} s`);
  return result;
}

/**
 * Runs the quality/savings sweep for the panel's controls (ranks, or thresholds under the energy
 * policy; both methods; the plan itself as one more point); null when the user declined to pick
 * a text. Windows are bounded by the same settings as Evaluate.
 */
export async function sweepPlans(services: PanelServices, summary: CheckpointSummary, input: string, vocabSize: number | undefined, controls: PlanControls, plan: RankPlan, token: vscode.CancellationToken, onProgress: (done: number, total: number, label: string) => void): Promise<SweepResult | null> {
  const settings = readSettings();
  const textFile = await chooseText(settings.eval.textFile);
  if (!textFile) return null;
  const tokenizer = await resolveTokenizer(settings.eval.tokenizer, summary, vocabSize);
  const { axis, values } = sweepAxis(summary, controls);
  const result = await services.jobs.withProgress(
    { kind: 'sweep', dir: input, plan, axis, values, textFile, tokenizer, seq: settings.eval.seq, maxWindows: settings.eval.maxWindows, backend: settings.backend, threads: settings.threads, calibration: await calibrationFor(summary.dir, vocabSize, plan.method === 'calibrated') },
    `Sweeping ${summary.name}: quality vs key cache`,
    `sweeping ${summary.name} · ${settings.backend}`,
    onProgress,
    token,
  );
  const fmt = (p: SweepResult['points'][number]) => `${p.method}${p.rank !== null ? ` r${p.rank}` : p.threshold !== null ? ` e${p.threshold}` : ''} ${p.keyCacheBytesPerToken} B/tok ppl ${p.perplexity.toFixed(4)}`;
  services.log.appendLine(`sweep ${summary.name} on ${textFile} (${result.tokens} tokens, ${result.backend}, ${result.seconds.toFixed(2)} s): ${[...result.points, result.plan].map(fmt).join('; ')}`);
  return result;
}
