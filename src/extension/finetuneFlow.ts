/**
 * "Fine-tune…" from the editor (docs/FINETUNE.md): after an export, trains the export's queries
 * and thin keys in PyTorch with a progress notification and Cancel, then shows the held-out
 * perplexity before and after. The Python comes from the `factoredKeys.python` setting, else
 * python3 on PATH; with VS Code Remote-SSH the extension (and so the training) runs on the
 * remote machine, where the GPU is.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { CancelledError, FactoredKeysError } from '../core/errors';
import { finetuneFactored, type FinetuneResult } from '../core/finetune/finetune';

/** The training text: the `factoredKeys.finetune.textFile` setting, else asked for (and remembered). */
async function trainingText(): Promise<string | undefined> {
  const c = vscode.workspace.getConfiguration('factoredKeys');
  const set = String(c.get('finetune.textFile') ?? '');
  if (set && (await fsp.stat(set).then((s) => s.isFile(), () => false))) return set;
  const picked = await vscode.window.showOpenDialog({ title: 'Fine-tune: training text (like the model\'s training data; its last 5 % is held out)', canSelectMany: false, openLabel: 'Train on This Text' });
  if (!picked?.[0]) return undefined;
  if (picked[0].scheme !== 'file') throw new FactoredKeysError(`${picked[0].toString()}: choose a text file on the file system the extension runs on`);
  await c.update('finetune.textFile', picked[0].fsPath, vscode.ConfigurationTarget.Global).then(undefined, () => undefined);
  return picked[0].fsPath;
}

/** `auto`: tokenizer.json beside the export, else raw bytes for byte-vocabulary models. */
async function tokenizerFor(exportDir: string): Promise<string> {
  const setting = String(vscode.workspace.getConfiguration('factoredKeys').get('eval.tokenizer') ?? 'auto') || 'auto';
  if (setting !== 'auto') return setting;
  const beside = path.join(exportDir, 'tokenizer.json');
  if (await fsp.stat(beside).then((s) => s.isFile(), () => false)) return beside;
  const config = JSON.parse(await fsp.readFile(path.join(exportDir, 'config.json'), 'utf8')) as { vocab_size?: unknown };
  if (typeof config.vocab_size === 'number' && config.vocab_size <= 256) return 'bytes';
  throw new FactoredKeysError(`${exportDir}: no tokenizer.json beside the checkpoint; set factoredKeys.eval.tokenizer to "bytes" or a tokenizer.json path`);
}

/**
 * The teacher: the checkpoint the export was made from when the caller knows it (and
 * `factoredKeys.finetune.distill` is on); otherwise the user may pick the original checkpoint or
 * train on the LM loss. `null`: the user dismissed the choice.
 */
async function teacherFor(source: string | undefined): Promise<string | undefined | null> {
  if (source) return vscode.workspace.getConfiguration('factoredKeys').get('finetune.distill', true) ? source : undefined;
  const distil = 'Distil from the original checkpoint…';
  const lm = 'Train on the LM loss';
  const pick = await vscode.window.showQuickPick([distil, lm], { title: 'Fine-tune: loss', placeHolder: 'Distilling from the model the export was made from usually recovers more of its quality' });
  if (pick === undefined) return null;
  if (pick === lm) return undefined;
  const picked = await vscode.window.showOpenDialog({ title: 'Fine-tune: the checkpoint this export was made from', canSelectFolders: true, canSelectFiles: false, openLabel: 'Distil from This Checkpoint' });
  if (!picked?.[0]) return null;
  if (picked[0].scheme !== 'file') throw new FactoredKeysError(`${picked[0].toString()}: choose a checkpoint folder on the file system the extension runs on`);
  return picked[0].fsPath;
}

/**
 * Fine-tunes `exportDir` into `<exportDir>-finetuned`, distilling from `source` (the checkpoint
 * it was exported from) when given; resolves to the result, or null when declined or cancelled.
 */
export async function finetuneExport(exportDir: string, log: vscode.OutputChannel, source?: string): Promise<FinetuneResult | null> {
  if (!vscode.workspace.isTrusted) throw new FactoredKeysError('fine-tuning runs Python and writes files, so it needs a trusted workspace');
  const teacher = await teacherFor(source);
  if (teacher === null) return null;
  const text = await trainingText();
  if (!text) return null;
  const tokenizer = await tokenizerFor(exportDir);
  const c = vscode.workspace.getConfiguration('factoredKeys');
  const python = String(c.get('python') ?? '').trim() || undefined;
  const dest = `${exportDir.replace(/[\\/]+$/, '')}-finetuned`;
  const name = path.basename(exportDir);
  try {
    const result = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Fine-tuning ${name}`, cancellable: true }, async (progress, token) => {
      let last = 0;
      return finetuneFactored({
        source: exportDir,
        dest,
        text,
        tokenizer,
        python,
        ...(teacher ? { teacher } : {}),
        force: true,
        cancel: { get cancelled() { return token.isCancellationRequested; } },
        onEvent: (e) => {
          if (e.event === 'step') {
            const pct = (100 * e.step) / e.steps;
            progress.report({ increment: pct - last, message: `step ${e.step}/${e.steps}, loss ${e.loss.toFixed(3)}, ${Math.round(e.tokens_per_s).toLocaleString('en-US')} tokens/s, ETA ${Math.round(e.eta_s)} s` });
            last = pct;
          } else if (e.event === 'eval') {
            progress.report({ message: `held-out perplexity ${e.phase} ${e.perplexity.toFixed(4)}` });
            log.appendLine(`finetune ${name}: held-out perplexity ${e.phase} ${e.perplexity.toFixed(4)}`);
          } else if (e.event === 'phase') progress.report({ message: e.phase.replace('-', ' ') });
          else if (e.event === 'start') log.appendLine(`finetune ${name}: ${e.trained_parameters} trained parameters on ${e.device_name} (torch ${e.torch}, transformers ${e.transformers})`);
        },
      });
    });
    const change = (100 * (result.heldout.after / result.heldout.before - 1)).toFixed(2);
    const how = teacher ? `distilled from ${path.basename(teacher)}` : 'LM loss';
    const line = `fine-tuned ${name} (${how}) → ${result.dest}: held-out perplexity ${result.heldout.before.toFixed(4)} → ${result.heldout.after.toFixed(4)} (${change} %), kept the ${result.kept} weights; ${result.steps} steps on ${result.device} in ${result.trainSeconds.toFixed(1)} s`;
    log.appendLine(line);
    void vscode.window.showInformationMessage(`Factored Keys: ${line}`);
    return result;
  } catch (e) {
    if (e instanceof CancelledError) return null;
    throw e;
  }
}
